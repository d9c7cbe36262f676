"""The sparse stage's tables and figures for the report (one job: start-up is most of a job's cost).

    python -m workflow_scripts.sparse.report --config C --sweeps results/sparse/*/sweep.parquet \\
        --concepts results/sparse/*/concepts.parquet --purity <every checkpoint's purity.parquet> \\
        --tables results/tables --figures results/figures

Tables (parquet + CSV): sparse_sweep, sparse_memory, sparse_runs, sparse_vs_purity, sparse_spearman,
sparse_concepts (all keyed by set, and by modality where captions are decomposed). Figures (PNG + SVG):
sparse_accuracy_vs_l0 (one panel per model, set and modality: zero-shot acc1 for the evaluation sets,
retrieval R@1 for the image-caption pairs, with the dense levels), sparse_accuracy_vs_purity (one row
per set), sparse_examples (evaluation images with their top concepts, one row per model and set).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..report.aggregate import read_tables
from ..common.config import CONTROL_STRATEGY, load_config
from ..common.io import run_cli, setup_logging, write_table
from . import aggregate as agg
from .paths import decomposed_sets

log = logging.getLogger(__name__)


def _yerr(df: pd.DataFrame, col: str) -> list:
    """Error bar lengths below and above `col` from its t interval columns (0 where there is no interval)."""
    return [df[col] - df[f"{col}_ci_low"].fillna(df[col]), df[f"{col}_ci_high"].fillna(df[col]) - df[col]]


PAIR_TASK = {"image": "image->text R@1", "text": "text->image R@1"}


def panel_score(g: pd.DataFrame) -> tuple[str, str, str]:
    """(sparse column, dense column, label) of a panel: zero-shot acc1 where the rows have it, else the
    pairs' retrieval R@1 of the panel's modality."""
    if "acc1_sparse" in g and g["acc1_sparse"].notna().any():
        return "acc1_sparse", "acc1_dense", "zero-shot acc1 of recomposed"
    modality = g["modality"].iloc[0] if "modality" in g else "image"
    return "r1_sparse", "r1_dense", f"{PAIR_TASK.get(modality, 'R@1')} of recomposed"


def accuracy_vs_l0(summary: pd.DataFrame):
    """Sparse acc1 (evaluation sets) or R@1 (image-caption pairs) against mean l0 along the lambda sweep
    (mean over replicates), one panel per (model, set, modality): the pretrained model, the Cs = 0 control
    and each (strategy, Cs), with dense levels dotted."""
    from ..report.figures import _grid, _palette

    summary = summary if "modality" in summary else summary.assign(modality="image")
    panels = list(summary.groupby(["model", "set", "modality"], sort=True))
    fig, axes = _grid(len(panels), ncols=min(3, max(1, len(panels))), size=(4.6, 3.4))
    for ax, ((model, name, modality), g) in zip(axes, panels):
        sparse_col, dense_col, ylabel = panel_score(g)
        runs = list(g.groupby(["kind", "strategy", "cs"], dropna=False, sort=True))
        colours = _palette(len(runs))
        for i, ((kind, strategy, cs), r) in enumerate(runs):
            r = r.sort_values("l0_mean")
            label = "pretrained" if kind == "pretrained" else (
                "control (Cs 0)" if strategy == CONTROL_STRATEGY else f"{strategy} Cs {cs:g}")
            reference = kind == "pretrained" or strategy == CONTROL_STRATEGY
            ls = "-" if reference else ("--" if strategy == "random" else "-.")
            ax.errorbar(r["l0_mean"], r[sparse_col], yerr=_yerr(r, sparse_col), color=colours[i], ls=ls,
                        marker="o", ms=3, lw=1, capsize=2, label=label)
            if kind == "pretrained" or strategy == CONTROL_STRATEGY:
                ax.axhline(r[dense_col].iloc[0], color=colours[i], ls=":", lw=1)
        what = "" if sparse_col == "acc1_sparse" else (" captions" if modality == "text" else " images")
        ax.set_title(f"{model} / {name}{what} (dotted: dense)", fontsize=9)
        ax.set_xlabel(f"mean l0 (concepts per {'caption' if modality == 'text' else 'image'})")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def versus_purity_figure(runs: pd.DataFrame, table: pd.DataFrame, target_l0: float):
    """One row of two panels per evaluation set. Left: per fine-tune, acc1 at the target l0 against
    text-projection purity; right: its mean (95 % t interval over replicates) against Cs per strategy, the
    control at Cs 0."""
    import matplotlib.pyplot as plt

    from ..report.figures import _palette

    ft = runs[runs["kind"] == "finetune"]
    sets = sorted(ft["set"].unique())
    fig, axes = plt.subplots(len(sets), 2, figsize=(9, 3.4 * len(sets)), squeeze=False)
    colours = _palette(10)
    css = sorted(ft["cs"].dropna().unique())
    for (a, b), name in zip(axes, sets):
        fs, ts = ft[ft["set"] == name], table[table["set"] == name]
        for strategy, marker in zip(sorted(fs["strategy"].unique()), "osD^v"):
            s = fs[fs["strategy"] == strategy]
            for k, cs in enumerate(css):
                p = s[s["cs"] == cs]
                if len(p):
                    a.scatter(p["purity_text"], p["acc1_at_l0"], color=colours[k], marker=marker, s=18,
                              label=f"{strategy} Cs {cs:g}")
        a.set_title(name, fontsize=9)
        a.set_xlabel("text projection mean |cos| (lower = purer)")
        a.set_ylabel(f"acc1 at mean l0 = {target_l0:g}")
        a.legend(fontsize=6, ncol=2)
        control = ts[ts["strategy"] == CONTROL_STRATEGY]
        for i, strategy in enumerate(s for s in sorted(ts["strategy"].unique()) if s != CONTROL_STRATEGY):
            t = pd.concat([control, ts[ts["strategy"] == strategy]]).sort_values("cs")
            b.errorbar(t["cs"], t["acc1_at_l0"], yerr=_yerr(t, "acc1_at_l0"), marker="o", ms=3, capsize=2,
                       color=colours[i], label=strategy)
        b.set_title(name, fontsize=9)
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
            ax.set_title(f"{model} / {name}: {r['class'].iloc[0]}\n(pred {r['predicted'].iloc[0]})", fontsize=7)
            ax.text(0.5, -0.05, text, transform=ax.transAxes, ha="center", va="top", fontsize=6)
    fig.subplots_adjust(hspace=0.75, wspace=0.1, top=0.93, bottom=0.12)
    return fig


def set_image_paths(config: dict, sets) -> dict[str, list[str]]:
    """Absolute image paths of the imagefolder sets, in the order their features were cached."""
    from ..common.data import read_imagefolder

    out = {}
    for name in sets:
        spec = config["evaluate"]["sets"].get(name, {})
        if spec.get("kind") == "imagefolder":
            paths = read_imagefolder(spec["root"], spec.get("raw_classnames", False))[0]
            out[name] = [os.path.join(spec["root"], p) for p in paths]
    return out


def pair_captions(path: str | None) -> dict[str, list[str]]:
    """The captions of the evaluation's image-caption pairs in feature order (the first rows of the pairs
    CSV: data.heldout_csv, else data.train_csv), under both pair-set names; {} without a CSV."""
    from ..common.data import read_pairs_csv
    from ..evaluate.run import PAIR_SETS

    if not path:
        return {}
    captions = read_pairs_csv(path)[1]
    return {name: captions for name in PAIR_SETS}


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
    parser.add_argument("--pairs-csv", help="the image-caption pairs' CSV (data.heldout_csv, else data.train_csv): "
                        "captions beside their concepts in sparse_concepts")
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
    summary = agg.summarise(sweep, agg.RUN_KEYS + ["set", "modality", "lambda"], agg.SWEEP_VALUES)
    runs = agg.run_summary(sweep, sp["target_l0"], sp["target_relative_accuracy"])
    runs = runs.merge(agg.purity_per_run(purity), on=agg.RUN_KEYS + ["seed"], how="left")
    runs = agg.effective_per_run(runs, read_tables([args.misalignment], required=()) if args.misalignment else None)
    table, spearman = agg.versus_purity(runs)
    write(summary, tables, "sparse_sweep")
    write(agg.memory_table(sweep), tables, "sparse_memory")
    write(runs, tables, "sparse_runs")
    write(table, tables, "sparse_vs_purity")
    write(spearman, tables, "sparse_spearman")
    listed = agg.concept_table(concepts, pair_captions(args.pairs_csv))
    write(listed, tables, "sparse_concepts")
    from ..report.figures import save_figure

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
