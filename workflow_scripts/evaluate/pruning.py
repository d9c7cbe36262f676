"""Exp 2: keep subsets of embedding neurons chosen by purity and re-evaluate zero-shot on cached embeddings.

As the original run_eval_sam_sweep.py (docs/original_code.md, "Exp 2"):
- neuron score_j = sum_i |C_image[j, i]| + sum_i |C_text[j, i]| with the zeroed-diagonal cosine matrices
  of the image and text projections (rows = output neurons); the ranking depends only on the checkpoint;
- 'high_purity' keeps the `size` LOWEST scores (most orthogonal; the original's "Min Sparse"),
  'low_purity' the `size` HIGHEST ("Max Sparse"); ties go to the lower neuron index (stable sort;
  the original's torch.topk leaves tie order unspecified). Sets are nested in `size`;
- pruning zeroes the non-kept columns of the ALREADY-NORMALISED image embeddings, with no
  renormalisation; text embeddings stay full. Argmax and the cosine silhouette are invariant to
  rescaling an image row, so this equals zeroing the image projection's non-kept neurons.
Ours: 'random' (claimed by the paper, never coded): per draw d one permutation from
np.random.default_rng([seed, d]); kept = its first `size` entries, so random sets are nested in size
too, and adding draws never changes earlier ones. 'full' keeps every neuron (one row, size = n).
Nothing is re-extracted: the sweep reads the cached image embeddings of each set.

    python -m workflow_scripts.evaluate.pruning --config C --model laclip --checkpoint results/pretrain/laclip/checkpoint.pt \\
        --embeddings results/eval/pretrained/laclip/embeddings/{shape,colour}.npz \\
        --out results/eval/pruning/laclip.parquet [--summary results/eval/pruning/laclip_summary.parquet ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from ..common.errors import InputError
from ..common.io import load_npz, progress, run_cli, setup_logging, write_table
from .purity import cosine_matrix
from .zeroshot import silhouette, zero_shot_metrics

log = logging.getLogger(__name__)

STRATEGIES = ("high_purity", "low_purity", "random", "full")
SWEEP_COLUMNS = ["set", "strategy", "size", "fraction", "draw", "metric", "value"]


class KeptSet(NamedTuple):
    """One pruning variant: which neurons (sorted ids) a strategy keeps at a size, for a draw."""

    strategy: str
    size: int
    draw: int
    kept: np.ndarray


def neuron_scores(image_P: np.ndarray, text_P: np.ndarray) -> np.ndarray:
    """Per-neuron sum of |off-diagonal cosine| over the image plus the text projection (lower = purer)."""
    if np.shape(image_P)[0] != np.shape(text_P)[0]:
        raise InputError(f"neuron_scores: image projection has {np.shape(image_P)[0]} neurons, "
                         f"text projection {np.shape(text_P)[0]}; rows must be the shared output neurons")
    return np.abs(cosine_matrix(image_P)).sum(axis=1) + np.abs(cosine_matrix(text_P)).sum(axis=1)


def sizes_from_fractions(fractions: Sequence[float], n: int) -> list[int]:
    """Kept sizes round(f · n) (at least 1, at most n, sorted, unique); 200..500 of 512 for the defaults."""
    return sorted({min(n, max(1, int(round(f * n)))) for f in fractions})


def kept_sets(scores: np.ndarray, sizes: Sequence[int], strategies: Sequence[str] = STRATEGIES,
              random_draws: int = 5, seed: int = 0) -> list[KeptSet]:
    """Every (strategy, size, draw) variant of the sweep; see the module docstring for the rules."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise InputError(f"pruning: unknown strategies {unknown}; known: {list(STRATEGIES)}")
    bad = [s for s in sizes if not 1 <= int(s) <= n]
    if bad:
        raise InputError(f"pruning: kept sizes {bad} outside 1..{n}")
    ascending = np.argsort(scores, kind="stable")
    descending = np.argsort(-scores, kind="stable")
    perms = [np.random.default_rng([seed, d]).permutation(n) for d in range(random_draws)]
    out = []
    for strategy in strategies:
        if strategy == "full":
            out.append(KeptSet("full", n, 0, np.arange(n)))
            continue
        for size in sizes:
            if strategy == "high_purity":
                out.append(KeptSet(strategy, int(size), 0, np.sort(ascending[:size])))
            elif strategy == "low_purity":
                out.append(KeptSet(strategy, int(size), 0, np.sort(descending[:size])))
            else:
                out += [KeptSet(strategy, int(size), d, np.sort(p[:size])) for d, p in enumerate(perms)]
    return out


def prune_embeddings(normalised_img_emb: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """A copy of the normalised image embeddings with every column not in `kept` zeroed (no renormalisation)."""
    out = np.zeros_like(normalised_img_emb)
    out[:, kept] = normalised_img_emb[:, kept]
    return out


def evaluate_kept(image_emb: np.ndarray, classifier: np.ndarray, labels: np.ndarray,
                  kept: np.ndarray) -> dict[str, float]:
    """Zero-shot metrics and silhouette of `prune_embeddings(image_emb, kept)`.

    Computed on the kept columns only (zero columns add nothing to dot products or norms), which
    gives the same numbers without materialising the masked copy.
    """
    sub = np.asarray(image_emb)[:, kept]
    metrics = zero_shot_metrics(sub, np.asarray(classifier)[kept], labels)
    metrics["silhouette"] = silhouette(sub, labels)
    return metrics


def pruning_sweep(sets: Mapping[str, Mapping[str, np.ndarray]], variants: Sequence[KeptSet],
                  n_neurons: int) -> pd.DataFrame:
    """Tidy per-draw table (set, strategy, size, fraction, draw, metric, value) over sets × variants.

    `sets[name]` holds the cached 'image' (normalised, N × n_neurons), 'classifier'
    (n_neurons × n_classes) and 'labels' (N,) of one evaluation set.
    """
    rows = []
    bar = progress(total=len(sets) * len(variants), desc="pruning sweep", unit="variant")
    for name, data in sets.items():
        if data["image"].shape[1] != n_neurons:
            raise InputError(f"{name}: image embeddings have {data['image'].shape[1]} dims, "
                             f"the projections {n_neurons} neurons")
        for v in variants:
            metrics = evaluate_kept(data["image"], data["classifier"], data["labels"], v.kept)
            rows += [{"set": name, "strategy": v.strategy, "size": v.size, "fraction": v.size / n_neurons,
                      "draw": v.draw, "metric": k, "value": float(val)} for k, val in metrics.items()]
            bar.update()
        log.info("%s: %d variants evaluated", name, len(variants))
    bar.close()
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def summarise_sweep(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd (ddof=1; NaN for one draw) and draw count per (set, strategy, size, metric): random as mean ± sd."""
    keys = [c for c in table.columns if c not in ("draw", "value")]
    g = table.groupby(keys, sort=True, dropna=False)["value"]
    out = g.agg(mean="mean", sd="std", n_draws="count").reset_index()
    return out


def load_sets(paths: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Cached embeddings per set (name = file stem) with the keys the sweep needs."""
    sets = {}
    for path in paths:
        data = load_npz(path)
        missing = [k for k in ("image", "classifier", "labels") if k not in data]
        if missing:
            raise InputError(f"{path}: missing arrays {missing}")
        sets[Path(path).stem] = data
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exp 2: neuron pruning sweep on cached image embeddings.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True, help="config models.<name> of the checkpoint")
    parser.add_argument("--projections", required=True,
                        help="projections.npz of the checkpoint whose neurons are ranked (rows = neurons)")
    parser.add_argument("--embeddings", nargs="+", required=True, help="cached <set>.npz files (image, classifier, labels)")
    parser.add_argument("--out", nargs="+", required=True, help="per-draw table(s), .parquet and/or .csv")
    parser.add_argument("--summary", nargs="*", default=[], help="mean ± sd table(s), .parquet and/or .csv")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    from ..common.config import check_model, load_config
    from .run import load_projections

    config = load_config(args.config)
    check_model(config, args.model, args.config)
    settings = config["evaluate"]["pruning"]
    image_P, text_P = load_projections(args.projections)
    scores = neuron_scores(image_P, text_P)
    n = scores.shape[0]
    sizes = sizes_from_fractions(settings["kept_fractions"], n)
    log.info("%s: %d neurons, kept sizes %s, %d random draws (seed %d)", args.model, n, sizes,
             settings["random_draws"], settings["seed"])
    if settings["random_draws"] < 5:
        log.warning("evaluate.pruning.random_draws = %d: the study uses at least 5", settings["random_draws"])
    variants = kept_sets(scores, sizes, STRATEGIES, settings["random_draws"], settings["seed"])
    table = pruning_sweep(load_sets(args.embeddings), variants, n)
    table.insert(0, "model", args.model)
    for path in args.out:
        write_table(table, path)
    for path in args.summary:
        write_table(summarise_sweep(table), path)
    return 0


if __name__ == "__main__":
    run_cli(main)
