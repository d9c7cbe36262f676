"""Exp 3 / Exp 1 aggregation: t intervals against scipy, relative change per strategy, Spearman, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow_scripts import aggregate
from workflow_scripts.errors import InputError

SETS = ("shape", "colour")


def finetune_tables(seeds=(0, 1, 2)):
    """Tidy tables as workflow_scripts.evaluate writes them: purity rises and accuracy falls with Cs."""
    rng = np.random.default_rng(0)
    metrics, purity = [], []
    for strategy, slope in (("similarity", 1.0), ("random", 0.5)):
        for cs in (0.0, 0.1, 0.5, 0.8):
            for seed in seeds:
                tags = {"model": "clip", "kind": "finetune", "strategy": strategy, "cs": cs, "seed": seed}
                pur = 0.05 + slope * 0.1 * cs + 0.002 * rng.normal()
                purity += [{**tags, "projection": "text", "metric": "avg_abs_cos_sim", "value": pur},
                           {**tags, "projection": "image", "metric": "avg_abs_cos_sim", "value": 2 * pur}]
                for s in SETS:
                    metrics += [{**tags, "set": s, "metric": "acc1", "value": 0.8 - slope * 0.3 * cs
                                 + 0.01 * rng.normal()},
                                {**tags, "set": s, "metric": "silhouette", "value": 0.1 + 0.01 * rng.normal()}]
    for model, acc, pur in (("clip", 0.6, 0.05), ("laclip", 0.7, 0.04)):
        tags = {"model": model, "kind": "pretrained"}
        for s in SETS:
            metrics += [{**tags, "set": s, "metric": "acc1", "value": acc},
                        {**tags, "set": s, "metric": "silhouette", "value": acc / 10},
                        {**tags, "set": s, "metric": "acc5", "value": np.nan}]
        purity += [{**tags, "projection": "text", "metric": "avg_abs_cos_sim", "value": pur},
                   {**tags, "projection": "image", "metric": "avg_abs_cos_sim", "value": 2 * pur},
                   {**tags, "projection": "text", "metric": "max_abs_cos_sim", "value": 0.3}]
    return pd.DataFrame(metrics), pd.DataFrame(purity)


def test_mean_ci_matches_scipy_t_interval():
    metrics, _ = finetune_tables()
    ft = metrics[metrics.kind == "finetune"].drop(columns="kind")
    summary = aggregate.mean_ci(ft)
    assert list(summary.columns) == ["model", "strategy", "cs", "set", "metric", *aggregate.SUMMARY_STATS]
    assert len(summary) == 2 * 4 * 2 * 2
    row = summary[(summary.strategy == "random") & (summary.cs == 0.5) & (summary.set == "colour")
                  & (summary.metric == "acc1")].iloc[0]
    vals = ft[(ft.strategy == "random") & (ft.cs == 0.5) & (ft.set == "colour") & (ft.metric == "acc1")]["value"]
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=vals.mean(), scale=stats.sem(vals))
    assert row["n"] == 3 and row["mean"] == pytest.approx(vals.mean())
    assert row["ci_low"] == pytest.approx(lo) and row["ci_high"] == pytest.approx(hi)
    lo90, _ = stats.t.interval(0.9, 2, loc=vals.mean(), scale=stats.sem(vals))
    row90 = aggregate.mean_ci(ft, level=0.9).loc[row.name]
    assert row90["ci_low"] == pytest.approx(lo90)


def test_single_seed_has_no_interval():
    metrics, _ = finetune_tables(seeds=(0,))
    summary = aggregate.mean_ci(metrics[metrics.kind == "finetune"])
    assert (summary["n"] == 1).all() and summary["ci_low"].isna().all()


def test_relative_change_is_against_cs0_of_the_same_strategy():
    metrics, _ = finetune_tables()
    summary = aggregate.relative_change(aggregate.mean_ci(metrics[metrics.kind == "finetune"].drop(columns="kind")))
    for strategy in ("similarity", "random"):
        sel = summary[(summary.strategy == strategy) & (summary.set == "shape") & (summary.metric == "acc1")]
        base = sel[sel.cs == 0.0]["mean"].item()
        at08 = sel[sel.cs == 0.8].iloc[0]
        assert at08["baseline"] == pytest.approx(base)
        assert at08["rel_change"] == pytest.approx((at08["mean"] - base) / base)
        assert sel[sel.cs == 0.0]["rel_change"].item() == 0.0
    sim = summary[(summary.strategy == "similarity") & (summary.cs == 0.8) & (summary.metric == "acc1")]
    rnd = summary[(summary.strategy == "random") & (summary.cs == 0.8) & (summary.metric == "acc1")]
    assert (sim["rel_change"].to_numpy() < rnd["rel_change"].to_numpy()).all()   # stronger drop, same baseline kind
    no_base = aggregate.mean_ci(metrics[(metrics.kind == "finetune") & (metrics.cs > 0)])
    with pytest.raises(InputError, match="no Cs = 0"):
        aggregate.relative_change(no_base)


def test_spearman_per_strategy_and_pooled():
    metrics, purity = finetune_tables()
    ft = lambda df: df[df.kind == "finetune"]  # noqa: E731
    out = aggregate.purity_accuracy_spearman(ft(purity), ft(metrics))
    assert set(out.strategy) == {"similarity", "random", "all"} and set(out.set) == set(SETS)
    row = out[(out.strategy == "all") & (out.set == "shape")].iloc[0]
    p = ft(purity)
    p = p[(p.projection == "text") & (p.metric == "avg_abs_cos_sim")]
    a = ft(metrics)
    a = a[(a.set == "shape") & (a.metric == "acc1")]
    j = a.merge(p, on=["model", "strategy", "cs", "seed"])
    rho, pval = stats.spearmanr(j["value_y"], j["value_x"])
    assert row["n"] == 24 and row["rho"] == pytest.approx(rho) and row["p_value"] == pytest.approx(pval)
    assert row["rho"] < -0.5                                 # less pure (higher |cos|) -> lower accuracy


def test_exp1_table():
    metrics, purity = finetune_tables()
    table = aggregate.exp1_table(metrics, purity)
    assert list(table.columns) == ["set", "model", "acc1", "silhouette", "purity_image", "purity_text"]
    assert len(table) == 4
    row = table[(table.set == "colour") & (table.model == "laclip")].iloc[0]
    assert row["acc1"] == 0.7 and row["silhouette"] == pytest.approx(0.07)
    assert row["purity_text"] == 0.04 and row["purity_image"] == 0.08


def test_cli_writes_parquet_and_csv(tmp_path):
    metrics, purity = finetune_tables()
    mpaths, ppaths = [], []
    for i, (key, g) in enumerate(metrics.groupby(["model", "kind", "strategy", "cs", "seed"], dropna=False)):
        g.dropna(axis=1, how="all").to_parquet(tmp_path / f"m{i}.parquet")
        mpaths.append(str(tmp_path / f"m{i}.parquet"))
    for i, (key, g) in enumerate(purity.groupby(["model", "kind", "strategy", "cs", "seed"], dropna=False)):
        g.dropna(axis=1, how="all").to_parquet(tmp_path / f"p{i}.parquet")
        ppaths.append(str(tmp_path / f"p{i}.parquet"))
    hist = pd.DataFrame({"model": "clip", "kind": "finetune", "strategy": "random", "cs": 0.0,
                         "seed": np.repeat([0, 1], 2), "projection": "text", "bin_left": [-1.0, 0.0] * 2,
                         "bin_right": [0.0, 1.0] * 2, "count": [4, 6, 2, 8]})
    hist.to_parquet(tmp_path / "hist.parquet")
    out = tmp_path / "summary"
    assert aggregate.main(["--metrics", *mpaths, "--purity", *ppaths, "--histograms", str(tmp_path / "hist.parquet"),
                           "--out-dir", str(out)]) == 0
    for name in ("exp3_metrics", "exp3_purity", "exp3_spearman", "exp1", "exp3_histograms"):
        assert (out / f"{name}.parquet").exists() and (out / f"{name}.csv").exists()
    m = pd.read_parquet(out / "exp3_metrics.parquet")
    assert "kind" not in m.columns and {"ci_low", "rel_change"} <= set(m.columns)
    assert set(m["cs"]) == {0.0, 0.1, 0.5, 0.8} and (m["n"] == 3).all()
    sp = pd.read_parquet(out / "exp3_spearman.parquet")
    assert set(sp.projection) == {"text", "image"} and len(sp) == 2 * 2 * 3
    h = pd.read_parquet(out / "exp3_histograms.parquet")
    assert h["count"].tolist() == [3.0, 7.0]
    assert len(pd.read_csv(out / "exp1.csv")) == 4
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="bad.parquet"):
        aggregate.main(["--metrics", str(tmp_path / "bad.parquet"), "--purity", *ppaths, "--out-dir", str(out)])
