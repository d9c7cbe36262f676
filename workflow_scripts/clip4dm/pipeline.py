"""What the CLIP4DM jobs share: the per-model pack, the token table, ragged word arrays.

The pack (`results/clip4dm/{model}/pack.npz`, written once per model by `prepare`, the only job that imports
open_clip) holds the text tower as tensors, the projection head, the training images' embeddings, every
caption the later jobs score already tokenized (training, held-out and foil captions), the training pairs'
own attributions (a swapped set differs from the original only on its swapped lines), the epsilon
calibration and the held-out aligned scores (the null for the rate estimate). The per-set detection jobs
and the localisation job then import torch and numpy only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from .words import Tokenized, template_words, tokenize_caption

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- ragged arrays

def flatten(rows: Sequence[Sequence]) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets [n + 1]) of ragged rows."""
    offsets = np.zeros(len(rows) + 1, np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    values = np.concatenate([np.asarray(r) for r in rows]) if offsets[-1] else np.zeros(0)
    return values, offsets


def unflatten(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


# ----------------------------------------------------------------------------- token table

class TokenTable:
    """Tokenized captions by text; texts it lacks are tokenized with `tokenizer`, by default open_clip's
    tokenizer of `arch` (loaded when first needed)."""

    def __init__(self, template: str, context: int, arch: str, truncate: bool = False,
                 rows: dict[str, Tokenized] | None = None, tokenizer=None, words: str = "original"):
        self.template, self.context, self.arch, self.truncate = template, context, arch, truncate
        self.words = words                      # the word rule (clip4dm.words; words.py)
        self.rows: dict[str, Tokenized] = dict(rows or {})
        self._tokenizer = tokenizer
        self._n_template: int | None = None     # template_words of the tokenizer, once it is loaded

    @classmethod
    def for_model(cls, settings: dict, context: int, arch: str) -> "TokenTable":
        """An empty table with the clip4dm settings' template and long-caption rule, for a model of `arch`
        with text context `context`."""
        return cls(settings["template"], context, arch, settings["long_captions"] == "truncate",
                   words=settings.get("words", "original"))

    def tokenizer(self):
        if self._tokenizer is None:
            from ..models import get_tokenizer

            self._tokenizer = get_tokenizer(self.arch)
        return self._tokenizer

    def items(self, captions: Sequence[str], where: Sequence[str] | None = None) -> list[Tokenized]:
        """The tokenized captions. Captions longer than the context are cut (clip4dm.long_captions
        truncate: each one logged) or, with long_captions error, stop the job with every one of them
        listed, not only the first."""
        out, long = [], []
        for i, caption in enumerate(captions):
            item = self.rows.get(caption)
            if item is None:
                if self._n_template is None:    # checks the tokenizer too
                    self._n_template = template_words(self.tokenizer(), self.template, self.words)
                item = tokenize_caption(self.tokenizer(), caption, self.template, self.context, True,
                                        where[i] if where else f"caption {i}", self._n_template, self.words)
                if item.truncated:
                    long.append(f"{where[i] if where else f'caption {i}'}: {caption!r} (words kept: "
                                f"{len(item.words)})")
                self.rows[caption] = item
            out.append(item)
        if long and not self.truncate:
            raise InputError(f"{len(long)} caption(s) longer than the model's context of {self.context} tokens with "
                             f"the template {self.template!r}; set clip4dm.long_captions: truncate to cut them "
                             "(as open_clip's tokenizer cuts them):\n" + "\n".join(long))
        for line in long:
            log.warning("truncated to the context of %d tokens: %s", self.context, line)
        return out

    def truncated(self) -> list[str]:
        """The texts of the table that were cut to the context."""
        return [text for text, item in self.rows.items() if item.truncated]

    def to_arrays(self, prefix: str = "table.") -> dict[str, np.ndarray]:
        items = list(self.rows.values())
        words, offsets = flatten([t.words for t in items])
        meta = {"template": self.template, "context": self.context, "arch": self.arch, "truncate": self.truncate,
                "words": self.words}
        return {f"{prefix}texts": np.asarray(list(self.rows), dtype=str),
                f"{prefix}tokens": np.stack([t.tokens for t in items]),
                f"{prefix}word_of_token": np.stack([t.word_of_token for t in items]),
                f"{prefix}eot": np.asarray([t.eot for t in items]),
                f"{prefix}truncated": np.asarray([t.truncated for t in items]),
                f"{prefix}words": np.asarray(words, dtype=str), f"{prefix}word_offsets": offsets,
                f"{prefix}meta": np.asarray(json.dumps(meta))}

    @classmethod
    def from_arrays(cls, arrays: dict, where: str, prefix: str = "table.") -> "TokenTable":
        try:
            meta = json.loads(str(arrays[f"{prefix}meta"]))
            words = unflatten(arrays[f"{prefix}words"], arrays[f"{prefix}word_offsets"])
            rows = {str(text): Tokenized(arrays[f"{prefix}tokens"][i], int(arrays[f"{prefix}eot"][i]),
                                         [str(w) for w in words[i]], arrays[f"{prefix}word_of_token"][i],
                                         bool(arrays[f"{prefix}truncated"][i]))
                    for i, text in enumerate(arrays[f"{prefix}texts"])}
        except (KeyError, ValueError, IndexError) as exc:
            raise InputError(f"{where}: no usable token table ({type(exc).__name__}: {exc})") from None
        # a pack written before clip4dm.words existed was tokenized by the cleaned rule
        return cls(meta["template"], int(meta["context"]), meta["arch"], bool(meta["truncate"]), rows,
                   words=meta.get("words", "cleaned"))


# ----------------------------------------------------------------------------- pack

@dataclass
class Pack:
    arrays: dict[str, np.ndarray]
    path: str

    @classmethod
    def load(cls, path: str) -> "Pack":
        from ..io import load_npz

        return cls(load_npz(path), str(path))

    @property
    def settings(self) -> dict:
        return json.loads(str(self.arrays["settings"]))

    def tower(self):
        from .tower import TextTower

        return TextTower.from_arrays(self.arrays, self.path)

    def head(self):
        from ..models import Head

        return Head.from_arrays(self.arrays, self.path)

    def table(self) -> TokenTable:
        return TokenTable.from_arrays(self.arrays, self.path)

    def ragged(self, name: str) -> list[np.ndarray]:
        return unflatten(self.arrays[f"{name}.values"], self.arrays[f"{name}.offsets"])


def ragged_arrays(name: str, rows: Sequence[Sequence]) -> dict[str, np.ndarray]:
    values, offsets = flatten(rows)
    return {f"{name}.values": values, f"{name}.offsets": offsets}


def with_checkpoint(tower, head, state_dict: dict, where: str):
    """(tower, head) with the projection tensors of a (projection-only) checkpoint's state dict, by name."""
    import copy

    from ..models import Head

    tower = copy.copy(tower)
    tower.params = dict(tower.params)
    names = dict(head.names)
    used = 0
    for key, value in state_dict.items():
        if key in tower.params and key.startswith("text_projection"):
            tower.params[key] = value.float()
        if key in names:
            names[key] = value.float()
            used += 1
    if used != len(names):
        raise InputError(f"{where}: holds {used} of the {len(names)} projection tensors {sorted(names)}")
    arrays = {f"head.param.{k}": v.numpy() for k, v in names.items()}
    arrays.update({k: v for k, v in head.to_arrays().items() if not k.startswith("head.param.")})
    return tower, Head.from_arrays(arrays, where)


def embed_images(head, features: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Normalised projected image embeddings of pre-projection features."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(features), batch):
            x = head.image(torch.from_numpy(np.asarray(features[s:s + batch], np.float32)))
            out.append(torch.nn.functional.normalize(x, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def score_pairs(tower, table: TokenTable, captions: Sequence[str], image_emb: np.ndarray, settings: dict,
                where: Sequence[str] | None = None, desc: str | None = None):
    """(Tokenized items, cosines, word attributions) of pairs (image_emb[i], captions[i])."""
    from .attributions import Attributor

    items = table.items(captions, where)
    attributor = Attributor(tower, None, table.template, settings["layers"], settings["batch_size"],
                            table.truncate)
    cos, words = attributor.attribute(items, image_emb, desc)
    return items, cos, words
