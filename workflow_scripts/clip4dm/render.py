"""CLIP4DM figures: detection AUROC / AP against Cs, estimated against true misalignment rate, FOIL
localisation per attribute, and example captions with per-word attribution colours (PNG + SVG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TRUTH_LABELS = {"swapped": "line swapped", "changed": "caption text changed", "contradicts": "caption contradicts image"}
SCORE_STYLE = {"fclipscore": ("F-CLIPScore", "-"), "clipscore": ("CLIPScore", "--")}


def _save(fig, stem: Path) -> None:
    from ..report.figures import save_figure

    save_figure(fig, [stem.with_suffix(".png"), stem.with_suffix(".svg")])


def _empty(title: str):
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.text(0.5, 0.5, f"{title}: no results", ha="center", va="center")
    ax.axis("off")
    return fig


def detection_figure(det: pd.DataFrame, metric: str = "auroc"):
    """Per model (rows) and truth (columns): metric against Cs, one line per strategy and score."""
    if not len(det):
        return _empty("detection")
    models, truths = sorted(det["model"].unique()), [t for t in TRUTH_LABELS if t in set(det["truth"])]
    fig, axes = plt.subplots(len(models), len(truths), figsize=(4 * len(truths), 3.2 * len(models)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, model in enumerate(models):
        for c, truth in enumerate(truths):
            ax = axes[r][c]
            sub = det[(det["model"] == model) & (det["truth"] == truth) & (det["metric"] == metric)]
            for i, strategy in enumerate(sorted(sub["strategy"].unique())):
                for score, (label, style) in SCORE_STYLE.items():
                    s = sub[(sub["strategy"] == strategy) & (sub["score"] == score)].sort_values("cs")
                    if not len(s):
                        continue
                    err = np.vstack([s["mean"] - s["low"], s["high"] - s["mean"]])
                    ax.errorbar(s["cs"], s["mean"], yerr=np.nan_to_num(err), ls=style, marker="o", ms=3,
                                capsize=2, color=colours[i % len(colours)], label=f"{strategy}, {label}")
            ref = sub.groupby("cs")["reference"].mean()
            ax.plot(ref.index, ref.to_numpy(), color="grey", lw=0.8, ls=":", label="random ranking")
            ax.set(xlabel="Cs (nominal swapped fraction)", ylabel=metric.upper(), title=f"{model}: {TRUTH_LABELS[truth]}")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def rate_figure(rate: pd.DataFrame):
    """Estimated misaligned fraction against Cs, beside the nominal, text-changed and contradiction rates."""
    if not len(rate):
        return _empty("rate")
    models, strategies = sorted(rate["model"].unique()), sorted(rate["strategy"].unique())
    fig, axes = plt.subplots(len(models), len(strategies), figsize=(4.2 * len(strategies), 3.3 * len(models)),
                             squeeze=False)
    series = {"estimated_rate_fclipscore": ("estimate (F-CLIPScore)", "o-"),
              "estimated_rate_clipscore": ("estimate (CLIPScore)", "s-"),
              "nominal": ("true: swapped (nominal)", "k--"), "text_changed": ("true: text changed", "k:"),
              "contradicts": ("true: contradicts image", "k-.")}
    for r, model in enumerate(models):
        for c, strategy in enumerate(strategies):
            ax = axes[r][c]
            s = rate[(rate["model"] == model) & (rate["strategy"] == strategy)].sort_values("cs")
            for col, (label, style) in series.items():
                if col not in s:
                    continue
                low, high = s.get(f"{col}_low"), s.get(f"{col}_high")
                err = None if low is None else np.nan_to_num(np.vstack([s[col] - low, high - s[col]]))
                ax.errorbar(s["cs"], s[col], yerr=err, fmt=style, ms=3, capsize=2, label=label)
            ax.set(xlabel="Cs", ylabel="fraction of lines", title=f"{model}, {strategy} swaps", ylim=(-0.02, 1.0))
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    if "note" in rate:     # why no estimate is drawn (summarise.with_rate_note)
        import textwrap

        fig.text(0.5, 0.5, textwrap.fill(str(rate["note"].iloc[0]), 60), ha="center", va="center", fontsize=8,
                 bbox={"facecolor": "white", "alpha": 0.9})
    return fig


def localisation_figure(loc: pd.DataFrame):
    """LA per attribute of each pretrained model (Wilson intervals) with the chance level."""
    pre = loc[loc["checkpoint"] == "pretrained"] if len(loc) else loc
    if not len(pre):
        return _empty("localisation")
    models = sorted(pre["model"].unique())
    attributes = [a for a in ("colour", "shape", "count", "position", "all") if a in set(pre["attribute"])]
    fig, ax = plt.subplots(figsize=(1.2 * len(attributes) + 0.6 * len(attributes) * (len(models) - 1) + 2, 3.4))
    width = 0.8 / len(models)
    x = np.arange(len(attributes))
    for i, model in enumerate(models):
        s = pre[pre["model"] == model].set_index("attribute").reindex(attributes)
        pos = x + (i - (len(models) - 1) / 2) * width
        err = np.nan_to_num(np.vstack([s["la"] - s["la_low"], s["la_high"] - s["la"]]))
        ax.bar(pos, s["la"], width, yerr=err, capsize=2, label=model)
        ax.scatter(pos, s["la_chance"], marker="_", s=200, color="black", zorder=3,
                   label="chance (1 / words)" if i == 0 else None)
    ax.set_xticks(x, [f"{a}\n(n={int(pre[pre['attribute'] == a]['n_foils'].iloc[0])})" for a in attributes])
    ax.set(ylabel="localisation accuracy", ylim=(0, 1.05), title="FOIL-style localisation (most-negative word = foil word)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pick_examples(foils: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to n foil captions of the first model, cycling through the attributes (first images first),
    each followed by its image's original caption."""
    if not len(foils) or n <= 0:
        return foils.iloc[:0]
    f = foils[foils["model"] == sorted(foils["model"].unique())[0]]
    fo = f[f["kind"] == "foil"]
    by_attr = [g for _, g in fo.groupby("attribute", sort=True)]
    picks, i = [], 0
    while len(picks) < n and any(i < len(g) for g in by_attr):
        for g in by_attr:
            if i < len(g) and len(picks) < n:
                picks.append(g.iloc[i])
        i += 1
    rows = []
    for foil in picks:
        rows.append(foil)
        orig = f[(f["kind"] == "original") & (f["image"] == foil["image"])]
        if len(orig):
            rows.append(orig.iloc[0])
    return pd.DataFrame(rows)


def examples_figure(rows: pd.DataFrame):
    """Each caption as a row of words on backgrounds coloured by attribution (blue > 0, red < 0, scaled per
    caption by its largest |attribution|); the foil word underlined, the most-negative word boxed."""
    if not len(rows):
        return _empty("examples")
    cmap = plt.get_cmap("RdBu")
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 0.8))
    ax.set_xlim(0, 1)
    ax.set_ylim(len(rows), -0.8)
    ax.axis("off")
    char = 0.0105
    for r, (_, row) in enumerate(rows.iterrows()):
        words, attr = list(row["words"]), np.asarray(row["attributions"], float)
        scale = np.nanmax(np.abs(attr)) if np.isfinite(attr).any() else 1.0
        label = f"{row['attribute']} foil" if row["kind"] == "foil" else "original"
        ax.text(0.0, r, label, va="center", fontsize=8, family="monospace", color="dimgrey")
        x = 0.16
        for j, (w, a) in enumerate(zip(words, attr)):
            level = a / scale if scale and np.isfinite(a) else 0.0
            colour = cmap(0.5 + 0.5 * level)
            edge = "black" if j == row["worst_index"] else "none"
            t = ax.text(x, r, w, va="center", fontsize=10, family="monospace",
                        color="white" if abs(level) > 0.6 else "black",
                        bbox={"boxstyle": "round,pad=0.2", "fc": colour, "ec": edge, "lw": 1.2})
            if row["kind"] == "foil" and j == row["foil_index"]:
                t.set_fontweight("bold")
                ax.plot([x, x + char * len(w)], [r + 0.28, r + 0.28], color="black", lw=1.2)
            x += char * (len(w) + 1.6)
        ax.text(min(x + 0.01, 0.9), r, f"F={row['fclipscore']:.2g}  CLIPScore={row['clipscore']:.2f}",
                va="center", fontsize=7, color="dimgrey")
    ax.set_title(f"CLIP4DM word attributions ({rows['model'].iloc[0]}): red = negative (misaligned), blue = positive; "
                 "box = most-negative word, underline = foil word", fontsize=8)
    fig.tight_layout()
    return fig


def write_all(det: pd.DataFrame, rate: pd.DataFrame, loc: pd.DataFrame, foils: pd.DataFrame, figures: Path,
              n_examples: int) -> None:
    figures = Path(figures)
    _save(detection_figure(det, "auroc"), figures / "clip4dm_detection_auroc")
    _save(detection_figure(det, "ap"), figures / "clip4dm_detection_ap")
    _save(rate_figure(rate), figures / "clip4dm_rate")
    _save(localisation_figure(loc), figures / "clip4dm_localisation")
    _save(examples_figure(pick_examples(foils, n_examples)), figures / "clip4dm_examples")
