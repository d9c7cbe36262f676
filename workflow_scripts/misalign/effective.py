"""Effective misalignment: what a swap actually did to a caption set, beyond its nominal Cs.

A swap of two identical captions changes nothing, and a swap between captions that name the same shape
leaves a caption that still describes its image's shape. So next to the nominal fraction Cs, for every
swapped caption set:

- `text_changed`: the fraction of lines whose caption text differs from the original caption of that line
  (measurable on any data set);
- `contradicts_<attribute>`: where the images' true attributes are known (the embedded world's
  train_attributes.csv), the fraction of lines whose caption names a value of that attribute that the image
  does not have, read with `world.read_caption`; and `contradicts_any` over the attributes. The original
  captions' own rate is reported as the reference (human captions never contradict in the embedded world).

    python -m workflow_scripts.misalign.effective --captions results/world/captions.txt \\
        --attributes results/world/train_attributes.csv --summaries results/misalign/*/Cs*/seed*/summary.tsv \\
        --swapped results/misalign/random/Cs0.5/seed0/captions.txt ... --out results/misalign/summary.tsv
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

import numpy as np
import pandas as pd

from ..common.config import CONTROL_STRATEGY
from ..common.errors import InputError

log = logging.getLogger(__name__)

# attributes a caption can contradict, and how train_attributes.csv writes the truth of each
ATTRIBUTES = ("shape", "colour", "size", "count", "position", "background")


def named_values(captions: Sequence[str]) -> pd.DataFrame:
    """One row per caption: the canonical value of each attribute it names (None where it names none)."""
    from ..world.synthetic import COUNT_WORDS, read_caption

    count_of = {word: str(n) for n, word in COUNT_WORDS.items()}
    cache: dict[str, dict[str, str]] = {}
    rows = []
    for text in captions:
        if text not in cache:
            values = dict(read_caption(text)[0])
            if "count" in values:
                values["count"] = count_of[values["count"]]
            cache[text] = values
        rows.append(cache[text])
    return pd.DataFrame(rows, columns=list(ATTRIBUTES))


def contradictions(captions: Sequence[str], truth: pd.DataFrame) -> pd.DataFrame:
    """Per line and attribute: whether the caption names a value the line's image does not have."""
    if len(truth) != len(captions):
        raise InputError(f"{len(captions)} captions but {len(truth)} rows of true attributes")
    named = named_values(captions)
    out = pd.DataFrame(index=named.index)
    for attribute in ATTRIBUTES:
        said = named[attribute]
        true = truth[attribute].astype(str).to_numpy()
        out[attribute] = said.notna().to_numpy() & (said.astype(str).to_numpy() != true)
    return out


def contradicts_any(captions: Sequence[str], truth: pd.DataFrame) -> np.ndarray:
    """Boolean per line: the caption contradicts its image on at least one attribute."""
    return contradictions(captions, truth).any(axis=1).to_numpy()


def changed_lines(original: Sequence[str], swapped: Sequence[str]) -> np.ndarray:
    """Boolean per line: the swapped set's caption text differs from the original caption of that line."""
    return np.fromiter((a != b for a, b in zip(original, swapped)), bool, len(original))


def effective_misalignment(original: Sequence[str], swapped: Sequence[str],
                           truth: pd.DataFrame | None = None) -> dict[str, float]:
    """text_changed and, with the truth, contradicts_<attribute> and contradicts_any of a swapped set."""
    if len(original) != len(swapped):
        raise InputError(f"the swapped caption set has {len(swapped)} lines, the original {len(original)}")
    changed = changed_lines(original, swapped)
    row = {"text_changed": float(changed.mean()) if len(changed) else 0.0}
    if truth is not None:
        wrong = contradictions(swapped, truth)
        row.update({f"contradicts_{a}": float(wrong[a].mean()) for a in ATTRIBUTES})
        row["contradicts_any"] = float(wrong.any(axis=1).mean())
    return row


def read_truth(path: str) -> pd.DataFrame:
    """train_attributes.csv (one row per training line, in line order), checked for its columns."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    missing = [a for a in ATTRIBUTES if a not in table.columns]
    if missing:
        raise InputError(f"{path}: missing attribute columns {missing}")
    return table


def summary_table(original: Sequence[str], sets: dict[tuple[str, float, int], Sequence[str]],
                  nominal: pd.DataFrame | None, truth: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (strategy, Cs, seed) set, its nominal summary columns joined with its effective rates;
    a first row (the control strategy `none`, Cs 0, seed -1) holds the original captions' own rates."""
    rows = [{"strategy": CONTROL_STRATEGY, "cs": 0.0, "seed": -1,
             **effective_misalignment(original, original, truth)}]
    for (strategy, cs, seed), swapped in sorted(sets.items()):
        rows.append({"strategy": strategy, "cs": cs, "seed": seed,
                     **effective_misalignment(original, swapped, truth)})
    table = pd.DataFrame(rows)
    if nominal is not None and len(nominal):
        table = table.merge(nominal, on=["strategy", "cs", "seed"], how="left")
    return table


def main(argv: list[str] | None = None) -> int:
    from .captions import read_captions
    from ..common.io import setup_logging, write_table

    ap = argparse.ArgumentParser(description="Effective misalignment of every swapped caption set.")
    ap.add_argument("--captions", required=True, help="the original caption file")
    ap.add_argument("--attributes", help="true attributes per line (embedded world: train_attributes.csv)")
    ap.add_argument("--swapped", nargs="*", default=[], metavar="STRATEGY:CS:SEED:PATH",
                    help="swapped caption files")
    ap.add_argument("--summaries", nargs="*", default=[], help="per-set swap summaries (nominal Cs, pairs)")
    ap.add_argument("--out", nargs="+", required=True, help="summary table(s), .tsv/.csv/.parquet")
    args = ap.parse_args(argv)
    setup_logging()
    original = read_captions(args.captions)
    truth = read_truth(args.attributes) if args.attributes else None
    sets = {}
    for item in args.swapped:
        parts = item.split(":", 3)
        if len(parts) != 4:
            raise InputError(f"--swapped {item!r}: expected STRATEGY:CS:SEED:PATH")
        strategy, cs, seed, path = parts
        sets[(strategy, float(cs), int(seed))] = read_captions(path)
    nominal = pd.concat([pd.read_csv(p, sep="\t") for p in args.summaries]) if args.summaries else None
    table = summary_table(original, sets, nominal, truth)
    for path in args.out:
        write_table(table, path)
    log.info("effective misalignment:\n%s", table.to_string(index=False))
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
