"""Benchmark: the batched non-negative Lasso (workflow_scripts.sparse.solver) against SpLiCE's default path,
scikit-learn's Lasso(alpha=lam/(2d), positive=True, fit_intercept=False, max_iter=10000, tol=1e-6) fitted
one embedding at a time (the named baseline, measured in the same run on the same embeddings and lambdas).

Data: the pretrained clip model's centred concept dictionary and centred `shape` image embeddings when the
embedded study has made them (results/sparse/clip/concepts.npz, results/eval/features/clip.npz,
results/eval/pretrained/clip/projections.npz); otherwise a synthetic stand-in of the same size (K = 500
correlated unit concepts, d = 64). Printed per lambda: both wall times, their ratio, the largest relative
objective gap (ours - sklearn) / sklearn (negative = ours lower), the mean l0 of ours and of sklearn, and,
for the cost of the exact stop, the wall time of our solver with the old early stop (duality gap <= 1e-6 x
objective, `tol=1e-6`) and its mean l0. "ours" is the solver's default: it stops at the exact KKT point.
Targets: >= 20x at an objective within 1e-4 relative, on 2 cores (torch threads = --threads, default 1).

    python bench/splice_solver.py [--images 300] [--threads 1] [--lambdas 0.1 0.25 0.5] [--results results]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workflow_scripts.evaluate.run import SEP, load_projections  # noqa: E402
from workflow_scripts.common.io import load_npz  # noqa: E402
from workflow_scripts.sparse import centring, solver  # noqa: E402
from workflow_scripts.sparse.evaluate import checkpoint_dictionary  # noqa: E402


def load_data(n: int, results: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(C (K, d), centred embeddings (n, d), description)."""
    res = results
    paths = [res / "sparse/clip/concepts.npz", res / "eval/features/clip.npz", res / "eval/pretrained/clip/projections.npz"]
    if all(p.exists() for p in paths):
        concepts, features = load_npz(paths[0]), load_npz(paths[1])
        image_p, text_p = load_projections(paths[2])
        C, mu = checkpoint_dictionary(concepts, image_p, text_p)      # as sparse.evaluate makes them
        Z = centring.center_images(features[f"shape{SEP}image"].astype(np.float64) @ image_p.T, mu)[:n]
        return C, Z, f"embedded study: pretrained clip, {len(C)} caption concepts, shape images"
    rng = np.random.default_rng(0)
    C = centring.center_concepts(rng.normal(size=(500, 64)) + 0.8 * rng.normal(size=(1, 64)))
    Z = centring.normalize(np.abs(rng.normal(size=(n, 500)) * (rng.random((n, 500)) < 0.01)) @ C
                           + 0.3 * centring.normalize(rng.normal(size=(n, 64))))
    return C, Z, "synthetic stand-in (no results/sparse/clip/concepts.npz)"


def sklearn_path(C: np.ndarray, Z: np.ndarray, lam: float) -> np.ndarray:
    from sklearn.linear_model import Lasso

    d = C.shape[1]
    out = np.empty((len(Z), len(C)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # SpLiCE's settings stop at max_iter on some embeddings
        for i, z in enumerate(Z):
            out[i] = Lasso(alpha=lam / (2 * d), positive=True, fit_intercept=False, max_iter=10000,
                           tol=1e-6).fit(C.T, z).coef_
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: these small batched ops gain nothing from a second thread)")
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="the embedded study's results")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    C, Z, what = load_data(args.images, args.results)
    print(f"data: {what}; K={C.shape[0]} concepts, d={C.shape[1]}, {len(Z)} embeddings; torch threads {args.threads}")
    Ct, Zt = torch.from_numpy(C), torch.from_numpy(Z)
    solver.solve(Ct, Zt[:8], 0.25)                                        # warm-up (first-call overheads)
    print(f"{'lambda':>7} {'sklearn s':>10} {'batched s':>10} {'ratio':>7} {'max rel obj gap':>16} {'l0':>7} "
          f"{'l0 skl':>7} {'gap-stop s':>11} {'l0 gap-stop':>12}")
    ratios, gaps, costs = [], [], []
    for lam in args.lambdas:
        t0 = time.perf_counter()
        ref = sklearn_path(C, Z, lam)
        t_sk = time.perf_counter() - t0
        t0 = time.perf_counter()
        sol = solver.solve(Ct, Zt, lam)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        early = solver.solve(Ct, Zt, lam, tol=1e-6)
        t_early = time.perf_counter() - t0
        ours = sol.objective.numpy()
        theirs = solver.objective(Ct, Zt, torch.from_numpy(ref), lam).numpy()
        gap = float(np.max((ours - theirs) / theirs))
        ratios.append(t_sk / t_ours)
        gaps.append(gap)
        costs.append(t_ours / t_early)
        l0, l0_early = (float((x.weights > 0).sum(1).double().mean()) for x in (sol, early))
        print(f"{lam:7.3g} {t_sk:10.3f} {t_ours:10.3f} {t_sk / t_ours:6.1f}x {gap:16.2e} {l0:7.3f} "
              f"{float((ref > 0).sum(1).mean()):7.3f} {t_early:11.3f} {l0_early:12.3f}")
    print(f"speed-up over sklearn per-sample: min {min(ratios):.1f}x (target >= 20x); "
          f"largest relative objective excess {max(gaps):.1e} (target <= 1e-4); "
          f"exact stop / gap stop wall time: {min(costs):.2f}-{max(costs):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
