"""Study tables of the sparse-concept stage, from every model's sweep (sparse.evaluate) and the
per-checkpoint purity tables of the evaluation stage.

- sparse_sweep: per (model, kind, strategy, Cs, set, modality, lambda) the mean over replicates with a 95 % t
  interval (n = replicates) of sparse and dense acc1 (evaluation sets, modality image), sparse and dense
  retrieval R@1 and the image-caption concept agreement (the pairs set, modalities image and text), mean l0
  and mean cos(z_hat, z);
- sparse_memory: bytes of each set's embeddings dense (float32) against sparse (CSR), per modality and lambda;
- per run and evaluation set (the image rows with a zero-shot accuracy; not the pairs), numbers read off its
  sweep by linear interpolation between neighbouring lambdas: acc1 at mean
  l0 = target_l0 (NaN outside the sweep's l0 range), the loss against its own dense acc1 there, and the
  mean l0 at which acc1_sparse first reaches target_relative_accuracy x acc1_dense (NaN when the sweep does
  not reach it; flagged l0_censored when the sparsest point already does: an upper bound);
- sparse_vs_purity: those numbers per (model, strategy, Cs) over replicates (t intervals), their paired
  differences to the same replicate's Cs = 0 control, the projections' purity (mean |cos|, as Exp 3), the
  swap set's effective misalignment (lines contradicting their image, misalign/summary.parquet), and
  Spearman rho of each against purity, Cs and effective misalignment over all fine-tunes of a model with a
  replicate-cluster bootstrap interval (intervals.cluster_bootstrap_spearman; no p-value);
- sparse_concepts: the top concepts per class and per example image at sparse.example_lambda.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..common.config import CONTROL_STRATEGY
from ..common.intervals import cluster_bootstrap_spearman, t_interval

RUN_KEYS = ["model", "kind", "strategy", "cs"]
PURITY_METRIC = "avg_abs_cos_sim"


SWEEP_VALUES = ["acc1_sparse", "acc1_dense", "r1_sparse", "r1_dense", "pair_weight_cos", "pair_jaccard", "l0_mean",
                "cos_mean", "bytes_sparse"]


def with_run_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Pretrained rows get strategy 'pretrained', Cs NaN and seed 0, so that every row has the run keys; rows
    without a modality (tables written before captions were decomposed) are image rows."""
    df = df.copy()
    for col, fill in (("strategy", "pretrained"), ("cs", np.nan), ("seed", 0), ("modality", "image")):
        df[col] = df[col].fillna(fill) if col in df.columns else fill
    return df


def pretrained_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The pretrained checkpoints' rows (with the run columns)."""
    df = with_run_columns(df)
    return df[df["kind"] == "pretrained"]


def summarise(df: pd.DataFrame, keys: list[str], values: list[str], level: float = 0.95) -> pd.DataFrame:
    """Per group: n (rows) and, per value column, mean, ci_low, ci_high (t interval over the group's non-NaN
    rows) and their count <value>_n."""
    rows = []
    values = [v for v in values if v in df.columns]
    for key, g in df.groupby(keys, dropna=False, sort=True):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for v in values:
            n, mean, _, lo, hi = t_interval(g[v].to_numpy(float), level)
            row.update({f"{v}": mean, f"{v}_ci_low": lo, f"{v}_ci_high": hi, f"{v}_n": n})
        row["n"] = len(g)
        rows.append(row)
    return pd.DataFrame(rows)


def interpolate_at(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """y at x = target on the piecewise-linear curve through the points sorted by x (NaN outside)."""
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    if len(x) == 0 or target < x[0] or target > x[-1]:
        return float("nan")
    return float(np.interp(target, x, y))


def first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """The smallest x (along the curve sorted by x, linear between points) where y first reaches target."""
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0:
                return float(x[0])
            return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return float("nan")


def run_summary(sweep: pd.DataFrame, target_l0: float, relative: float) -> pd.DataFrame:
    """Per run and evaluation set: acc1 at mean l0 = target_l0, l0 at relative x dense accuracy, dense acc1
    (rows without a zero-shot accuracy, the image-caption pairs, are not read off)."""
    rows = []
    if "acc1_sparse" in sweep.columns:
        sweep = sweep[sweep["acc1_sparse"].notna()]
    for key, g in sweep.groupby(RUN_KEYS + ["seed", "set"], dropna=False, sort=True):
        dense = float(g["acc1_dense"].iloc[0])
        l0 = first_crossing(g["l0_mean"], g["acc1_sparse"], relative * dense)
        at_l0 = interpolate_at(g["l0_mean"], g["acc1_sparse"], target_l0)
        rows.append({**dict(zip(RUN_KEYS + ["seed", "set"], key)), "acc1_dense": dense,
                     "acc1_at_l0": at_l0, "acc1_loss_at_l0": dense - at_l0,
                     "l0_at_relative_acc": l0,
                     # the sparsest point of the sweep already reaches the target: l0 is an upper bound
                     "l0_censored": bool(l0 == g["l0_mean"].min())})
    return pd.DataFrame(rows)


def purity_per_run(purity: pd.DataFrame, metric: str = PURITY_METRIC) -> pd.DataFrame:
    """Per run: the text and image projections' purity metric (columns purity_text, purity_image)."""
    p = with_run_columns(purity)
    p = p[p["metric"] == metric]
    wide = p.pivot_table(index=RUN_KEYS + ["seed"], columns="projection", values="value", dropna=False)
    wide.columns = [f"purity_{c}" for c in wide.columns]
    return wide.reset_index()


def effective_per_run(runs: pd.DataFrame, misalignment: pd.DataFrame | None) -> pd.DataFrame:
    """Runs with their swap set's effective misalignment (text_changed, contradicts_any) from the swap summary:
    by (strategy, Cs, replicate); the control (one row, any replicate) by (strategy, Cs)."""
    cols = ["text_changed", "contradicts_any"]
    if misalignment is None or misalignment.empty or not set(cols) <= set(misalignment.columns):
        return runs
    m = misalignment[["strategy", "cs", "seed"] + cols].astype({"cs": float})
    out = runs.merge(m, on=["strategy", "cs", "seed"], how="left")
    means = m.groupby(["strategy", "cs"])[cols].mean()
    key = pd.MultiIndex.from_frame(out[["strategy", "cs"]])
    for c in cols:
        out[c] = out[c].fillna(pd.Series(means[c].reindex(key).to_numpy(), index=out.index))
    return out


def versus_purity(runs: pd.DataFrame, level: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per (model, strategy, Cs, set) summary with paired differences to the control, Spearman table)."""
    ft = runs[runs["kind"] == "finetune"].copy()
    if ft.empty:
        return pd.DataFrame(), pd.DataFrame()
    values = ["acc1_at_l0", "acc1_loss_at_l0", "l0_at_relative_acc", "acc1_dense", "purity_text", "purity_image"]
    effective = [c for c in ("contradicts_any",) if c in ft.columns]
    values += effective
    paired = ["acc1_at_l0", "acc1_loss_at_l0", "l0_at_relative_acc"]
    control = ft[ft["strategy"] == CONTROL_STRATEGY].set_index(["model", "seed", "set"])
    for v in paired:
        ref = control[v].reindex(pd.MultiIndex.from_frame(ft[["model", "seed", "set"]])).to_numpy()
        ft[f"{v}_minus_control"] = ft[v].to_numpy() - ref
    table = summarise(ft, ["model", "strategy", "cs", "set"],
                      values + [f"{v}_minus_control" for v in paired], level)
    if "l0_censored" in ft.columns:
        censored = ft.groupby(["model", "strategy", "cs", "set"], sort=True)["l0_censored"].sum().rename("n_l0_censored")
        table = table.merge(censored.reset_index(), on=["model", "strategy", "cs", "set"], how="left")
    rows = []
    for (model, name), g in ft.groupby(["model", "set"], sort=True):
        for y in paired:
            for x in ["purity_text", "purity_image", "cs"] + effective:
                rho, lo, hi = cluster_bootstrap_spearman(g[x].to_numpy(float), g[y].to_numpy(float),
                                                         g["seed"].to_numpy(), level)
                rows.append({"model": model, "set": name, "x": x, "y": y, "rho": rho, "ci_low": lo, "ci_high": hi,
                             "n_runs": int(g[[x, y]].notna().all(axis=1).sum()), "n_replicates": g["seed"].nunique()})
    return table, pd.DataFrame(rows)


def memory_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Bytes dense against sparse per (model, kind, strategy, Cs, set, modality, lambda), mean over replicates."""
    keys = RUN_KEYS + ["set", "modality", "lambda"]
    sweep = with_run_columns(sweep)
    g = sweep.groupby(keys, dropna=False, sort=True)
    out = g.agg(n=("seed", "nunique"), n_images=("n_images", "first"), l0_mean=("l0_mean", "mean"),
                bytes_dense=("bytes_dense", "mean"), bytes_sparse=("bytes_sparse", "mean")).reset_index()
    out["sparse_fraction"] = out["bytes_sparse"] / out["bytes_dense"]
    return out


def concept_table(concepts: pd.DataFrame, captions: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per class, example image or example pair member (scope 'pair', modality image or text) of the
    pretrained models: 'concept (weight)' strings by rank; pair rows get their caption from `captions`
    (set name -> the pairs' captions in order) when given."""
    c = pretrained_rows(concepts)
    if c.empty:
        return pd.DataFrame()
    keys = ["model", "set", "modality", "lambda", "scope", "class", "image"]
    keys += ["predicted"] if "predicted" in c else []
    c = c.fillna({"predicted": ""}) if "predicted" in c else c
    out = (c.sort_values("rank").groupby(keys, sort=True, dropna=False)
           .apply(lambda g: ", ".join(f"{r.concept} ({r.weight:.2f})" for r in g.itertuples()), include_groups=False)
           .rename("top_concepts").reset_index())
    if captions:
        pair = out["scope"] == "pair"
        out["caption"] = [captions.get(name, [])[i] if p and 0 <= i < len(captions.get(name, [])) else ""
                          for p, name, i in zip(pair, out["set"], out["image"].astype(int))]
    return out
