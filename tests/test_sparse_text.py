"""Caption (text) decompositions beside image decompositions, the sweep over every evaluation set, and the
tables keyed by set and modality: each against plain NumPy / scikit-learn references on small inputs."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Lasso

from workflow_scripts.common.errors import InputError
from workflow_scripts.evaluate.run import SEP
from workflow_scripts.sparse import aggregate, dictionary, evaluate, paths

SETTINGS = {"lambdas": [0.3, 0.1], "tol": 0.0, "max_images": 0, "example_lambda": 0.3, "top_concepts": 3,
            "examples": 2, "captions": True}


def unit(v):
    return v / np.sqrt(np.sum(v * v))


def sklearn_weights(C, Zc, lam):
    """SpLiCE's skl path at a tight tolerance, one embedding at a time (the independent reference)."""
    d = C.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([Lasso(alpha=lam / (2 * d), positive=True, fit_intercept=False, tol=1e-12,
                               max_iter=1_000_000).fit(C.T, z).coef_ for z in Zc])


def world(seed=0, K=12, d=6, n_pairs=9, n_images=10, n_classes=3, n_mean=15):
    """Pre-projection features of a tiny study: concepts, training images and captions for the means, an
    evaluation set and image-caption pairs (captions near their images), with identity projections."""
    rng = np.random.default_rng(seed)
    concepts = {"concepts": np.asarray([f"c{k}" for k in range(K)]), "text": rng.normal(size=(K, d)),
                "image": rng.normal(size=(n_mean, d)) + 1.0, "caption": rng.normal(size=(n_mean, d)) - 1.0}
    pair_image = rng.normal(size=(n_pairs, d))
    features = {f"heldout_pairs{SEP}image": pair_image,
                f"heldout_pairs{SEP}text": pair_image + 0.3 * rng.normal(size=(n_pairs, d)),
                f"s{SEP}image": rng.normal(size=(n_images, d)), f"s{SEP}labels": rng.integers(0, n_classes, n_images),
                f"s{SEP}classnames": np.asarray([f"k{i}" for i in range(n_classes)]),
                f"s{SEP}templates": np.asarray(["a {c}"]), f"s{SEP}prompt_text": rng.normal(size=(n_classes, d))}
    return concepts, features, np.eye(d), np.eye(d)


# ----------------------------------------------------------------------------- captions

def test_captions_are_centred_by_the_caption_mean_and_scored_by_retrieval():
    concepts, features, ip, tp = world()
    sweep, hist, listed = evaluate.evaluate_run(concepts, features, ip, tp, {**SETTINGS, "sets": []}, {"model": "m"})
    rows = pd.DataFrame(sweep)
    assert set(rows["modality"]) == {"image", "text"} and set(rows["set"]) == {"heldout_pairs"}
    # plain reference: SpLiCE's encode_text with decomp_text (own text mean), sklearn's Lasso, loops
    Tn = np.array([unit(t) for t in concepts["text"]])
    C = np.array([unit(t - Tn.mean(axis=0)) for t in Tn])
    mu = {"image": np.mean([unit(x) for x in concepts["image"]], axis=0),
          "text": np.mean([unit(x) for x in concepts["caption"]], axis=0)}
    raw = {"image": features[f"heldout_pairs{SEP}image"], "text": features[f"heldout_pairs{SEP}text"]}
    other = {"image": "text", "text": "image"}
    for lam in SETTINGS["lambdas"]:
        W = {}
        for m in ("image", "text"):
            Zc = np.array([unit(unit(z) - mu[m]) for z in raw[m]])
            W[m] = sklearn_weights(C, Zc, lam)
            rec = np.array([unit(unit(w @ C) + mu[m]) if w.any() else unit(mu[m]) for w in W[m]])
            gallery = [unit(g) for g in raw[other[m]]]
            hits = [int(np.argmax([q @ g for g in gallery]) == i) for i, q in enumerate(rec)]
            dense_hits = [int(np.argmax([unit(q) @ g for g in gallery]) == i) for i, q in enumerate(raw[m])]
            row = rows[(rows["modality"] == m) & (rows["lambda"] == lam)].iloc[0]
            assert row["l0_mean"] == pytest.approx(np.mean([(w > 0).sum() for w in W[m]]))
            assert row["r1_sparse"] == pytest.approx(np.mean(hits))
            assert row["r1_dense"] == pytest.approx(np.mean(dense_hits))
            assert row["cos_mean"] == pytest.approx(np.mean([r @ unit(z) for r, z in zip(rec, raw[m])]), abs=1e-9)
        cos = [wi @ wt / np.sqrt((wi @ wi) * (wt @ wt)) if wi.any() and wt.any() else 0.0
               for wi, wt in zip(W["image"], W["text"])]
        supports = [(set(np.flatnonzero(wi)), set(np.flatnonzero(wt))) for wi, wt in zip(W["image"], W["text"])]
        jac = [len(a & b) / len(a | b) if a | b else 1.0 for a, b in supports]
        for m in ("image", "text"):
            row = rows[(rows["modality"] == m) & (rows["lambda"] == lam)].iloc[0]
            assert row["pair_weight_cos"] == pytest.approx(np.mean(cos), abs=1e-7)
            assert row["pair_jaccard"] == pytest.approx(np.mean(jac))
    # example pairs at example_lambda: both members, top concepts listed
    ex = pd.DataFrame(listed)
    assert set(ex["scope"]) == {"pair"} and set(ex["modality"]) == {"image", "text"}
    assert set(ex["image"]) == {0, 1}


def test_pair_agreement_edge_cases():
    Wi = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    Wt = np.array([[0.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    got = evaluate.pair_agreement(Wi, Wt)
    assert got["pair_weight_cos"] == pytest.approx((0 + 0 + 1) / 3)
    assert got["pair_jaccard"] == pytest.approx((1 + 0 + 1) / 3)       # both empty counts as agreeing


def test_missing_caption_features_is_an_error_naming_the_fix():
    concepts, features, ip, tp = world()
    del concepts["caption"]
    with pytest.raises(InputError, match="sparse.encode"):
        evaluate.evaluate_run(concepts, features, ip, tp, {**SETTINGS, "sets": []}, {"model": "m"})
    # and with captions off, no text rows are made and no caption features are needed
    sweep, _, _ = evaluate.evaluate_run(concepts, features, ip, tp, {**SETTINGS, "sets": ["s"], "captions": False},
                                        {"model": "m"})
    assert {r["modality"] for r in sweep} == {"image"} and {r["set"] for r in sweep} == {"s"}


def test_evaluation_set_rows_keep_zero_shot_accuracy():
    concepts, features, ip, tp = world(1)
    sweep, _, listed = evaluate.evaluate_run(concepts, features, ip, tp, {**SETTINGS, "sets": ["s"]}, {"model": "m"})
    rows = pd.DataFrame(sweep)
    s = rows[rows["set"] == "s"]
    assert set(s["modality"]) == {"image"} and s["acc1_sparse"].notna().all() and s["r1_sparse"].isna().all()
    p = rows[rows["set"] == "heldout_pairs"]
    assert p["acc1_sparse"].isna().all() and p["r1_sparse"].notna().all()
    assert {"class", "image", "pair"} == set(pd.DataFrame(listed)["scope"])


# ----------------------------------------------------------------------------- sets

def test_default_sets_are_every_evaluation_set():
    config = {"sparse": {"sets": []}, "evaluate": {"sets": {"a": {}, "b": {}, "c": {}}}}
    assert paths.decomposed_sets(config) == ["a", "b", "c"]
    assert paths.decomposed_sets({**config, "sparse": {"sets": ["b"]}}) == ["b"]


def test_schema_defaults(tmp_path):
    import yaml

    from workflow_scripts.common.config import load_config

    cfg = yaml.safe_load(open("tests/config/test.yaml"))
    cfg["sparse"] = {k: v for k, v in cfg["sparse"].items() if k not in ("sets", "tol", "captions")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sp = load_config(path)["sparse"]
    assert sp["sets"] == [] and sp["tol"] == 0 and sp["captions"] is True


def test_vocabulary_line_is_read_up_to_the_first_comma_space(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("rare, 3\nstar shape, 10\ncommon\n")
    assert dictionary.read_vocabulary(str(path)) == ["common", "star shape", "rare"]   # SpLiCE: split(", ")[0]


# ----------------------------------------------------------------------------- tables keyed by set and modality

def sweep_rows():
    rows = []
    for seed in (0, 1, 2):
        for name, modality in (("shape", "image"), ("colour", "image"), ("pairs", "image"), ("pairs", "text")):
            for lam, l0 in ((0.5, 2.0), (0.1, 6.0)):
                classified = name != "pairs"
                rows.append({"model": "m", "kind": "finetune", "strategy": "random", "cs": 0.5, "seed": seed,
                             "set": name, "modality": modality, "lambda": lam, "l0_mean": l0 + seed,
                             "acc1_sparse": 0.5 + 0.01 * seed if classified else np.nan,
                             "acc1_dense": 0.6 if classified else np.nan,
                             "r1_sparse": np.nan if classified else 0.2 + 0.1 * seed,
                             "r1_dense": np.nan if classified else 0.3, "cos_mean": 0.9, "bytes_sparse": 10.0,
                             "bytes_dense": 100.0, "n_images": 5})
    return pd.DataFrame(rows)


def test_sweep_summary_is_keyed_by_set_and_modality():
    df = aggregate.with_run_columns(sweep_rows())
    out = aggregate.summarise(df, aggregate.RUN_KEYS + ["set", "modality", "lambda"], aggregate.SWEEP_VALUES)
    assert len(out) == 4 * 2                                     # (set, modality) x lambda
    text = out[(out["modality"] == "text") & (out["lambda"] == 0.5)].iloc[0]
    assert text["r1_sparse"] == pytest.approx(np.mean([0.2, 0.3, 0.4]))
    assert text["l0_mean"] == pytest.approx(3.0) and np.isnan(text["acc1_sparse"]) and text["n"] == 3
    memory = aggregate.memory_table(df)
    assert set(zip(memory["set"], memory["modality"])) == {("shape", "image"), ("colour", "image"),
                                                           ("pairs", "image"), ("pairs", "text")}


def test_old_sweeps_without_modality_are_image_rows():
    df = aggregate.with_run_columns(sweep_rows().drop(columns="modality"))
    assert set(df["modality"]) == {"image"}


def test_run_read_offs_skip_the_pairs():
    runs = aggregate.run_summary(aggregate.with_run_columns(sweep_rows()), 3.0, 0.9)
    assert set(runs["set"]) == {"shape", "colour"} and len(runs) == 2 * 3
    r = runs[(runs["set"] == "shape") & (runs["seed"] == 0)].iloc[0]
    assert r["acc1_at_l0"] == pytest.approx(0.5)                 # flat at 0.5 between l0 2 and 6


def test_concept_table_puts_each_caption_beside_its_concepts():
    rows = [{"model": "m", "kind": "pretrained", "set": "heldout_pairs", "modality": m, "lambda": 0.25,
             "scope": "pair", "class": "", "image": i, "rank": r, "concept": f"{m}{i}{r}", "weight": 0.5 - 0.1 * r}
            for m in ("image", "text") for i in (0, 1) for r in (0, 1)]
    rows.append({"model": "m", "kind": "pretrained", "set": "shape", "modality": "image", "lambda": 0.25,
                 "scope": "class", "class": "star", "image": -1, "rank": 0, "concept": "star", "weight": 0.3})
    out = aggregate.concept_table(pd.DataFrame(rows), {"heldout_pairs": ["a red star", "two blue rings"]})
    pair = out[(out["scope"] == "pair") & (out["modality"] == "text") & (out["image"] == 1)].iloc[0]
    assert pair["caption"] == "two blue rings" and pair["top_concepts"] == "text10 (0.50), text11 (0.40)"
    assert out[out["scope"] == "class"]["caption"].tolist() == [""]


def test_accuracy_figure_has_a_panel_per_set_and_modality():
    import matplotlib

    matplotlib.use("Agg")
    from workflow_scripts.sparse import report

    df = aggregate.with_run_columns(sweep_rows())
    summary = aggregate.summarise(df, aggregate.RUN_KEYS + ["set", "modality", "lambda"], aggregate.SWEEP_VALUES)
    fig = report.accuracy_vs_l0(summary)
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_visible())
    assert len(titles) == 4 and any("pairs captions" in t for t in titles)
    ylabels = {ax.get_ylabel() for ax in fig.axes if ax.get_visible()}
    assert {"zero-shot acc1 of recomposed", "text->image R@1 of recomposed", "image->text R@1 of recomposed"} == ylabels
