"""Cross-lingual diagnostics of crosslingual-contrastive's align_text_to_image.py (peers.md §4.4 "Extras"),
as that code computes them, plus two retrieval variants of ours.

The original's (on each language's caption embeddings, rows aligned across languages = the same images,
a shared seeded sample of at most `sample` rows: `sample_rows`):
- `hubness`: in one language's caption space, each caption's k nearest other captions (cosine, itself
  excluded); N_k(x) = how often caption x is among the others' k nearest. `hub_skew` = the population
  skewness of N_k (mean((N−μ)³)/(σ+1e-12)³), `hub_ratio_1pct` = the share of all k-occurrences held by the
  max(1, round(0.01·m)) captions with the most. k = 10.
- `neighbour_overlap`: per pair of languages a, b, the mean over items i of the Jaccard index
  |A_i ∩ B_i| / (|A_i ∪ B_i| + 1e-12) of item i's k nearest other items in a's and in b's caption space;
  the L×L matrix (diagonal 1) and its mean off-diagonal. k = 10.
- `language_id_probe`: up to `sample_per_lang` rows per language (numpy default_rng(seed), without
  replacement, one generator across the languages in order), label = the language; a stratified
  train/test split (test_size 0.3, random_state seed); scikit-learn LogisticRegression(C=1, lbfgs,
  max_iter 2000, multinomial) on the raw rows; accuracy on the test part. Chance is 1/L.

Ours (the text→image retrieval view): `retrieval_hubness` = the same statistics of N_k(image), the number
of captions whose k best images (text→image cosine) include the image; `retrieval_overlap` = the Jaccard
overlap across languages of each image's captions' k best images.
"""

from __future__ import annotations

import itertools
import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULTS = {"sample": 2000, "hub_k": 10, "neighbour_k": 10, "langid_sample_per_lang": 2000,
            "langid_test_size": 0.3, "langid_C": 1.0, "langid_seed": 0}


def sample_rows(n: int, max_n: int) -> np.ndarray:
    """All n rows, or max_n of them drawn without replacement by default_rng(0), sorted (the original's
    _sample_rows)."""
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=max_n, replace=False))


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def knn(queries: np.ndarray, items: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    """(q, k) indices of each query's k highest-cosine items (unordered); exclude_self: queries are the
    items and a row is never its own neighbour (k is cut to n − 1)."""
    sims = _unit(queries) @ _unit(items).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    kk = min(k, sims.shape[1] - (1 if exclude_self else 0))
    if kk <= 0:
        return np.zeros((len(sims), 0), dtype=np.int64)
    return np.argpartition(-sims, kth=kk - 1, axis=1)[:, :kk]


def k_occurrence_stats(neighbours: np.ndarray, m: int) -> dict[str, float]:
    """hub_skew and hub_ratio_1pct of the k-occurrence counts of m items given each query's neighbours."""
    counts = np.bincount(neighbours.reshape(-1), minlength=m).astype(np.float64)
    mu, sigma = counts.mean(), counts.std(ddof=0) + 1e-12
    top = max(1, int(round(0.01 * m)))
    return {"hub_skew": float(((counts - mu) ** 3).mean() / sigma ** 3),
            "hub_ratio_1pct": float(np.sort(counts)[-top:].sum() / (counts.sum() + 1e-12))}


def hubness(X: np.ndarray, k: int = 10, sample: int = 2000) -> dict[str, float]:
    """The original's hubness_stats of one caption space (see the module docstring)."""
    Xs = np.asarray(X)[sample_rows(len(X), sample)]
    return k_occurrence_stats(knn(Xs, Xs, k, exclude_self=True), len(Xs))


def _membership(neighbours: np.ndarray, m: int) -> np.ndarray:
    """(q, m) boolean: item j is among query i's neighbours (the neighbour sets as rows)."""
    member = np.zeros((len(neighbours), m), dtype=bool)
    member[np.arange(len(neighbours))[:, None], neighbours] = True
    return member


def _jaccard_matrix(neighbours: list[np.ndarray], m: int) -> np.ndarray:
    """L×L mean over queries of |A_i ∩ B_i| / (|A_i ∪ B_i| + 1e-12) of the neighbour sets (diagonal 1)."""
    L = len(neighbours)
    members = [_membership(nb, m) for nb in neighbours]
    mat = np.ones((L, L))
    for a, b in itertools.combinations(range(L), 2):
        inter = (members[a] & members[b]).sum(axis=1)
        union = members[a].sum(axis=1) + members[b].sum(axis=1) - inter
        mat[a, b] = mat[b, a] = float(np.mean(inter / (union + 1e-12)))
    return mat


def _mean_offdiag(mat: np.ndarray) -> float:
    return float(mat[np.triu_indices(len(mat), k=1)].mean()) if len(mat) > 1 else float("nan")


def neighbour_overlap(X_list: Sequence[np.ndarray], k: int = 10, sample: int = 2000) -> tuple[float, np.ndarray]:
    """The original's neighbor_overlap_across_langs: (mean off-diagonal, L×L Jaccard matrix)."""
    n = len(X_list[0])
    if any(len(X) != n for X in X_list):
        raise ValueError("neighbour_overlap needs aligned rows (the same items in every language)")
    idx = sample_rows(n, sample)
    mat = _jaccard_matrix([knn(np.asarray(X)[idx], np.asarray(X)[idx], k, exclude_self=True) for X in X_list], len(idx))
    return _mean_offdiag(mat), mat


def retrieval_hubness(T: np.ndarray, V: np.ndarray, k: int = 10) -> dict[str, float]:
    """hub_skew / hub_ratio_1pct of the images' k-occurrences in the captions' k best images (ours)."""
    return k_occurrence_stats(knn(T, V, k, exclude_self=False), len(V))


def retrieval_overlap(T_list: Sequence[np.ndarray], V: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    """Mean off-diagonal and L×L matrix of the Jaccard overlap of the k best images retrieved by the same
    image's captions in two languages (ours; rows of T_list aligned)."""
    mat = _jaccard_matrix([knn(T, V, k, exclude_self=False) for T in T_list], len(V))
    return _mean_offdiag(mat), mat


def language_id_probe(X_list: Sequence[np.ndarray], sample_per_lang: int = 2000, test_size: float = 0.3,
                      seed: int = 0, C: float = 1.0, max_iter: int = 2000) -> float:
    """The original's language_id_probe accuracy (see the module docstring); NaN when the rows are too few
    for a stratified split (every language needs ≥ 2 rows and the test part ≥ one row per language)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, X in enumerate(X_list):
        take = min(sample_per_lang, len(X))
        if take <= 1:
            return float("nan")
        xs.append(np.asarray(X)[rng.choice(len(X), size=take, replace=False)].astype(np.float32))
        ys.append(np.full(take, label, dtype=np.int64))
    X, y = np.concatenate(xs), np.concatenate(ys)
    try:
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    except ValueError as exc:
        log.warning("language-ID probe skipped: %s", exc)
        return float("nan")
    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter)
    clf.fit(Xtr, ytr)
    return float((clf.predict(Xte) == yte).mean())


def crosslingual_rows(texts: dict[str, np.ndarray], V: np.ndarray, settings: dict | None = None) -> list[tuple[str, str, float]]:
    """(language, metric, value) rows of every diagnostic above for captions `texts` (per language, rows
    aligned: row i of each is image i of V): per language hub_skew, hub_ratio_1pct (caption space) and
    t2i_hub_skew, t2i_hub_ratio_1pct (retrieved images); per pair "a~b" and over all ("all")
    neighbour_overlap and t2i_overlap; "all" langid_acc1."""
    s = {**DEFAULTS, **(settings or {})}
    langs = list(texts)
    rows = []
    for lang in langs:
        rows += [(lang, m, v) for m, v in hubness(texts[lang], s["hub_k"], s["sample"]).items()]
        idx = sample_rows(len(V), s["sample"])
        rows += [(lang, f"t2i_{m}", v) for m, v in retrieval_hubness(texts[lang][idx], V[idx], s["hub_k"]).items()]
    idx = sample_rows(len(V), s["sample"])
    for name, (mean, mat) in {
        "neighbour_overlap": neighbour_overlap([texts[lang] for lang in langs], s["neighbour_k"], s["sample"]),
        "t2i_overlap": retrieval_overlap([texts[lang][idx] for lang in langs], V[idx], s["neighbour_k"]),
    }.items():
        rows.append(("all", name, mean))
        rows += [(f"{langs[a]}~{langs[b]}", name, float(mat[a, b])) for a, b in itertools.combinations(range(len(langs)), 2)]
    acc = language_id_probe([texts[lang] for lang in langs], s["langid_sample_per_lang"], s["langid_test_size"],
                            s["langid_seed"], s["langid_C"])
    rows.append(("all", "langid_acc1", acc))
    return rows
