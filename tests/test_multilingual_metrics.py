"""Retrieval metrics against a brute-force reference, ties included (broken against the query)."""

from __future__ import annotations

import numpy as np
import pytest

from workflow_scripts.common.errors import InputError
from workflow_scripts.multilingual.metrics import per_query, recall_at_1, retrieval_metrics


def brute_force(scores, relevant, ks=(1, 5, 10)):
    """Per query: order items by score descending, an irrelevant item before a relevant one of equal score;
    then R@K, AP and RR read off the ordered list one position at a time."""
    out = {f"R@{k}": [] for k in ks}
    out["mAP"], out["MRR"] = [], []
    for s, rel in zip(scores.tolist(), relevant.tolist()):
        order = sorted(range(len(s)), key=lambda j: (-s[j], rel[j]))
        hits, precisions, first = 0, [], None
        for pos, j in enumerate(order, start=1):
            if rel[j]:
                hits += 1
                precisions.append(hits / pos)
                first = first or pos
        for k in ks:
            out[f"R@{k}"].append(1.0 if first <= k else 0.0)
        out["mAP"].append(sum(precisions) / len(precisions))
        out["MRR"].append(1.0 / first)
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("n_relevant", [1, 3])
def test_metrics_match_brute_force_with_ties(n_relevant):
    rng = np.random.default_rng(n_relevant)
    q, n = 40, 30
    scores = rng.integers(0, 4, size=(q, n)).astype(float)      # few distinct values: many ties
    relevant = np.zeros((q, n), dtype=bool)
    for i in range(q):
        relevant[i, rng.choice(n, n_relevant, replace=False)] = True
    got, want = per_query(scores, relevant), brute_force(scores, relevant)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], err_msg=key)
    means = retrieval_metrics(scores, relevant)
    assert means["R@1"] == pytest.approx(want["R@1"].mean())


def test_recall_at_1_matches_brute_force():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 3, size=(25, 25)).astype(float)
    targets = rng.permutation(25)
    relevant = np.zeros_like(scores, dtype=bool)
    relevant[np.arange(25), targets] = True
    assert recall_at_1(scores, targets) == pytest.approx(brute_force(scores, relevant)["R@1"].mean())


def test_a_query_without_relevant_items_is_refused():
    relevant = np.zeros((2, 3), dtype=bool)
    relevant[0, 1] = relevant[1, 0] = relevant[1, 2] = True
    relevant[1] = False
    with pytest.raises(InputError, match="query 1"):
        retrieval_metrics(np.zeros((2, 3)), relevant)
