"""The cross-lingual diagnostics (hubness, neighbour overlap, language-ID probe, and the retrieval variants)
against plain, independent reference computations on small inputs: neighbours from a full Python sort,
k-occurrences counted by hand, skewness from scipy, Jaccard from Python sets, and the probe's classifier
refitted by minimising the same L2-regularised multinomial log-loss with scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from workflow_scripts.multilingual import diagnostics as D


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def neighbours_by_sort(Q, X, k, exclude_self):
    """Each query's k highest-cosine items, by sorting the whole row in Python."""
    Q, X = unit(Q), unit(X)
    out = []
    for i, q in enumerate(Q):
        sims = [(float(q @ x), j) for j, x in enumerate(X) if not (exclude_self and j == i)]
        out.append({j for _, j in sorted(sims, reverse=True)[:k]})
    return out


def k_occurrence_reference(neighbour_sets, m):
    counts = [0] * m
    for s in neighbour_sets:
        for j in s:
            counts[j] += 1
    top = max(1, int(round(0.01 * m)))
    share = sum(sorted(counts, reverse=True)[:top]) / sum(counts)
    return float(stats.skew(counts, bias=True)), share


@pytest.mark.parametrize("n,k", [(40, 3), (250, 10)])
def test_hubness_matches_a_hand_count(n, k):
    X = np.random.default_rng(n).normal(size=(n, 6))
    skew, share = k_occurrence_reference(neighbours_by_sort(X, X, k, exclude_self=True), n)
    got = D.hubness(X, k=k, sample=2000)
    assert got["hub_skew"] == pytest.approx(skew, rel=1e-9, abs=1e-9)
    assert got["hub_ratio_1pct"] == pytest.approx(share, rel=1e-9)


def test_hubness_samples_rows_as_the_original():
    X = np.random.default_rng(1).normal(size=(60, 5))
    rows = np.sort(np.random.default_rng(0).choice(60, size=25, replace=False))
    np.testing.assert_array_equal(D.sample_rows(60, 25), rows)
    np.testing.assert_array_equal(D.sample_rows(20, 25), np.arange(20))
    assert D.hubness(X, k=4, sample=25) == D.hubness(X[rows], k=4, sample=2000)


def test_a_hub_gives_a_positive_skew():
    """A point u and 30 points g_i + u (g_i nearly orthogonal unit vectors): u is every point's nearest
    neighbour (cosine 0.71 against about 0.5 between the others)."""
    rng = np.random.default_rng(0)
    u = np.eye(200)[0]
    X = np.vstack([u, unit(rng.normal(size=(30, 200))) + u])
    got = D.hubness(X, k=1)
    assert got["hub_skew"] > 5 and got["hub_ratio_1pct"] == pytest.approx(30 / 31)


def jaccard_reference(A, B):
    return float(np.mean([len(a & b) / len(a | b) for a, b in zip(A, B)]))


def test_neighbour_overlap_matches_python_sets():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(50, 8))
    X_list = [base + s * rng.normal(size=base.shape) for s in (0.1, 0.5, 2.0)]
    sets = [neighbours_by_sort(X, X, 5, exclude_self=True) for X in X_list]
    mean, mat = D.neighbour_overlap(X_list, k=5)
    for a in range(3):
        assert mat[a, a] == 1.0
        for b in range(a + 1, 3):
            assert mat[a, b] == pytest.approx(jaccard_reference(sets[a], sets[b]), rel=1e-9)
            assert mat[b, a] == mat[a, b]
    assert mean == pytest.approx(np.mean([mat[0, 1], mat[0, 2], mat[1, 2]]))
    assert mat[0, 1] > mat[0, 2]                  # less noise, more shared neighbours
    same, _ = D.neighbour_overlap([X_list[0], X_list[0].copy()], k=5)
    assert same == pytest.approx(1.0)
    with pytest.raises(ValueError, match="aligned rows"):
        D.neighbour_overlap([X_list[0], X_list[1][:-1]])


def test_the_retrieval_variants_match_python_sets():
    rng = np.random.default_rng(3)
    V = rng.normal(size=(30, 6))
    T = [V + 0.8 * rng.normal(size=V.shape) for _ in range(2)]
    sets = [neighbours_by_sort(t, V, 4, exclude_self=False) for t in T]
    skew, share = k_occurrence_reference(sets[0], 30)
    got = D.retrieval_hubness(T[0], V, k=4)
    assert got["hub_skew"] == pytest.approx(skew, rel=1e-9, abs=1e-9)
    assert got["hub_ratio_1pct"] == pytest.approx(share)
    mean, mat = D.retrieval_overlap(T, V, k=4)
    assert mean == pytest.approx(jaccard_reference(sets[0], sets[1])) and mat[0, 1] == mean


def softmax_regression(X, y, C):
    """Multinomial logistic regression minimising C·Σ CE + ½‖W‖² (intercepts not penalised), with scipy."""
    n, d = X.shape
    K = int(y.max()) + 1
    Y = np.eye(K)[y]

    def loss(theta):
        W, b = theta[: d * K].reshape(d, K), theta[d * K:]
        Z = X @ W + b
        Z = Z - Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        P = np.exp(logp)
        value = -C * (Y * logp).sum() + 0.5 * (W ** 2).sum()
        grad_Z = C * (P - Y)
        return value, np.concatenate([(X.T @ grad_Z + W).ravel(), grad_Z.sum(axis=0)])

    res = optimize.minimize(loss, np.zeros(d * K + K), jac=True, method="L-BFGS-B",
                            options={"maxiter": 5000, "gtol": 1e-10})
    return res.x[: d * K].reshape(d, K), res.x[d * K:]


def test_language_id_probe_matches_an_independent_classifier():
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(4)
    shift = rng.normal(size=(3, 5))
    X_list = [rng.normal(size=(n, 5)) + 0.6 * s for n, s in zip((40, 35, 50), shift)]
    got = D.language_id_probe(X_list, sample_per_lang=30, test_size=0.3, seed=3, C=1.0)
    # the protocol written out: 30 rows per language from one default_rng(seed), stratified 70/30 split
    draw = np.random.default_rng(3)
    X = np.concatenate([x[draw.choice(len(x), 30, replace=False)] for x in X_list]).astype(np.float32)
    y = np.repeat(np.arange(3), 30)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=3, stratify=y)
    W, b = softmax_regression(Xtr.astype(np.float64), ytr, C=1.0)
    want = float(((Xte @ W + b).argmax(axis=1) == yte).mean())
    assert got == pytest.approx(want)
    assert 1 / 3 < got <= 1.0


def test_the_probe_separates_languages_and_not_identical_spaces():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 8))
    assert D.language_id_probe([X + 5, X - 5]) == 1.0
    same = D.language_id_probe([rng.normal(size=(300, 8)) for _ in range(3)])
    assert abs(same - 1 / 3) < 0.15
    assert math.isnan(D.language_id_probe([X[:1], X[1:2]]))                 # too few rows to split
    assert math.isnan(D.language_id_probe([X[:2], X[2:4], X[4:6]], test_size=0.3))


def test_crosslingual_rows_names_every_diagnostic():
    rng = np.random.default_rng(6)
    V = rng.normal(size=(40, 6))
    texts = {lang: V + rng.normal(size=V.shape) for lang in ("en", "it", "de")}
    rows = D.crosslingual_rows(texts, V, {"hub_k": 3, "neighbour_k": 3})
    names = {(lang, metric) for lang, metric, _ in rows}
    for lang in texts:
        assert {(lang, "hub_skew"), (lang, "hub_ratio_1pct"), (lang, "t2i_hub_skew")} <= names
    for pair in ("all", "en~it", "en~de", "it~de"):
        assert (pair, "neighbour_overlap") in names and (pair, "t2i_overlap") in names
    assert ("all", "langid_acc1") in names
    value = dict(((lang, m), v) for lang, m, v in rows)
    assert value["en", "hub_skew"] == D.hubness(texts["en"], 3)["hub_skew"]
