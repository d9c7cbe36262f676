"""Purity metrics and representation diagnostics against straightforward NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from workflow_scripts.evaluate import purity as pm
from workflow_scripts.common.errors import InputError


def reference_purity(P: np.ndarray) -> dict:
    """analyze_purity.compute_purity_metrics written out with loops over pairs (docs/original_code.md, "Purity")."""
    n = P.shape[0]
    V = [row / np.sqrt(sum(x * x for x in row)) for row in P]
    C = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                C[i, j] = float(np.dot(V[i], V[j]))
    A = np.abs(C)
    total = A.sum()
    values = sorted(A.ravel())
    per_neuron = np.array([A[i].sum() / n for i in range(n)])
    mean_c = C.sum() / n**2
    std = np.sqrt(((C - mean_c) ** 2).sum() / (n**2 - 1))
    inv = 1 / per_neuron
    upper = [C[i, j] for i in range(n) for j in range(i + 1, n)]
    return {
        "avg_abs_cos_sim": total / n**2,
        "avg_abs_cos_sim_offdiag": total / (n * (n - 1)),
        "max_abs_cos_sim": max(values),
        "median_abs_cos_sim": values[(len(values) - 1) // 2],  # torch.median: lower middle
        "avg_cos_sim": mean_c,
        "std_cos_sim": std,
        "purity_mean": 1 / per_neuron.mean(),
        "purity_std": np.sqrt(((inv - inv.mean()) ** 2).sum() / (n - 1)),
        "hist_mean_cos_sim": float(np.mean(upper)),
        "per_neuron": per_neuron,
        "upper": np.array(upper),
    }


@pytest.mark.parametrize("shape", [(8, 5), (6, 12), (7, 7)])
def test_purity_metrics_match_reference(shape):
    rng = np.random.default_rng(sum(shape))
    P = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=(shape[0], 1))  # row scale must not matter
    got = pm.purity_metrics(P)
    ref = reference_purity(P)
    for key in ("avg_abs_cos_sim", "avg_abs_cos_sim_offdiag", "max_abs_cos_sim", "median_abs_cos_sim",
                "avg_cos_sim", "std_cos_sim", "purity_mean", "purity_std", "hist_mean_cos_sim"):
        assert got[key] == pytest.approx(ref[key], rel=1e-10, abs=1e-12), key
    np.testing.assert_allclose(got["per_neuron"], ref["per_neuron"], rtol=1e-10)
    counts, edges = np.histogram(ref["upper"], bins=50, range=(-1, 1))
    np.testing.assert_array_equal(got["hist_counts"], counts)
    np.testing.assert_allclose(got["hist_edges"], edges)
    assert got["hist_counts"].sum() == shape[0] * (shape[0] - 1) // 2
    assert got["n_neurons"] == shape[0] and got["in_dim"] == shape[1]


def test_n_squared_convention_differs_from_offdiag_by_factor():
    P = np.random.default_rng(0).normal(size=(10, 4))
    got = pm.purity_metrics(P)
    assert got["avg_abs_cos_sim"] == pytest.approx(got["avg_abs_cos_sim_offdiag"] * 9 / 10)


def test_orthogonal_rows_are_perfectly_pure_and_duplicates_are_not():
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    assert pm.purity_metrics(q)["avg_abs_cos_sim"] == pytest.approx(0.0, abs=1e-12)
    dup = np.tile([[1.0, 2.0, 3.0]], (4, 1))
    got = pm.purity_metrics(dup)
    assert got["avg_abs_cos_sim"] == pytest.approx(12 / 16)   # 12 off-diagonal ones over n² = 16
    assert got["max_abs_cos_sim"] == pytest.approx(1.0)
    assert got["median_abs_cos_sim"] == pytest.approx(1.0)


def test_purity_and_histogram_tables():
    rng = np.random.default_rng(2)
    mats = {"text": rng.normal(size=(6, 6)), "image": rng.normal(size=(6, 9))}
    table = pm.purity_table(mats)
    assert list(table.columns) == ["projection", "metric", "value"]
    row = table[(table.projection == "image") & (table.metric == "avg_abs_cos_sim")]
    assert row["value"].item() == pytest.approx(pm.purity_metrics(mats["image"])["avg_abs_cos_sim"])
    assert "per_neuron" not in set(table.metric)
    hist = pm.histogram_table(mats)
    assert len(hist) == 100 and hist.groupby("projection")["count"].sum().tolist() == [15, 15]


@pytest.mark.parametrize("sigma, sv, var", [
    ((1, 1, 0, 0), 2.0, 2.0),
    ((1, 1, 1, 1), 4.0, 4.0),
    ((5, 0, 0), 1.0, 1.0),
    ((3, 1), np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))), np.exp(-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)))),
])
def test_effective_rank_on_known_spectra(sigma, sv, var):
    assert pm.effective_rank(np.array(sigma), "sv") == pytest.approx(sv)
    assert pm.effective_rank(np.array(sigma), "var") == pytest.approx(var)
    assert pm.effective_rank(np.array(sigma), "var") <= pm.effective_rank(np.array(sigma), "sv") + 1e-12
    with pytest.raises(ValueError):
        pm.effective_rank(np.array(sigma), "other")


def test_representation_diagnostics_match_reference():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6)) + np.array([2.0, 0, 0, 0, 0, 0])
    X[:, 5] = 0.0                                   # an unused dimension feeds PoZ
    got = pm.representation_diagnostics(X)
    Xc = X - X.mean(axis=0)
    s = np.linalg.svd(Xc, compute_uv=False)
    s = s[s > 0]                                    # the zero column's singular value (0 · log 0 = 0)
    p = s / s.sum()
    q = s**2 / (s**2).sum()
    assert got["erank_sv"] == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    assert got["erank_var"] == pytest.approx(np.exp(-np.sum(q * np.log(q))))
    assert got["pca90_components"] == int(np.argmax(np.cumsum(q) >= 0.9)) + 1
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    G = U @ U.T
    assert got["isotropy"] == pytest.approx(G[np.triu_indices(40, 1)].mean())
    assert got["poz"] == pytest.approx(np.mean(np.abs(U) < 1e-3))
    assert got["poz"] >= 1 / 6
    ent = []
    for col in U.T:
        counts, _ = np.histogram(np.clip(col, -1, 1), bins=30, range=(-1, 1))
        pr = counts[counts > 0] / counts.sum()
        ent.append(-(pr * np.log(pr)).sum())
    assert got["entropy"] == pytest.approx(np.mean(ent))


def test_entropy_binning_matches_numpy_at_edges():
    X = np.array([[-1.0, 1.0], [1.0, -1.0], [0.0, 1 / 15], [2.0, -2.0]])  # edges, bin boundaries, clipping
    ref = []
    for col in np.clip(X, -1, 1).T:
        counts, _ = np.histogram(col, bins=30, range=(-1, 1))
        pr = counts[counts > 0] / counts.sum()
        ref.append(-(pr * np.log(pr)).sum())
    assert pm.dimension_entropy(X) == pytest.approx(np.mean(ref))


def test_rsa_correlation_matches_pearson_of_upper_triangles():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(30, 8))
    B = A @ rng.normal(size=(8, 5)) + 0.5 * rng.normal(size=(30, 5))
    iu = np.triu_indices(30, 1)

    def gram(X):
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        return (U @ U.T)[iu]

    ref = np.corrcoef(gram(A), gram(B))[0, 1]
    assert pm.rsa_correlation(A, B) == pytest.approx(ref)
    assert pm.rsa_correlation(A, B, block=7) == pytest.approx(ref)     # blocked accumulation
    assert pm.rsa_correlation(A, 3 * A) == pytest.approx(1.0)
    with pytest.raises(InputError, match="paired"):
        pm.rsa_correlation(A, B[:-1])


def test_bad_matrices_are_rejected():
    with pytest.raises(InputError, match="2-D"):
        pm.purity_metrics(np.ones(5))
    with pytest.raises(InputError, match="NaN"):
        pm.purity_metrics(np.array([[1.0, np.nan], [0.0, 1.0]]))
