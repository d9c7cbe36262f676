"""Exp 1 and Exp 3 aggregation of the tidy per-checkpoint tables written by workflow_scripts.evaluate.run.

Inputs are long tables: tag columns (model, kind, strategy, cs, seed), a scope column (`set` for
metrics.parquet, `projection` for purity.parquet), then metric, value; per-image top-1 correctness per
checkpoint (predictions.npz); and the swap summary with the effective misalignment of every swapped set.

Exp 3 (fine-tunes; `seed` is the replicate index r, which draws the swaps, the batch order and nothing
else): one row per (model, strategy, Cs, scope, metric), where the Cs = 0 control is its own strategy
(`none`), one run per replicate shared by every swap strategy, never counted twice.
- n, mean, sd, ci_low, ci_high: over replicates, two-sided t interval (`intervals.t_interval`), given
  from MIN_REPLICATES (3) replicates on and cut to the metric's range (METRIC_RANGES).
- diff, diff_ci_low, diff_ci_high, rel_change: the paired difference against the control of the SAME
  replicate (and model, scope, metric), t interval over replicates; rel_change = diff / |control mean|.
- acc1 only: boot_ci_low/high of the level and boot_diff_ci_low/high of the paired difference, percentile
  intervals over the evaluation images resampled with replacement (n_images; the same images for both
  checkpoints; replicates averaged per image).
- text_changed, contradicts_any (and per attribute): the effective misalignment of the strategy's swapped
  sets, mean over replicates (contradictions only where the images' attributes are known).
- Reference levels: `pretrained` (the pretrained checkpoint's value), and for purity `random_mean` /
  `random_sd`, the metric over random Gaussian matrices of the projection's shape (`purity.random_reference`).
Spearman rho between purity and accuracy over DISTINCT runs (each control once), per model, set,
projection and strategy (plus 'all'), with a cluster-bootstrap interval that resamples whole replicates;
no p-value (runs of one replicate share their swaps).
Exp 1: the pretrained models side by side (mean over pretraining seeds when pretrain.seeds adds replicas),
and every pair's acc1 difference with a paired bootstrap interval over the evaluation images and, with
several pretraining seeds, a t interval over them.

    python -m workflow_scripts.report.aggregate --metrics results/eval/**/metrics.parquet \\
        --purity results/eval/**/purity.parquet --predictions results/eval/**/predictions.npz \\
        --misalignment results/misalign/summary.parquet [--histograms ...] --out-dir results/tables
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..common.config import CONTROL_STRATEGY
from ..common.errors import InputError
from ..common.intervals import (
    bootstrap_mean_ci, cluster_bootstrap_spearman, cluster_resolution, t_interval, combined_t_interval,
)
from ..common.io import load_npz, run_cli, setup_logging, write_table
from ..evaluate.purity import random_reference
from . import replicates

log = logging.getLogger(__name__)

TAG_COLUMNS = ("model", "kind", "strategy", "cs", "seed", "base_model", "pretrain_seed", "pretraining")


def read_tables(paths: Sequence[str | Path], required: Sequence[str] = ("metric", "value")) -> pd.DataFrame:
    """Concatenate parquet/CSV tables (naming the file that cannot be read or lacks a required column)."""
    frames = []
    for path in paths:
        try:
            df = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except Exception as exc:
            raise InputError(f"{path}: not a readable table ({exc})") from None
        for col in required:
            if col not in df.columns:
                raise InputError(f"{path}: missing column {col!r}")
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(required))
    return pd.concat(frames, ignore_index=True)


# The possible range of the bounded metrics (accuracies, recalls, mean |cos|, the retrieval rates mAP and
# MRR); t intervals of their means are cut to it, and those of paired differences to its span around 0.
# Also in [0, 1]: every recall at K (R@1, R@5, ...) and every per-set accuracy (<set>_acc1).
METRIC_RANGES = {
    "acc1": (0.0, 1.0), "acc5": (0.0, 1.0), "mean_per_class_recall": (0.0, 1.0), "silhouette": (-1.0, 1.0),
    "avg_abs_cos_sim": (0.0, 1.0), "avg_abs_cos_sim_offdiag": (0.0, 1.0), "median_abs_cos_sim": (0.0, 1.0),
    "max_abs_cos_sim": (0.0, 1.0), "avg_cos_sim": (-1.0, 1.0), "mAP": (0.0, 1.0), "MRR": (0.0, 1.0),
}
UNIT_PREFIXES, UNIT_SUFFIXES = ("R@",), ("_acc1",)


def metric_bounds(metric: str, difference: bool = False) -> tuple[float, float] | None:
    """The range of `metric` (or of a difference of two of its values), None when unbounded/unknown."""
    bounds = METRIC_RANGES.get(metric)
    if bounds is None and (metric.startswith(UNIT_PREFIXES) or metric.endswith(UNIT_SUFFIXES)):
        bounds = (0.0, 1.0)
    if bounds is None or not difference:
        return bounds
    span = bounds[1] - bounds[0]
    return -span, span


def group_keys(df: pd.DataFrame, over: Sequence[str] = ("seed",), value: str = "value") -> list[str]:
    """Every column except the value and those averaged over."""
    return [c for c in df.columns if c != value and c not in over]


# ----------------------------------------------------------------------------- Exp 3


def paired_summary(runs: pd.DataFrame, scope: str, level: float = 0.95) -> pd.DataFrame:
    """Per (model, strategy, cs, scope, metric): level over replicates and paired difference against the
    control run of the same replicate (both with t intervals), and rel_change."""
    keys = ["model", "strategy", "cs", scope, "metric"]
    control = runs[runs["strategy"] == CONTROL_STRATEGY][["model", "seed", scope, "metric", "value"]]
    paired = runs.merge(control.rename(columns={"value": "control"}), on=["model", "seed", scope, "metric"],
                        how="left")
    rows = []
    for key, g in paired.groupby(keys, sort=True, dropna=False):
        metric = key[-1]
        n, mean, sd, lo, hi = t_interval(g["value"].to_numpy(), level, bounds=metric_bounds(metric))
        _, diff, _, dlo, dhi = t_interval((g["value"] - g["control"]).to_numpy(), level,
                                          bounds=metric_bounds(metric, difference=True))
        _, base, *_ = t_interval(g["control"].to_numpy(), level)
        rows.append({**dict(zip(keys, key)), "n": n, "mean": mean, "sd": sd, "ci_low": lo, "ci_high": hi,
                     "diff": diff, "diff_ci_low": dlo, "diff_ci_high": dhi,
                     "rel_change": diff / abs(base) if base else np.nan})
    return pd.DataFrame(rows)


def bootstrap_accuracy(summary: pd.DataFrame, predictions: dict[tuple, dict[str, np.ndarray]],
                       level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Add to the acc1 rows of an Exp 3 metrics summary the bootstrap intervals over evaluation images of
    the level (boot_ci_*) and of the paired difference to the control (boot_diff_ci_*), n_images, and the
    intervals that combine replicate and image noise (combined_ci_*, combined_diff_ci_*:
    `intervals.combined_t_interval`)."""
    out = summary.copy()
    for col in ("n_images", "boot_ci_low", "boot_ci_high", "boot_diff_ci_low", "boot_diff_ci_high",
                "combined_ci_low", "combined_ci_high", "combined_diff_ci_low", "combined_diff_ci_high"):
        out[col] = np.nan
    by_run: dict[tuple, dict[int, dict[str, np.ndarray]]] = {}
    for tags, sets in predictions.items():
        if tags[1] == "finetune":
            by_run.setdefault((tags[0], tags[2], float(tags[3])), {})[int(tags[4])] = sets
    controls = {m: reps for (m, s, _), reps in by_run.items() if s == CONTROL_STRATEGY}   # model -> replicates
    for i, row in out[out["metric"] == "acc1"].iterrows():
        runs = by_run.get((row["model"], row["strategy"], float(row["cs"])), {})
        control = controls.get(row["model"], {})
        reps = sorted(r for r in runs if row["set"] in runs[r])
        if not reps:
            continue
        per_replicate = np.stack([runs[r][row["set"]].astype(float) for r in reps])
        out.loc[i, ["boot_ci_low", "boot_ci_high"]] = bootstrap_mean_ci(per_replicate.mean(axis=0), level, seed=seed)
        out.loc[i, ["combined_ci_low", "combined_ci_high"]] = combined_t_interval(per_replicate, level,
                                                                                  bounds=metric_bounds("acc1"))
        out.loc[i, "n_images"] = per_replicate.shape[1]
        paired = [r for r in reps if r in control and row["set"] in control[r]]
        if paired:
            diffs = np.stack([runs[r][row["set"]].astype(float) - control[r][row["set"]] for r in paired])
            out.loc[i, ["boot_diff_ci_low", "boot_diff_ci_high"]] = bootstrap_mean_ci(diffs.mean(axis=0), level,
                                                                                      seed=seed)
            out.loc[i, ["combined_diff_ci_low", "combined_diff_ci_high"]] = combined_t_interval(
                diffs, level, bounds=metric_bounds("acc1", difference=True))
    return out


def effective_columns(misalignment: pd.DataFrame | None) -> pd.DataFrame:
    """Mean effective misalignment over replicates per (strategy, cs); the control gets the original
    captions' own rates (the `none` row of the swap summary)."""
    if misalignment is None or misalignment.empty:
        return pd.DataFrame(columns=["strategy", "cs"])
    cols = [c for c in misalignment.columns if c == "text_changed" or c.startswith("contradicts_")]
    table = misalignment.groupby(["strategy", "cs"], sort=True)[cols].mean().reset_index()
    table["cs"] = table["cs"].astype(float)
    return table


def pretraining_uses(finetunes: pd.DataFrame) -> pd.DataFrame:
    """(model, seed, pretraining): the pretrained checkpoint each fine-tune replicate starts from (the
    `pretraining` tag; the model itself for tables without it). Averages over these rows weight each
    pretraining by its number of replicates, as the replicate means do."""
    if "pretraining" in finetunes.columns:
        uses = finetunes[["model", "seed", "pretraining"]].copy()
        uses["pretraining"] = uses["pretraining"].fillna(uses["model"])
    else:
        uses = finetunes[["model", "seed"]].assign(pretraining=finetunes["model"])
    return uses.drop_duplicates(ignore_index=True)


def pretrained_levels(df: pd.DataFrame, uses: pd.DataFrame, scope: str) -> pd.DataFrame:
    """Per (fine-tuned model, scope, metric): the pretrained value averaged over the replicates' pretrainings
    (`uses`), as `pretrained`."""
    pre = _kind(df, "pretrained")
    if pre.empty or uses.empty:
        return pd.DataFrame(columns=["model", scope, "metric", "pretrained"])
    pre = pre.rename(columns={"model": "pretraining"})
    return mean_over_pretrainings(uses, pre, [scope, "metric"], "value").rename(columns={"value": "pretrained"})


def mean_over_pretrainings(uses: pd.DataFrame, table: pd.DataFrame, keys: Sequence[str], column: str) -> pd.DataFrame:
    """Per (fine-tuned model, *keys): `column` of `table` (rows per `pretraining`) averaged over the
    replicates' pretrainings in `uses`."""
    joined = uses.merge(table[["pretraining", *keys, column]], on="pretraining")
    return joined.groupby(["model", *keys], sort=True)[column].mean().reset_index()


def purity_references(purity: pd.DataFrame, draws: int = 200, seed: int = 0,
                      uses: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (model, projection, metric): the pretrained checkpoint's value (the mean over the pretrainings
    in `uses` when given) and the random-matrix level of the projection's shape (mean and sd over `draws`
    Gaussian matrices)."""
    pre = _kind(purity, "pretrained")
    if pre.empty:
        return pd.DataFrame(columns=["model", "projection", "metric", "pretrained"])
    if uses is not None:
        pre = pretrained_levels(purity, uses, "projection").rename(columns={"pretrained": "value"})
    refs = []
    for (model, projection), g in pre.groupby(["model", "projection"], sort=True):
        shape = g.set_index("metric")["value"]
        random = random_reference(int(shape["n_neurons"]), int(shape["in_dim"]), draws=draws, seed=seed)
        table = g[["metric", "value"]].rename(columns={"value": "pretrained"}).merge(random, on="metric", how="left")
        refs.append(table.assign(model=model, projection=projection))
    return pd.concat(refs, ignore_index=True)


def spearman_note(runs: pd.DataFrame, rho: float, level: float) -> str:
    """What the interval column of a Spearman row says: why there is no rho or no interval, or how the
    interval was made."""
    if np.isnan(rho):
        constant = [c for c in ("accuracy", "purity") if runs[c].nunique() <= 1]
        return f"undefined: {' and '.join(constant) or 'a variable'} constant over these runs"
    return cluster_resolution(runs["seed"].nunique(), level) or "cluster bootstrap over replicates"


def purity_accuracy_spearman(purity: pd.DataFrame, metrics: pd.DataFrame, purity_metric: str = "avg_abs_cos_sim",
                             projection: str = "text", accuracy_metric: str = "acc1",
                             level: float = 0.95) -> pd.DataFrame:
    """Spearman rho between purity and accuracy over distinct fine-tunes (each control once), per model and
    set, for each swap strategy (with the controls) and pooled ('all'); the interval resamples replicates."""
    keys = ["model", "strategy", "cs", "seed"]
    p = purity[(purity["metric"] == purity_metric) & (purity["projection"] == projection)]
    a = metrics[metrics["metric"] == accuracy_metric]
    joined = a[keys + ["set", "value"]].merge(p[keys + ["value"]].rename(columns={"value": "purity"}),
                                               on=keys, how="inner").rename(columns={"value": "accuracy"})
    cols = ["model", "set", "strategy", "purity_metric", "projection", "accuracy_metric", "n_runs",
            "n_replicates", "rho", "ci_low", "ci_high", "interval"]
    rows = []
    for (model, set_name), group in joined.groupby(["model", "set"], sort=True):
        swaps = sorted(s for s in group["strategy"].unique() if s != CONTROL_STRATEGY)
        parts = [(s, group[group["strategy"].isin([s, CONTROL_STRATEGY])]) for s in swaps] + [("all", group)]
        for strategy, g in parts:
            rho, lo, hi = cluster_bootstrap_spearman(g["purity"].to_numpy(), g["accuracy"].to_numpy(),
                                                     g["seed"].to_numpy(), level)
            rows.append({"model": model, "set": set_name, "strategy": strategy, "purity_metric": purity_metric,
                         "projection": projection, "accuracy_metric": accuracy_metric, "n_runs": len(g),
                         "n_replicates": g["seed"].nunique(), "rho": rho, "ci_low": lo, "ci_high": hi,
                         "interval": spearman_note(g, rho, level)})
    return pd.DataFrame(rows, columns=cols)


def exp3_tables(metrics: pd.DataFrame, purity: pd.DataFrame, predictions: dict | None = None,
                misalignment: pd.DataFrame | None = None, level: float = 0.95,
                drift: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """exp3_metrics, exp3_purity (see the module docstring), exp3_spearman and exp3_effective (purity of
    the text projection and every set's acc1 against the effective misalignment, one row per run group)."""
    m, p = _kind(metrics, "finetune"), _kind(purity, "finetune")
    for df in (m, p):
        if not df.empty and not (df["strategy"] == CONTROL_STRATEGY).any():
            raise InputError(f"Exp 3: no Cs = 0 control runs (strategy {CONTROL_STRATEGY!r}) among the fine-tunes")
    effective = effective_columns(misalignment)
    uses = pretraining_uses(m)
    metrics_summary = bootstrap_accuracy(paired_summary(m, "set", level), predictions or {}, level)
    pretrained = pretrained_levels(metrics, uses, "set")
    if not pretrained.empty:
        metrics_summary = metrics_summary.merge(pretrained, on=["model", "set", "metric"], how="left")
    purity_summary = paired_summary(p, "projection", level).merge(purity_references(purity, uses=uses),
                                                                 on=["model", "projection", "metric"], how="left")
    if drift is not None and not drift.empty:   # the initialisation's purity, mean over the same pretrainings
        init = mean_over_pretrainings(uses, drift, ["projection"], "purity_init").assign(
            metric=replicates.PURITY_METRIC)
        purity_summary = purity_summary.merge(init, on=["model", "projection", "metric"], how="left")
    tables = {"exp3_metrics": metrics_summary, "exp3_purity": purity_summary}
    for name in tables:
        tables[name]["cs"] = tables[name]["cs"].astype(float)
        if not effective.empty:
            tables[name] = tables[name].merge(effective, on=["strategy", "cs"], how="left")
    tables["exp3_spearman"] = pd.concat([purity_accuracy_spearman(p, m, projection=proj, level=level)
                                         for proj in ("text", "image")], ignore_index=True)
    tables["exp3_within_groups"] = replicates.within_group_table(p, m, tables["exp3_spearman"], level)
    tables["exp3_replicates"] = replicates.exp3_replicates(m, p)
    tables["exp3_effective"] = pd.concat([
        tables["exp3_purity"][(tables["exp3_purity"]["metric"] == "avg_abs_cos_sim")]
        .assign(quantity=lambda d: "purity " + d["projection"]).drop(columns=["projection"]),
        tables["exp3_metrics"][tables["exp3_metrics"]["metric"] == "acc1"]
        .assign(quantity=lambda d: "acc1 " + d["set"]).drop(columns=["set"]),
    ], ignore_index=True)
    return tables


# ----------------------------------------------------------------------------- Exp 1


def exp1_table(metrics: pd.DataFrame, purity: pd.DataFrame, eval_metrics: Sequence[str] = ("acc1", "silhouette"),
               purity_metric: str = "avg_abs_cos_sim") -> pd.DataFrame:
    """One row per (set, model) of the pretrained checkpoints: acc1, silhouette, purity_text, purity_image,
    each the mean over the model's pretraining seeds (n_seeds; replicas <name>-p<seed> count as <name>)."""
    m, p = _pretrained_by_base(metrics), _pretrained_by_base(purity)
    if m.empty:
        return pd.DataFrame(columns=["set", "model", *eval_metrics])
    wide = (m[m["metric"].isin(eval_metrics)].pivot_table(index=["set", "model"], columns="metric",
                                                          values="value", aggfunc="mean", dropna=False)
            .reindex(columns=list(eval_metrics)).reset_index())
    p = p[p["metric"] == purity_metric]
    if p.empty:
        pur = pd.DataFrame({"model": pd.Series(dtype=object)})
    else:
        pur = (p.pivot_table(index="model", columns="projection", values="value", aggfunc="mean")
               .add_prefix("purity_").reset_index())
    out = wide.merge(pur, on="model", how="left")
    out = out.merge(m.groupby("model")["pretrain_seed"].nunique().rename("n_seeds").reset_index(), on="model")
    out.columns.name = None
    return out.sort_values(["set", "model"], ignore_index=True)


def _pretrained_by_base(df: pd.DataFrame) -> pd.DataFrame:
    """Pretrained rows with `model` = the replicated model, `pretraining` = the checkpoint's own model name
    and `pretrain_seed` (0 where untagged)."""
    out = _kind(df, "pretrained").copy()
    out["pretraining"] = out["model"]
    if "base_model" in out.columns:
        out["model"] = out["base_model"].fillna(out["model"])
    out["pretrain_seed"] = out["pretrain_seed"].fillna(0) if "pretrain_seed" in out.columns else 0
    return out.drop(columns=[c for c in ("base_model",) if c in out.columns])


def exp1_differences(predictions: dict[tuple, dict[str, np.ndarray]], level: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:
    """acc1(a) − acc1(b) for every pair of pretrained models per set: the mean over their common pretraining
    seeds, with a paired bootstrap interval over the evaluation images (both models scored on the same
    resampled images; per image, the difference averaged over seeds) and, with >= MIN_REPLICATES seeds, a t
    interval over the seeds' differences and an interval combining seed and image noise (combined_ci_*,
    `intervals.combined_t_interval`)."""
    pre = replicates.pretrained_predictions(predictions)
    cols = ["set", "model_a", "model_b", "acc1_a", "acc1_b", "diff", "ci_low", "ci_high", "n_images", "n_seeds",
            "seed_ci_low", "seed_ci_high", "combined_ci_low", "combined_ci_high"]
    rows = []
    models = sorted(pre)
    for ia, a in enumerate(models):
        for b in models[ia + 1:]:
            seeds = sorted(set(pre[a]) & set(pre[b]))
            names = sorted(set.intersection(*(set(pre[m][s]) for m in (a, b) for s in seeds))) if seeds else []
            for name in names:
                per_seed = np.stack([pre[a][s][name].astype(float) - pre[b][s][name] for s in seeds])
                d = per_seed.mean(axis=0)
                lo, hi = bootstrap_mean_ci(d, level, seed=seed)
                _, _, _, slo, shi = t_interval(per_seed.mean(axis=1), level,
                                               bounds=metric_bounds("acc1", difference=True))
                clo, chi = combined_t_interval(per_seed, level, bounds=metric_bounds("acc1", difference=True))
                rows.append({"set": name, "model_a": a, "model_b": b,
                             "acc1_a": float(np.mean([pre[a][s][name].mean() for s in seeds])),
                             "acc1_b": float(np.mean([pre[b][s][name].mean() for s in seeds])),
                             "diff": float(d.mean()), "ci_low": lo, "ci_high": hi, "n_images": len(d),
                             "n_seeds": len(seeds), "seed_ci_low": slo, "seed_ci_high": shi,
                             "combined_ci_low": clo, "combined_ci_high": chi})
    return pd.DataFrame(rows, columns=cols)


def mean_histograms(hist: pd.DataFrame) -> pd.DataFrame:
    """Mean bin counts over seeds per (model, strategy, cs, projection, bin)."""
    by = group_keys(hist, over=("seed", "pretraining"), value="count")
    return hist.groupby(by, sort=True, dropna=False)["count"].mean().reset_index()


def read_predictions(paths: Sequence[str]) -> dict[tuple, dict[str, np.ndarray]]:
    """{(model, kind, strategy, cs, seed): {set: per-image top-1 correctness}} from predictions.npz files."""
    import json

    from ..evaluate.run import CORRECT

    out = {}
    for path in paths:
        data = load_npz(path)
        if "tags" not in data:
            raise InputError(f"{path}: predictions without their tags")
        tags = json.loads(str(data["tags"]))
        key = tuple(tags.get(k) for k in TAG_COLUMNS)
        out[key] = {k[len(CORRECT):]: v.astype(bool) for k, v in data.items() if k.startswith(CORRECT)}
    return out


def _kind(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Rows of one checkpoint kind ('pretrained' / 'finetune'); tables without `kind` infer it from `cs`."""
    if "kind" in df.columns:
        return df[df["kind"] == kind].dropna(axis=1, how="all")
    if kind == "finetune":
        return df[df["cs"].notna()] if "cs" in df.columns else df.iloc[0:0]
    return df[df["cs"].isna()].dropna(axis=1, how="all") if "cs" in df.columns else df


def _drop_tags(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in ("kind",) if c in df.columns])


def projection_drift(initial_paths: Sequence[str], trained_paths: Sequence[str], metrics: pd.DataFrame) -> pd.DataFrame:
    """replicates.projection_drift over files named by model (the directory holding each file); a
    model's base model and pretraining seed come from its pretrained rows' tags in `metrics`."""
    from ..evaluate.run import load_projections

    def by_model(paths: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        return {Path(p).parent.name: dict(zip(("image", "text"), load_projections(p))) for p in paths}

    pre = _pretrained_by_base(metrics)[["pretraining", "model", "pretrain_seed"]].drop_duplicates()
    tags = {row.pretraining: (row.model, int(row.pretrain_seed)) for row in pre.itertuples()}
    return replicates.projection_drift(by_model(initial_paths), by_model(trained_paths), tags)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Aggregate evaluation tables (Exp 1, Exp 3).")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.parquet of every checkpoint")
    parser.add_argument("--purity", nargs="+", required=True, help="purity.parquet of every checkpoint")
    parser.add_argument("--histograms", nargs="*", default=[], help="histogram tables (tags, projection, bin_left, bin_right, count)")
    parser.add_argument("--predictions", nargs="*", default=[], help="predictions.npz of every checkpoint")
    parser.add_argument("--misalignment", help="swap summary with the effective misalignment (.parquet)")
    parser.add_argument("--eval-features", nargs="*", default=[],
                        help="evaluation features of every model (results/eval/features/<model>.npz): their "
                             "per-set settings (templates and their source, class names, preprocessing)")
    parser.add_argument("--initial-projections", nargs="*", default=[],
                        help="the projections at initialisation of every pretrained model "
                             "(results/pretrain/<model>/initial_projections.npz)")
    parser.add_argument("--pretrained-projections", nargs="*", default=[],
                        help="the same models' trained projections (results/eval/pretrained/<model>/projections.npz)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of every interval")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    metrics, purity = read_tables(args.metrics), read_tables(args.purity)
    predictions = read_predictions(args.predictions)
    misalignment = read_tables([args.misalignment], required=("strategy", "cs")) if args.misalignment else None
    drift = projection_drift(args.initial_projections, args.pretrained_projections, metrics)
    tables = exp3_tables(metrics, purity, predictions, misalignment, args.level, drift)
    tables["exp1"] = exp1_table(metrics, purity)
    tables["exp1_differences"] = exp1_differences(predictions, args.level)
    tables["exp1_by_seed"] = replicates.exp1_by_seed(predictions)
    tables["exp1_projections"] = drift
    if args.eval_features:
        from ..evaluate.run import eval_settings_table

        tables["evaluation_settings"] = pd.concat(
            [eval_settings_table(load_npz(path)).assign(model=Path(path).stem) for path in args.eval_features],
            ignore_index=True)
    if args.histograms:
        hist = read_tables(args.histograms, required=("projection", "bin_left", "count"))
        tables["exp3_histograms"] = mean_histograms(_drop_tags(hist))
    out = Path(args.out_dir)
    for name, df in tables.items():
        log.info("%s: %d rows", name, len(df))
        df = with_note(df, EMPTY_REASONS.get(name, NO_ROWS))
        write_table(df, out / f"{name}.parquet")
        write_table(df, out / f"{name}.csv")
    return 0


# Why a table can have no rows: written as one row whose `note` says why, so that the report says it.
NO_ROWS = "no rows: this config has none of the runs this table is made of"
EMPTY_REASONS = {
    "exp1_projections": "no initial projections: only models pretrained in the DAG (source: embedded) record their "
                        "initialisation; imported checkpoints (source: checkpoint) have none",
}


def with_note(table: pd.DataFrame, reason: str) -> pd.DataFrame:
    """The table itself, or, when it has no rows, a one-row table whose `note` says why."""
    return table if len(table) else pd.DataFrame({"note": [reason]})


if __name__ == "__main__":
    run_cli(main)
