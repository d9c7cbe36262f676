"""Train the alignment heads of one multilingual model on its cached embeddings: a sweep over
(head, λp, λo) × seeds, each run with the seed's recipe (peers.md §4.3).

The paired training images are those captioned in every language (as the original's
build_aligned_arrays; any others are logged and counted in sweep.parquet's n_unpaired). A run splits them
into validation (min(round(validation_fraction·N), validation_max) images, drawn per seed, all scored) and
training (every other image: none is left unused); each step takes `batch_per_lang` training images with
one caption per language and minimises head_loss; Adam (weight_decay as Adam's L2 term), linear warm-up
over `warmup_steps`, then cosine to `lr_floor`·lr. Batches (multilingual.align.sampling):
`with_replacement` (default, the original's `torch.randint`: every step draws its images uniformly and
independently, with replacement, from the training images) or `epoch_permutation` (each epoch walks a
fresh permutation of the training images).
After every epoch the macro text→image R@1 over languages on the validation images is recorded; two heads
are kept per run (RULES): `selected` = the epoch with the best validation macro R@1, ties going to the
earlier epoch (a later epoch must be strictly better: the original's `score > best_score`; early stopping
after `patience` epochs without improvement, 0 = never) and `last` = the head after the last epoch run.
The frozen baseline is the head at initialisation (head.frozen_head: t·I_rect).
The held-out images are never seen here. Seeds change the validation split and the batches.

    python -m workflow_scripts.multilingual.align --config C --model mclip \\
        --embeddings results/multilingual/embeddings/mclip.npz --out-dir results/multilingual/align/mclip
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..common.errors import InputError
from ..common.io import (
    derive_seed, load_npz, progress, run_cli, save_npz, setup_logging, write_lines, write_table,
)
from .head import frozen_head, head_loss, make_head
from .images import SEP
from .metrics import recall_at_1

if TYPE_CHECKING:                                  # pandas is imported where the sweep table is written
    import pandas as pd

log = logging.getLogger(__name__)

SPLIT_STREAM, ORDER_STREAM, SAMPLE_STREAM = 7, 8, 9
SAMPLING = ("with_replacement", "epoch_permutation")
RULES = ("selected", "last")          # the epoch-selection rules every run keeps a head for


def rule_key(key: str, rule: str) -> str:
    """The name of a run's head under one rule in heads.npz / the evaluation: the run key for `selected`,
    run key + "|last" for `last`."""
    if rule not in RULES:
        raise InputError(f"unknown epoch-selection rule {rule!r}; known: {list(RULES)}")
    return key if rule == "selected" else f"{key}|{rule}"


def lr_at(step: int, total: int, warmup: int, base: float, floor: float) -> float:
    """Linear warm-up to `base` over `warmup` steps, then cosine from base to floor·base at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def sweep_grid(settings: dict) -> list[dict]:
    """Every (head, prox_id, ortho) of the sweep; the orthogonality term exists for the linear head only,
    so MLP runs with ortho > 0 are left out."""
    for key in ("prox_id", "ortho"):
        bad = [v for v in settings[key] if v < 0]
        if bad:
            raise InputError(f"multilingual.align.{key}: {bad[0]} < 0; the penalty weights must be ≥ 0")
    return [{"head": h, "prox_id": float(p), "ortho": float(o)}
            for h, p, o in itertools.product(settings["heads"], settings["prox_id"], settings["ortho"])
            if not (h == "mlp" and o > 0)]


def paired_rows(data: dict, split: str, languages: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image rows that have a caption in every language, and per language the caption row of each."""
    n = len(data[f"{split}{SEP}image"])
    rows = []
    for lang in languages:
        key = f"{split}{SEP}{lang}{SEP}ids"
        if key not in data or len(data[key]) == 0:
            raise InputError(f"embeddings: language {lang!r} has no captions in split {split!r}")
        lookup = np.full(n, -1, dtype=np.int64)
        lookup[data[key]] = np.arange(len(data[key]))
        rows.append(lookup)
    complete = np.flatnonzero(np.all([r >= 0 for r in rows], axis=0))
    if len(complete) == 0:
        raise InputError(f"embeddings: no {split} image has a caption in every language {list(languages)}")
    return complete, [r[complete] for r in rows]


def macro_r1(head: torch.nn.Module | None, image: torch.Tensor, texts: list[torch.Tensor]) -> float:
    """Mean over languages of text→image R@1 (captions query the images; row i of each pairs with image i).
    head None: the frozen baseline, the head at initialisation (frozen_head)."""
    if head is None:
        head = frozen_head(texts[0].shape[1], image.shape[1])
    values = []
    with torch.no_grad():
        for t in texts:
            t = torch.nn.functional.normalize(head(t), dim=-1)
            values.append(recall_at_1((t @ image.T).numpy(), np.arange(len(image))))
    return float(np.mean(values))


@dataclass(frozen=True)
class SeedSplit:
    """One seed's train / validation split of the paired training images (rows of V; together every row
    once), the validation images and captions, and the frozen baseline's validation macro R@1 (it depends
    on the seed alone)."""

    train: np.ndarray
    val: np.ndarray
    val_img: torch.Tensor
    val_txt: list[torch.Tensor]
    frozen: float


def paired_tensors(data: dict, languages: Sequence[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The training images that have a caption in every language (V) and per language those captions (T),
    row i of each pairing with image i."""
    images, caption_rows = paired_rows(data, "train", languages)
    V = torch.from_numpy(data["train::image"][images])
    T = [torch.from_numpy(data[f"train{SEP}{lang}{SEP}text"][rows]) for lang, rows in zip(languages, caption_rows)]
    return V, T


def validation_size(n: int, settings: dict) -> int:
    """Validation images of n paired training images: min(round(validation_fraction·n), validation_max)."""
    return min(int(round(settings["validation_fraction"] * n)), int(settings["validation_max"]))


def seed_split(V: torch.Tensor, T: list[torch.Tensor], settings: dict, seed: int, base_seed: int) -> SeedSplit:
    """The split drawn for `seed`: validation_size images validate (all of them scored every epoch), every
    other image trains."""
    rng = np.random.default_rng(derive_seed(base_seed, SPLIT_STREAM, seed))
    perm = rng.permutation(len(V))
    n_val = validation_size(len(V), settings)
    if n_val < 2 or len(V) - n_val < settings["batch_per_lang"]:
        raise InputError(f"multilingual.align: {len(V)} training images cannot give a validation split of "
                         f"{n_val} and a batch of {settings['batch_per_lang']}")
    val, train = perm[:n_val], perm[n_val:]
    if len(val) + len(train) != len(V):                   # every paired training image trains or validates
        raise AssertionError(f"split of {len(V)} images into {len(train)} + {len(val)}")
    val_img, val_txt = V[val], [t[val] for t in T]
    return SeedSplit(train, val, val_img, val_txt, macro_r1(None, val_img, val_txt))


def train_run(data: dict, languages: Sequence[str], run: dict, settings: dict, seed: int, base_seed: int) -> tuple[dict, list[dict], dict]:
    """One sweep run from the embeddings; returns (summary row, per-epoch history, the selected head's state
    dict as arrays). sweep() builds the paired tensors once and each seed's split once, then calls fit_rules."""
    V, T = paired_tensors(data, languages)
    return fit(V, T, seed_split(V, T, settings, seed, base_seed), run, settings, seed, base_seed)


def fit(V: torch.Tensor, T: list[torch.Tensor], split: SeedSplit, run: dict, settings: dict, seed: int,
        base_seed: int) -> tuple[dict, list[dict], dict]:
    """fit_rules with the selected head's state only: what train_run returns."""
    summary, history, states = fit_rules(V, T, split, run, settings, seed, base_seed)
    return summary, history, states["selected"]


def batches(train: np.ndarray, settings: dict, seed: int, base_seed: int):
    """Per epoch, the list of its steps' training-image rows (`sampling`, see the module docstring)."""
    epochs, steps, bs = settings["epochs"], settings["steps_per_epoch"], settings["batch_per_lang"]
    sampling = settings.get("sampling", SAMPLING[0])
    if sampling == "with_replacement":
        rng = np.random.default_rng(derive_seed(base_seed, SAMPLE_STREAM, seed))
        for _ in range(epochs):
            yield [train[rng.integers(0, len(train), size=bs)] for _ in range(steps)]
    elif sampling == "epoch_permutation":
        for epoch in range(epochs):
            order = np.random.default_rng(derive_seed(base_seed, ORDER_STREAM, seed, epoch)).permutation(len(train))
            yield [train[np.resize(order, (step + 1) * bs)[step * bs:(step + 1) * bs]] for step in range(steps)]
    else:
        raise InputError(f"multilingual.align.sampling: unknown {sampling!r}; known: {list(SAMPLING)}")


def _state(head: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().clone().numpy() for k, v in head.state_dict().items()}


def fit_rules(V: torch.Tensor, T: list[torch.Tensor], split: SeedSplit, run: dict, settings: dict, seed: int,
              base_seed: int) -> tuple[dict, list[dict], dict[str, dict]]:
    """Train run `run` with seed `seed` on the paired tensors V, T and that seed's split; returns (summary
    row, per-epoch history, {rule: head state dict as arrays} for every rule of RULES)."""
    train, val_img, val_txt = split.train, split.val_img, split.val_txt
    torch.manual_seed(derive_seed(base_seed, seed))
    head = make_head(run["head"], T[0].shape[1], V.shape[1], settings["mlp_hidden"])
    optimizer = torch.optim.Adam(head.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    epochs, steps = settings["epochs"], settings["steps_per_epoch"]
    total = epochs * steps
    best, best_epoch, best_state, history, stale = -1.0, 0, None, [], 0
    for epoch, epoch_batches in enumerate(batches(train, settings, seed, base_seed)):
        sums = {}
        for step, idx in enumerate(epoch_batches):
            lr = lr_at(epoch * steps + step, total, settings["warmup_steps"], settings["lr"], settings["lr_floor"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, parts = head_loss(head, [t[idx] for t in T], V[idx], settings["temperature"], run["prox_id"],
                                    run["ortho"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings["max_grad_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(head.parameters(), settings["max_grad_norm"])
            optimizer.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v / steps
        score = macro_r1(head, val_img, val_txt)
        history.append({"epoch": epoch + 1, "lr": lr, "val_macro_r1": score, **sums})
        if score > best:                                   # strictly better: ties keep the earlier epoch
            best, best_epoch, stale = score, epoch + 1, 0
            best_state = _state(head)
        else:
            stale += 1
            if settings["patience"] and stale >= settings["patience"]:
                break
    summary = {**run, "seed": seed, "best_epoch": best_epoch, "epochs_run": len(history), "val_macro_r1": best,
               "val_macro_r1_last": history[-1]["val_macro_r1"], "val_macro_r1_frozen": split.frozen,
               "n_train": len(train), "n_val": len(split.val), "n_images": len(V),
               "sampling": settings.get("sampling", SAMPLING[0])}
    return summary, history, {"selected": best_state, "last": _state(head)}


def run_key(run: dict, seed: int) -> str:
    """The name of a run (and of its selected head in heads.npz): head|prox_id|ortho|seed."""
    return f"{run['head']}|{run['prox_id']!r}|{run['ortho']!r}|{seed}"


def sweep(config: dict, name: str, embeddings: str, out_dir: str) -> pd.DataFrame:
    """Every run of the sweep; writes sweep.parquet (a row per run), heads.npz (each run's head under every
    rule: rule_key) and log.jsonl (a row per epoch) under out_dir."""
    import pandas as pd

    ml = config["multilingual"]
    settings = ml["align"]
    data = load_npz(embeddings)
    runs = sweep_grid(settings)
    V, T = paired_tensors(data, ml["languages"])
    unpaired = len(data[f"train{SEP}image"]) - len(V)
    if unpaired:               # as the original's build_aligned_arrays: only images captioned in every language
        log.warning("%d of %d training images lack a caption in some language of %s and are not used",
                    unpaired, len(data[f"train{SEP}image"]), ml["languages"])
    splits: dict[int, SeedSplit] = {}
    rows, logs, heads = [], [], {}
    for run, seed in progress(list(itertools.product(runs, settings["seeds"])), desc="alignment sweep"):
        if int(seed) not in splits:
            splits[int(seed)] = seed_split(V, T, settings, int(seed), ml["seed"])
        summary, history, states = fit_rules(V, T, splits[int(seed)], run, settings, int(seed), ml["seed"])
        key = run_key(run, seed)
        rows.append({"model": name, "key": key, **summary, "n_unpaired": unpaired})
        logs += [json.dumps({"key": key, **h}, sort_keys=True) for h in history]
        for rule, state in states.items():
            heads.update({f"{rule_key(key, rule)}{SEP}{param}": value for param, value in state.items()})
        log.info("%s: best epoch %d, validation macro R@1 %.4f (last epoch %d: %.4f; frozen %.4f)", key,
                 summary["best_epoch"], summary["val_macro_r1"], summary["epochs_run"], summary["val_macro_r1_last"],
                 summary["val_macro_r1_frozen"])
    out = Path(out_dir)
    table = pd.DataFrame(rows)
    write_table(table, out / "sweep.parquet")
    save_npz(out / "heads.npz", **heads)
    write_lines(out / "log.jsonl", logs)
    return table


def load_heads(path: str, keys: Sequence[str], d_text: int, d_img: int, hidden: int) -> dict[str, torch.nn.Module]:
    """Rebuild the heads of heads.npz (keys: run keys or rule_key names) as modules."""
    arrays = load_npz(path)
    heads = {}
    for key in keys:
        state = {k.split(SEP, 1)[1]: torch.from_numpy(v) for k, v in arrays.items() if k.split(SEP, 1)[0] == key}
        if not state:
            raise InputError(f"{path}: no head {key!r}")
        head = make_head(key.split("|")[0], d_text, d_img, hidden)
        head.load_state_dict(state)
        heads[key] = head.eval()
    return heads


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config

    ap = argparse.ArgumentParser(description="Alignment-head sweep of one multilingual model.")
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--embeddings", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    torch.set_num_threads(1)
    config = load_config(args.config)
    sweep(config, args.model, args.embeddings, args.out_dir)
    return 0


if __name__ == "__main__":
    run_cli(main)
