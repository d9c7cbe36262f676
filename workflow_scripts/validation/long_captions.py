"""Captions longer than a model's text context, counted per model by the data validation.

Every text stage cuts a caption that does not fit as open_clip's tokenizer does (the end is lost); CLIP4DM
scores `template + caption` and, with clip4dm.long_captions truncate (the default), scores the words whose
tokens fit, or, with `error`, stops. Counting them at the head of the DAG, with every line listed in the log,
tells the user before any model is loaded how much of their text a model will not see, and stops the run
there when CLIP4DM is told to refuse long captions.

Token counts are those of open_clip's BPE tokenizer (SOT + tokens + EOT); its encoding is per regex word,
so a prompted caption's count is the template's tokens plus the caption's.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .problems import Problems

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """The text context of the models of one architecture: their names, the architecture, its tokenizer and
    context length."""

    models: tuple[str, ...]
    arch: str
    tokenizer: object
    length: int


def _open_clip_file(*parts: str) -> Path:
    """A file of the installed open_clip package, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed")
    return Path(list(spec.submodule_search_locations)[0], *parts)


def _simple_tokenizer(context_length: int):
    """open_clip's BPE tokenizer (SimpleTokenizer, its own vocabulary file), loaded from its module alone.

    Why: importing the open_clip package also imports torchvision and its models, about 5 s of CPU on a 2-core
    machine, in a validation job that needs the tokenizer only (the tests compare its counts with
    open_clip.get_tokenizer's)."""
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", _open_clip_file("tokenizer.py"))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer(context_length=context_length)


def _text_config(arch: str) -> dict | None:
    """The text_cfg of `arch` from its JSON (the workflow's embedded configs, then open_clip's), or None."""
    # models.clip.CONFIG_DIR, not imported: validate_text would then depend on models/clip.py (and rerun the DAG)
    for path in (Path(__file__).resolve().parents[1] / "models" / "model_configs" / f"{arch}.json",
                 _open_clip_file("model_configs", f"{arch}.json")):
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8")).get("text_cfg", {})
    return None


def model_contexts(models: dict[str, dict]) -> tuple[list[Context], list[str]]:
    """(one context per architecture whose tokenizer is open_clip's BPE tokenizer, names of the models with
    another tokenizer or an architecture without a JSON config), from a config's `models` section."""
    by_arch: dict[str, list[str]] = {}
    for name, spec in models.items():
        by_arch.setdefault(spec["arch"], []).append(name)
    contexts, skipped = [], []
    for arch, names in by_arch.items():
        text_cfg = _text_config(arch)
        if text_cfg is None or text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
            skipped += names
            continue
        length = int(text_cfg.get("context_length", 77))
        contexts.append(Context(tuple(names), arch, _simple_tokenizer(length), length))
    return contexts, skipped


def token_counts(tokenizer, texts: Sequence[str | None]) -> list[int]:
    """SOT + BPE tokens + EOT of each text (0 for an unusable line, None)."""
    cache: dict[str, int] = {}
    out = []
    for text in texts:
        if text is None:
            out.append(0)
            continue
        if text not in cache:
            cache[text] = len(tokenizer.encode(text)) + 2
        out.append(cache[text])
    return out


def count_long_captions(files: dict[str, Sequence[str | None]], contexts: Sequence[Context], template: str | None,
                        problems: Problems | None = None) -> dict:
    """Per architecture (its models, its context) and file: how many captions exceed the context alone and,
    when `template` is given (CLIP4DM on), with the template. Every such line is logged; with `problems`
    given, each prompted caption that does not fit is also a problem (clip4dm.long_captions error)."""
    summary: dict = {}
    for ctx in contexts:
        extra = len(ctx.tokenizer.encode(template)) if template else 0
        models = ", ".join(ctx.models)
        per_file = {}
        for path, texts in files.items():
            counts = token_counts(ctx.tokenizer, texts)
            alone = [i for i, n in enumerate(counts) if n > ctx.length]
            prompted = [i for i, n in enumerate(counts) if n and n + extra > ctx.length] if template else []
            for i in prompted if template else alone:
                what = (f"{counts[i] + extra} tokens with the CLIP4DM template {template!r}" if template
                        else f"{counts[i]} tokens")
                message = f"{ctx.arch} ({models}): {what}, longer than its text context of {ctx.length}"
                log.warning("%s:%d: %s", path, i + 1, message)
                if problems is not None and template:
                    problems.add(path, i + 1, message + "; set clip4dm.long_captions: truncate to cut such captions")
            per_file[str(path)] = {"captions": len(texts), "longer_than_context": len(alone),
                                   **({"longer_with_clip4dm_template": len(prompted)} if template else {})}
            if alone or prompted:
                log.warning("%s: %s (%s): %d of %d captions longer than the context of %d%s", path, ctx.arch, models,
                            len(alone), len(texts), ctx.length,
                            f" ({len(prompted)} with the CLIP4DM template)" if template else "")
        summary[ctx.arch] = {"models": list(ctx.models), "context": ctx.length, "files": per_file}
    return summary
