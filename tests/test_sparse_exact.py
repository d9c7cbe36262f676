"""Exact supports of the batched non-negative Lasso: the KKT stop against scikit-learn's Lasso at tight
tolerances and against a brute-force enumeration of supports, on near-duplicate concepts (the hard case),
and warm-started sweeps against cold starts."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from workflow_scripts.common.errors import InputError
from workflow_scripts.sparse import solver


def near_duplicate_problem(seed, eps, n_base=16, n_dup=6, d=12, N=12):
    """Correlated unit concepts plus near-duplicates of the first n_dup (each moved by eps * noise and
    renormalised, like "star" / "stars" in a caption vocabulary), and unit embeddings that are sparse
    non-negative combinations of all of them plus a little noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_base, d)) + 0.8 * rng.normal(size=(1, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    dup = base[:n_dup] + eps * rng.normal(size=(n_dup, d))
    dup /= np.linalg.norm(dup, axis=1, keepdims=True)
    C = np.vstack([base, dup])
    W = np.abs(rng.normal(size=(N, len(C)))) * (rng.random((N, len(C))) < 0.25)
    Z = W @ C + 0.05 * rng.normal(size=(N, d))
    return C, Z / np.linalg.norm(Z, axis=1, keepdims=True)


def sklearn_weights(C, Z, lam, tol):
    """SpLiCE's skl path (alpha = lam / (2 d): sklearn divides the squared error by 2 n_samples, n_samples = d
    rows of the design matrix C^T) at a tight tolerance; fails the test if a fit does not converge."""
    d = C.shape[1]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for z in Z:
            out.append(Lasso(alpha=lam / (2 * d), positive=True, fit_intercept=False, tol=tol,
                             max_iter=1_000_000).fit(C.T, z).coef_)
    return np.array(out)


def brute_force(C, z, lam):
    """The unique KKT point by enumerating supports S (|S| <= d): w_S = G_S^-1 (C_S z - lam / 2) > 0 and
    (C z - lam / 2 - G w)_j <= 0 off S. Plain NumPy, no solver of ours."""
    K, G, c = len(C), C @ C.T, C @ z - lam / 2
    found = []
    for r in range(C.shape[1] + 1):
        for S in map(list, itertools.combinations(range(K), r)):
            w = np.zeros(K)
            if S:
                w[S] = np.linalg.solve(G[np.ix_(S, S)], c[S])     # |S| <= d: non-singular (eps > 0)
                if (w[S] <= 0).any():
                    continue
            off = np.delete(c - G @ w, S)
            if off.size == 0 or off.max() <= 1e-12:
                found.append(w)
    assert len(found) == 1, f"{len(found)} KKT points"
    return found[0]


def solve(C, Z, lam, **kw):
    return solver.solve(torch.from_numpy(C), torch.from_numpy(Z), lam, **kw)


# ----------------------------------------------------------------------------- the early stop's miss

def test_gap_stop_drops_a_tiny_weight_that_the_exact_stop_keeps():
    # orthonormal concepts: w_j = max(0, z_j - lam / 2) = [0.6, 2e-7, 0]. Without the 2e-7 weight the
    # duality gap (dual point: the residual scaled to feasibility) is 4e-7 x the objective, under tol 1e-6
    # (with correlated concepts, as in the study's dictionary, weights of 1e-5 are dropped the same way)
    C = torch.eye(3, dtype=torch.float64)
    z = torch.tensor([[0.8, 0.2 + 2e-7, -0.5]], dtype=torch.float64)
    early = solver.solve(C, z, 0.4, tol=1e-6)
    exact = solver.solve(C, z, 0.4)
    assert int((early.weights > 0).sum()) == 1                       # the old rule: l0 one short
    assert exact.weights[0].tolist() == pytest.approx([0.6, 2e-7, 0.0], abs=1e-13)
    assert bool(exact.kkt.all()) and bool(exact.converged.all())
    assert not bool(early.kkt.all())


def test_negative_tol_is_an_error():
    with pytest.raises(InputError, match="tol"):
        solver.solve(torch.eye(2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64), 0.1, tol=-1.0)


# ----------------------------------------------------------------------------- against references

@pytest.mark.parametrize("eps", [1e-2, 1e-3])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("lam", [0.02, 0.1, 0.3])
def test_near_duplicates_same_support_and_weights_as_sklearn(eps, seed, lam):
    C, Z = near_duplicate_problem(seed, eps)
    sol = solve(C, Z, lam)
    W = sol.weights.numpy()
    assert bool(sol.converged.all()) and bool(sol.kkt.all())
    ref = sklearn_weights(C, Z, lam, tol=1e-10)
    assert np.array_equal(W > 0, ref > 0)                              # identical supports, exact zeros
    # coefficients: sklearn's own error shrinks with its tol (max 1e-7 at 1e-10 here, 3e-9 at 1e-12)
    assert np.abs(W - sklearn_weights(C, Z, lam, tol=1e-12)).max() <= 1e-8


@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-4])
@pytest.mark.parametrize("lam", [0.02, 0.2])
def test_near_duplicates_against_brute_force_enumeration(eps, lam):
    # 1e-4 is closer than coordinate descent resolves at tol 1e-10 (it does not converge in 1e6 sweeps)
    C, Z = near_duplicate_problem(0, eps, n_base=7, n_dup=5, d=6, N=5)
    W = solve(C, Z, lam).weights.numpy()
    ref = np.array([brute_force(C, z, lam) for z in Z])
    assert np.array_equal(W > 0, ref > 0)
    assert np.abs(W - ref).max() <= 1e-10


def test_exact_duplicate_concepts_converge_to_the_optimum():
    # a concept listed twice: the objective is that of the dictionary without the copy, no cycling
    C, Z = near_duplicate_problem(3, 1e-2, n_base=10, n_dup=0, d=8, N=8)
    twice = np.vstack([C, C[:3]])
    once, dup = solve(C, Z, 0.1), solve(twice, Z, 0.1)
    assert bool(dup.converged.all())
    assert np.allclose(dup.objective.numpy(), once.objective.numpy(), rtol=1e-12)
    # one copy carries the weight, the other none: the same l0 as without the copy
    W = dup.weights.numpy()
    assert not ((W[:, :3] > 0) & (W[:, -3:] > 0)).any()
    assert np.array_equal((W > 0).sum(axis=1), (once.weights.numpy() > 0).sum(axis=1))


# ----------------------------------------------------------------------------- warm == cold

@pytest.mark.parametrize("problem", ["near_duplicates", "caption_like"])
def test_warm_started_sweep_has_the_cold_supports(problem):
    if problem == "near_duplicates":
        C, Z = near_duplicate_problem(5, 1e-3, n_base=30, n_dup=15, d=16, N=20)
    else:                        # like the bench's stand-in: correlated, centred concepts
        rng = np.random.default_rng(0)
        C = rng.normal(size=(300, 48)) + 0.8 * rng.normal(size=(1, 48))
        C = C - C.mean(axis=0)
        C /= np.linalg.norm(C, axis=1, keepdims=True)
        Z = np.abs(rng.normal(size=(20, 300)) * (rng.random((20, 300)) < 0.02)) @ C + 0.04 * rng.normal(size=(20, 48))
        Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    lams = [1.0, 0.5, 0.25, 0.2, 0.1]                # the study's sweep's range
    for order in (lams, lams[::-1]):
        prev = None
        for lam in order:
            warm = solve(C, Z, lam, warm_start=prev)
            cold = solve(C, Z, lam)
            prev = warm.weights
            assert bool(warm.kkt.all()) and bool(cold.kkt.all())
            assert torch.equal(warm.weights > 0, cold.weights > 0), lam
            assert np.abs(warm.weights.numpy() - cold.weights.numpy()).max() <= 1e-10
