"""Exp 3 and Exp 1 aggregation of the tidy per-checkpoint tables written by workflow_scripts.evaluate.

Inputs are long tables: tag columns (model, kind, strategy, cs, seed), a scope column (`set` for
metrics.parquet, `projection` for purity.parquet), then metric, value. Nothing here depends on a
column layout beyond `seed`, `cs`, `metric`, `value`: the group keys are "every other column".

- mean_ci: mean over seeds with a two-sided t interval, mean ± t_{(1+level)/2, n−1} · sd / √n
  (sd with ddof=1); NaN for n < 2. Seeds are few (3 by default), hence t rather than normal.
- relative_change: (mean − mean at Cs = 0) / |mean at Cs = 0| against the Cs = 0 row of the SAME
  strategy (and model, set, metric...), never against the pretrained checkpoint.
- purity_accuracy_spearman: Spearman rho (scipy) between a purity metric and an accuracy metric over
  the individual fine-tuned checkpoints (one point per strategy, Cs and seed), per model and set,
  for each strategy and pooled ('all').
- exp1_table: pretrained models side by side per set (acc1, silhouette, text/image purity).

    python -m workflow_scripts.aggregate --metrics results/eval/**/metrics.parquet \\
        --purity results/eval/**/purity.parquet [--histograms ...] --out-dir results/eval/summary
writes exp3_metrics, exp3_purity, exp3_spearman, exp1 (and exp3_histograms) as .parquet and .csv.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import InputError
from .io import run_cli, setup_logging, write_table

log = logging.getLogger(__name__)

SUMMARY_STATS = ["n", "mean", "sd", "sem", "ci_low", "ci_high"]
TAG_COLUMNS = ("model", "kind", "strategy", "cs", "seed")


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


def group_keys(df: pd.DataFrame, over: Sequence[str] = ("seed",), value: str = "value") -> list[str]:
    """Every column except the value and those averaged over."""
    return [c for c in df.columns if c != value and c not in over]


def mean_ci(df: pd.DataFrame, by: Sequence[str] | None = None, value: str = "value",
            level: float = 0.95) -> pd.DataFrame:
    """n (non-NaN values), mean, sd, sem and the t-interval [ci_low, ci_high] per group `by`
    (default: every column except `seed` and `value`)."""
    from scipy import stats

    by = list(by) if by is not None else group_keys(df, value=value)
    if df.empty:
        return pd.DataFrame(columns=by + SUMMARY_STATS)
    g = df.groupby(by, sort=True, dropna=False)[value]
    out = g.agg(n="count", mean="mean", sd="std").reset_index()
    n = out["n"].to_numpy(dtype=float)
    sem = out["sd"].to_numpy(dtype=float) / np.sqrt(n)
    with np.errstate(invalid="ignore"):
        half = np.where(n >= 2, stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sem, np.nan)
    out["sem"] = np.where(n >= 2, sem, np.nan)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    return out


def relative_change(summary: pd.DataFrame, cs: str = "cs", value: str = "mean",
                    baseline_cs: float = 0.0) -> pd.DataFrame:
    """Add `baseline`, `change` (value − baseline) and `rel_change` ((value − baseline) / |baseline|), the
    baseline being the row with Cs = baseline_cs and otherwise the same keys (same strategy)."""
    if cs not in summary.columns:
        raise InputError(f"relative_change: no {cs!r} column")
    stat_cols = set(SUMMARY_STATS) | {value, "baseline", "change", "rel_change"}
    keys = [c for c in summary.columns if c != cs and c not in stat_cols]
    out = summary.copy()
    if out.empty:
        return out.assign(baseline=[], change=[], rel_change=[])
    is_base = np.isclose(out[cs].astype(float), baseline_cs)
    base = out.loc[is_base, keys + [value]].rename(columns={value: "baseline"})
    if base.duplicated(keys).any():
        raise InputError(f"relative_change: several Cs = {baseline_cs} rows for the same {keys}")
    out = out.merge(base, on=keys, how="left", sort=False) if keys else out.assign(baseline=base["baseline"].iloc[0])
    missing = out["baseline"].isna() & out[value].notna()
    if missing.any():
        example = out.loc[missing, keys].iloc[0].to_dict()
        raise InputError(f"relative_change: no Cs = {baseline_cs} run for {example}")
    out["change"] = out[value] - out["baseline"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_change"] = np.where(out["baseline"] != 0, out["change"] / out["baseline"].abs(), np.nan)
    return out


def purity_accuracy_spearman(purity: pd.DataFrame, metrics: pd.DataFrame, purity_metric: str = "avg_abs_cos_sim",
                             projection: str = "text", accuracy_metric: str = "acc1",
                             keys: Sequence[str] = ("model", "strategy", "cs", "seed")) -> pd.DataFrame:
    """Spearman rho and p-value between purity and accuracy over fine-tuned checkpoints, per model and
    set, for each strategy and for all strategies pooled (strategy = 'all')."""
    from scipy import stats

    keys = [k for k in keys if k in purity.columns and k in metrics.columns]
    p = purity[(purity["metric"] == purity_metric) & (purity["projection"] == projection)]
    a = metrics[metrics["metric"] == accuracy_metric]
    joined = a[keys + ["set", "value"]].merge(p[keys + ["value"]].rename(columns={"value": "purity"}),
                                               on=keys, how="inner").rename(columns={"value": "accuracy"})
    cols = ["model", "set", "strategy", "purity_metric", "projection", "accuracy_metric", "n", "rho", "p_value"]
    rows = []
    for (model, set_name), group in joined.groupby(["model", "set"], sort=True):
        parts = [(s, g) for s, g in group.groupby("strategy", sort=True)] + [("all", group)]
        for strategy, g in parts:
            ok = g[["purity", "accuracy"]].dropna()
            rho, pval = (stats.spearmanr(ok["purity"], ok["accuracy"]) if len(ok) >= 3
                         else (np.nan, np.nan))
            rows.append({"model": model, "set": set_name, "strategy": strategy, "purity_metric": purity_metric,
                         "projection": projection, "accuracy_metric": accuracy_metric, "n": len(ok),
                         "rho": float(rho), "p_value": float(pval)})
    return pd.DataFrame(rows, columns=cols)


def exp1_table(metrics: pd.DataFrame, purity: pd.DataFrame, eval_metrics: Sequence[str] = ("acc1", "silhouette"),
               purity_metric: str = "avg_abs_cos_sim") -> pd.DataFrame:
    """One row per (set, model) of the pretrained checkpoints: acc1, silhouette, purity_text, purity_image."""
    m = _kind(metrics, "pretrained")
    p = _kind(purity, "pretrained")
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
    out.columns.name = None
    return out.sort_values(["set", "model"], ignore_index=True)


def mean_histograms(hist: pd.DataFrame) -> pd.DataFrame:
    """Mean bin counts over seeds per (model, strategy, cs, projection, bin)."""
    by = group_keys(hist, value="count")
    return hist.groupby(by, sort=True, dropna=False)["count"].mean().reset_index()


def exp3_tables(metrics: pd.DataFrame, purity: pd.DataFrame, level: float = 0.95) -> dict[str, pd.DataFrame]:
    """Fine-tuned checkpoints only: mean/CI over seeds plus relative change for metrics and purity, and
    Spearman of acc1 against avg_abs_cos_sim of the text and of the image projection."""
    m, p = _kind(metrics, "finetune"), _kind(purity, "finetune")
    return {
        "exp3_metrics": relative_change(mean_ci(_drop_tags(m), level=level)),
        "exp3_purity": relative_change(mean_ci(_drop_tags(p), level=level)),
        "exp3_spearman": pd.concat([purity_accuracy_spearman(p, m, projection=proj) for proj in ("text", "image")],
                                   ignore_index=True),
    }


def _kind(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Rows of one checkpoint kind ('pretrained' / 'finetune'); tables without `kind` infer it from `cs`."""
    if "kind" in df.columns:
        return df[df["kind"] == kind].dropna(axis=1, how="all")
    if kind == "finetune":
        return df[df["cs"].notna()] if "cs" in df.columns else df.iloc[0:0]
    return df[df["cs"].isna()].dropna(axis=1, how="all") if "cs" in df.columns else df


def _drop_tags(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in ("kind",) if c in df.columns])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Aggregate evaluation tables (Exp 1, Exp 3).")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.parquet of every checkpoint")
    parser.add_argument("--purity", nargs="+", required=True, help="purity.parquet of every checkpoint")
    parser.add_argument("--histograms", nargs="*", default=[], help="histogram tables (tags, projection, bin_left, bin_right, count)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of the t interval")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    metrics, purity = read_tables(args.metrics), read_tables(args.purity)
    tables = exp3_tables(metrics, purity, args.level)
    tables["exp1"] = exp1_table(metrics, purity)
    if args.histograms:
        hist = read_tables(args.histograms, required=("projection", "bin_left", "count"))
        tables["exp3_histograms"] = mean_histograms(_drop_tags(hist))
    out = Path(args.out_dir)
    for name, df in tables.items():
        log.info("%s: %d rows", name, len(df))
        write_table(df, out / f"{name}.parquet")
        write_table(df, out / f"{name}.csv")
    return 0


if __name__ == "__main__":
    run_cli(main)
