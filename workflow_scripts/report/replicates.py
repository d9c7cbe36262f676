"""Per-replicate views of the study: what each pretraining and each fine-tune replicate gave, so a reader
sees the spread behind every mean, and how far pretraining moved the projections.

- `exp1_by_seed`: per pretraining seed and set, every pair of pretrained models' top-1 and difference.
- `projection_drift`: per pretrained checkpoint and projection, the cosine between the trained and the
  initial matrix (flattened), the purity of both and the random-matrix level of that shape.
- `exp3_replicates`: per fine-tune, its text/image purity and per-set top-1 with the difference to the
  Cs = 0 control of the same replicate (hence the same pretraining, swaps and batch order).
- `within_group_table`: purity against accuracy beyond the treatment: the pooled within-(strategy, Cs)
  correlation over distinct fine-tunes, beside the pooled Spearman rho that the treatment drives.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ..common.config import CONTROL_STRATEGY
from ..common.intervals import within_group_correlation
from ..evaluate.purity import purity_metrics, random_reference

PURITY_METRIC = "avg_abs_cos_sim"


def pretrained_predictions(predictions: Mapping[tuple, Mapping[str, np.ndarray]]) -> dict[str, dict[int, dict]]:
    """{base model: {pretraining seed: {set: per-image correctness}}} of the pretrained checkpoints
    (replicas <name>-p<seed> under their base model; untagged checkpoints as seed 0)."""
    out: dict[str, dict[int, dict]] = {}
    for tags, sets in predictions.items():
        if tags[1] != "pretrained":
            continue
        base = tags[5] if len(tags) > 5 and tags[5] is not None else tags[0]
        seed = int(tags[6]) if len(tags) > 6 and tags[6] is not None else 0
        out.setdefault(base, {})[seed] = dict(sets)
    return out


def exp1_by_seed(predictions: Mapping[tuple, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """One row per (set, pair of models, pretraining seed): acc1 of each and their difference a − b."""
    pre = pretrained_predictions(predictions)
    cols = ["set", "model_a", "model_b", "pretrain_seed", "acc1_a", "acc1_b", "diff", "n_images"]
    rows = []
    models = sorted(pre)
    for ia, a in enumerate(models):
        for b in models[ia + 1:]:
            for seed in sorted(set(pre[a]) & set(pre[b])):
                for name in sorted(set(pre[a][seed]) & set(pre[b][seed])):
                    ca, cb = pre[a][seed][name], pre[b][seed][name]
                    rows.append({"set": name, "model_a": a, "model_b": b, "pretrain_seed": seed,
                                 "acc1_a": float(ca.mean()), "acc1_b": float(cb.mean()),
                                 "diff": float(ca.mean() - cb.mean()), "n_images": len(ca)})
    return pd.DataFrame(rows, columns=cols).sort_values(["set", "model_a", "model_b", "pretrain_seed"],
                                                        ignore_index=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine between two matrices taken as flat vectors (1 = unchanged direction)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def projection_drift(initial: Mapping[str, Mapping[str, np.ndarray]], trained: Mapping[str, Mapping[str, np.ndarray]],
                     replicas: Mapping[str, tuple[str, int]], draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per pretrained checkpoint (`initial` and `trained`: {model: {"image": rows, "text": rows}}) and
    projection: cos_to_init, the relative change ‖W − W0‖/‖W0‖, purity (mean |cos| of the neurons) of the
    initial and the trained matrix, and the random Gaussian matrix's level (random_mean ± random_sd).
    `replicas` maps a model to (base model, pretraining seed)."""
    rows = []
    references: dict[tuple, pd.Series] = {}
    for model in sorted(set(initial) & set(trained)):
        base, pseed = replicas.get(model, (model, 0))
        for projection in ("text", "image"):
            w0, w = np.asarray(initial[model][projection]), np.asarray(trained[model][projection])
            if w0.shape not in references:
                ref = random_reference(w0.shape[0], w0.shape[1], draws=draws, seed=seed).set_index("metric")
                references[w0.shape] = ref.loc[PURITY_METRIC]
            ref = references[w0.shape]
            rows.append({"model": base, "pretraining": model, "pretrain_seed": pseed, "projection": projection,
                         "cos_to_init": cosine(w, w0),
                         "relative_change": float(np.linalg.norm(w - w0) / np.linalg.norm(w0)),
                         "purity_init": float(purity_metrics(w0)[PURITY_METRIC]),
                         "purity_trained": float(purity_metrics(w)[PURITY_METRIC]),
                         "random_mean": float(ref["random_mean"]), "random_sd": float(ref["random_sd"])})
    cols = ["model", "pretraining", "pretrain_seed", "projection", "cos_to_init", "relative_change",
            "purity_init", "purity_trained", "random_mean", "random_sd"]
    return pd.DataFrame(rows, columns=cols)


def exp3_replicates(metrics: pd.DataFrame, purity: pd.DataFrame) -> pd.DataFrame:
    """Per fine-tune (model, strategy, Cs, replicate, pretraining) and quantity (`purity text`, `purity
    image`, `acc1 <set>`): its value, the same replicate's control value and the difference."""
    keys = ["model", "strategy", "cs", "seed"]
    if "pretraining" in metrics.columns:
        keys.append("pretraining")
    parts = []
    p = purity[purity["metric"] == PURITY_METRIC]
    if not p.empty:
        parts.append(p.assign(quantity="purity " + p["projection"])[keys + ["quantity", "value"]])
    a = metrics[metrics["metric"] == "acc1"]
    if not a.empty:
        parts.append(a.assign(quantity="acc1 " + a["set"])[keys + ["quantity", "value"]])
    cols = keys + ["quantity", "value", "control", "diff"]
    if not parts:
        return pd.DataFrame(columns=cols)
    runs = pd.concat(parts, ignore_index=True)
    control = runs[runs["strategy"] == CONTROL_STRATEGY][["model", "seed", "quantity", "value"]]
    out = runs.merge(control.rename(columns={"value": "control"}), on=["model", "seed", "quantity"], how="left")
    out["diff"] = out["value"] - out["control"]
    out["cs"] = out["cs"].astype(float)
    return out[cols].sort_values(["model", "quantity", "strategy", "cs", "seed"], ignore_index=True)


def within_group_table(purity: pd.DataFrame, metrics: pd.DataFrame, pooled: pd.DataFrame | None = None,
                       level: float = 0.95) -> pd.DataFrame:
    """Per (model, set, projection): does purity predict acc1 beyond the treatment? Over the distinct
    fine-tunes, `within_r` is the partial correlation given the treatment group (strategy, Cs; the controls
    one group) and the replicate (its pretraining, swaps and batch order, shared by its runs), with a
    Fisher-z interval (`intervals.within_group_correlation`); `group_only_r` removes the treatment groups
    only (replicate effects left in, so its runs are not independent: no interval); beside them the
    pooled Spearman rho (`pooled`, purity_accuracy_spearman's 'all' rows), which the treatment drives."""
    keys = ["model", "strategy", "cs", "seed"]
    p = purity[purity["metric"] == PURITY_METRIC]
    a = metrics[metrics["metric"] == "acc1"]
    joined = a[keys + ["set", "value"]].merge(
        p[keys + ["projection", "value"]].rename(columns={"value": "purity"}), on=keys
    ).rename(columns={"value": "accuracy"})
    rows = []
    for (model, set_name, projection), g in joined.groupby(["model", "set", "projection"], sort=True):
        groups = (g["strategy"].astype(str) + "|" + g["cs"].astype(float).astype(str)).to_numpy()
        x, y, seeds = g["purity"].to_numpy(), g["accuracy"].to_numpy(), g["seed"].to_numpy()
        r, lo, hi, n, q = within_group_correlation(x, y, groups, seeds, level)
        group_only = within_group_correlation(x, y, groups, level=level)[0]
        if np.isnan(r):
            note = "undefined: accuracy or purity does not vary beyond group and replicate effects"
        else:
            note = f"partial r given {len(set(groups))} groups and {len(set(seeds))} replicates; Fisher z, se 1/sqrt({n - q - 3})"
        rows.append({"model": model, "set": set_name, "projection": projection, "n_runs": n,
                     "n_groups": len(set(groups)), "n_replicates": len(set(seeds)), "within_r": r,
                     "within_ci_low": lo, "within_ci_high": hi, "group_only_r": group_only, "note": note})
    out = pd.DataFrame(rows, columns=["model", "set", "projection", "n_runs", "n_groups", "n_replicates", "within_r",
                                      "within_ci_low", "within_ci_high", "group_only_r", "note"])
    if pooled is not None and not pooled.empty:
        pooled_all = pooled[pooled["strategy"] == "all"][["model", "set", "projection", "rho", "ci_low", "ci_high"]]
        out = out.merge(pooled_all.rename(columns={"rho": "pooled_rho", "ci_low": "pooled_ci_low",
                                                   "ci_high": "pooled_ci_high"}),
                        on=["model", "set", "projection"], how="left")
    return out
