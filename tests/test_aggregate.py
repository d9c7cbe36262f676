"""Exp 3 / Exp 1 aggregation against plain references: t intervals (scipy), paired differences to the
control of the same replicate, bootstrap intervals (normal approximation), reference levels, Spearman over
distinct runs, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow_scripts.report import aggregate
from workflow_scripts.common import intervals
from workflow_scripts.common.errors import InputError
from workflow_scripts.common.io import save_npz

SETS = ("shape", "colour")
SEEDS = (0, 1, 2)
RUNS = [("none", 0.0)] + [(s, cs) for s in ("similarity", "random") for cs in (0.1, 0.5, 0.8)]
SLOPE = {"none": 0.0, "similarity": 1.0, "random": 0.5}


def finetune_tables(seeds=SEEDS):
    """Tidy tables as workflow_scripts.evaluate.run writes them: purity rises and accuracy falls with Cs;
    each replicate has its own offset (shared by its runs), which pairing removes."""
    rng = np.random.default_rng(0)
    metrics, purity = [], []
    offset = {seed: 0.05 * rng.normal() for seed in seeds}
    for strategy, cs in RUNS:
        for seed in seeds:
            tags = {"model": "clip", "kind": "finetune", "strategy": strategy, "cs": cs, "seed": seed}
            pur = 0.05 + SLOPE[strategy] * 0.1 * cs + offset[seed] / 10 + 0.001 * rng.normal()
            purity += [{**tags, "projection": "text", "metric": "avg_abs_cos_sim", "value": pur},
                       {**tags, "projection": "image", "metric": "avg_abs_cos_sim", "value": 2 * pur}]
            for s in SETS:
                metrics += [{**tags, "set": s, "metric": "acc1",
                             "value": 0.8 - SLOPE[strategy] * 0.3 * cs + offset[seed] + 0.005 * rng.normal()},
                            {**tags, "set": s, "metric": "silhouette", "value": 0.1 + 0.01 * rng.normal()}]
    for model, acc, pur in (("clip", 0.6, 0.05), ("laclip", 0.7, 0.04)):
        tags = {"model": model, "kind": "pretrained"}
        for s in SETS:
            metrics += [{**tags, "set": s, "metric": "acc1", "value": acc},
                        {**tags, "set": s, "metric": "silhouette", "value": acc / 10},
                        {**tags, "set": s, "metric": "acc5", "value": np.nan}]
        purity += [{**tags, "projection": p, "metric": m, "value": v}
                   for p, scale in (("text", 1), ("image", 2))
                   for m, v in (("avg_abs_cos_sim", scale * pur), ("n_neurons", 16), ("in_dim", 8))]
    return pd.DataFrame(metrics), pd.DataFrame(purity)


def predictions(n_images=400, seeds=SEEDS):
    """Per-image correctness for every checkpoint of finetune_tables (acc about its table value)."""
    rng = np.random.default_rng(1)
    out = {}
    for strategy, cs in RUNS:
        for seed in seeds:
            p = 0.8 - SLOPE[strategy] * 0.3 * cs
            out[("clip", "finetune", strategy, cs, seed)] = {s: rng.random(n_images) < p for s in SETS}
    for model, p in (("clip", 0.6), ("laclip", 0.7)):
        out[(model, "pretrained", None, None, None)] = {s: rng.random(n_images) < p for s in SETS}
    return out


def _ft(df):
    return df[df.kind == "finetune"].drop(columns="kind")


def test_t_interval_matches_scipy():
    v = np.array([0.31, 0.35, 0.29, 0.40])
    n, mean, sd, lo, hi = intervals.t_interval(v, 0.9)
    want = stats.t.interval(0.9, 3, loc=v.mean(), scale=stats.sem(v))
    assert n == 4 and mean == pytest.approx(v.mean()) and sd == pytest.approx(v.std(ddof=1))
    assert (lo, hi) == pytest.approx(want)
    assert np.isnan(intervals.t_interval(np.array([0.3, np.nan]))[3])         # one value: no interval


def test_t_interval_respects_the_range_and_the_minimum_n():
    # two replicates: the t interval (±12.7 sd/√2) would leave [0, 1] — none is given
    n, mean, sd, lo, hi = intervals.t_interval(np.array([0.02, 0.10]), bounds=(0.0, 1.0))
    assert n == 2 and mean == pytest.approx(0.06) and sd > 0 and np.isnan(lo) and np.isnan(hi)
    # three replicates near 0: the plain interval goes below 0, the bounded one stops at 0
    v = np.array([0.01, 0.02, 0.09])
    plain = stats.t.interval(0.95, 2, loc=v.mean(), scale=stats.sem(v))
    assert plain[0] < 0
    _, _, _, lo, hi = intervals.t_interval(v, bounds=(0.0, 1.0))
    assert lo == 0.0 and hi == pytest.approx(plain[1])


def test_accuracy_intervals_stay_inside_their_range():
    """Issue: with 2 seeds, accuracy CIs went below 0. Accuracies near 0 and 1 over 2 and 3 replicates."""
    rows = []
    for seed, (low_acc, high_acc) in enumerate([(0.00, 0.97), (0.06, 1.00), (0.01, 0.92)]):
        for strategy, acc in ((aggregate.CONTROL_STRATEGY, high_acc), ("random", low_acc)):
            rows.append({"model": "clip", "strategy": strategy, "cs": 0.0 if strategy != "random" else 0.8,
                         "seed": seed, "set": "shape", "metric": "acc1", "value": acc})
    runs = pd.DataFrame(rows)
    for n_seeds in (2, 3):
        out = aggregate.paired_summary(runs[runs.seed < n_seeds], "set")
        assert (out["n"] == n_seeds).all()
        for col in ("ci_low", "ci_high"):
            v = out[col].dropna()
            assert ((v >= 0) & (v <= 1)).all(), out
            assert len(v) == (len(out) if n_seeds >= intervals.MIN_REPLICATES else 0)
        d = out[["diff_ci_low", "diff_ci_high"]].dropna().to_numpy()
        assert ((d >= -1) & (d <= 1)).all()


def test_paired_summary_differences_against_the_same_replicate_control():
    metrics, _ = finetune_tables()
    ft = _ft(metrics)
    summary = aggregate.paired_summary(ft, "set")
    assert len(summary[summary.strategy == "none"]) == 2 * 2                  # control once: 2 sets x 2 metrics
    row = summary[(summary.strategy == "random") & (summary.cs == 0.8) & (summary.set == "colour")
                  & (summary.metric == "acc1")].iloc[0]
    sel = ft[(ft.set == "colour") & (ft.metric == "acc1")].set_index(["strategy", "cs", "seed"])["value"]
    treat, ctrl = sel.loc[("random", 0.8)].sort_index(), sel.loc[("none", 0.0)].sort_index()
    d = (treat - ctrl).to_numpy()
    lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    assert row["diff"] == pytest.approx(d.mean()) and (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((lo, hi))
    assert row["rel_change"] == pytest.approx(d.mean() / ctrl.mean())
    unpaired = stats.t.interval(0.95, 2, loc=treat.mean(), scale=stats.sem(treat))
    assert row["diff_ci_high"] - row["diff_ci_low"] < unpaired[1] - unpaired[0]   # pairing removes the offsets


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(5)
    correct = rng.random(2000) < 0.3
    lo, hi = intervals.bootstrap_mean_ci(correct, draws=4000, seed=0)
    p, half = correct.mean(), 1.96 * np.sqrt(correct.mean() * (1 - correct.mean()) / 2000)
    assert lo == pytest.approx(p - half, abs=0.004) and hi == pytest.approx(p + half, abs=0.004)
    assert 0.0 <= lo < p < hi <= 1.0
    assert intervals.bootstrap_mean_ci(np.ones(50)) == (1.0, 1.0)          # inside the range, always


def test_bootstrap_accuracy_columns():
    metrics, _ = finetune_tables()
    preds = predictions()
    summary = aggregate.bootstrap_accuracy(aggregate.paired_summary(_ft(metrics), "set"), preds)
    row = summary[(summary.strategy == "similarity") & (summary.cs == 0.8) & (summary.set == "shape")
                  & (summary.metric == "acc1")].iloc[0]
    assert row["n_images"] == 400
    level = np.mean([preds[("clip", "finetune", "similarity", 0.8, r)]["shape"] for r in SEEDS])
    assert row["boot_ci_low"] < level < row["boot_ci_high"]
    diff = np.mean([preds[("clip", "finetune", "similarity", 0.8, r)]["shape"].astype(float)
                    - preds[("clip", "finetune", "none", 0.0, r)]["shape"] for r in SEEDS])
    assert row["boot_diff_ci_low"] < diff < row["boot_diff_ci_high"] < 0     # a real drop of 0.24
    assert summary[summary.metric == "silhouette"]["boot_ci_low"].isna().all()


def test_spearman_over_distinct_runs_with_replicate_clusters():
    metrics, purity = finetune_tables()
    out = aggregate.purity_accuracy_spearman(_ft(purity), _ft(metrics))
    assert set(out.strategy) == {"similarity", "random", "all"} and set(out.set) == set(SETS)
    assert "p_value" not in out.columns
    row = out[(out.strategy == "all") & (out.set == "shape")].iloc[0]
    p = _ft(purity)
    p = p[(p.projection == "text") & (p.metric == "avg_abs_cos_sim")]
    a = _ft(metrics)
    a = a[(a.set == "shape") & (a.metric == "acc1")]
    j = a.merge(p, on=["model", "strategy", "cs", "seed"])
    assert len(j) == 7 * 3                                    # each control once: 1 + 6 runs x 3 replicates
    assert row["n_runs"] == 21 and row["n_replicates"] == 3
    assert row["rho"] == pytest.approx(stats.spearmanr(j["value_y"], j["value_x"])[0])
    assert row["rho"] < -0.5
    # 3 replicates cannot resolve a 95 % cluster-bootstrap interval: withheld, and the table says why
    assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"]) and row["interval"].startswith("withheld")
    sim = out[(out.strategy == "similarity") & (out.set == "shape")].iloc[0]
    assert sim["n_runs"] == 4 * 3                             # its 3 Cs and the shared control


def test_exp3_tables_reference_levels_and_effective_misalignment():
    metrics, purity = finetune_tables()
    mis = pd.DataFrame([{"strategy": "none", "cs": 0.0, "seed": -1, "text_changed": 0.0, "contradicts_any": 0.0}]
                       + [{"strategy": s, "cs": cs, "seed": r, "text_changed": cs * (0.8 if s == "similarity" else 1),
                           "contradicts_any": cs * (0.3 if s == "similarity" else 0.9)}
                          for s, cs in RUNS[1:] for r in SEEDS])
    tables = aggregate.exp3_tables(metrics, purity, predictions(), mis)
    pur = tables["exp3_purity"]
    row = pur[(pur.strategy == "random") & (pur.cs == 0.5) & (pur.projection == "text")].iloc[0]
    assert row["pretrained"] == pytest.approx(0.05) and row["contradicts_any"] == pytest.approx(0.45)
    rng = np.random.default_rng(0)                            # the random level, computed here by hand
    levels = []
    for _ in range(200):
        V = rng.standard_normal((16, 8))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        C = np.abs(V @ V.T)
        np.fill_diagonal(C, 0)
        levels.append(C.mean())
    assert row["random_mean"] == pytest.approx(np.mean(levels)) and row["random_sd"] == pytest.approx(np.std(levels, ddof=1))
    assert set(tables["exp3_effective"]["quantity"]) == {"purity text", "purity image", "acc1 shape", "acc1 colour"}
    with pytest.raises(InputError, match="no Cs = 0 control"):
        aggregate.exp3_tables(metrics[metrics.strategy != "none"], purity[purity.strategy != "none"])


def test_replicates_from_their_own_pretrainings():
    """Fine-tunes tagged with the pretraining they start from (replicates 0 and 3 from `clip`, 1 from
    clip-p1, 2 from clip-p2): the pretrained reference is the mean over the replicates' pretrainings
    (clip counted twice, as in the replicate mean), the per-replicate table pairs each run with its own
    replicate's control, and the histograms average over replicates whatever their pretraining."""
    seeds = (0, 1, 2, 3)
    source = {0: "clip", 1: "clip-p1", 2: "clip-p2", 3: "clip"}
    metrics, purity = finetune_tables(seeds)
    for df in (metrics, purity):
        ft = df["kind"] == "finetune"
        df.loc[ft, "pretraining"] = df.loc[ft, "seed"].map(source)
    extra_m, extra_p = [], []
    for name, seed, acc, pur in (("clip-p1", 1, 0.3, 0.2), ("clip-p2", 2, 0.9, 0.4)):
        tags = {"model": name, "kind": "pretrained", "base_model": "clip", "pretrain_seed": seed}
        extra_m += [{**tags, "set": s, "metric": "acc1", "value": acc} for s in SETS]
        extra_p += [{**tags, "projection": p, "metric": m, "value": v} for p, sc in (("text", 1), ("image", 2))
                    for m, v in (("avg_abs_cos_sim", sc * pur), ("n_neurons", 16), ("in_dim", 8))]
    metrics = pd.concat([metrics, pd.DataFrame(extra_m)], ignore_index=True)
    purity = pd.concat([purity, pd.DataFrame(extra_p)], ignore_index=True)
    tables = aggregate.exp3_tables(metrics, purity)
    m = tables["exp3_metrics"]
    acc = m[(m.metric == "acc1") & (m.set == "shape")]
    assert acc["pretrained"].tolist() == pytest.approx([(0.6 * 2 + 0.3 + 0.9) / 4] * len(acc))
    pur = tables["exp3_purity"]
    text = pur[(pur.metric == "avg_abs_cos_sim") & (pur.projection == "text")]
    assert text["pretrained"].tolist() == pytest.approx([(0.05 * 2 + 0.2 + 0.4) / 4] * len(text))
    reps = tables["exp3_replicates"]
    row = reps[(reps.strategy == "random") & (reps.cs == 0.8) & (reps.seed == 2) & (reps.quantity == "acc1 shape")].iloc[0]
    sel = metrics[(metrics.kind == "finetune") & (metrics.set == "shape") & (metrics.metric == "acc1")
                  & (metrics.seed == 2)].set_index(["strategy", "cs"])["value"]
    assert row["pretraining"] == "clip-p2" and row["control"] == sel.loc[("none", 0.0)]
    assert row["diff"] == pytest.approx(sel.loc[("random", 0.8)] - sel.loc[("none", 0.0)])
    assert len(reps[reps.quantity == "purity text"]) == len(RUNS) * len(seeds)
    within = tables["exp3_within_groups"]
    assert set(within.projection) == {"text", "image"} and (within["n_runs"] == len(RUNS) * len(seeds)).all()
    assert (within["n_replicates"] == 4).all() and within["within_r"].notna().all()
    hist = pd.DataFrame({"model": "clip", "strategy": "none", "cs": 0.0, "seed": [0, 1, 2],
                         "pretraining": ["clip", "clip-p1", "clip-p2"], "projection": "text",
                         "bin_left": 0.0, "bin_right": 1.0, "count": [3, 6, 9]})
    mean = aggregate.mean_histograms(hist)
    assert len(mean) == 1 and mean["count"].iloc[0] == 6.0


def test_exp1_table_and_paired_differences():
    metrics, purity = finetune_tables()
    table = aggregate.exp1_table(metrics, purity)
    assert list(table.columns) == ["set", "model", "acc1", "silhouette", "purity_image", "purity_text", "n_seeds"]
    row = table[(table.set == "colour") & (table.model == "laclip")].iloc[0]
    assert row["acc1"] == 0.7 and row["purity_text"] == 0.04 and row["purity_image"] == 0.08
    preds = predictions()
    diffs = aggregate.exp1_differences(preds)
    row = diffs[diffs.set == "shape"].iloc[0]
    a, b = preds[("clip", "pretrained", None, None, None)]["shape"], preds[("laclip", "pretrained", None, None, None)]["shape"]
    assert (row["model_a"], row["model_b"], row["n_images"]) == ("clip", "laclip", 400)
    assert row["diff"] == pytest.approx(a.mean() - b.mean()) and row["ci_low"] < row["diff"] < row["ci_high"]
    assert row["n_seeds"] == 1 and np.isnan(row["seed_ci_low"])


def test_exp1_pretraining_replicas_count_as_their_model():
    """Replicas <name>-p<seed> (tagged base_model, pretrain_seed) are averaged with their model: the
    difference is the mean over the common seeds, with a t interval over the seeds."""
    rng = np.random.default_rng(2)
    preds = {}
    for seed, (pa, pb) in enumerate(((0.6, 0.7), (0.55, 0.72), (0.62, 0.69))):
        for model, p in (("clip", pa), ("laclip", pb)):
            name = model if seed == 0 else f"{model}-p{seed}"
            preds[(name, "pretrained", None, None, None, model, seed)] = {"shape": rng.random(500) < p}
    row = aggregate.exp1_differences(preds).iloc[0]
    per_seed = [preds[(m, "pretrained", None, None, None, "clip", s)]["shape"].mean()
                - preds[(m.replace("clip", "laclip"), "pretrained", None, None, None, "laclip", s)]["shape"].mean()
                for s, m in ((0, "clip"), (1, "clip-p1"), (2, "clip-p2"))]
    assert (row["model_a"], row["model_b"], row["n_seeds"]) == ("clip", "laclip", 3)
    assert row["diff"] == pytest.approx(np.mean(per_seed))
    want = stats.t.interval(0.95, 2, loc=np.mean(per_seed), scale=stats.sem(per_seed))
    assert (row["seed_ci_low"], row["seed_ci_high"]) == pytest.approx(want)


def test_pretrain_seeds_add_replicas_of_pretrained_models_only():
    from workflow_scripts.common.config import base_model, pretrain_replicas

    cfg = {"models": {"clip": {"source": "pretrain", "arch": "a"}, "ext": {"source": "checkpoint", "arch": "b"}},
           "pretrain": {"seed": 0, "seeds": [0, 3]}}
    replicas = pretrain_replicas(cfg)
    assert replicas == {"clip-p3": {"source": "pretrain", "arch": "a", "pretrain_seed": 3}}
    assert base_model("clip-p3", replicas["clip-p3"]) == "clip" and base_model("clip", cfg["models"]["clip"]) == "clip"
    with pytest.raises(InputError, match="clash"):
        pretrain_replicas({**cfg, "models": {**cfg["models"], "clip-p3": {"source": "checkpoint"}}})


def test_replicate_r_starts_from_pretraining_r():
    """finetune.pretraining matched: replicate r of a model (and of its orthogonality arm) starts from its
    pretraining r mod P; `first` and imported checkpoints: every replicate from the model's own."""
    from workflow_scripts.common.config import pretrain_replicas, pretrainings, replicate_towers

    cfg = {"models": {"clip": {"source": "pretrain", "arch": "a"}, "ext": {"source": "checkpoint", "arch": "b"},
                      "clip-ortho": {"source": "pretrain", "arch": "a", "finetune_of": "clip"}},
           "pretrain": {"seed": 0, "seeds": [1, 2]}, "finetune": {"pretraining": "matched"}}
    cfg["models"].update(pretrain_replicas({**cfg, "models": {"clip": cfg["models"]["clip"]}}))
    assert pretrainings(cfg, "clip") == ["clip", "clip-p1", "clip-p2"] == pretrainings(cfg, "clip-ortho")
    assert [replicate_towers(cfg, "clip", r) for r in (0, 1, 2, 3)] == ["clip", "clip-p1", "clip-p2", "clip"]
    assert replicate_towers(cfg, "clip-ortho", "2") == "clip-p2"
    assert [replicate_towers(cfg, "ext", r) for r in (0, 1)] == ["ext", "ext"]
    cfg["finetune"]["pretraining"] = "first"
    assert {replicate_towers(cfg, "clip", r) for r in range(3)} == {"clip"}


def test_cli_writes_every_table(tmp_path):
    metrics, purity = finetune_tables()
    paths = {"metrics": [], "purity": [], "predictions": []}
    for kind, df in (("metrics", metrics), ("purity", purity)):
        for i, (_, g) in enumerate(df.groupby(["model", "kind", "strategy", "cs", "seed"], dropna=False)):
            g.dropna(axis=1, how="all").to_parquet(tmp_path / f"{kind}{i}.parquet")
            paths[kind].append(str(tmp_path / f"{kind}{i}.parquet"))
    for i, (tags, sets) in enumerate(predictions().items()):
        names = dict(zip(aggregate.TAG_COLUMNS, tags))
        save_npz(tmp_path / f"pred{i}.npz", tags=np.asarray(json.dumps({k: v for k, v in names.items() if v is not None})),
                 **{f"correct::{s}": c for s, c in sets.items()})
        paths["predictions"].append(str(tmp_path / f"pred{i}.npz"))
    hist = pd.DataFrame({"model": "clip", "kind": "finetune", "strategy": "none", "cs": 0.0,
                         "seed": np.repeat([0, 1], 2), "projection": "text", "bin_left": [-1.0, 0.0] * 2,
                         "bin_right": [0.0, 1.0] * 2, "count": [4, 6, 2, 8]})
    hist.to_parquet(tmp_path / "hist.parquet")
    out = tmp_path / "summary"
    assert aggregate.main(["--metrics", *paths["metrics"], "--purity", *paths["purity"],
                           "--predictions", *paths["predictions"], "--histograms", str(tmp_path / "hist.parquet"),
                           "--out-dir", str(out)]) == 0
    for name in ("exp3_metrics", "exp3_purity", "exp3_spearman", "exp3_effective", "exp1", "exp1_differences",
                 "exp3_histograms"):
        assert (out / f"{name}.parquet").exists() and (out / f"{name}.csv").exists()
    m = pd.read_parquet(out / "exp3_metrics.parquet")
    assert set(m["cs"]) == {0.0, 0.1, 0.5, 0.8} and (m["n"] == 3).all() and m["diff"].notna().all()
    assert m[m.metric == "acc1"]["boot_diff_ci_low"].notna().all()
    assert pd.read_parquet(out / "exp3_histograms.parquet")["count"].tolist() == [3.0, 7.0]
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="bad.parquet"):
        aggregate.main(["--metrics", str(tmp_path / "bad.parquet"), "--purity", *paths["purity"],
                        "--out-dir", str(out)])


def test_cluster_bootstrap_enumerates_every_ordered_resample_of_few_replicates():
    """With 4 replicates the interval equals the quantiles over all 256 equally likely ordered resamples of
    whole replicates, written out here by brute force; with 3 (10 distinct resamples, each one-replicate
    resample 1/27 > 2.5 %) it cannot be resolved and is withheld."""
    import itertools

    rng = np.random.default_rng(4)
    clusters = np.repeat([0, 1, 2, 3], 5)
    x = rng.normal(size=20) + clusters
    y = -x + rng.normal(size=20)
    rho, lo, hi = intervals.cluster_bootstrap_spearman(x, y, clusters)
    rhos = []
    for pick in itertools.product(range(4), repeat=4):
        idx = np.concatenate([np.flatnonzero(clusters == c) for c in pick])
        rhos.append(stats.spearmanr(x[idx], y[idx])[0])
    rhos = np.sort(rhos)
    cum = np.arange(1, 257) / 256
    assert rho == pytest.approx(stats.spearmanr(x, y)[0])
    assert lo == pytest.approx(rhos[np.searchsorted(cum, 0.025 - 1e-12)])
    assert hi == pytest.approx(rhos[np.searchsorted(cum, 0.975 - 1e-12)])
    three = clusters < 3
    rho3, lo3, hi3 = intervals.cluster_bootstrap_spearman(x[three], y[three], clusters[three])
    assert rho3 == pytest.approx(stats.spearmanr(x[three], y[three])[0]) and np.isnan(lo3) and np.isnan(hi3)
    assert "10 distinct resamples" in intervals.cluster_resolution(3)
    assert intervals.cluster_resolution(4) is None


def test_combined_interval_against_a_hand_computation_and_a_two_stage_bootstrap():
    """The combined interval on a small fixed table: mean ± t(R-1)·sqrt(var of replicate means / R + var of
    image means / N), written out by hand; it is at least as wide as a two-stage bootstrap that resamples
    replicates and then images (brute-force loops), and wider than either noise source alone."""
    table = np.array([[1, 0, 1, 1, 0, 1, 0, 0],
                      [1, 1, 1, 1, 0, 1, 1, 0],
                      [0, 0, 1, 0, 0, 1, 0, 0]], dtype=float)
    lo, hi = intervals.combined_t_interval(table)
    rep_means = [sum(row) / 8 for row in table.tolist()]
    img_means = [sum(table[r][i] for r in range(3)) / 3 for i in range(8)]
    grand = sum(rep_means) / 3
    var_rep = sum((m - grand) ** 2 for m in rep_means) / 2
    var_img = sum((m - grand) ** 2 for m in img_means) / 7
    half = stats.t.ppf(0.975, 2) * math.sqrt(var_rep / 3 + var_img / 8)
    assert (lo, hi) == pytest.approx((grand - half, grand + half), abs=1e-12)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(4000):                          # two-stage: replicates, then images (shared by replicates)
        reps, imgs = rng.integers(0, 3, 3), rng.integers(0, 8, 8)
        boot.append(sum(table[r][i] for r in reps for i in imgs) / 24)
    b_lo, b_hi = np.quantile(boot, [0.025, 0.975])
    assert hi - lo >= b_hi - b_lo                  # 3 replicates: the percentile bootstrap is the narrower
    t_lo, t_hi = intervals.t_interval(np.array(rep_means))[3:]
    i_lo, i_hi = intervals.bootstrap_mean_ci(np.array(img_means), seed=0)
    assert hi - lo > max(t_hi - t_lo, i_hi - i_lo)
    assert intervals.combined_t_interval(table, bounds=(0.0, 0.5))[1] == 0.5
    assert all(np.isnan(intervals.combined_t_interval(table[:2])))          # 2 replicates: none given


def test_within_group_correlation_against_a_plain_regression():
    """The partial correlation given groups (and replicates) equals the correlation of the residuals of x
    and y regressed on the group and replicate indicators (plain normal equations); the Fisher-z interval
    uses se 1/sqrt(n - q - 3), q the covariates beyond the intercept."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(6), 4)
    reps = np.tile(np.arange(4), 6)
    shift = rng.normal(size=6)[groups] * 5 + rng.normal(size=4)[reps] * 3   # treatment and replicate move both
    x = shift + rng.normal(size=24)
    y = shift + 0.5 * x - 0.5 * shift + rng.normal(size=24)    # beyond them, y follows x with slope 0.5
    r, lo, hi, n, q = intervals.within_group_correlation(x, y, groups, reps)
    X = np.column_stack([(groups == k).astype(float) for k in range(6)]
                        + [(reps == k).astype(float) for k in range(1, 4)])
    beta_x = np.linalg.solve(X.T @ X, X.T @ x)
    beta_y = np.linalg.solve(X.T @ X, X.T @ y)
    rx, ry = x - X @ beta_x, y - X @ beta_y
    want = float(rx @ ry / math.sqrt((rx @ rx) * (ry @ ry)))
    assert (n, q) == (24, 8) and r == pytest.approx(want, abs=1e-12)
    half = stats.norm.ppf(0.975) / math.sqrt(24 - 8 - 3)
    assert (lo, hi) == pytest.approx((math.tanh(math.atanh(want) - half), math.tanh(math.atanh(want) + half)))
    assert stats.pearsonr(x, y)[0] > 0.9 > r                  # the pooled value is the treatment's
    assert intervals.within_group_correlation(x, y, groups)[4] == 5       # groups only: 5 covariates
    flat = np.repeat([0.3, 0.5, 0.7, 0.2, 0.1, 0.9], 4)
    assert np.isnan(intervals.within_group_correlation(x, flat, groups)[0])   # constant within groups


def test_wilson_interval_matches_scipy():
    for k, n in ((0, 20), (7, 20), (456, 456), (227, 241)):
        want = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert intervals.wilson_interval(k, n, z=stats.norm.ppf(0.975)) == pytest.approx((want.low, want.high), abs=1e-9)
    assert all(np.isnan(intervals.wilson_interval(0, 0)))
