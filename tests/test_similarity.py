"""Exact top-K neighbours: every backend and the exact search against a dense brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from workflow_scripts.misalign import similarity as S
from workflow_scripts.misalign.exact_search import pair_scores
from workflow_scripts.misalign.tfidf import tfidf_matrix
from workflow_scripts.common.errors import InputError


def random_unit_rows(n, v, seed, dup=0.0, empty=0.0, max_terms=6):
    """Random non-negative L2-normalised sparse rows, some duplicated and some empty (ties)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        if rows and rng.random() < dup:
            rows.append(rows[rng.integers(len(rows))].copy())
            continue
        x = np.zeros(v)
        if rng.random() >= empty:
            # Zipf-like term choice so that some terms are common (long posting lists)
            terms = rng.choice(v, size=rng.integers(1, max_terms + 1), replace=False,
                               p=1.0 / np.arange(1, v + 1) / np.sum(1.0 / np.arange(1, v + 1)))
            x[terms] = rng.random(len(terms)) + 0.05
            x /= np.linalg.norm(x)
        rows.append(x)
    return sp.csr_matrix(np.array(rows))


def brute_force(X, k, allowed=None):
    """Dense reference: all j != i (and allowed), ordered by (-similarity, j); first k."""
    D = (X @ X.T).toarray()
    n = D.shape[0]
    ids = np.full((n, k), -1)
    sc = np.zeros((n, k))
    for i in range(n):
        ok = np.ones(n, bool) if allowed is None else allowed.copy()
        ok[i] = False
        cand = np.flatnonzero(ok)
        order = cand[np.lexsort((cand, -D[i, cand]))][:k]
        ids[i, : len(order)] = order
        sc[i, : len(order)] = D[i, order]
    return ids, sc


@pytest.mark.parametrize("backend", ["cpu", "sparse_dot_topn", "scipy"])
@pytest.mark.parametrize("seed,dup,empty", [(0, 0.0, 0.0), (1, 0.3, 0.05), (2, 0.6, 0.2)])
def test_neighbours_equal_dense_brute_force(backend, seed, dup, empty):
    X = random_unit_rows(400, 60, seed, dup=dup, empty=empty)
    ids, scores, stats = S.neighbours(X, 12, backend=backend, block_rows=97, extra=2)
    ref_ids, ref_scores = brute_force(X, 12)
    assert ids.dtype == np.int32 and scores.dtype == np.float32 and ids.shape == (400, 12)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_exact_scan_scores_are_bit_equal_to_the_exact_score(threads):
    # the scan's accumulated sums are the definition's sums (no rescoring): bit-equal to pair_scores,
    # and its lists equal those of the candidate + proof path on many ties (duplicates, empty rows)
    X = random_unit_rows(500, 50, 4, dup=0.5, empty=0.1)
    reps, group, ptr, members = S.unique_rows(X)
    U = X[reps]
    urows = np.arange(len(reps))
    li, ls, n_mem = S.ExactScan(U, ptr, members, 13, threads=threads)(urows, chunk=37)
    np.testing.assert_array_equal(n_mem == 0, np.diff(U.indptr) == 0)     # an empty row scores nothing
    assert n_mem.max() == 13
    for r in urows[::5]:
        got = li[r, : n_mem[r]]
        np.testing.assert_array_equal(ls[r, : n_mem[r]], pair_scores(X, np.full(len(got), reps[r]), got))
    ids, scores, _ = S.neighbours(X, 12, backend="cpu", threads=threads, block_rows=61)
    ids2, scores2, _ = S.neighbours(X, 12, backend="sparse_dot_topn", block_rows=61, extra=1)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(scores, scores2)


def test_rounds_escalate_and_exact_search_finishes():
    # many distinct rows tie with each other (same weight on one shared term): top_n is far too small
    v = 30
    rows = [np.eye(v)[0] * 0.6 + np.eye(v)[j] * 0.8 for j in range(1, v)] * 3
    X = sp.csr_matrix(np.array(rows))
    ids, _, stats = S.neighbours(X, 5, backend="sparse_dot_topn", extra=0, rounds=1)
    assert stats["exact_rows"] > 0
    np.testing.assert_array_equal(ids, brute_force(X, 5)[0])
    ids2, _, stats2 = S.neighbours(X, 5, backend="sparse_dot_topn", extra=0, rounds=3)
    assert stats2["unproven"][0] > 0
    np.testing.assert_array_equal(ids2, ids)


def test_exact_searcher_with_allowed_mask():
    X = random_unit_rows(300, 40, 3, dup=0.2, empty=0.1)
    allowed = np.random.default_rng(0).random(300) < 0.4
    rows = np.arange(0, 300, 7)
    ids, scores = S.ExactSearcher(X, threads=2).search(rows, 9, allowed=allowed)
    ref_ids, ref_scores = brute_force(X, 9, allowed=allowed)
    np.testing.assert_array_equal(ids, ref_ids[rows])
    np.testing.assert_allclose(scores, ref_scores[rows], atol=1e-12)
    # fewer allowed rows than k: the list ends with -1
    few = np.zeros(300, bool)
    few[[5, 9]] = True
    ids, _ = S.ExactSearcher(X).search([0], 4, allowed=few)
    assert ids[0].tolist() == brute_force(X, 2, allowed=few)[0][0].tolist() + [-1, -1]


def test_neighbours_of_chosen_rows_only():
    X = random_unit_rows(300, 40, 6, dup=0.3, empty=0.1)
    rows = np.array([0, 7, 8, 150, 299])
    ids, scores, _ = S.neighbours(X, 9, block_rows=2, extra=1, rows=rows)
    ref_ids, ref_scores = brute_force(X, 9)
    np.testing.assert_array_equal(ids[rows], ref_ids[rows])
    np.testing.assert_allclose(scores[rows], ref_scores[rows], atol=1e-6)
    others = np.setdiff1d(np.arange(300), rows)
    assert (ids[others] == -1).mean() > 0.5          # not searched (except rows identical to the chosen)


@pytest.mark.parametrize("n_allowed,grouped", [(120, False), (120, True), (6, True)])
def test_neighbours_among_allowed_rows(n_allowed, grouped):
    X = random_unit_rows(300, 40, 7, dup=0.3, empty=0.1)
    allowed = np.zeros(300, bool)
    allowed[np.random.default_rng(1).choice(300, n_allowed, replace=False)] = True
    rows = np.flatnonzero(allowed)[::2]
    ids, scores = S.neighbours_among(X, rows, allowed, 12, groups=S.unique_rows(X) if grouped else None)
    ref_ids, ref_scores = brute_force(X, min(12, n_allowed - 1), allowed=allowed)
    assert ids.dtype == np.int32 and ids.shape == (len(rows), min(12, n_allowed - 1))
    np.testing.assert_array_equal(ids, ref_ids[rows])
    np.testing.assert_allclose(scores, ref_scores[rows], atol=1e-6)


def test_top_candidates_is_a_per_row_top_n():
    A = sp.csr_matrix(np.array([[0.0, 0.5, 0.5, 0.9, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.2, 0.0, 0.3]]))
    counts, cols, vals = S.top_candidates(A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data, 3)
    assert counts.tolist() == [3, 0, 3]
    assert cols.tolist() == [3, 1, 2, 0, 4, 2]      # ties by column ascending
    np.testing.assert_allclose(vals, [0.9, 0.5, 0.5, 0.3, 0.3, 0.2])


def test_row_blocks_and_unique_rows():
    assert list(S.row_blocks(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(S.row_blocks(0, 4)) == []
    X = sp.csr_matrix(np.array([[1.0, 0], [0, 1.0], [1.0, 0], [0, 0], [0, 0]]))
    reps, group, ptr, members = S.unique_rows(X)
    assert reps.tolist() == [0, 1, 3]
    assert group.tolist() == [0, 1, 0, 2, 2]
    assert [members[ptr[g]:ptr[g + 1]].tolist() for g in range(3)] == [[0, 2], [1], [3, 4]]


def test_groups_of_rows_equal_unique_rows_of_the_sub_matrix():
    X = random_unit_rows(200, 15, 8, dup=0.5, empty=0.2)
    rows = np.flatnonzero(np.random.default_rng(2).random(200) < 0.6)
    got = S.groups_of_rows(S.unique_rows(X), rows)
    for a, b in zip(got, S.unique_rows(X[rows])):
        np.testing.assert_array_equal(a, b)
    assert len(got[0]) < len(rows)                  # there are groups to find


def test_exact_searcher_postings_are_impact_ordered():
    X = sp.csr_matrix(np.array([[0.6, 0.8], [0.8, 0.6], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0]]))
    es = S.ExactSearcher(X)
    assert es.pdoc[es.pptr[0]:es.pptr[1]].tolist() == [3, 1, 0, 2]   # weight descending, ties by document
    assert es.pdoc[es.pptr[1]:es.pptr[2]].tolist() == [4, 0, 2, 1]


def test_pair_scores_are_symmetric_and_exact():
    X = random_unit_rows(50, 20, 4)
    a, b = np.arange(50), np.arange(50)[::-1]
    np.testing.assert_array_equal(pair_scores(X, a, b), pair_scores(X, b, a))
    np.testing.assert_allclose(pair_scores(X, a, b), np.asarray(X[a].multiply(X[b]).sum(1)).ravel())


def test_tiny_inputs():
    X = sp.csr_matrix(np.array([[1.0, 0.0]]))
    ids, scores, _ = S.neighbours(X, 5)
    assert ids.shape == (1, 0)
    X = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    ids, scores, _ = S.neighbours(X, 5)
    assert ids.tolist() == [[2, 1], [2, 0], [1, 0]]


def test_tfidf_uses_the_configured_parameters():
    params = {"max_features": 5000, "stop_words": "english", "ngram_range": [1, 2], "min_df": 1, "max_df": 1.0}
    X = tfidf_matrix(["the dog is in the park", "a dog in a park"], params)
    assert X.shape == (2, 3)  # dog, park, and the bigram "dog park" formed across removed stop words
    np.testing.assert_allclose(np.asarray(X.multiply(X).sum(1)).ravel(), 1.0)
    with pytest.raises(InputError, match="misalign.tfidf"):
        tfidf_matrix(["the a", "is in"], params)


def test_backend_resolution(monkeypatch):
    monkeypatch.setattr(S, "gpu_available", lambda: False)
    assert S.resolve_backend("auto", False) == "cpu"
    assert S.resolve_backend("cpu", False) == "cpu"
    assert S.resolve_backend("cupy", True) == "cpu"
    with pytest.raises(InputError, match="misalign.backend"):
        S.resolve_backend("cupy", False)
    monkeypatch.setattr(S, "gpu_available", lambda: True)
    assert S.resolve_backend("auto", False) == "cupy"


def test_save_and_load_round_trip(tmp_path):
    X = random_unit_rows(30, 10, 5)
    ids, scores, _ = S.neighbours(X, 4)
    S.save_neighbours(tmp_path / "n.npz", ids, scores, X, {"k": 4})
    ids2, scores2, X2, meta = S.load_neighbours(tmp_path / "n.npz")
    np.testing.assert_array_equal(ids2, ids)
    assert (X2 != X).nnz == 0 and meta == {"k": 4}
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        S.load_neighbours(tmp_path / "bad.npz")
