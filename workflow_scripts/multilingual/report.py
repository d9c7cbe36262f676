"""Tables and figures of the multilingual alignment (report category "8. Multilingual alignment (image
pivot)").

Every aligned number is the mean over the sweep's seeds with its 95 % t interval and n
(workflow_scripts.intervals.t_interval); the frozen encoder (one deterministic evaluation) stands beside
it, and `diff` = aligned − frozen per seed with its own t interval. The headline table adds a bootstrap
interval over the held-out images of the non-English macro text→image R@1 difference (per image: the
mean over the other languages of aligned − frozen hits, averaged over seeds), and names the sweep run
chosen by validation macro R@1 (never by the held-out numbers).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..aggregate import metric_bounds
from ..errors import InputError
from ..io import load_npz, run_cli, setup_logging, write_table
from ..intervals import bootstrap_mean_ci, t_interval
from .evaluate import FROZEN
from .images import SEP

log = logging.getLogger(__name__)

CONFIG_COLUMNS = ["model", "head", "prox_id", "ortho"]


def summarise(metrics: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """Per (model, head, λp, λo, task, language, metric): frozen value, aligned mean ± t interval over
    seeds (n), and the paired difference aligned − frozen with its t interval."""
    m = metrics[metrics["task"].isin(tasks)]
    frozen = (m[m["head"] == FROZEN][["model", "task", "language", "metric", "value"]]
              .rename(columns={"value": "frozen"}))
    aligned = m[m["head"] != FROZEN].merge(frozen, on=["model", "task", "language", "metric"], how="left")
    rows = []
    for keys, g in aligned.groupby(CONFIG_COLUMNS + ["task", "language", "metric"], sort=True):
        n, mean, sd, low, high = t_interval(g["value"].to_numpy(), bounds=metric_bounds(keys[-1]))
        _, diff, _, dlow, dhigh = t_interval((g["value"] - g["frozen"]).to_numpy(),
                                             bounds=metric_bounds(keys[-1], difference=True))
        rows.append(dict(zip(CONFIG_COLUMNS + ["task", "language", "metric"], keys),
                         frozen=float(g["frozen"].iloc[0]), mean=mean, ci_low=low, ci_high=high, n=n,
                         diff=diff, diff_low=dlow, diff_high=dhigh))
    return pd.DataFrame(rows)


def chosen_runs(sweeps: pd.DataFrame, headline: dict) -> dict[str, dict]:
    """{"headline": the configured run, "validation-best": the config with the best mean validation macro
    R@1 over seeds}, each as {model, head, prox_id, ortho}."""
    by_config = sweeps.groupby(CONFIG_COLUMNS, as_index=False)["val_macro_r1"].mean()
    best = by_config.sort_values("val_macro_r1", ascending=False, kind="stable").iloc[0]
    model = best["model"]
    chosen = {"model": model, **{k: headline[k] for k in ("head", "prox_id", "ortho")}}
    if _select(by_config, chosen).empty:
        raise InputError(f"multilingual.evaluate.headline: {chosen} is not a run of the sweep "
                         f"(runs: {by_config[CONFIG_COLUMNS].to_dict('records')})")
    return {"headline": chosen, "validation-best": {k: best[k] for k in CONFIG_COLUMNS}}


def _select(df: pd.DataFrame, run: dict) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in run.items():
        mask &= np.isclose(df[k].astype(float), float(v)) if k in ("prox_id", "ortho") else (df[k] == v).to_numpy()
    return df[mask]


def headline_table(summary: pd.DataFrame, per_query: dict[str, dict], sweeps: pd.DataFrame, runs: dict[str, dict],
                   languages: Sequence[str]) -> pd.DataFrame:
    """Non-English (and English, and all-language) macro text→image R@1: frozen vs each chosen run, with
    the t interval over seeds and a bootstrap interval over held-out images of the difference (per_query
    hits of the run's sweep keys, one per seed)."""
    rows = []
    others = list(languages[1:])
    for label, run in runs.items():
        sel = _select(summary, run)
        run_keys = sorted(_select(sweeps, run)["key"])
        for language in ("macro_other", languages[0], "macro"):
            r = sel[(sel["task"] == "t2i") & (sel["metric"] == "R@1") & (sel["language"] == language)]
            if r.empty:
                continue
            r = r.iloc[0]
            row = {"run": label, **run, "language": language, "frozen": r["frozen"], "aligned": r["mean"],
                   "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_seeds": r["n"], "diff": r["diff"],
                   "diff_low": r["diff_low"], "diff_high": r["diff_high"]}
            hits = per_query[run["model"]]
            langs = others if language == "macro_other" else (languages if language == "macro" else [language])
            per_image = np.mean([np.mean([hits[f"{k}{SEP}{lang}"] - hits[f"{FROZEN}{SEP}{lang}"] for k in run_keys],
                                         axis=0) for lang in langs], axis=0)
            row["boot_low"], row["boot_high"] = bootstrap_mean_ci(per_image)
            row["n_images"] = len(per_image)
            rows.append(row)
    return pd.DataFrame(rows)


def run_table(summary: pd.DataFrame, runs: dict[str, dict], task: str) -> pd.DataFrame:
    """The chosen runs' rows of one task (all languages/pairs and metrics)."""
    out = pd.concat([_select(summary, run).assign(run=label) for label, run in runs.items()], ignore_index=True)
    return out[out["task"] == task]


def gram_table(grams: pd.DataFrame, runs: dict[str, dict]) -> pd.DataFrame:
    """Cross-lingual Gram (RSA) matrices: the frozen encoder and each chosen run (mean over seeds)."""
    frozen = grams[grams["head"] == FROZEN].assign(run=FROZEN)
    parts = [frozen]
    for label, run in runs.items():
        parts.append(_select(grams[grams["head"] != FROZEN], run).assign(run=label))
    out = pd.concat(parts, ignore_index=True)
    return out.groupby(["run", "model", "a", "b"], as_index=False, sort=False).agg(
        rsa=("rsa", "mean"), n_seeds=("rsa", "size"))


def figures(summary: pd.DataFrame, grams: pd.DataFrame, runs: dict[str, dict], languages: Sequence[str],
            paths: Sequence[str]) -> None:
    """retrieval: text→image R@1 per language, frozen vs the chosen runs (t interval bars);
    gram: the cross-lingual RSA matrices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..figures import save_figure

    langs = list(languages) + ["macro_other"]
    fig, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
    width = 0.8 / (1 + len(runs))
    x = np.arange(len(langs))
    first = _select(summary, next(iter(runs.values())))
    t2i = first[(first["task"] == "t2i") & (first["metric"] == "R@1")].set_index("language")
    ax.bar(x, [t2i.loc[lang, "frozen"] for lang in langs], width, label="frozen")
    for i, (label, run) in enumerate(runs.items(), start=1):
        sel = _select(summary, run)
        r = sel[(sel["task"] == "t2i") & (sel["metric"] == "R@1")].set_index("language")
        mean = np.array([r.loc[lang, "mean"] for lang in langs])
        err = np.array([[mean[j] - r.loc[lang, "ci_low"], r.loc[lang, "ci_high"] - mean[j]] for j, lang in enumerate(langs)]).T
        ax.bar(x + i * width, mean, width, yerr=np.nan_to_num(err), capsize=2, label=f"{label} (n={int(r['n'].max())})")
    ax.set_xticks(x + width * len(runs) / 2, langs)
    ax.set_ylabel("text→image R@1 (held-out)")
    ax.legend(fontsize=7)
    save_figure(fig, [paths[0], str(Path(paths[0]).with_suffix(".png"))])
    plt.close(fig)

    table = gram_table(grams, runs)
    panels = [FROZEN] + list(runs)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), constrained_layout=True)
    names = ["image"] + list(languages)
    for ax, label in zip(np.atleast_1d(axes), panels):
        sub = table[table["run"] == label].pivot_table(index="a", columns="b", values="rsa").reindex(index=names, columns=names)
        im = ax.imshow(sub.to_numpy(), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{sub.iat[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_title(label, fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="Gram (RSA) correlation")
    save_figure(fig, [paths[1], str(Path(paths[1]).with_suffix(".png"))])
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from ..config import load_config

    ap = argparse.ArgumentParser(description="Multilingual alignment tables and figures.")
    ap.add_argument("--config", required=True)
    ap.add_argument("--metrics", nargs="+", required=True)
    ap.add_argument("--gram", nargs="+", required=True)
    ap.add_argument("--per-query", nargs="+", required=True)
    ap.add_argument("--sweep", nargs="+", required=True)
    ap.add_argument("--tables", nargs=6, required=True,
                    help="retrieval, headline, pivot, zero_shot, diagnostics, gram (.csv)")
    ap.add_argument("--figures", nargs=2, required=True, help="retrieval, gram (.svg; a .png beside each)")
    ap.add_argument("--parquet", required=True, help="the whole summary")
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    ml = load_config(args.config)["multilingual"]
    languages = ml["languages"]
    metrics = pd.concat([pd.read_parquet(p) for p in args.metrics], ignore_index=True)
    grams = pd.concat([pd.read_parquet(p) for p in args.gram], ignore_index=True)
    sweeps = pd.concat([pd.read_parquet(p) for p in args.sweep], ignore_index=True)
    per_query = {Path(p).parent.name: load_npz(p) for p in args.per_query}
    summary = summarise(metrics, ["t2i", "i2t", "i2t_all", "pivot", "direct", "zero_shot", "diagnostics"])
    runs = chosen_runs(sweeps, ml["evaluate"]["headline"])
    write_table(summary, args.parquet)
    retrieval = summary[summary["task"].isin(["t2i", "i2t", "i2t_all"])]
    tables = [retrieval, headline_table(summary, per_query, sweeps, runs, languages),
              pd.concat([run_table(summary, runs, "pivot"), run_table(summary, runs, "direct")], ignore_index=True),
              run_table(summary, runs, "zero_shot"), run_table(summary, runs, "diagnostics"), gram_table(grams, runs)]
    for table, path in zip(tables, args.tables):
        write_table(table, path)
    figures(summary, grams, runs, languages, args.figures)
    head = tables[1]
    for r in head.itertuples():
        log.info("%s %s: frozen %.4f, aligned %.4f [%.4f, %.4f] (n=%d), diff %.4f [%.4f, %.4f], bootstrap [%.4f, %.4f]",
                 r.run, r.language, r.frozen, r.aligned, r.ci_low, r.ci_high, r.n_seeds, r.diff, r.diff_low,
                 r.diff_high, r.boot_low, r.boot_high)
    return 0


if __name__ == "__main__":
    run_cli(main)
