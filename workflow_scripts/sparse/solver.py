"""Batched non-negative Lasso: min_w ||C^T w - z||^2 + lam ||w||_1 subject to w >= 0, for many z at once.

This is SpLiCE's problem (peers.md 5.3). Its default path fits scikit-learn's
`Lasso(alpha=lam / (2 d), positive=True, fit_intercept=False)` one embedding at a time with design matrix
C^T (d rows, K concept columns); sklearn minimises (1 / (2 d)) ||z - C^T w||^2 + alpha ||w||_1, which is the
objective above divided by 2 d, so both have the same minimiser and `objective` here is 2 d times sklearn's.

Method (an active-set method, all embeddings batched on torch): with c = C z - lam / 2, the problem is the
non-negative quadratic program min_w w'Gw - 2 c'w (G = C C', constant ||z||^2 dropped), and Lawson and
Hanson's NNLS active-set algorithm applies unchanged: add the concept with the largest positive c_j - (Gw)_j
(the most violated KKT condition) to the free set, solve the equality-constrained problem on the free set
exactly (a small batched linear solve), and when some free weight would turn non-positive step only to the
first zero crossing and drop it. Solutions are sparse (a few to a few dozen concepts), so each embedding
needs about l0 outer steps, each a (d x K) product and an (l0 x l0) solve, and the result is exact up to
float rounding rather than an iterate of a first-order method (whose step is limited by the near-duplicate
concepts of a caption vocabulary: "star", "stars", "star shape").

Stopping rule (exact supports): an embedding stops only at an exact KKT point, i.e. when its weights are the
exact solution of their free set (every free weight > 0) and no concept outside it violates its KKT
condition by more than `kkt_tol` ((C r)_j - lam / 2 <= kkt_tol for every concept j left at zero, r the
residual); that is checked per coefficient at every step. The free-set solves are polished by one step of
iterative refinement against the ridge-free system, so the ridge (there for exactly coincident concepts)
biases the weights by O(ridge^2 / mu^2) instead of O(ridge / mu), mu the free set's smallest eigenvalue.
The support is then that of the exact minimiser up to concepts whose inclusion would change (C r)_j by less
than kkt_tol (default 1e4 machine epsilons, 2.2e-12 in float64), and a warm start from any other penalty
ends at the same support as a cold start. `tol` > 0 adds the old early stop, duality gap <= tol * objective
(SpLiCE's scikit-learn tol is 1e-6): it may drop concepts whose weight changes the objective by less than
that (weights of ~1e-5 on the study's dictionary), so l0 is then not exact. Rows still open after
`max_iter` steps come back with converged False.

Duality gap (w >= 0): with residual r = z - C^T w, u = 2 s r and s = min(1, lam / max_j (2 C r)_j) is
dual-feasible ((C u)_j <= lam), D = u.z - ||u||^2 / 4, gap = P(w) - D >= 0 and 0 at the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..common.errors import InputError


@dataclass
class Solution:
    """Weights (N, K) and, per embedding, the objective, the duality gap, whether it stopped by the rule, the
    largest KKT violation (C r)_j - lam / 2 (>= 0) over the concepts left at zero, and whether the weights
    are an exact KKT point (free set solved exactly, violation <= kkt_tol)."""

    weights: torch.Tensor
    objective: torch.Tensor
    gap: torch.Tensor
    converged: torch.Tensor
    outer_iterations: int
    violation: torch.Tensor | None = None
    kkt: torch.Tensor | None = None


def lambda_max(C: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Per embedding, the smallest lam with w = 0 optimal: 2 max_j max((C z)_j, 0) (KKT at w = 0)."""
    return 2.0 * (Z.to(C) @ C.T).clamp_min(0).amax(dim=1)


def objective(C: torch.Tensor, Z: torch.Tensor, W: torch.Tensor, lam: float) -> torch.Tensor:
    """||C^T w - z||^2 + lam ||w||_1 per row (N,)."""
    return ((W @ C - Z) ** 2).sum(dim=1) + lam * W.abs().sum(dim=1)


def duality_gap(C: torch.Tensor, Z: torch.Tensor, W: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(primal objective, duality gap) per row for non-negative W."""
    R = Z - W @ C
    return _gap(R, Z, R @ C.T, W.sum(dim=1), lam)


def _gap(R, Z, RC, l1, lam):
    rr = (R * R).sum(dim=1)
    primal = rr + lam * l1
    worst = 2.0 * RC.amax(dim=1)
    s = torch.where(worst > lam, lam / worst.clamp_min(1e-300), torch.ones_like(worst))
    dual = 2.0 * s * (R * Z).sum(dim=1) - s * s * rr
    return primal, (primal - dual).clamp_min(0.0)


def check_lambda(lam: float) -> float:
    lam = float(lam)
    if not np.isfinite(lam) or lam <= 0:
        raise InputError(f"sparse solver: the l1 penalty must be a positive number, got {lam!r}")
    return lam


def default_kkt_tol(dtype: torch.dtype) -> float:
    """1e4 machine epsilons of the dtype (2.2e-12 in float64): well above the rounding of (C r)_j for unit
    concepts and embeddings, far below any KKT violation that changes a weight at the printed precision."""
    return 1e4 * float(torch.finfo(dtype).eps)


def solve(C: torch.Tensor, Z: torch.Tensor, lam: float, tol: float = 0.0, max_iter: int | None = None,
          warm_start: torch.Tensor | None = None, ridge: float = 1e-12, kkt_tol: float | None = None) -> Solution:
    """Non-negative Lasso weights of every row of Z (N, d) over dictionary C (K, d) at penalty lam.

    Stops at the exact KKT point (see the module docstring; `kkt_tol` default: default_kkt_tol(C.dtype)).
    `tol` > 0 also stops a row once its duality gap <= tol * objective (not exact: may drop tiny weights).
    `warm_start` (N, K), non-negative: a previous solution (e.g. at a larger lam) to start from.
    `ridge` (times the identity) keeps the free-set systems solvable when two concepts coincide. Runs in C's
    dtype and device; `max_iter` (default 10 d) bounds the outer steps (unconverged rows are flagged)."""
    lam = check_lambda(lam)
    tol = float(tol)
    if not np.isfinite(tol) or tol < 0:
        raise InputError(f"sparse solver: tol must be >= 0 (0 = exact KKT stop only), got {tol!r}")
    if C.ndim != 2 or Z.ndim != 2 or C.shape[1] != Z.shape[1]:
        raise InputError(f"sparse solver: dictionary {tuple(C.shape)} does not match embeddings {tuple(Z.shape)}")
    Z = Z.to(C)
    N, K, d = Z.shape[0], C.shape[0], C.shape[1]
    dev, dt = C.device, C.dtype
    kkt_tol = default_kkt_tol(dt) if kkt_tol is None else float(kkt_tol)
    B = Z @ C.T
    c = B - 0.5 * lam
    if warm_start is None:
        idx = torch.zeros(N, 0, dtype=torch.long, device=dev)
        w = torch.zeros(N, 0, dtype=dt, device=dev)
    else:
        m = max(1, int((warm_start > 0).sum(dim=1).max()))
        idx = warm_start.topk(m, dim=1).indices
        w = warm_start.to(C).gather(1, idx).clamp_min(0)
    act = w > 0
    done = torch.zeros(N, dtype=torch.bool, device=dev)
    exact = torch.full((N,), warm_start is None, dtype=torch.bool, device=dev)   # w solves its free set
    primal = torch.zeros(N, dtype=dt, device=dev)
    gap = torch.zeros(N, dtype=dt, device=dev)
    violation = torch.zeros(N, dtype=dt, device=dev)
    kkt = torch.zeros(N, dtype=torch.bool, device=dev)
    todo = torch.arange(N, device=dev)                # rows still running (finished rows never change)
    it = 0
    for it in range(1, (max_iter or 10 * d) + 1):
        i, a, v = idx[todo], act[todo], w[todo]
        U = torch.bmm(v[:, None, :], C[i]).squeeze(1) if i.shape[1] else torch.zeros_like(Z[todo])
        RC = B[todo] - U @ C.T                             # C r: lam / 2 minus half the gradient
        primal[todo], gap[todo] = _gap(Z[todo] - U, Z[todo], RC, v.sum(dim=1), lam)
        # scatter_add: a concept may sit in an active slot and in stale inactive ones
        free = torch.zeros(len(todo), K, dtype=torch.int32, device=dev).scatter_add_(1, i, a.to(torch.int32)) > 0
        best, j = torch.where(free, -torch.inf, RC - 0.5 * lam).max(dim=1)
        # optimal: no KKT violation above kkt_tol outside a free set whose weights are its exact solution
        # (a warm start's free set is re-solved first); with tol > 0 also once the gap is closed to tol
        violation[todo] = best.clamp_min(0.0)
        kkt[todo] = (best <= kkt_tol) & exact[todo]
        converged = kkt[todo] | (gap[todo] <= tol * primal[todo]) if tol > 0 else kkt[todo]
        done[todo] = converged
        keep = ~converged
        if not bool(keep.any()):
            break
        todo, i, a, v, j, add = todo[keep], i[keep], a[keep], v[keep], j[keep], (best > kkt_tol)[keep]
        if not bool((~a).any(dim=1).all()):                # a free slot for the new concept in every row
            pad = (len(todo), 1)
            i = torch.cat([i, torch.zeros(pad, dtype=torch.long, device=dev)], dim=1)
            a = torch.cat([a, torch.zeros(pad, dtype=torch.bool, device=dev)], dim=1)
            v = torch.cat([v, torch.zeros(pad, dtype=dt, device=dev)], dim=1)
            idx = torch.cat([idx, torch.zeros(N, 1, dtype=torch.long, device=dev)], dim=1)
            act = torch.cat([act, torch.zeros(N, 1, dtype=torch.bool, device=dev)], dim=1)
            w = torch.cat([w, torch.zeros(N, 1, dtype=dt, device=dev)], dim=1)
        slot = (~a).to(torch.int8).argmax(dim=1)
        r = torch.arange(len(todo), device=dev)[add]
        i[r, slot[add]] = j[add]
        a[r, slot[add]] = True
        v, a, exact[todo] = _free_set_steps(C[i], a, v, c[todo].gather(1, i), ridge)
        idx[todo], act[todo], w[todo] = i, a, v
    W = torch.zeros(N, K, dtype=dt, device=dev).scatter_add_(1, idx, torch.where(act, w, 0.0))
    return Solution(W, primal, gap, done, it, violation, kkt)


def _free_set_steps(Cs: torch.Tensor, act: torch.Tensor, w: torch.Tensor, cw: torch.Tensor,
                    ridge: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lawson and Hanson's inner loop, per row: solve min w'Gw - 2c'w on the free set (slots `act` of the
    row's concepts Cs (n, m, d)); where a free weight would be <= 0, move to the first zero crossing and
    drop the weights that reach zero; repeat until the solve is positive. Returns the weights, the free
    slots and, per row, whether the weights are the free set's exact solution (the loop ran to the end).
    Each solve is (G_S + ridge I) s = c_S followed by one step of iterative refinement against G_S itself
    (s += (G_S + ridge I)^-1 (c_S - G_S s)), which leaves a bias of O(ridge^2) instead of O(ridge)."""
    eye = torch.eye(Cs.shape[1], dtype=Cs.dtype, device=Cs.device)
    G = torch.bmm(Cs, Cs.transpose(1, 2))
    need = torch.ones(len(w), dtype=torch.bool, device=w.device)
    for _ in range(Cs.shape[1] + 1):
        pair = act[:, :, None] & act[:, None, :]
        Gs = torch.where(pair, G, 0.0) + torch.where(act, 0.0, 1.0)[:, :, None] * eye
        A = Gs + torch.where(act, ridge, 0.0)[:, :, None] * eye
        rhs = torch.where(act, cw, 0.0)[:, :, None]
        LU, piv, _ = torch.linalg.lu_factor_ex(A)
        s = torch.linalg.lu_solve(LU, piv, rhs)
        s = s + torch.linalg.lu_solve(LU, piv, rhs - torch.bmm(Gs, s))
        s = torch.where(act, s.squeeze(2), 0.0)
        bad = act & (s <= 0)
        blocked = need & bad.any(dim=1)
        w = torch.where((need & ~blocked)[:, None], s, w)
        if not bool(blocked.any()):
            return w, act, torch.ones_like(need)
        ratio = torch.where(bad, w / (w - s).clamp_min(1e-300), torch.inf)
        alpha, hit = ratio.min(dim=1)
        stepped = w + alpha.clamp(0.0, 1.0)[:, None] * (s - w)
        w = torch.where(blocked[:, None], stepped, w)
        drop = blocked[:, None] & act & (w <= 0)
        drop[blocked, hit[blocked]] = True                  # the blocking weight is zero by construction
        act = act & ~drop
        w = torch.where(act, w, 0.0)
        need = blocked
    return w, act, ~need
