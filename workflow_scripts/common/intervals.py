"""Confidence intervals for the study's claims, each answering the question it is attached to.

- `t_interval`: mean over replicates with the two-sided Student t interval (replicates are few).
- `bootstrap_mean_ci`: percentile interval of the mean of per-image values under resampling of the
  evaluation images (with replacement): the evaluation-sample noise of an accuracy or of a paired accuracy
  difference. Paired: both checkpoints are scored on the same resampled images.
- `wilson_interval`: a proportion over independent trials (e.g. localisation accuracy over foils).
- `combined_t_interval`: the mean of a (replicate x image) table with an interval that combines both
  noise sources (between-replicate and evaluation-image variance, t quantile on replicates - 1 df).
- `cluster_bootstrap_spearman`: Spearman rho over runs with a percentile interval from resampling whole
  replicates (clusters), so that runs sharing a swap realisation are not counted as independent; no
  p-value is reported. With few replicates every distinct resample is enumerated with its exact
  probability (3 replicates: 10 resamples) instead of drawn at random, and the interval is withheld
  when that finite set cannot resolve it (`cluster_resolution`).
- `within_group_correlation`: the association of two quantities beyond a treatment that moves both: the
  partial correlation given the treatment group (and the replicate), with a Fisher-z interval.

Percentile bootstrap intervals stay inside the range of the statistic (an accuracy interval inside [0, 1]).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

DEFAULT_DRAWS = 2000
# Fewest replicates for which a t interval is given: with 2 the interval is mean ± 12.7·sd/√2 (t(0.975, 1)),
# wider than an accuracy's whole range whenever the two replicates differ by more than ~8 % of it.
MIN_REPLICATES = 3


def t_interval(values: np.ndarray, level: float = 0.95,
               bounds: tuple[float, float] | None = None) -> tuple[int, float, float, float, float]:
    """(n, mean, sd, ci_low, ci_high) of the non-NaN values: the two-sided Student t interval of the mean.

    NaN interval for n < MIN_REPLICATES; sd is NaN for n < 2. `bounds` is the statistic's
    possible range (an accuracy's [0, 1], a difference of accuracies' [-1, 1]): the interval is cut to it,
    as the mean of values inside the range cannot leave it.
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return 0, np.nan, np.nan, np.nan, np.nan
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n >= 2 else np.nan
    if n < MIN_REPLICATES:
        return n, mean, sd, np.nan, np.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / np.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return n, mean, sd, low, high


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (inside [0, 1]; NaN for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def bootstrap_mean_ci(per_image: np.ndarray, level: float = 0.95, draws: int = DEFAULT_DRAWS,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile interval of mean(per_image) when the images are resampled with replacement.

    `per_image` is one value per evaluation image: a 0/1 correctness, or a paired difference of two
    checkpoints' correctness (averaged over replicates) on the same image.
    """
    d = np.asarray(per_image, dtype=float)
    n = len(d)
    if n == 0:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    for start in range(0, draws, 256):            # resampled indices in chunks: memory O(256 n)
        b = min(256, draws - start)
        means[start:start + b] = d[rng.integers(0, n, size=(b, n))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def combined_t_interval(values: np.ndarray, level: float = 0.95,
                        bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Interval of the mean of `values` [replicates, images] that covers both noise sources: the
    between-replicate variance of the replicate means (pretraining, swaps, batch order) plus the
    evaluation-sample variance of the replicate-averaged per-image values (the images are common to all
    replicates), with the Student t quantile on replicates - 1 degrees of freedom:

        mean ± t(R-1) · sqrt(var(replicate means)/R + var(image means)/N)

    Each component also holds the replicate × image residual once, so the sum is slightly conservative.
    A percentile bootstrap that resamples 3 replicates (10 distinct resamples) would be about 2.7 times
    narrower in its replicate part than the t interval; the t quantile keeps the few-replicate uncertainty.
    NaN below MIN_REPLICATES replicates; cut to `bounds` like t_interval.
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n_rep, n_img = v.shape
    if n_rep < MIN_REPLICATES or n_img < 2:
        return np.nan, np.nan
    mean = float(v.mean())
    variance = v.mean(axis=1).var(ddof=1) / n_rep + v.mean(axis=0).var(ddof=1) / n_img
    half = float(stats.t.ppf(0.5 + level / 2, n_rep - 1)) * float(np.sqrt(variance))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


def cluster_resolution(k: int, level: float = 0.95) -> str | None:
    """Why a cluster-bootstrap percentile interval over k clusters cannot be given at `level` (None when
    it can): each of the k resamples made of one cluster only has probability k^-k, and once that reaches
    the tail mass (1 - level) / 2 the interval's ends are single clusters' values, not quantiles (3
    clusters: 10 distinct resamples, 1/27 = 3.7 % > 2.5 %)."""
    if k < 2:
        return f"{k} replicate: no interval"
    if k ** -k >= (1 - level) / 2:
        return (f"withheld: {k} replicates give {math.comb(2 * k - 1, k)} distinct resamples, each one-replicate "
                f"resample with probability {k ** -k:.3f} >= {(1 - level) / 2:.3f}")
    return None


def within_group_correlation(x: np.ndarray, y: np.ndarray, groups: np.ndarray, blocks: np.ndarray | None = None,
                             level: float = 0.95) -> tuple[float, float, float, int, int]:
    """(r, ci_low, ci_high, n, q): the partial correlation of x and y given group (and block) effects:
    the Pearson correlation of their least-squares residuals on one indicator per group (plus one per
    block beyond the first: an additive group + block model), with a Fisher-z interval, standard error
    1/sqrt(n - q - 3) for q = the covariates beyond the intercept. Blocks (replicates) remove what the
    runs of one replicate share, so the residuals can be taken as independent.
    NaN when either residual is zero; no interval when n - q - 3 < 1."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    columns = [np.asarray(groups)] + ([np.asarray(blocks)] if blocks is not None else [])
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y, columns = x[ok], y[ok], [c[ok] for c in columns]
    n = len(x)
    if n == 0:
        return np.nan, np.nan, np.nan, 0, 0
    design = [(columns[0][:, None] == np.unique(columns[0])).astype(float)]
    for c in columns[1:]:
        design.append((c[:, None] == np.unique(c)[1:]).astype(float))
    X = np.hstack(design)
    q = int(np.linalg.matrix_rank(X)) - 1
    rx = x - X @ np.linalg.lstsq(X, x, rcond=None)[0]
    ry = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    sxx, syy = float(rx @ rx), float(ry @ ry)
    scale = max(float(x @ x), float(y @ y), 1e-300)
    if sxx <= 1e-20 * scale or syy <= 1e-20 * scale:
        return np.nan, np.nan, np.nan, n, q
    r = float(np.clip(rx @ ry / np.sqrt(sxx * syy), -1.0, 1.0))
    if n - q - 3 < 1:
        return r, np.nan, np.nan, n, q
    z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), float(stats.norm.ppf(0.5 + level / 2)) / np.sqrt(n - q - 3)
    return r, float(np.tanh(z - half)), float(np.tanh(z + half)), n, q


def cluster_bootstrap_spearman(x: np.ndarray, y: np.ndarray, clusters: np.ndarray, level: float = 0.95,
                               draws: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(rho, ci_low, ci_high): Spearman rho of (x, y) over runs; the interval resamples whole clusters
    (replicates) with replacement. NaN when fewer than 3 runs; the interval NaN where the clusters cannot
    resolve it (`cluster_resolution`: fewer than 4 at the 95 % level)."""
    from scipy import stats

    x, y, clusters = (np.asarray(a) for a in (x, y, clusters))
    ok = ~(np.isnan(x.astype(float)) | np.isnan(y.astype(float)))
    x, y, clusters = x[ok], y[ok], clusters[ok]
    if len(x) < 3:
        return np.nan, np.nan, np.nan
    rho = float(stats.spearmanr(x, y)[0])
    ids = np.unique(clusters)
    if len(ids) < 2:
        return rho, np.nan, np.nan
    members = [np.flatnonzero(clusters == c) for c in ids]
    k = len(ids)
    if cluster_resolution(k, level) is not None:
        return rho, np.nan, np.nan
    if math.comb(2 * k - 1, k) <= draws:
        # few clusters: every distinct resample (multiset of clusters) with its exact probability
        resamples = list(itertools.combinations_with_replacement(range(k), k))
        weights = np.array([_multiset_probability(r, k) for r in resamples])
    else:
        rng = np.random.default_rng(seed)
        resamples = [tuple(rng.integers(0, k, k)) for _ in range(draws)]
        weights = np.full(draws, 1.0 / draws)
    rhos, kept = [], []
    for r, w in zip(resamples, weights):
        idx = np.concatenate([members[i] for i in r])
        rx, ry = stats.rankdata(x[idx]), stats.rankdata(y[idx])   # Spearman = Pearson of the ranks
        if np.ptp(rx) > 0 and np.ptp(ry) > 0:
            rhos.append(np.corrcoef(rx, ry)[0, 1])
            kept.append(w)
    if not rhos:
        return rho, np.nan, np.nan
    alpha = (1 - level) / 2
    low, high = _weighted_quantiles(np.array(rhos), np.array(kept), [alpha, 1 - alpha])
    return rho, low, high


def _multiset_probability(resample: tuple[int, ...], k: int) -> float:
    """Probability that k uniform draws from k clusters give this multiset: k! / (prod m_i!) / k^k."""
    counts = np.bincount(resample, minlength=k)
    return math.factorial(k) / math.prod(math.factorial(int(c)) for c in counts) / k ** k


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: list[float]) -> tuple[float, ...]:
    """Quantiles of a discrete distribution: the smallest value whose cumulative weight reaches q."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order]) / weights.sum()
    return tuple(float(values[order][min(np.searchsorted(cum, q - 1e-12), len(cum) - 1)]) for q in qs)
