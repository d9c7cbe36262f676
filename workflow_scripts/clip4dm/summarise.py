"""Tables of the CLIP4DM results over replicates, and the CLI that writes them with the figures.

- detection: per (model, strategy, Cs), truth and score, AP and AUROC as the mean over replicates with a
  t interval (intervals.t_interval, n = replicates), next to the truth's base rate (the AP of a random
  ranking) and 0.5 (AUROC of a random ranking).
- rate: the misaligned fraction estimated from F-CLIPScore and from CLIPScore against the nominal rate
  (swapped lines), the text-changed rate and the contradiction rate (results/misalign/summary.parquet).
- localisation: per (model, checkpoint group, attribute), LA with its chance level and AP; the pretrained
  model's row carries the Wilson interval over foils, fine-tunes a t interval over replicates.

    python -m workflow_scripts.clip4dm.summarise --detect M1.json ... --scores S1.parquet ... --localisation L1.parquet ...
        --foils F1.parquet ... --misalign results/misalign/summary.parquet --calibration C1.json ...
        --tables-dir results/tables --figures-dir results/figures --examples 6
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..report.aggregate import with_note
from ..common.errors import InputError

log = logging.getLogger(__name__)
GROUP = ["model", "strategy", "cs"]


def _interval(values, bounds=(0.0, 1.0)) -> dict[str, float]:
    from ..common.intervals import t_interval

    n, mean, sd, low, high = t_interval(np.asarray(values, float), bounds=bounds)
    return {"n": n, "mean": mean, "sd": sd, "low": low, "high": high}


def detection_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (model, strategy, cs, truth, score, metric) with replicate statistics."""
    rows = []
    for key, g in runs.groupby(GROUP, sort=True):
        for col in runs.columns:
            if not (col.startswith("ap_") or col.startswith("auroc_")):
                continue
            metric, rest = col.split("_", 1)
            score, truth = rest.rsplit("_", 1)
            stats = _interval(g[col])
            rows.append({**dict(zip(GROUP, key)), "truth": truth, "score": score, "metric": metric, **stats,
                         "reference": float(g[f"rate_{truth}"].mean()) if metric == "ap" else 0.5,
                         "pairs_scored": int(g["n"].iloc[0])})
    return pd.DataFrame(rows)


def rate_table(runs: pd.DataFrame, misalign: pd.DataFrame | None) -> pd.DataFrame:
    """Estimated against true misaligned fractions per (model, strategy, cs), replicate means and intervals."""
    truths = {"nominal": "rate_swapped", "text_changed": "rate_changed", "contradicts": "rate_contradicts"}
    cols = [c for c in ("estimated_rate_fclipscore", "estimated_rate_clipscore", "flagged_fclipscore",
                        "flagged_clipscore", *truths.values()) if c in runs.columns]
    rows = []
    for key, g in runs.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, key))
        row["n_replicates"] = len(g)
        for col in cols:
            stats = _interval(g[col])
            name = next((k for k, v in truths.items() if v == col), col)
            row.update({name: stats["mean"], f"{name}_low": stats["low"], f"{name}_high": stats["high"]})
        if misalign is not None:
            m = misalign[(misalign["strategy"] == key[1]) & np.isclose(misalign["cs"], key[2])]
            if len(m):
                row["summary_text_changed"] = float(m["text_changed"].mean())
                if "contradicts_any" in m:
                    row["summary_contradicts_any"] = float(m["contradicts_any"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def localisation_table(loc: pd.DataFrame) -> pd.DataFrame:
    """Pretrained rows as they are; fine-tunes averaged over replicates per (strategy, cs)."""
    pre = loc[loc["checkpoint"] == "pretrained"].copy()
    pre["n_checkpoints"] = 1
    rows = [pre]
    ft = loc[loc["checkpoint"] == "finetuned"]
    out = []
    for key, g in ft.groupby(["model", "strategy", "cs", "attribute"], sort=True):
        la = _interval(g["la"])
        row = dict(zip(["model", "strategy", "cs", "attribute"], key))
        row.update({"checkpoint": "finetuned", "seed": -1, "n_checkpoints": len(g), "n_foils": int(g["n_foils"].iloc[0]),
                    "n_originals": int(g["n_originals"].iloc[0]), "la": la["mean"], "la_low": la["low"],
                    "la_high": la["high"], "la_chance": float(g["la_chance"].mean())})
        for col in ("ap_fclipscore", "auroc_fclipscore", "ap_clipscore", "auroc_clipscore", "ap_chance", "epsilon"):
            row[col] = float(g[col].mean())
        out.append(row)
    if out:
        rows.append(pd.DataFrame(out))
    return pd.concat(rows, ignore_index=True)


def with_detection_metrics(runs: pd.DataFrame, scores: list[str]) -> pd.DataFrame:
    """Each run's AP / AUROC (detect.detection_metrics) from its per-line scores, run i <-> scores[i]."""
    from ..report.aggregate import read_tables
    from .detect import SCORES, TRUTHS, detection_metrics

    if len(scores) != len(runs):
        raise InputError(f"{len(runs)} detection results but {len(scores)} score tables")
    rows = []
    for path, (_, run) in zip(scores, runs.iterrows()):
        table = read_tables([path], required=SCORES)
        labels = {t: table[t].to_numpy(bool) for t in TRUTHS if t in table}
        rows.append({**run.to_dict(), **detection_metrics(labels, {k: table[k].to_numpy() for k in SCORES})})
    return pd.DataFrame(rows)


def read_runs(paths: list[str]) -> pd.DataFrame:
    """One row per metrics .json file."""
    from ..common.data import read_json

    return pd.DataFrame([read_json(p) for p in paths])


# Why a summary table can have no rows: written instead of an empty file, so the report says why.
NO_DETECTION = "no detection runs: no detector model (clip4dm.detect.models) or no swapped caption sets"
EMPTY_REASONS = {
    "clip4dm_detection": NO_DETECTION,
    "clip4dm_rate": NO_DETECTION,
    "clip4dm_localisation": "no FOIL-style localisation: it needs the embedded world and held-out pairs "
                            "(world.enabled and data.heldout_csv)",
    "clip4dm_calibration": "no calibration: no model was prepared",
    "clip4dm_real": "no real benchmark configured (clip4dm.real_data is empty)",
    "clip4dm_truncated": "no caption was longer than its model's text context (none truncated)",
}
# Why the estimated rates can be NaN in every row
NO_NULL = ("no estimated rate: it needs the scores of held-out aligned pairs as its null distribution "
           "(data.heldout_csv); the true rates are given")


def truncated_table(calibration: list[dict], real: list[dict]) -> pd.DataFrame:
    """Every caption cut to its model's context (clip4dm.long_captions truncate): by model and where it
    was scored (the pack's captions, or a real benchmark)."""
    rows = [{"model": c["model"], "scored_in": "pack (training, held-out and foil captions)", "caption": t}
            for c in calibration for t in c.get("truncated_captions", [])]
    rows += [{"model": r["model"], "scored_in": f"real benchmark {r['set']}", "caption": t}
             for r in real for t in r.get("truncated_captions", [])]
    return pd.DataFrame(rows, columns=["model", "scored_in", "caption"])


def scalar_table(records: list[dict]) -> pd.DataFrame:
    """One row per record, its scalar fields (lists and nested dicts, e.g. truncated_captions, by_group,
    have their own tables)."""
    return pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in records])


def with_rate_note(rate: pd.DataFrame) -> pd.DataFrame:
    """The rate table, with a `note` when no row has an estimated rate (no held-out pairs)."""
    estimates = [c for c in ("estimated_rate_fclipscore", "estimated_rate_clipscore") if c in rate]
    if len(rate) and estimates and rate[estimates].isna().all().all():
        return rate.assign(note=NO_NULL)
    return rate


def main(argv: list[str] | None = None) -> int:
    from ..report.aggregate import read_tables
    from ..common.data import read_json
    from ..common.io import setup_logging, write_table
    from . import render

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detect", nargs="*", default=[], help="detection metrics .json files")
    ap.add_argument("--scores", nargs="*", default=[], help="their per-line scores .parquet, in the same order")
    ap.add_argument("--localisation", nargs="*", default=[], help="localisation metrics .parquet files")
    ap.add_argument("--foils", nargs="*", default=[], help="scored foil tables .parquet (examples)")
    ap.add_argument("--calibration", nargs="*", default=[], help="calibration .json files")
    ap.add_argument("--real", nargs="*", default=[], help="real-benchmark metrics .json files")
    ap.add_argument("--misalign", help="results/misalign/summary.parquet")
    ap.add_argument("--tables-dir", required=True)
    ap.add_argument("--figures-dir", required=True)
    ap.add_argument("--examples", type=int, default=6)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    tables, figures = Path(args.tables_dir), Path(args.figures_dir)
    runs = with_detection_metrics(read_runs(args.detect), args.scores)
    misalign = read_tables([args.misalign], required=()) if args.misalign else None
    det = detection_table(runs) if len(runs) else pd.DataFrame()
    rate = with_rate_note(rate_table(runs, misalign)) if len(runs) else pd.DataFrame()
    loc = localisation_table(read_tables(args.localisation, required=())) if args.localisation else pd.DataFrame()
    calib_json = [read_json(p) for p in args.calibration]
    real_json = [read_json(p) for p in args.real]
    calib, real = scalar_table(calib_json), scalar_table(real_json)
    for name, table in (("clip4dm_detection", det), ("clip4dm_rate", rate), ("clip4dm_localisation", loc),
                        ("clip4dm_calibration", calib), ("clip4dm_real", real),
                        ("clip4dm_truncated", truncated_table(calib_json, real_json))):
        for suffix in (".csv", ".parquet"):
            write_table(with_note(table, EMPTY_REASONS[name]), tables / f"{name}{suffix}")
    foils = read_tables(args.foils, required=()) if args.foils else pd.DataFrame()
    render.write_all(det, rate, loc, foils, figures, args.examples)
    log.info("detection:\n%s", det.to_string(index=False) if len(det) else "(none)")
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
