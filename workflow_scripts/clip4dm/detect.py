"""Detection of the known swaps of one swapped caption set with one pretrained detector model.

Every line (or a seeded subsample, clip4dm.detect.subsample) is scored as the pair (its image, its caption
in the swapped set); lines whose caption is unchanged reuse the pack's attributions of the original pairs.
F-CLIPScore by clip4dm.fclipscore.detect (docs/clip4dm.md). The per-line scores and three truths go to
scores.parquet: the line was swapped (the manifest), its caption text changed, and (where the images'
attributes are known) its caption contradicts its image (workflow_scripts/misalign/effective.py);
`detection_metrics` (AP and AUROC with sklearn of -F-CLIPScore and -CLIPScore for each truth) is computed
from them by the summary job, so that sklearn's import (~1.5 s) is paid once rather than in each of these
jobs. The misaligned fraction is estimated here from the scores alone
(metrics.estimate_misaligned_fraction, the held-out aligned pairs as the null) next to the true rates.

    python -m workflow_scripts.clip4dm.detect --config CONFIG --pack results/clip4dm/clip/pack.npz \\
        --captions results/misalign/random/Cs0.5/seed0/captions.txt --original results/world/captions.txt \\
        --manifest results/misalign/random/Cs0.5/seed0/swaps.parquet --attributes results/world/train_attributes.csv \\
        --model clip --strategy random --cs 0.5 --replicate 0 --out-metrics M.json --out-scores S.parquet
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd

from ..common.errors import InputError

log = logging.getLogger(__name__)
TRUTHS = ("swapped", "changed", "contradicts")
SCORES = ("fclipscore", "clipscore")


def swapped_lines(manifest: pd.DataFrame, n: int, where: str) -> np.ndarray:
    """Boolean [n]: the lines a swap touched (both ends of every swapped pair, columns line_a and line_b)."""
    lines = np.concatenate([manifest["line_a"].to_numpy(), manifest["line_b"].to_numpy()]).astype(np.int64)
    if len(lines) and (lines.min() < 0 or lines.max() >= n):
        raise InputError(f"{where}: swap manifest names lines outside 0..{n - 1}")
    out = np.zeros(n, bool)
    out[lines] = True
    return out


def detection_metrics(labels: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> dict[str, float]:
    """AP / AUROC of each score (higher = more aligned, so -score ranks misalignment) for each truth (its
    base rate, rate_<truth>, is in the job's metrics.json)."""
    from .metrics import ap_auroc

    out = {}
    for truth, y in labels.items():
        for name in SCORES:
            ap, auroc = ap_auroc(y, -scores[name])
            out[f"ap_{name}_{truth}"], out[f"auroc_{name}_{truth}"] = ap, auroc
    return out


def heldout_null(pack, epsilon: float, mode: str, punctuation: str) -> dict[str, np.ndarray]:
    """The held-out aligned pairs' scores (the null of the rate estimate), F-CLIPScore by `mode`: recomputed
    from the pack's held-out attributions and words, so that the null always has the detection's mode; empty
    without held-out pairs."""
    from .scores import score_table

    if "heldout.attr.values" not in pack.arrays or "heldout.captions" not in pack.arrays:
        return {name: pack.arrays.get(f"heldout.{name}", np.zeros(0)) for name in SCORES}
    captions = [str(c) for c in pack.arrays["heldout.captions"]]
    words = [t.words for t in pack.table().items(captions)]
    scored = score_table(words, pack.ragged("heldout.attr"), pack.arrays["heldout.cos"], epsilon, mode, punctuation)
    return {name: scored[name] for name in SCORES}


def rate_estimates(scores: dict[str, np.ndarray], null: dict[str, np.ndarray], lam: float, fpr: float,
                   seed: int) -> dict[str, float]:
    from .metrics import estimate_misaligned_fraction, flagged_fraction

    out = {}
    for name in SCORES:
        out[f"estimated_rate_{name}"] = estimate_misaligned_fraction(scores[name], null[name], lam, seed)
        out[f"flagged_{name}"] = flagged_fraction(scores[name], null[name], fpr)
    return out


def detect(config: dict, pack_path: str, captions_path: str, original_path: str, manifest_path: str,
           attributes_path: str | None, tags: dict) -> tuple[dict, pd.DataFrame]:
    import torch

    from ..report.aggregate import read_tables
    from ..misalign.captions import read_captions
    from ..misalign.effective import changed_lines, contradicts_any, read_truth
    from .pipeline import Pack, score_pairs
    from .scores import score_table

    settings = config["clip4dm"]
    det = settings["detect"]
    t0 = time.time()
    torch.set_num_threads(1)
    pack = Pack.load(pack_path)
    swapped, original = read_captions(captions_path), read_captions(original_path)
    n = len(original)
    if len(swapped) != n or len(pack.arrays["train.cos"]) != n:
        raise InputError(f"{captions_path}: {len(swapped)} lines, the original {original_path} {n}, the pack "
                         f"{pack_path} {len(pack.arrays['train.cos'])}")
    manifest = read_tables([manifest_path], required=("line_a", "line_b"))
    labels = {"swapped": swapped_lines(manifest, n, manifest_path),
              "changed": changed_lines(original, swapped)}
    if attributes_path:      # the pack knows the original captions' contradictions; only changed lines are read
        if "train.contradicts" not in pack.arrays:
            raise InputError(f"{pack_path}: made without the true attributes; cannot give the contradiction truth")
        contradicts = pack.arrays["train.contradicts"].copy()
        moved = np.flatnonzero(labels["changed"])
        truth = read_truth(attributes_path).iloc[moved].reset_index(drop=True)
        contradicts[moved] = contradicts_any([swapped[i] for i in moved], truth)
        labels["contradicts"] = contradicts
    lines = np.arange(n)
    if det["subsample"] and det["subsample"] < n:
        lines = np.sort(np.random.default_rng(det["seed"]).choice(n, det["subsample"], replace=False))
    labels = {k: v[lines] for k, v in labels.items()}
    # attributions: the pack's for unchanged lines, computed for the changed ones
    cos = pack.arrays["train.cos"][lines].astype(np.float64)
    original_attr = pack.ragged("train.attr")
    attr = [original_attr[i] for i in lines]
    changed = np.flatnonzero(labels["changed"])
    table = pack.table()
    if len(changed):
        _, c_cos, c_attr = score_pairs(pack.tower(), table, [swapped[lines[j]] for j in changed],
                                       pack.arrays["train.image_emb"][lines[changed]], pack.settings,
                                       [f"{captions_path}:{lines[j] + 1}" for j in changed])
        cos[changed] = c_cos
        for j, a in zip(changed, c_attr):
            attr[j] = a
    words = [t.words for t in table.items([swapped[i] for i in lines])]
    epsilon = float(pack.arrays["epsilon"])
    mode, punctuation = settings["fclipscore"]["detect"], settings["punctuation"]
    scored = score_table(words, attr, cos, epsilon, mode, punctuation)
    null = heldout_null(pack, epsilon, mode, punctuation)
    metrics = {**tags, "n": int(len(lines)), "n_total": n, "n_computed": int(len(changed)), "epsilon": epsilon,
               "fclipscore_mode": mode,
               **{f"rate_{k}": float(np.mean(v)) for k, v in labels.items()},
               **rate_estimates(scored, null, det["storey_lambda"], det["fpr"], det["seed"]),
               "seconds": time.time() - t0}
    scores = pd.DataFrame({"line": lines, **{k: v for k, v in labels.items()},
                           **{k: scored[k] for k in ("cos", "clipscore", "fclipscore", "n_flagged", "worst_word",
                                                     "worst_score")}})
    scores["worst_word"] = scores["worst_word"].astype(str)
    return metrics, scores


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config
    from ..common.io import setup_logging, write_json, write_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--pack", required=True, help="the detector model's pack (clip4dm.prepare)")
    ap.add_argument("--captions", required=True, help="the swapped caption set")
    ap.add_argument("--original", required=True, help="the original caption file (data.captions)")
    ap.add_argument("--manifest", required=True, help="the set's swaps.parquet")
    ap.add_argument("--attributes", help="true attributes per line (embedded world: train_attributes.csv)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--strategy", required=True)
    ap.add_argument("--cs", type=float, required=True)
    ap.add_argument("--replicate", type=int, required=True)
    ap.add_argument("--out-metrics", required=True, help=".json")
    ap.add_argument("--out-scores", required=True, help="per-line scores .parquet")
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    config = load_config(args.config)
    tags = {"model": args.model, "strategy": args.strategy, "cs": args.cs, "seed": args.replicate}
    metrics, scores = detect(config, args.pack, args.captions, args.original, args.manifest, args.attributes, tags)
    write_table(scores, args.out_scores)
    write_json(args.out_metrics, metrics)
    log.info("%s", {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
