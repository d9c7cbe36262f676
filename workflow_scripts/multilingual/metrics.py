"""Retrieval metrics from a score matrix and a relevance matrix: R@K, average precision, reciprocal rank.

Ties are broken against the query: among items with equal scores the irrelevant ones rank first
(a pessimistic rank), so a metric never profits from identical embeddings. With one relevant item AP
equals the reciprocal rank; mAP differs from MRR when a query has several relevant items (e.g. an image
querying the captions of all languages).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..common.errors import InputError

KS = (1, 5, 10)


def ranked_relevance(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(q, n) relevance in ranked order per query: descending score, irrelevant first among ties."""
    scores, relevant = np.asarray(scores), np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise InputError(f"retrieval: scores {scores.shape} and relevance {relevant.shape} must be equal 2-D shapes")
    if not relevant.any(axis=1).all():
        raise InputError(f"retrieval: query {int(np.flatnonzero(~relevant.any(axis=1))[0])} has no relevant item")
    order = np.lexsort((relevant, -scores), axis=-1)
    return np.take_along_axis(relevant, order, axis=1)


def retrieval_metrics(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K (a relevant item within the top K), mAP and MRR, averaged over queries."""
    per = per_query(scores, relevant, ks)
    return {k: float(v.mean()) for k, v in per.items()}


def per_query(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """The same metrics per query (for paired intervals over queries). With exactly one relevant item per
    query the rank is a count (no sort): 1 + the items scoring at least as high, itself excluded."""
    scores, relevant = np.asarray(scores), np.asarray(relevant, dtype=bool)
    if scores.shape == relevant.shape and scores.ndim == 2 and (relevant.sum(axis=1) == 1).all():
        own = scores[relevant]
        rank = (scores >= own[:, None]).sum(axis=1)
        out = {f"R@{k}": (rank <= k).astype(float) for k in ks}
        out["mAP"] = 1.0 / rank
        out["MRR"] = 1.0 / rank
        return out
    ranked = ranked_relevance(scores, relevant)
    first = ranked.argmax(axis=1)                          # 0-based position of the first relevant item
    hits = np.cumsum(ranked, axis=1)
    positions = np.arange(1, ranked.shape[1] + 1)
    ap = (ranked * hits / positions).sum(axis=1) / ranked.sum(axis=1)
    out = {f"R@{k}": (first < k).astype(float) for k in ks}
    out["mAP"] = ap
    out["MRR"] = 1.0 / (first + 1)
    return out


def recall_at_1(scores: np.ndarray, targets: np.ndarray) -> float:
    """R@1 with one relevant item per query (column targets[i]), pessimistic ties, without sorting."""
    own = scores[np.arange(len(targets)), targets]
    ahead = (scores >= own[:, None]).sum(axis=1) - 1
    return float((ahead == 0).mean())


def same_id(query_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Relevance matrix: item j is relevant to query i when they belong to the same image."""
    return np.asarray(query_ids)[:, None] == np.asarray(item_ids)[None, :]
