"""The sparse stage's tables and figures for the report (one job: start-up is most of a job's cost).

    python -m workflow_scripts.sparse.report --config C --sweeps results/sparse/*/sweep.parquet \\
        --concepts results/sparse/*/concepts.parquet --purity <every checkpoint's purity.parquet> \\
        --tables results/tables --figures results/figures

Tables (parquet + CSV): sparse_sweep, sparse_memory, sparse_runs, sparse_vs_purity, sparse_spearman,
sparse_concepts. Figures (PNG + SVG): sparse_accuracy_vs_l0 (with the dense accuracies), sparse_accuracy_vs_purity,
sparse_examples (evaluation images with their top concepts).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..aggregate import read_tables
from ..config import CONTROL_STRATEGY, load_config
from ..io import run_cli, setup_logging, write_table
from . import aggregate as agg
from .paths import decomposed_sets

log = logging.getLogger(__name__)


def _yerr(df: pd.DataFrame, col: str) -> list:
    """Error bar lengths below and above `col` from its t interval columns (0 where there is no interval)."""
    return [df[col] - df[f"{col}_ci_low"].fillna(df[col]), df[f"{col}_ci_high"].fillna(df[col]) - df[col]]


def accuracy_vs_l0(summary: pd.DataFrame):
    """Sparse acc1 against mean l0 along the lambda sweep (mean over replicates), one panel per (model,
    set): the pretrained model, the Cs = 0 control and each (strategy, Cs), with dense accuracies dashed."""
    from ..figures import _grid, _palette

    panels = list(summary.groupby(["model", "set"], sort=True))
    fig, axes = _grid(len(panels), ncols=2, size=(4.6, 3.4))
    for ax, ((model, name), g) in zip(axes, panels):
        runs = list(g.groupby(["kind", "strategy", "cs"], dropna=False, sort=True))
        colours = _palette(len(runs))
        for i, ((kind, strategy, cs), r) in enumerate(runs):
            r = r.sort_values("l0_mean")
            label = "pretrained" if kind == "pretrained" else (
                "control (Cs 0)" if strategy == CONTROL_STRATEGY else f"{strategy} Cs {cs:g}")
            reference = kind == "pretrained" or strategy == CONTROL_STRATEGY
            ls = "-" if reference else ("--" if strategy == "random" else "-.")
            ax.errorbar(r["l0_mean"], r["acc1_sparse"], yerr=_yerr(r, "acc1_sparse"), color=colours[i], ls=ls,
                        marker="o", ms=3, lw=1, capsize=2, label=label)
            if kind == "pretrained" or strategy == CONTROL_STRATEGY:
                ax.axhline(r["acc1_dense"].iloc[0], color=colours[i], ls=":", lw=1)
        ax.set_title(f"{model} / {name} (dotted: dense)")
        ax.set_xlabel("mean l0 (concepts per image)")
        ax.set_ylabel("zero-shot acc1 of recomposed")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def versus_purity_figure(runs: pd.DataFrame, table: pd.DataFrame, target_l0: float):
    """Per fine-tune: acc1 at the target l0 against text-projection purity; and its mean (95 % t interval
    over replicates) against Cs per strategy, the control at Cs 0."""
    import matplotlib.pyplot as plt

    from ..figures import _palette

    ft = runs[runs["kind"] == "finetune"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    colours = _palette(10)
    css = sorted(ft["cs"].dropna().unique())
    for strategy, marker in zip(sorted(ft["strategy"].unique()), "osD^v"):
        s = ft[ft["strategy"] == strategy]
        for k, cs in enumerate(css):
            p = s[s["cs"] == cs]
            if len(p):
                a.scatter(p["purity_text"], p["acc1_at_l0"], color=colours[k], marker=marker, s=18,
                          label=f"{strategy} Cs {cs:g}")
    a.set_xlabel("text projection mean |cos| (lower = purer)")
    a.set_ylabel(f"acc1 at mean l0 = {target_l0:g}")
    a.legend(fontsize=6, ncol=2)
    control = table[table["strategy"] == CONTROL_STRATEGY]
    for i, strategy in enumerate(s for s in sorted(table["strategy"].unique()) if s != CONTROL_STRATEGY):
        t = pd.concat([control, table[table["strategy"] == strategy]]).sort_values("cs")
        b.errorbar(t["cs"], t["acc1_at_l0"], yerr=_yerr(t, "acc1_at_l0"), marker="o", ms=3, capsize=2,
                   color=colours[i], label=strategy)
    b.set_xlabel("nominal Cs")
    b.set_ylabel(f"acc1 at mean l0 = {target_l0:g} (mean, 95 % t)")
    b.legend(fontsize=7)
    fig.tight_layout()
    return fig


def examples_figure(concepts: pd.DataFrame, image_paths: dict[str, list[str]], max_images: int = 8):
    """The example images of each pretrained model with their top concepts (weights) below them."""
    import matplotlib.pyplot as plt
    from PIL import Image

    c = concepts[(concepts["scope"] == "image")]
    groups = list(c.groupby(["model", "set"], sort=True))
    n_cols = max(1, min(max_images, max((g["image"].nunique() for _, g in groups), default=1)))
    fig, axes = plt.subplots(max(1, len(groups)), n_cols, figsize=(1.9 * n_cols, 3.4 * max(1, len(groups))),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, ((model, name), g) in enumerate(groups):
        for col, (image, r) in enumerate(list(g.groupby("image", sort=True))[:n_cols]):
            ax = axes[row, col]
            paths = image_paths.get(name)
            if paths:
                ax.imshow(np.asarray(Image.open(paths[int(image)]).convert("RGB")), interpolation="nearest")
            r = r.sort_values("rank")
            text = "\n".join(f"{x.concept} {x.weight:.2f}" for x in r.itertuples())
            ax.set_title(f"{model}: {r['class'].iloc[0]}\n(pred {r['predicted'].iloc[0]})", fontsize=7)
            ax.text(0.5, -0.05, text, transform=ax.transAxes, ha="center", va="top", fontsize=6)
    fig.subplots_adjust(hspace=0.75, wspace=0.1, top=0.93, bottom=0.12)
    return fig


def set_image_paths(config: dict, sets) -> dict[str, list[str]]:
    """Absolute image paths of the imagefolder sets, in the order their features were cached."""
    from ..data import read_imagefolder

    out = {}
    for name in sets:
        spec = config["evaluate"]["sets"].get(name, {})
        if spec.get("kind") == "imagefolder":
            paths = read_imagefolder(spec["root"], spec.get("raw_classnames", False))[0]
            out[name] = [os.path.join(spec["root"], p) for p in paths]
    return out


def write(df: pd.DataFrame, tables: Path, name: str) -> None:
    write_table(df, tables / f"{name}.parquet")
    write_table(df, tables / f"{name}.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sparse-concept tables and figures.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--sweeps", nargs="+", required=True)
    parser.add_argument("--concepts", nargs="+", required=True)
    parser.add_argument("--purity", nargs="+", required=True, help="every checkpoint's purity.parquet")
    parser.add_argument("--misalignment", help="the swap summary (misalign/summary.parquet): effective misalignment")
    parser.add_argument("--tables", required=True, help="output directory of the tables")
    parser.add_argument("--figures", required=True, help="output directory of the figures")
    args = parser.parse_args(argv)
    setup_logging()
    config = load_config(args.config)
    sp = config["sparse"]
    sweep = agg.with_run_columns(read_tables(args.sweeps, required=("lambda", "acc1_sparse")))
    concepts = read_tables(args.concepts, required=())
    purity = read_tables(args.purity)
    tables, figures = Path(args.tables), Path(args.figures)
    summary = agg.summarise(sweep, agg.RUN_KEYS + ["set", "lambda"],
                            ["acc1_sparse", "acc1_dense", "l0_mean", "cos_mean", "bytes_sparse"])
    runs = agg.run_summary(sweep, sp["target_l0"], sp["target_relative_accuracy"])
    runs = runs.merge(agg.purity_per_run(purity), on=agg.RUN_KEYS + ["seed"], how="left")
    runs = agg.effective_per_run(runs, read_tables([args.misalignment], required=()) if args.misalignment else None)
    table, spearman = agg.versus_purity(runs)
    write(summary, tables, "sparse_sweep")
    write(agg.memory_table(sweep), tables, "sparse_memory")
    write(runs, tables, "sparse_runs")
    write(table, tables, "sparse_vs_purity")
    write(spearman, tables, "sparse_spearman")
    listed = agg.concept_table(concepts)
    write(listed, tables, "sparse_concepts")
    from ..figures import save_figure

    save_figure(accuracy_vs_l0(summary), [figures / "sparse_accuracy_vs_l0.png", figures / "sparse_accuracy_vs_l0.svg"])
    save_figure(versus_purity_figure(runs, table, sp["target_l0"]) if not table.empty else _empty("no fine-tunes"),
                [figures / "sparse_accuracy_vs_purity.png", figures / "sparse_accuracy_vs_purity.svg"])
    save_figure(examples_figure(agg.pretrained_rows(concepts), set_image_paths(config, decomposed_sets(config)),
                                sp["examples"]),
                [figures / "sparse_examples.png", figures / "sparse_examples.svg"])
    log.info("sparse tables in %s, figures in %s", tables, figures)
    return 0


def _empty(text: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center")
    return fig


if __name__ == "__main__":
    run_cli(main)
