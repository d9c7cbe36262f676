"""Feature purity of projection matrices and representation diagnostics of embedding sets.

Purity (docs/original_code.md, "Purity"): for a projection with one row per output neuron, rows are
L2-normalised, C = V Vᵀ, and the diagonal is ZEROED (not removed); `avg_abs_cos_sim` is the mean of
|C| over all n² entries, i.e. sum_{i≠j} |C_ij| / n². This is the number the original paper, its figures
and analyze_purity.py report. `avg_abs_cos_sim_offdiag` divides the same sum by n(n−1) instead (the
mean over off-diagonal pairs); the two differ by the factor (n−1)/n. Lower = purer (more orthogonal).

Diagnostics (peers.md section 4.4) on an embedding matrix X (n_samples × d): both effective ranks
(named), isotropy, PoZ, per-dimension entropy, and the image–text Gram (RSA) correlation.
Everything is computed in float64.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ..common.errors import InputError

HIST_BINS = 50
HIST_RANGE = (-1.0, 1.0)
ENTROPY_BINS = 30
POZ_THRESHOLD = 1e-3


# ----------------------------------------------------------------------------- purity

def normalize_rows(X: np.ndarray, dtype: np.dtype = np.float64) -> np.ndarray:
    """Rows divided by their L2 norm, as `dtype` (float64 unless asked); all-zero rows stay zero."""
    X = np.asarray(X, dtype=dtype)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
    return X / np.where(norms > 0, norms, 1.0)


def cosine_matrix(P: np.ndarray) -> np.ndarray:
    """C_nd: cosine between every pair of rows (output neurons) of P, diagonal set to zero."""
    P = _check_matrix(P, "projection")
    V = normalize_rows(P)
    C = V @ V.T
    np.fill_diagonal(C, 0.0)
    return C


def upper_triangle(C: np.ndarray) -> np.ndarray:
    """Values strictly above the diagonal (k=1), row-major: the pairs the histograms count."""
    return C[np.triu_indices(C.shape[0], k=1)]


def cosine_histogram(C: np.ndarray, bins: int = HIST_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of the upper-triangle cosines over `bins` equal bins on [-1, 1]."""
    counts, edges = np.histogram(upper_triangle(C), bins=bins, range=HIST_RANGE)
    return counts.astype(np.int64), edges


def purity_metrics(P: np.ndarray) -> dict[str, float | np.ndarray]:
    """Purity metrics of one projection P [n_neurons, in] (rows = output neurons).

    Scalars, named as analyze_purity.py names them (n² convention, zeroed diagonal counted):
      avg_abs_cos_sim      mean |C_nd| over all n² entries (the original metric)
      avg_abs_cos_sim_offdiag  sum_{i≠j} |C_ij| / (n(n−1)) (mean over distinct pairs; ours)
      max_abs_cos_sim      max |C_nd|
      median_abs_cos_sim   torch.median(|C_nd|) convention: the n zeros of the diagonal are included
                           and an even count takes the LOWER of the two middle values
      avg_cos_sim          mean C_nd over n² entries (signed)
      std_cos_sim          std of C_nd over n² entries, unbiased (ddof=1; torch.std default)
      purity_mean          1 / mean(per_neuron) = 1 / avg_abs_cos_sim
      purity_std           std(1 / per_neuron), unbiased
      hist_mean_cos_sim    signed mean of the upper-triangle cosines (the original histogram title)
      n_neurons, in_dim
    Arrays:
      per_neuron           mean_row |C_nd| (divides by n, diagonal zero included), shape (n,)
      hist_counts, hist_edges  upper-triangle (k=1) cosines, 50 bins on [-1, 1]
    """
    C = cosine_matrix(P)
    n, in_dim = np.asarray(P).shape
    A = np.abs(C)
    per_neuron = A.mean(axis=1)
    flat = np.sort(A, axis=None)
    counts, edges = cosine_histogram(C)
    with np.errstate(divide="ignore"):
        inv = 1.0 / per_neuron
    return {
        "avg_abs_cos_sim": float(A.mean()),
        "avg_abs_cos_sim_offdiag": float(A.sum() / (n * (n - 1))) if n > 1 else float("nan"),
        "max_abs_cos_sim": float(A.max()),
        "median_abs_cos_sim": float(flat[(flat.size - 1) // 2]),
        "avg_cos_sim": float(C.mean()),
        "std_cos_sim": float(C.std(ddof=1)),
        "purity_mean": float(1.0 / per_neuron.mean()),
        "purity_std": float(inv.std(ddof=1)) if n > 1 else float("nan"),
        "hist_mean_cos_sim": float(upper_triangle(C).mean()) if n > 1 else float("nan"),
        "n_neurons": float(n),
        "in_dim": float(in_dim),
        "per_neuron": per_neuron,
        "hist_counts": counts,
        "hist_edges": edges,
    }


def purity_table(matrices: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Tidy scalar purity rows (projection, metric, value) for named projections, e.g. {'text': P, 'image': P}."""
    rows = []
    for name, P in matrices.items():
        for metric, value in purity_metrics(P).items():
            if np.ndim(value) == 0:
                rows.append({"projection": name, "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=["projection", "metric", "value"])


def random_reference(n_neurons: int, in_dim: int, draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """Reference level of every scalar purity metric: its mean and sd over `draws` random Gaussian matrices
    of the projection's shape (i.i.d. N(0, 1) entries), computed by `purity_metrics` itself.
    Columns: metric, random_mean, random_sd, random_draws."""
    rng = np.random.default_rng(seed)
    rows = [{k: v for k, v in purity_metrics(rng.standard_normal((n_neurons, in_dim))).items()
             if not isinstance(v, np.ndarray)} for _ in range(draws)]
    table = pd.DataFrame(rows).drop(columns=["n_neurons", "in_dim"], errors="ignore")
    return pd.DataFrame({"metric": table.columns, "random_mean": table.mean().to_numpy(),
                         "random_sd": table.std(ddof=1).to_numpy(), "random_draws": draws})


def histogram_table(matrices: Mapping[str, np.ndarray], bins: int = HIST_BINS) -> pd.DataFrame:
    """Tidy cosine histograms (projection, bin_left, bin_right, count) of the upper-triangle cosines."""
    frames = []
    for name, P in matrices.items():
        counts, edges = cosine_histogram(cosine_matrix(P), bins)
        frames.append(pd.DataFrame({"projection": name, "bin_left": edges[:-1], "bin_right": edges[1:],
                                    "count": counts}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["projection", "bin_left", "bin_right", "count"])


# ----------------------------------------------------------------------------- diagnostics

def effective_rank(singular_values: np.ndarray, variant: str = "sv") -> float:
    """exp(Shannon entropy) of a normalised spectrum; 0·log 0 = 0.

    variant 'sv'  (Roy & Vetterli 2007): p_k = σ_k / ‖σ‖₁; 1 ≤ erank ≤ rank.
    variant 'var' (crosslingual-contrastive's code): p_k = σ_k² / Σσ², the entropy of the variance
    spectrum; never larger than the 'sv' value. σ = (1, 1, 0, 0) gives 2 for both.
    """
    s = np.abs(np.asarray(singular_values, dtype=np.float64).ravel())
    if variant == "sv":
        w = s
    elif variant == "var":
        w = s ** 2
    else:
        raise ValueError(f"effective_rank: unknown variant {variant!r} (use 'sv' or 'var')")
    total = w.sum()
    if total <= 0:
        return 0.0
    p = w[w > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def singular_values(X: np.ndarray) -> np.ndarray:
    """Singular values of X, descending; a tall X is reduced to its d × d R factor first (same values,
    several times faster than an SVD of the full matrix)."""
    if X.shape[0] > X.shape[1]:
        X = np.linalg.qr(X, mode="r")
    return np.linalg.svd(X, compute_uv=False)


def isotropy(X: np.ndarray) -> float:
    """Mean pairwise cosine over distinct rows i < j of X (higher = more anisotropic).

    Exact in O(n·d): with unit rows u_i, sum_{i<j} u_i·u_j = (‖Σ u_i‖² − Σ ‖u_i‖²) / 2.
    """
    U = normalize_rows(_check_matrix(X, "embeddings"))
    n = U.shape[0]
    if n < 2:
        return float("nan")
    s = U.sum(axis=0)
    return float((s @ s - (U * U).sum()) / (n * (n - 1)))


def poz(X: np.ndarray, threshold: float = POZ_THRESHOLD) -> float:
    """Proportion of near-zero entries: fraction of |x| < threshold in the L2-normalised rows of X."""
    return float((np.abs(normalize_rows(_check_matrix(X, "embeddings"))) < threshold).mean())


def dimension_entropy(X: np.ndarray, bins: int = ENTROPY_BINS) -> float:
    """Mean over dimensions of the Shannon entropy (nats) of a `bins`-bin histogram on [-1, 1].

    Values are clipped to [-1, 1] first (unit-norm embeddings already lie there); np.histogram's last
    bin is closed, so 1.0 falls in it.
    """
    X = np.clip(_check_matrix(X, "embeddings").astype(np.float64), -1.0, 1.0)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, X, side="right") - 1, 0, bins - 1)  # == np.histogram per column
    counts = np.zeros((bins, X.shape[1]))
    np.add.at(counts, (idx, np.broadcast_to(np.arange(X.shape[1]), X.shape)), 1.0)
    p = counts / X.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)
    return float(h.mean())


def representation_diagnostics(X: np.ndarray) -> dict[str, float]:
    """Diagnostics of an embedding set X (n_samples × d), on all rows (no subsampling).

    erank_sv / erank_var: effective ranks of the CENTRED X (as crosslingual-contrastive centres before
    its SVD), Roy–Vetterli and variance variants; pca90_components: principal components needed for
    90 % of the variance; isotropy: mean off-diagonal cosine; poz: fraction |x| < 1e-3 of unit rows;
    entropy: mean per-dimension entropy (30 bins on [-1, 1], nats).
    """
    X = _check_matrix(X, "embeddings").astype(np.float64)
    s = singular_values(X - X.mean(axis=0))
    var = s ** 2
    frac = np.cumsum(var) / var.sum() if var.sum() > 0 else np.ones_like(var)
    return {
        "erank_sv": effective_rank(s, "sv"),
        "erank_var": effective_rank(s, "var"),
        "pca90_components": float(int(np.searchsorted(frac, 0.9 - 1e-12)) + 1),
        "isotropy": isotropy(X),
        "poz": poz(X),
        "entropy": dimension_entropy(normalize_rows(X)),
    }


def rsa_correlation(A: np.ndarray, B: np.ndarray, block: int = 1024) -> float:
    """Image–text Gram (RSA) correlation of paired embedding sets A, B (row i of A pairs with row i of B).

    Pearson correlation between the strict upper triangles (i < j) of the two cosine Gram matrices,
    accumulated in row blocks so memory stays O(block · n). This is RSA, not CKA.
    """
    A = normalize_rows(_check_matrix(A, "first embeddings"))
    B = normalize_rows(_check_matrix(B, "second embeddings"))
    if A.shape[0] != B.shape[0]:
        raise InputError(f"rsa_correlation: {A.shape[0]} vs {B.shape[0]} rows; the sets must be paired")
    n = A.shape[0]
    if n < 3:
        return float("nan")
    sums = np.zeros(5)  # Σa, Σb, Σa², Σb², Σab
    for start in range(0, n - 1, block):
        stop = min(n, start + block)
        ga, gb = A[start:stop] @ A.T, B[start:stop] @ B.T
        mask = np.arange(n)[None, :] > np.arange(start, stop)[:, None]
        a, b = ga[mask], gb[mask]
        sums += [a.sum(), b.sum(), a @ a, b @ b, a @ b]
    m = n * (n - 1) / 2
    cov = sums[4] - sums[0] * sums[1] / m
    va, vb = sums[2] - sums[0] ** 2 / m, sums[3] - sums[1] ** 2 / m
    if va <= 0 or vb <= 0:
        return float("nan")
    return float(cov / np.sqrt(va * vb))


def _check_matrix(X: np.ndarray, what: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{what}: expected a non-empty 2-D array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError(f"{what}: contains NaN or infinite values")
    return X
