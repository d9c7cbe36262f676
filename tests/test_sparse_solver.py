"""The batched non-negative Lasso against scikit-learn's Lasso (SpLiCE's default solver, an independent
coordinate-descent implementation) and against hand-solved cases."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

from workflow_scripts.common.errors import InputError
from workflow_scripts.sparse import solver


def sklearn_weights(C: np.ndarray, Z: np.ndarray, lam: float) -> np.ndarray:
    """SpLiCE's skl path: Lasso(alpha=lam/(2d), positive, no intercept) per embedding, design matrix C^T;
    a tight tolerance so that it is the reference."""
    d = C.shape[1]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in Z:
            model = Lasso(alpha=lam / (2 * d), positive=True, fit_intercept=False, max_iter=200000, tol=1e-12)
            out.append(model.fit(C.T, z).coef_)
    return np.array(out)


def plain_objective(C, z, w, lam):
    return float(np.sum((C.T @ w - z) ** 2) + lam * np.sum(np.abs(w)))


def random_problem(seed, K=24, d=8, N=6):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(K, d)) + 0.8 * rng.normal(size=(1, d))      # correlated concepts, like captions'
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    Z = rng.normal(size=(N, d))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    return C, Z


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.02, 0.2, 0.6])
def test_matches_sklearn_objective_and_support(seed, lam):
    C, Z = random_problem(seed)
    ref = sklearn_weights(C, Z, lam)
    sol = solver.solve(torch.from_numpy(C), torch.from_numpy(Z), lam, tol=1e-12)
    W = sol.weights.numpy()
    assert bool(sol.converged.all())
    for z, w, r in zip(Z, W, ref):
        ours, theirs = plain_objective(C, z, w, lam), plain_objective(C, z, r, lam)
        assert abs(ours - theirs) <= 1e-6 * theirs
        # same support (weights that are clearly non-zero in either solution)
        assert np.array_equal(w > 1e-7, r > 1e-7)
    assert np.allclose(W, ref, atol=1e-5)


def test_objective_is_sklearn_times_2d():
    C, Z = random_problem(3)
    lam, d = 0.3, C.shape[1]
    w = np.abs(np.random.default_rng(0).normal(size=C.shape[0]))
    model = Lasso(alpha=lam / (2 * d), positive=True, fit_intercept=False)
    sk = 1 / (2 * d) * np.sum((Z[0] - C.T @ w) ** 2) + model.alpha * np.sum(np.abs(w))
    ours = solver.objective(torch.from_numpy(C), torch.from_numpy(Z[:1]), torch.from_numpy(w[None]), lam)
    assert float(ours[0]) == pytest.approx(2 * d * sk, rel=1e-12)


def test_hand_solved_two_concepts():
    # G = [[1, .6], [.6, 1]], c = C z = [1, 1.4]; both weights free: G w = c - lam/2 = [.9, 1.3]
    # => w = [[1, -.6], [-.6, 1]] [.9, 1.3] / .64 = [0.1875, 1.1875]
    C = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    z = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    sol = solver.solve(C, z, 0.2, tol=1e-14)
    assert sol.weights[0].tolist() == pytest.approx([0.1875, 1.1875], abs=1e-9)   # the solver's ridge 1e-12


def test_hand_solved_orthonormal_soft_threshold():
    # orthonormal concepts: separable, w_j = max(0, (C z)_j - lam / 2)
    C = torch.eye(3, dtype=torch.float64)
    z = torch.tensor([[0.8, 0.3, -0.5]], dtype=torch.float64)
    sol = solver.solve(C, z, 0.4, tol=1e-14)
    assert sol.weights[0].tolist() == pytest.approx([0.6, 0.1, 0.0], abs=1e-9)


def test_weights_are_non_negative():
    C, Z = random_problem(4, K=40, d=10, N=20)
    W = solver.solve(torch.from_numpy(C), torch.from_numpy(-Z), 0.05).weights
    assert bool((W >= 0).all())
    assert bool((W > 0).any())


def test_lambda_max_gives_zero():
    C, Z = random_problem(5)
    Ct, Zt = torch.from_numpy(C), torch.from_numpy(Z)
    lmax = solver.lambda_max(Ct, Zt)
    # analytic: 2 max_j max((C z)_j, 0)
    assert np.allclose(lmax.numpy(), 2 * np.maximum(Z @ C.T, 0).max(axis=1))
    for i in range(len(Z)):
        at = solver.solve(Ct, Zt[i:i + 1], float(lmax[i]) * (1 + 1e-9)).weights
        below = solver.solve(Ct, Zt[i:i + 1], float(lmax[i]) * 0.9).weights
        assert bool((at == 0).all())
        assert bool((below > 0).any())


@pytest.mark.parametrize("start, lam", [(0.4, 0.1), (0.5, 0.45), (0.1, 0.4)])
def test_warm_start_reaches_the_same_solution(start, lam):
    # a nearby lambda's support often has no new KKT violator: the free set must be re-solved all the same
    C, Z = random_problem(6, K=30, d=8, N=10)
    Ct, Zt = torch.from_numpy(C), torch.from_numpy(Z)
    cold = solver.solve(Ct, Zt, lam, tol=1e-12)
    warm = solver.solve(Ct, Zt, lam, tol=1e-12, warm_start=solver.solve(Ct, Zt, start).weights)
    assert bool(warm.converged.all())
    assert np.allclose(cold.objective.numpy(), warm.objective.numpy(), rtol=1e-9)


def test_duality_gap_bounds_suboptimality():
    C, Z = random_problem(7)
    Ct, Zt = torch.from_numpy(C), torch.from_numpy(Z)
    best = solver.objective(Ct, Zt, torch.from_numpy(sklearn_weights(C, Z, 0.2)), 0.2)
    W = torch.rand(len(Z), len(C), dtype=torch.float64) * 0.1
    primal, gap = solver.duality_gap(Ct, Zt, W, 0.2)
    assert bool((primal - gap <= best + 1e-9).all())         # the dual value is a lower bound
    assert bool((gap > 0).all())


@pytest.mark.parametrize("lam", [0.0, -0.1, float("nan")])
def test_bad_lambda_is_an_error(lam):
    C, Z = random_problem(8)
    with pytest.raises(InputError, match="l1 penalty"):
        solver.solve(torch.from_numpy(C), torch.from_numpy(Z), lam)


def test_shape_mismatch_is_an_error():
    with pytest.raises(InputError, match="does not match"):
        solver.solve(torch.zeros(5, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64), 0.1)
