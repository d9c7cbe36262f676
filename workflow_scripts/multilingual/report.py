"""Tables and figures of the multilingual alignment (report category "8. Multilingual alignment (image
pivot)").

Every aligned number is the mean over the sweep's seeds with its 95 % t interval and n
(workflow_scripts.common.intervals.t_interval); the frozen baseline (one deterministic evaluation) stands beside
it, and `diff` = aligned − frozen per seed with its own t interval. Every run is reported under both
epoch-selection rules (column `rule`, align.RULES): `selected` (the epoch with the best validation macro
R@1, ties to the earlier epoch) and `last` (the last epoch). The headline table adds a bootstrap interval
over the held-out images of the non-English macro text→image R@1 difference (per image: the mean over the
other languages of aligned − frozen hits, averaged over seeds), and, per rule, names the configuration
with the best mean validation macro R@1 over seeds (never chosen by the held-out numbers; under `last` the
last epoch's validation score). Ties between configurations (means equal to TIE_DECIMALS decimals) go to
the simpler head (linear before mlp), then the smaller λp, then the smaller λo (`validation_best`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..report.aggregate import NO_ROWS, metric_bounds, with_note
from ..common.errors import InputError
from ..common.io import load_npz, run_cli, setup_logging, write_table
from ..common.intervals import bootstrap_mean_ci, t_interval
from .align import RULES, rule_key
from .evaluate import FROZEN
from .images import SEP

log = logging.getLogger(__name__)

CONFIG_COLUMNS = ["model", "head", "prox_id", "ortho"]
RUN_COLUMNS = CONFIG_COLUMNS + ["rule"]
HEAD_ORDER = {"linear": 0, "mlp": 1}          # the simpler head first when validation scores tie
TIE_DECIMALS = 12
VALIDATION_SCORE = {"selected": "val_macro_r1", "last": "val_macro_r1_last"}


def summarise(metrics: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """Per (model, head, λp, λo, rule, task, language, metric): frozen value, aligned mean ± t interval over
    seeds (n), and the paired difference aligned − frozen with its t interval."""
    m = metrics[metrics["task"].isin(tasks)]
    frozen = (m[m["head"] == FROZEN][["model", "task", "language", "metric", "value"]]
              .rename(columns={"value": "frozen"}))
    aligned = m[m["head"] != FROZEN].merge(frozen, on=["model", "task", "language", "metric"], how="left")
    rows = []
    for keys, g in aligned.groupby(RUN_COLUMNS + ["task", "language", "metric"], sort=True):
        n, mean, sd, low, high = t_interval(g["value"].to_numpy(), bounds=metric_bounds(keys[-1]))
        _, diff, _, dlow, dhigh = t_interval((g["value"] - g["frozen"]).to_numpy(),
                                             bounds=metric_bounds(keys[-1], difference=True))
        rows.append(dict(zip(RUN_COLUMNS + ["task", "language", "metric"], keys),
                         frozen=float(g["frozen"].iloc[0]), mean=mean, ci_low=low, ci_high=high, n=n,
                         diff=diff, diff_low=dlow, diff_high=dhigh))
    return pd.DataFrame(rows)


def validation_best(sweeps: pd.DataFrame, score: str = "val_macro_r1") -> dict:
    """The configuration {model, head, prox_id, ortho} with the best mean `score` over seeds; ties (means
    equal to TIE_DECIMALS decimals) go to the simpler head (HEAD_ORDER: linear, then mlp), then the smaller
    λp, then the smaller λo, then the model name: a stated order, never the table's."""
    by_config = sweeps.groupby(CONFIG_COLUMNS, as_index=False)[score].mean()
    by_config["_score"] = -by_config[score].round(TIE_DECIMALS)
    by_config["_head"] = by_config["head"].map(HEAD_ORDER).fillna(len(HEAD_ORDER))
    best = by_config.sort_values(["_score", "_head", "prox_id", "ortho", "model"], kind="stable").iloc[0]
    return {k: (float(best[k]) if k in ("prox_id", "ortho") else best[k]) for k in CONFIG_COLUMNS}


def chosen_runs(sweeps: pd.DataFrame, headline: dict) -> list[dict]:
    """Per rule of RULES: {"run": "headline", the configured configuration} and {"run": "validation-best",
    validation_best under that rule's validation score}, each as {run, rule, model, head, prox_id, ortho}."""
    scores = {rule: VALIDATION_SCORE[rule] for rule in RULES if VALIDATION_SCORE[rule] in sweeps.columns}
    if "selected" not in scores:
        raise InputError("sweep tables lack val_macro_r1")
    model = validation_best(sweeps, scores["selected"])["model"]
    chosen = {"model": model, **{k: headline[k] for k in ("head", "prox_id", "ortho")}}
    if _select(sweeps, chosen).empty:
        configs = sweeps[CONFIG_COLUMNS].drop_duplicates().to_dict("records")
        raise InputError(f"multilingual.evaluate.headline: {chosen} is not a run of the sweep (runs: {configs})")
    runs = []
    for rule, score in scores.items():
        runs.append({"run": "headline", "rule": rule, **chosen})
        runs.append({"run": "validation-best", "rule": rule, **validation_best(sweeps, score)})
    return runs


def _config(run: dict) -> dict:
    return {k: run[k] for k in CONFIG_COLUMNS}


def _label(run: dict) -> str:
    return f"{run['run']} ({run['rule']})"


def _select(df: pd.DataFrame, run: dict) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in run.items():
        mask &= np.isclose(df[k].astype(float), float(v)) if k in ("prox_id", "ortho") else (df[k] == v).to_numpy()
    return df[mask]


def headline_table(summary: pd.DataFrame, per_query: dict[str, dict], sweeps: pd.DataFrame, runs: list[dict],
                   languages: Sequence[str]) -> pd.DataFrame:
    """Non-English (and English, and all-language) macro text→image R@1: frozen vs each chosen run under
    its rule, with the t interval over seeds and a bootstrap interval over held-out images of the
    difference (per_query hits of the run's sweep keys under the rule, one per seed)."""
    rows = []
    others = list(languages[1:])
    for run in runs:
        sel = _select(summary, {**_config(run), "rule": run["rule"]})
        run_keys = sorted(rule_key(k, run["rule"]) for k in _select(sweeps, _config(run))["key"])
        for language in ("macro_other", languages[0], "macro"):
            r = sel[(sel["task"] == "t2i") & (sel["metric"] == "R@1") & (sel["language"] == language)]
            if r.empty:
                continue
            r = r.iloc[0]
            row = {**run, "language": language, "frozen": r["frozen"], "aligned": r["mean"],
                   "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_seeds": r["n"], "diff": r["diff"],
                   "diff_low": r["diff_low"], "diff_high": r["diff_high"]}
            hits = per_query[run["model"]]
            langs = others if language == "macro_other" else (languages if language == "macro" else [language])
            per_image = np.mean([np.mean([hits[f"{k}{SEP}{lang}"] - hits[f"{FROZEN}{SEP}{lang}"] for k in run_keys],
                                         axis=0) for lang in langs], axis=0)
            row["boot_low"], row["boot_high"] = bootstrap_mean_ci(per_image)
            row["n_images"] = len(per_image)
            if "best_epoch" in sweeps:
                epochs = _select(sweeps, _config(run)).sort_values("seed")
                row["epochs"] = " ".join(str(int(e)) for e in
                                         epochs["best_epoch" if run["rule"] == "selected" else "epochs_run"])
            rows.append(row)
    return pd.DataFrame(rows)


def run_table(summary: pd.DataFrame, runs: list[dict], task: str) -> pd.DataFrame:
    """The chosen runs' rows of one task (all languages/pairs and metrics), each under its rule."""
    out = pd.concat([_select(summary, {**_config(run), "rule": run["rule"]}).assign(run=run["run"])
                     for run in runs], ignore_index=True)
    return out[out["task"] == task]


def gram_table(grams: pd.DataFrame, runs: list[dict]) -> pd.DataFrame:
    """Cross-lingual Gram (RSA) matrices: the frozen baseline and each chosen run under its rule (mean over
    seeds)."""
    frozen = grams[grams["head"] == FROZEN].assign(run=FROZEN, rule=FROZEN)
    parts = [frozen]
    for run in runs:
        parts.append(_select(grams[grams["head"] != FROZEN], {**_config(run), "rule": run["rule"]})
                     .assign(run=run["run"]))
    out = pd.concat(parts, ignore_index=True)
    return out.groupby(["run", "rule", "model", "a", "b"], as_index=False, sort=False).agg(
        rsa=("rsa", "mean"), n_seeds=("rsa", "size"))


def figures(summary: pd.DataFrame, grams: pd.DataFrame, runs: list[dict], languages: Sequence[str],
            paths: Sequence[str]) -> None:
    """retrieval: text→image R@1 per language, frozen vs the chosen runs under each rule (t interval bars);
    gram: the cross-lingual RSA matrices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures import save_figure

    langs = list(languages) + ["macro_other"]
    fig, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
    width = 0.8 / (1 + len(runs))
    x = np.arange(len(langs))
    first = _select(summary, {**_config(runs[0]), "rule": runs[0]["rule"]})
    t2i = first[(first["task"] == "t2i") & (first["metric"] == "R@1")].set_index("language")
    ax.bar(x, [t2i.loc[lang, "frozen"] for lang in langs], width, label="frozen")
    for i, run in enumerate(runs, start=1):
        label = _label(run)
        sel = _select(summary, {**_config(run), "rule": run["rule"]})
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
    panels = [(FROZEN, FROZEN)] + [(run["run"], run["rule"]) for run in runs]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), constrained_layout=True)
    names = ["image"] + list(languages)
    for ax, (label, rule) in zip(np.atleast_1d(axes), panels):
        sub = (table[(table["run"] == label) & (table["rule"] == rule)]
               .pivot_table(index="a", columns="b", values="rsa").reindex(index=names, columns=names))
        im = ax.imshow(sub.to_numpy(), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{sub.iat[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_title(label if label == FROZEN else f"{label} ({rule})", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="Gram (RSA) correlation")
    save_figure(fig, [paths[1], str(Path(paths[1]).with_suffix(".png"))])
    plt.close(fig)


# Why a table can have no rows (written as one row whose `note` says why)
NO_ZERO_SHOT = ("no zero-shot evaluation: multilingual.evaluate.zero_shot_sets is empty (per-language prompts exist "
                "for the embedded world's shape and colour sets only)")


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config

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
        write_table(with_note(table, NO_ZERO_SHOT if path.endswith("zero_shot.csv") else NO_ROWS), path)
    figures(summary, grams, runs, languages, args.figures)
    head = tables[1]
    for r in head.itertuples():
        log.info("%s (%s) %s: frozen %.4f, aligned %.4f [%.4f, %.4f] (n=%d), diff %.4f [%.4f, %.4f], bootstrap [%.4f, %.4f]",
                 r.run, r.rule, r.language, r.frozen, r.aligned, r.ci_low, r.ci_high, r.n_seeds, r.diff, r.diff_low,
                 r.diff_high, r.boot_low, r.boot_high)
    return 0


if __name__ == "__main__":
    run_cli(main)
