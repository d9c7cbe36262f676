"""Exp 3's orthogonality arm beside its base model: does keeping the neurons orthogonal protect accuracy
under misalignment, or only the purity number?

One row per (base model, strategy, Cs, quantity): the base model's and its <model>-ortho arm's level (mean
over replicates, 95 % t interval, n) and change against their own Cs = 0 control (the paired difference of
workflow_scripts.report.aggregate, with its t interval), with the runs' effective misalignment. Quantities: text and
image purity (mean |cos| between neurons, avg_abs_cos_sim) and zero-shot acc1 per evaluation set: the rows
of the Exp 3 table exp3_effective (workflow_scripts.report.aggregate), so both models went through the same
evaluation and aggregation.

    python -m workflow_scripts.finetune.orthogonality_arm --config C --effective results/tables/exp3_effective.parquet \\
        --out results/tables/exp3_orthogonality_arm.csv
"""

from __future__ import annotations

import argparse

import pandas as pd

from ..common.errors import InputError
from ..common.io import run_cli, setup_logging, write_table

LEVEL = ["mean", "ci_low", "ci_high", "n", "diff", "diff_ci_low", "diff_ci_high"]
EFFECTIVE = ["text_changed", "contradicts_any"]


def arm_table(effective: pd.DataFrame, arms: dict[str, str]) -> pd.DataFrame:
    """Base and arm side by side (columns <level>_base, <level>_arm) from the exp3_effective rows (quantity
    "purity <projection>" / "acc1 <set>", written here as purity_<projection> / acc1_<set>);
    arms = {arm name: base name}."""
    cols = ["model", "strategy", "cs", "quantity", *LEVEL, *[c for c in EFFECTIVE if c in effective.columns]]
    long = effective.assign(quantity=effective["quantity"].str.replace(" ", "_", n=1)).reindex(columns=cols)
    parts = []
    for arm, base in arms.items():
        b, a = long[long["model"] == base], long[long["model"] == arm]
        if b.empty or a.empty:
            raise InputError(f"Exp 3 tables lack rows of {base!r} or its arm {arm!r}: run the arm's fine-tunes first")
        keys = ["strategy", "cs", "quantity"]
        joined = b.drop(columns="model").merge(a[keys + LEVEL], on=keys, suffixes=("_base", "_arm"))
        parts.append(joined.assign(model=base, arm=arm))
    out = pd.concat(parts, ignore_index=True)
    first = ["model", "arm", "strategy", "cs", "quantity"]
    return out[first + [c for c in out.columns if c not in first]].sort_values(first, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config, orthogonality_arms_of

    ap = argparse.ArgumentParser(description="Exp 3 orthogonality arm beside its base model.")
    ap.add_argument("--config", required=True)
    ap.add_argument("--effective", required=True, help="the Exp 3 table exp3_effective (.parquet)")
    ap.add_argument("--out", required=True, help=".csv or .parquet")
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    arms = orthogonality_arms_of(load_config(args.config))
    if not arms:
        raise InputError(f"{args.config}: key 'finetune.orthogonality.arm' is off: no arm to compare")
    write_table(arm_table(pd.read_parquet(args.effective), arms), args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
