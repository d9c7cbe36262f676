"""Figures of the study from tidy tables (matplotlib, Agg backend; a white grid and matplotlib's
colour-blind-safe Tableau cycle), saved as PNG and SVG. Plain matplotlib: seaborn (and the scipy.stats
it imports) cost ~5 s of start-up per figure job for a palette and a grid.

Each function takes a DataFrame and returns a matplotlib Figure; `save_figure` writes it atomically and
deterministically (fixed svg.hashsalt, no dates or software strings in the metadata), so a rerun
produces byte-identical files.

    python -m workflow_scripts.report.figures purity-vs-cs  --table exp3_purity.parquet  --out f.png f.svg
    python -m workflow_scripts.report.figures cosine-hist   --table exp3_histograms.parquet --out ...
    python -m workflow_scripts.report.figures accuracy-vs-cs --table exp3_metrics.parquet --out ... [--metric acc1]
    python -m workflow_scripts.report.figures pruning       --table pruning/<model>.parquet --out ... [--metric acc1]
    python -m workflow_scripts.report.figures exp1          --table exp1.parquet --out ...
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..common.config import CONTROL_STRATEGY  # noqa: E402
from ..common.errors import InputError  # noqa: E402
from ..common.io import atomic_path, run_cli, setup_logging  # noqa: E402

log = logging.getLogger(__name__)

STYLE = {"svg.hashsalt": "feature-purity", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 10,
         "figure.dpi": 100,
         # white grid
         "axes.facecolor": "white", "axes.edgecolor": "0.8", "axes.grid": True, "axes.axisbelow": True,
         "grid.color": "0.88", "grid.linestyle": "-", "xtick.bottom": False, "ytick.left": False}
PNG_DPI = 150
PRUNING_STYLE = {  # strategy -> (label, colour index, line style)
    "high_purity": ("High purity (lowest scores)", 0, "-"),
    "low_purity": ("Low purity (highest scores)", 3, "-"),
    "random": ("Random (mean ± sd)", 7, "--"),
    "full": ("Full", 2, ":"),
}
METRIC_LABELS = {"acc1": "Zero-shot top-1 accuracy", "acc5": "Zero-shot top-5 accuracy",
                 "mean_per_class_recall": "Mean per-class recall", "silhouette": "Silhouette (cosine)",
                 "avg_abs_cos_sim": "Mean |cos| between neurons (n²)",
                 "avg_abs_cos_sim_offdiag": "Mean |cos| between neurons (n(n−1))"}


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what}: table lacks columns {missing} (has {list(df.columns)})")


def _select(df: pd.DataFrame, what: str, **equal) -> pd.DataFrame:
    for col, val in equal.items():
        if val is not None and col in df.columns:
            df = df[df[col] == val]
    if df.empty:
        raise InputError(f"{what}: no rows with {', '.join(f'{k}={v!r}' for k, v in equal.items() if v is not None)}")
    return df


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (3.6, 2.8)) -> tuple[plt.Figure, list[plt.Axes]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _palette(n: int) -> list:
    cycle = plt.style.library["tableau-colorblind10"]["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(max(n, 10))]


def _lines_with_band(ax: plt.Axes, df: pd.DataFrame, x: str, hue: str, label_fmt: str = "{}") -> None:
    """One line per `hue` value of mean against x, with a [ci_low, ci_high] band where defined."""
    colours = _palette(df[hue].nunique())
    for i, (key, g) in enumerate(df.groupby(hue, sort=True)):
        g = g.sort_values(x)
        ax.plot(g[x], g["mean"], marker="o", ms=3, color=colours[i], label=label_fmt.format(key))
        if {"ci_low", "ci_high"} <= set(g.columns) and g["ci_low"].notna().any():
            ax.fill_between(g[x], g["ci_low"], g["ci_high"], color=colours[i], alpha=0.2, linewidth=0)


def with_control(df: pd.DataFrame) -> pd.DataFrame:
    """The Cs = 0 control (strategy `none`, one run per replicate shared by every swap strategy) drawn as
    the first point of each swap strategy's line; a table without swap strategies is returned as it is."""
    if "strategy" not in df.columns:
        return df
    control = df[df["strategy"] == CONTROL_STRATEGY]
    swaps = [s for s in df["strategy"].dropna().unique() if s != CONTROL_STRATEGY]
    if control.empty or not swaps:
        return df
    return pd.concat([df[df["strategy"] != CONTROL_STRATEGY]]
                     + [control.assign(strategy=s) for s in sorted(swaps)], ignore_index=True)


def _references(ax: plt.Axes, rows: pd.DataFrame) -> None:
    """Reference levels beside the effect: the pretrained model (dashed) and, for purity, random Gaussian
    matrices of the projection's shape (dotted, ± sd band)."""
    if "pretrained" in rows.columns and rows["pretrained"].notna().any():
        ax.axhline(rows["pretrained"].dropna().iloc[0], color="0.35", ls="--", lw=1, label="pretrained")
    if "random_mean" in rows.columns and rows["random_mean"].notna().any():
        mean, sd = rows["random_mean"].dropna().iloc[0], rows["random_sd"].dropna().iloc[0]
        ax.axhline(mean, color="0.55", ls=":", lw=1, label="random matrix (± sd)")
        ax.axhspan(mean - sd, mean + sd, color="0.55", alpha=0.12, lw=0)


def purity_vs_cs(summary: pd.DataFrame, metric: str = "avg_abs_cos_sim", projection: str = "text") -> plt.Figure:
    """Purity metric (mean over replicates, 95 % t band) against nominal Cs, one line per strategy, one
    panel per model, with the pretrained model's and a random matrix's level."""
    _require(summary, ["model", "strategy", "cs", "metric", "mean"], "purity-vs-cs")
    df = with_control(_select(summary, "purity-vs-cs", metric=metric, projection=projection))
    models = sorted(df["model"].unique())
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(models))
        for ax, model in zip(axes, models):
            rows = df[df["model"] == model]
            _lines_with_band(ax, rows, "cs", "strategy")
            _references(ax, rows)
            ax.set(title=f"{model}: {projection} projection", xlabel="Nominal misalignment Cs", ylabel=_label(metric))
            ax.legend(fontsize=7)
        fig.tight_layout()
    return fig


def _by_line(df: pd.DataFrame) -> pd.DataFrame:
    """df with a `line` column: the strategy, or "model / strategy" when several models (e.g. a fine-tune
    arm such as clip-ortho beside clip) share the axes."""
    df = df.copy()
    df["line"] = df["strategy"] if df["model"].nunique() == 1 else df["model"] + " / " + df["strategy"]
    return df


def accuracy_vs_cs(summary: pd.DataFrame, metric: str = "acc1", model: str | None = None) -> plt.Figure:
    """Metric (mean over replicates, 95 % t band) against nominal Cs per evaluation set, one line per strategy
    (and model), with the pretrained model's level."""
    _require(summary, ["model", "strategy", "cs", "set", "metric", "mean"], "accuracy-vs-cs")
    df = _by_line(with_control(_select(summary, "accuracy-vs-cs", metric=metric, model=model)))
    sets = sorted(df["set"].unique())
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(sets))
        for ax, name in zip(axes, sets):
            rows = df[df["set"] == name]
            _lines_with_band(ax, rows, "cs", "line")
            if rows["model"].nunique() == 1:
                _references(ax, rows)
            ax.set(title=name, xlabel="Nominal misalignment Cs", ylabel=_label(metric))
        axes[0].legend(fontsize=7)
        fig.tight_layout()
    return fig


def versus_effective(table: pd.DataFrame, model: str | None = None) -> plt.Figure:
    """Each quantity (text/image purity, acc1 per set; mean over replicates, 95 % t band) against the
    EFFECTIVE misalignment of its runs: the fraction of lines whose caption contradicts the image
    (where the truth is known), else the fraction whose caption text changed. Both strategies (and every
    model, e.g. a fine-tune arm) on one axis."""
    _require(table, ["model", "strategy", "cs", "quantity", "mean"], "effective")
    df = _select(table, "effective", model=model)
    x = "contradicts_any" if "contradicts_any" in df.columns and df["contradicts_any"].notna().any() else "text_changed"
    _require(df, [x], "effective")
    df = _by_line(with_control(df))
    quantities = sorted(df["quantity"].unique())
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(quantities))
        for ax, quantity in zip(axes, quantities):
            rows = df[df["quantity"] == quantity]
            _lines_with_band(ax, rows, x, "line")
            if rows["model"].nunique() == 1:
                _references(ax, rows)
            ylabel = "Mean |cos| between neurons (n²)" if quantity.startswith("purity") else "Zero-shot top-1"
            ax.set(title=quantity, ylabel=ylabel,
                   xlabel="lines contradicting the image" if x == "contradicts_any" else "lines whose caption changed")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
    return fig


def cosine_histograms(hist: pd.DataFrame, projection: str = "text", model: str | None = None) -> plt.Figure:
    """Distribution of neuron-pair cosines (density of the upper-triangle histogram) per Cs, one panel per
    (model, strategy); counts are normalised per Cs so runs with different seeds/sizes compare."""
    _require(hist, ["model", "strategy", "cs", "projection", "bin_left", "bin_right", "count"], "cosine-hist")
    df = with_control(_select(hist, "cosine-hist", projection=projection, model=model))
    panels = sorted(df.groupby(["model", "strategy"]).groups)
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(panels))
        for ax, (m, strategy) in zip(axes, panels):
            sub = df[(df["model"] == m) & (df["strategy"] == strategy)]
            cs_values = sorted(sub["cs"].unique())
            colours = plt.get_cmap("viridis")(np.linspace(0, 1, len(cs_values)))
            for colour, cs in zip(colours, cs_values):
                g = sub[sub["cs"] == cs].sort_values("bin_left")
                width = (g["bin_right"] - g["bin_left"]).to_numpy()
                total = g["count"].sum()
                density = g["count"].to_numpy() / (total * width) if total > 0 else np.zeros(len(g))
                ax.stairs(density, np.append(g["bin_left"].to_numpy(), g["bin_right"].iloc[-1]),
                          color=colour, label=f"Cs = {cs:g}")
            ax.set(title=f"{m} / {strategy}: {projection} projection", xlabel="cosine between neurons",
                   ylabel="density")
            ax.legend(fontsize=7)
        fig.tight_layout()
    return fig


def pruning_curves(table: pd.DataFrame, metric: str = "acc1", model: str | None = None) -> plt.Figure:
    """Metric against kept neurons per set: high/low purity, random (mean ± sd band) and full (line).

    Takes the per-draw sweep table (draw, value) or its summary (mean, sd)."""
    from ..evaluate.pruning import summarise_sweep

    if "mean" not in table.columns:
        _require(table, ["set", "strategy", "size", "draw", "metric", "value"], "pruning")
        table = summarise_sweep(table)
    _require(table, ["set", "strategy", "size", "metric", "mean"], "pruning")
    df = _select(table, "pruning", metric=metric, model=model)
    sets = sorted(df["set"].unique())
    colours = _palette(10)
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(sets))
        for ax, name in zip(axes, sets):
            sub = df[df["set"] == name]
            for strategy, (label, ci, ls) in PRUNING_STYLE.items():
                g = sub[sub["strategy"] == strategy].sort_values("size")
                if g.empty:
                    continue
                if strategy == "full":
                    ax.axhline(g["mean"].iloc[0], color=colours[ci], ls=ls, label=label)
                    continue
                ax.plot(g["size"], g["mean"], marker="o", ms=3, ls=ls, color=colours[ci], label=label)
                if strategy == "random" and "sd" in g.columns and g["sd"].notna().any():
                    ax.fill_between(g["size"], g["mean"] - g["sd"], g["mean"] + g["sd"], color=colours[ci],
                                    alpha=0.2, linewidth=0)
            ax.set(title=name, xlabel="kept neurons", ylabel=_label(metric))
        axes[0].legend(fontsize=7)
        fig.tight_layout()
    return fig


def exp1_bars(table: pd.DataFrame, metrics: Sequence[str] = ("acc1", "silhouette")) -> plt.Figure:
    """Exp 1: grouped bars per evaluation set, one bar per model, one panel per metric."""
    _require(table, ["set", "model", *metrics], "exp1")
    if table.empty:
        raise InputError("exp1: empty table")
    models = sorted(table["model"].unique())
    sets = sorted(table["set"].unique())
    colours = _palette(len(models))
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(metrics), ncols=len(metrics), size=(max(3.6, 0.9 * len(sets) + 1.5), 3.0))
        width = 0.8 / len(models)
        x = np.arange(len(sets))
        for ax, metric in zip(axes, metrics):
            for i, model in enumerate(models):
                vals = table[table["model"] == model].set_index("set")[metric].reindex(sets)
                ax.bar(x + (i - (len(models) - 1) / 2) * width, vals.to_numpy(dtype=float), width,
                       color=colours[i], label=model)
            ax.set_xticks(x, sets, rotation=30, ha="right")
            ax.set(ylabel=_label(metric), title=_label(metric))
            ax.axhline(0, color="black", lw=0.6)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, paths: Sequence[str | Path]) -> None:
    """Write `fig` to each path (format from the suffix: .png or .svg) atomically and deterministically."""
    for path in paths:
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in ("png", "svg"):
            raise InputError(f"{path}: figures are written as .png or .svg")
        metadata = {"Date": None, "Creator": None} if fmt == "svg" else {"Software": None}
        with plt.rc_context(STYLE), atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=metadata)
    plt.close(fig)


FIGURES = {
    "purity-vs-cs": (purity_vs_cs, {"metric": "avg_abs_cos_sim", "projection": "text"}),
    "cosine-hist": (cosine_histograms, {"projection": "text", "model": None}),
    "accuracy-vs-cs": (accuracy_vs_cs, {"metric": "acc1", "model": None}),
    "pruning": (pruning_curves, {"metric": "acc1", "model": None}),
    "exp1": (exp1_bars, {}),
    "effective": (versus_effective, {"model": None}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw one figure of the study from a tidy table.")
    sub = parser.add_subparsers(dest="figure", required=True)
    for name, (fn, options) in FIGURES.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").splitlines()[0])
        p.add_argument("--table", required=True, help=".parquet or .csv table")
        p.add_argument("--out", nargs="+", required=True, help="output .png and/or .svg paths")
        p.add_argument("--log")
        for opt, default in options.items():
            p.add_argument(f"--{opt}", default=default)
    args = parser.parse_args(argv)
    setup_logging(args.log)
    from .aggregate import read_tables

    fn, options = FIGURES[args.figure]
    table = read_tables([args.table], required=())
    fig = fn(table, **{opt: getattr(args, opt) for opt in options})
    save_figure(fig, args.out)
    log.info("%s: wrote %s", args.figure, ", ".join(args.out))
    return 0


if __name__ == "__main__":
    run_cli(main)
