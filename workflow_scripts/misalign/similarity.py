"""Exact top-K cosine neighbours of the captions' TF-IDF rows, without an N x N matrix.

The original (docs/original_code.md, "Exp 3, stage 1") fills a dense N x N similarity matrix (40 GB at 100k
captions). Swaps only need, per caption, its most similar captions in a fixed order, so we store the
top-K neighbours of every caption (memory O(N K)) plus the TF-IDF matrix, from which any row can be
recomputed exactly when the swap's exclusions exhaust the stored K (workflow_scripts.misalign.pairing).

Definitions (what "exact" means here)
- similarity(i, j) = sum over shared terms t, in ascending term index, of x_it * x_jt in float64,
  where x are the L2-normalised TF-IDF rows (TfidfVectorizer's own output). Every path computes the
  final scores with this one function (`pair_scores`, `_dot`), so equal rows give bit-equal scores.
- neighbours of i = the first K of all j != i ordered by (-similarity, j ascending). Zero
  similarities are included (the original allows them): a row with fewer than K positive neighbours
  is filled with the smallest remaining indices. K is min(n_neighbours, N - 1).

How
0. Identical TF-IDF rows (duplicate captions, captions made only of stop words...) tie with
   everything, so they are grouped (`unique_rows`) and each distinct row U is searched once.
1. `backend cpu` (the default without a GPU): `ExactScan` accumulates every distinct row's scores
   against all of U over an inverted index, term by term in ascending term order, so the sums are
   already the exact scores (bit-equal to `_dot`), and keeps the best K + 1 members in a heap. Same
   work as a sparse block product (one multiply-add per entry of U . U^T) without the rescoring and
   proof below (bench/similarity.py: 62.6 s against 101.0 s for sparse_dot_topn + proof at 1M texts,
   1.52 s against 1.63 s at 100k).
   The candidate backends share steps 1'-2: distinct rows are cut into blocks (`row_blocks`); for a
   block, a generator returns, per row, the top `top_n = K + 1 + extra` entries of block . U^T:
   sparse_dot_topn on the CPU (`backend sparse_dot_topn`, the issue's original CPU path), a
   cupyx.scipy.sparse block product followed by `top_candidates` on the GPU (`backend cupy`;
   `top_candidates` is array-module generic and tested with NumPy, `backend scipy`).
2. `finalize_block` (host, shared) rescores the candidates with the exact score, expands groups to
   their members, orders by (-score, index) and proves each list complete: either the generator
   returned fewer than top_n entries (it saw every positive similarity), or the (K+1)-th exact score
   exceeds the smallest returned generator score by more than the rounding bound `DELTA`. Unproven
   rows (ties at the cut) get 4x more candidates, for a few rounds, then `ExactSearcher`.
   `_member_lists` writes each member's list (itself dropped, short lists zero-filled).
3. `ExactSearcher` is an exact pruned search (document-at-a-time over impact-ordered postings, with
   an L2 bound on the score of documents not yet seen, so lists of common terms are abandoned as
   soon as no unseen document can reach the current K-th score). It also takes an `allowed` mask:
   the swap's numba loop calls its kernel (`exact_search.exact_rows`, on `ExactSearcher.index`) to recompute
   a row among the still-unused captions.
4. `neighbours_among` runs steps 0-2 for chosen rows only (`neighbours(rows=...)`) on the sub-matrix
   of allowed rows, whose groups come from those of the whole matrix (`groups_of_rows`): the swap's
   batch recomputes, cheaper per row than the pruned search.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from typing import Iterator

import numba as nb
import numpy as np
import scipy.sparse as sp

from ..common.errors import InputError
from .exact_search import ExactScan, ExactSearcher, exact_dot, heap_drain, heap_push, over_chunks

log = logging.getLogger("workflow_scripts.misalign.similarity")

DELTA = 1e-9         # bound on |generator score - exact score| (float64 products of unit rows)


# ----------------------------------------------------------------- shared blocking and top-k logic

def row_blocks(n: int, block: int) -> Iterator[tuple[int, int]]:
    """[lo, hi) row ranges of at most `block` rows covering 0..n."""
    block = max(1, int(block))
    for lo in range(0, n, block):
        yield lo, min(lo + block, n)


def block_rows_for(X: sp.csr_matrix, max_entries: int) -> int:
    """Rows per block so that a block product has at most ~max_entries stored entries on average.

    The entries of row i of X . X^T are at most the summed document frequencies of its terms.
    """
    df = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float64)
    per_row = float(df[X.indices].sum()) / max(1, X.shape[0])
    return int(max(1, min(X.shape[0], max_entries // max(1.0, per_row))))


def top_candidates(indptr, indices, values, top_n: int, xp=np):
    """Per row of a CSR block (indptr, indices, values), its top_n entries by (-value, column).

    Array-module generic (NumPy or CuPy): one lexsort over all entries, then a rank within the row.
    Returns (counts, cols, vals): counts[r] entries for row r, concatenated in row order.
    """
    counts = xp.diff(indptr)
    rows = xp.searchsorted(indptr[1:], xp.arange(indices.shape[0]), side="right")
    order = xp.lexsort(xp.stack([indices, -values, rows]))
    rows, cols, vals = rows[order], indices[order], values[order]
    rank = xp.arange(rows.shape[0]) - indptr[:-1][rows]
    keep = rank < top_n
    return xp.minimum(counts, top_n), cols[keep], vals[keep]


@nb.njit(cache=True)
def _row_hashes(indptr, indices, bits, out):
    for r in range(indptr.shape[0] - 1):
        h = np.uint64(14695981039346656037)
        for x in range(indptr[r], indptr[r + 1]):
            h = (h ^ np.uint64(indices[x])) * np.uint64(1099511628211)
            h = (h ^ bits[x]) * np.uint64(1099511628211)
        out[r] = h


@nb.njit(cache=True)
def _same_rows(indptr, indices, data, rows, reps):
    for x in range(rows.shape[0]):
        a, b = rows[x], reps[x]
        if indptr[a + 1] - indptr[a] != indptr[b + 1] - indptr[b]:
            return False
        for y in range(indptr[a + 1] - indptr[a]):
            if indices[indptr[a] + y] != indices[indptr[b] + y] or data[indptr[a] + y] != data[indptr[b] + y]:
                return False
    return True


def unique_rows(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Groups of identical TF-IDF rows (identical rows tie with everything, so they are searched once).

    Returns reps (M,) (smallest index of each group, ascending), group (N,) in 0..M-1, and the
    members of group g as members[ptr[g]:ptr[g+1]] (ascending). Groups are found by a 64-bit row hash
    and then verified element by element (a collision, never seen, falls back to no grouping).
    """
    n = X.shape[0]
    h = np.empty(n, np.uint64)
    _row_hashes(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data.view(np.uint64), h)
    labels = np.unique(h, return_inverse=True)[1].ravel().astype(np.int64)
    group, reps = _relabel(labels, n)
    if not _same_rows(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data, np.arange(n), reps[group]):
        log.warning("row hash collision: searching without grouping identical rows")
        reps, group = np.arange(n), np.arange(n)
    ptr, members = _members(group, len(reps))
    return reps, group, ptr, members


def groups_of_rows(groups: tuple[np.ndarray, ...], rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """`unique_rows` of X[rows] (rows ascending) from `unique_rows` of X, without hashing again."""
    group, reps = _relabel(groups[1][rows], len(groups[0]))
    ptr, members = _members(group, len(reps))
    return reps, group, ptr, members


@nb.njit(cache=True)
def _relabel(labels, m):
    """Labels (in 0..m-1) renumbered 0, 1, ... in order of first appearance, and the position of
    each new label's first appearance."""
    new = np.full(m, -1, np.int64)
    out = np.empty(labels.shape[0], np.int64)
    first = np.empty(labels.shape[0], np.int64)
    count = 0
    for i in range(labels.shape[0]):
        g = labels[i]
        if new[g] < 0:
            new[g] = count
            first[count] = i
            count += 1
        out[i] = new[g]
    return out, first[:count]


@nb.njit(cache=True)
def _members(group, m):
    """ptr (m + 1,) and members (ascending within each group) of the groups 0..m-1 of `group`."""
    ptr = np.zeros(m + 1, np.int64)
    for g in group:
        ptr[g + 1] += 1
    for g in range(m):
        ptr[g + 1] += ptr[g]
    fill = ptr[:-1].copy()
    members = np.empty(group.shape[0], np.int64)
    for i in range(group.shape[0]):
        members[fill[group[i]]] = i
        fill[group[i]] += 1
    return ptr, members


@nb.njit(cache=True, nogil=True)
def _finalize_rows(urows, counts, cols, vals, indptr, indices, data, ptr, members, k1, top_n, delta,
                   li, ls, n_mem, proven):
    hs = np.empty(k1)
    hi = np.empty(k1, np.int64)
    off = 0
    for r in range(urows.shape[0]):
        size = 0
        raw_min = np.inf
        for x in range(off, off + counts[r]):
            c = cols[x]
            raw_min = min(raw_min, vals[x])
            s = exact_dot(indptr, indices, data, urows[r], c)
            for mm in range(ptr[c], min(ptr[c + 1], ptr[c] + k1)):
                size = heap_push(hs, hi, size, k1, s, members[mm])
        off += counts[r]
        n_mem[r] = size
        li[r, :] = -1
        ls[r, :] = 0.0
        heap_drain(hs, hi, size, li[r], ls[r])
        proven[r] = counts[r] < top_n or (size == k1 and ls[r, k1 - 1] > raw_min + delta)


def finalize_block(urows: np.ndarray, counts: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int,
                   top_n: int, delta: float, U: sp.csr_matrix, ptr: np.ndarray, members: np.ndarray,
                   threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact member lists of unique rows `urows` from generator candidates over unique rows.

    counts[r] candidates (cols: unique-row ids, vals: generator scores) belong to urows[r]. Each
    candidate group expands to its members (at most k + 1 of them: more can never be needed) with
    the group's exact score; lists are ordered by (-score, member index) and cut at k + 1 (a member
    drops itself later). Returns ids (b, k+1), scores (b, k+1), list lengths and a mask of the rows
    that are proven exact: the generator returned fewer than top_n candidates (so every positive
    similarity), or the (k+1)-th exact score exceeds the smallest generator score by more than
    `delta`. The others need more candidates (ties at the cut).
    """
    b, k1 = len(urows), k + 1
    li = np.empty((b, k1), np.int64)
    ls = np.empty((b, k1), np.float64)
    n_mem = np.empty(b, np.int64)
    proven = np.empty(b, np.bool_)
    urows, counts = np.asarray(urows, np.int64), np.asarray(counts, np.int64)
    cols, vals = np.asarray(cols, np.int64), np.asarray(vals, np.float64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    args = (U.indptr.astype(np.int64), U.indices.astype(np.int64), U.data, ptr, members, k1, top_n, delta)

    def part(lo: int, hi: int) -> None:  # the numba kernel releases the GIL: rows split over threads
        c0, c1 = offsets[lo], offsets[hi]
        _finalize_rows(urows[lo:hi], counts[lo:hi], cols[c0:c1], vals[c0:c1], *args,
                       li[lo:hi], ls[lo:hi], n_mem[lo:hi], proven[lo:hi])

    threads = max(1, threads)
    over_chunks(b, max(1, math.ceil(b / threads)), threads, part)   # one contiguous part per thread
    return li, ls, n_mem, proven


@nb.njit(cache=True)
def _member_lists(groups, ptr, members, li, ls, n_mem, k, n, out_i, out_s):
    """Row lists of every member of `groups` from their group's list (li/ls/n_mem): the member itself
    is dropped; a short list is filled with zero similarities at the smallest unlisted indices."""
    for r in range(groups.shape[0]):
        g = groups[r]
        for mm in range(ptr[g], ptr[g + 1]):
            i = members[mm]
            p = 0
            for x in range(n_mem[r]):
                if p == k:
                    break
                if li[r, x] != i:
                    out_i[i, p] = li[r, x]
                    out_s[i, p] = ls[r, x]
                    p += 1
            j = 0
            while p < k and j < n:
                listed = j == i
                for x in range(n_mem[r]):
                    if li[r, x] == j:
                        listed = True
                if not listed:
                    out_i[i, p] = j
                    out_s[i, p] = 0.0
                    p += 1
                j += 1


# --------------------------------------------------------------------------- candidate generators

def _sdt_candidates(Xb32: sp.csr_matrix, XT32: sp.csr_matrix, top_n: int, threads: int):
    from sparse_dot_topn import sp_matmul_topn

    C = sp.csr_matrix(sp_matmul_topn(Xb32, XT32, top_n=top_n, sort=False, n_threads=threads))
    return np.diff(C.indptr), C.indices.astype(np.int64), C.data


def _scipy_candidates(Xb32: sp.csr_matrix, XT32: sp.csr_matrix, top_n: int, threads: int):
    """Plain block product + `top_candidates` with NumPy: the GPU path's logic on the CPU."""
    C = sp.csr_matrix(Xb32 @ XT32)
    C.eliminate_zeros()
    C.sort_indices()
    return top_candidates(C.indptr.astype(np.int64), C.indices.astype(np.int64), C.data, top_n, np)


class _CupyCandidates:
    """cupyx.scipy.sparse block products on the GPU, then `top_candidates` with CuPy."""

    def __init__(self, XT32: sp.csr_matrix):
        import cupy
        import cupyx.scipy.sparse as csp

        self.cp, self.csp = cupy, csp
        self.XT = csp.csr_matrix(XT32)

    def __call__(self, Xb32: sp.csr_matrix, XT32, top_n: int, threads: int):
        cp = self.cp
        C = (self.csp.csr_matrix(Xb32) @ self.XT).tocsr()
        C.sort_indices()
        counts, cols, vals = top_candidates(C.indptr.astype(cp.int64), C.indices.astype(cp.int64),
                                            C.data, top_n, cp)
        return cp.asnumpy(counts), cp.asnumpy(cols), cp.asnumpy(vals)


def gpu_available() -> bool:
    """CuPy importable and at least one CUDA device visible."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError without a driver, ...
        return False


def resolve_backend(name: str, allow_cpu_fallback: bool) -> str:
    """misalign.backend -> 'cpu' or 'cupy' (auto = cupy when a GPU is visible)."""
    if name == "auto":
        return "cupy" if gpu_available() else "cpu"
    if name == "cupy" and not gpu_available():
        if allow_cpu_fallback:
            log.warning("misalign.backend is 'cupy' but no GPU/CuPy is available: using the CPU "
                        "(compute.allow_cpu_fallback is true)")
            return "cpu"
        raise InputError("misalign.backend: 'cupy' requested but CuPy or a CUDA GPU is not available "
                         "(set compute.allow_cpu_fallback: true to run on the CPU)")
    if name not in ("cpu", "sparse_dot_topn", "cupy", "scipy"):
        raise InputError(f"misalign.backend: unknown backend {name!r}")
    return name


def neighbours(X: sp.csr_matrix, k: int, backend: str = "cpu", threads: int = 1,
               block_rows: int | None = None, extra: int | None = None, rounds: int = 3,
               progress: bool = False, rows: np.ndarray | None = None,
               groups: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Exact top-k neighbours of every row (module docstring).

    backend: cpu (exact scan) | sparse_dot_topn | cupy | scipy (candidates + proof). With candidates,
    rows left unproven by a round (ties at the cut) get 4x more candidates in the next round, for
    `rounds` rounds; what is still unproven goes to the exact search. block_rows: rows per block.
    rows: search only for these rows (and the rows identical to them); the others stay -1.
    groups: `unique_rows(X)` when already known.
    Returns ids (N, K) int32 and scores (N, K) float32 with K = min(k, N - 1), and run statistics.
    """
    from ..common.io import progress as progress_bar

    X = sp.csr_matrix(X, dtype=np.float64)
    X.sort_indices()
    n = X.shape[0]
    k = int(min(k, max(n - 1, 0)))
    extra = max(4, k // 2) if extra is None else int(extra)
    ids = np.full((n, k), -1, np.int32)
    scores = np.zeros((n, k), np.float32)
    stats = {"backend": backend, "n": n, "k": k, "top_n": k + 1 + extra, "unproven": [], "exact_rows": 0}
    if n == 0 or k == 0:
        return ids, scores, stats
    reps, group, ptr, members = unique_rows(X) if groups is None else groups
    U = X[reps]
    stats["unique_rows"] = int(len(reps))
    todo = np.arange(len(reps)) if rows is None else np.unique(group[rows])
    if backend == "cpu":
        scan = ExactScan(U, ptr, members, k + 1, threads)
        blocks = list(row_blocks(len(todo), block_rows or 8192))
        for lo, hi in progress_bar(blocks, desc="neighbours", unit="block", disable=not progress or len(blocks) < 2):
            li, ls, n_mem = scan(todo[lo:hi])
            _member_lists(todo[lo:hi], ptr, members, li, ls, n_mem, k, n, ids, scores)
        stats["unproven"] = [0]
        return ids, scores, stats
    UT = U.T.tocsr()
    if backend == "cupy":
        generate = _CupyCandidates(UT)
        block = block_rows or block_rows_for(U, 1 << 26)
    elif backend == "sparse_dot_topn":
        generate, block = _sdt_candidates, block_rows or block_rows_for(U, 1 << 27)
    elif backend == "scipy":
        generate, block = _scipy_candidates, block_rows or block_rows_for(U, 1 << 24)
    else:
        raise InputError(f"misalign.backend: unknown backend {backend!r}")
    top_n = k + 1 + extra
    for rnd in range(rounds):
        left = []
        blocks = list(row_blocks(len(todo), block))
        for lo, hi in progress_bar(blocks, desc=f"neighbours (round {rnd + 1})", unit="block",
                                   disable=not progress or len(blocks) < 2):
            urows = todo[lo:hi]
            counts, cols, vals = generate(U[lo:hi] if rnd == 0 and rows is None else U[urows], UT, top_n,
                                          threads)
            li, ls, n_mem, proven = finalize_block(urows, np.asarray(counts), np.asarray(cols, np.int64),
                                                   np.asarray(vals), k, top_n, DELTA, U, ptr, members, threads)
            _member_lists(urows[proven], ptr, members, li[proven], ls[proven], n_mem[proven], k, n,
                          ids, scores)
            left.append(urows[~proven])
        todo = np.concatenate(left) if left else np.zeros(0, np.int64)
        stats["unproven"].append(int(len(todo)))
        if len(todo) == 0:
            break
        top_n *= 4
    if len(todo):
        rows = np.concatenate([members[ptr[g]:ptr[g + 1]] for g in todo])
        ids[rows], scores[rows] = ExactSearcher(X, threads=threads).search(rows, k)
        stats["exact_rows"] = int(len(rows))
    return ids, scores, stats


def neighbours_among(X: sp.csr_matrix, rows: np.ndarray, allowed: np.ndarray, k: int,
                     threads: int = 1, groups: tuple[np.ndarray, ...] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k lists of `rows` among the `allowed` rows only: ids (len(rows), min(k, allowed - 1))
    and their float32 scores.

    `neighbours` of these rows on the sub-matrix of allowed rows (rows must be allowed): the same
    scores and, as the sub-matrix keeps index order, the same tie-break. groups: `unique_rows(X)`,
    to group the sub-matrix's identical rows without hashing them again.
    """
    corpus = np.flatnonzero(allowed)
    local = np.searchsorted(corpus, np.asarray(rows, np.int64))
    sub_groups = None if groups is None else groups_of_rows(groups, corpus)
    sub_ids, sub_scores, _ = neighbours(X[corpus], k, threads=threads, rows=local, groups=sub_groups)
    sub = sub_ids[local]
    return np.where(sub >= 0, corpus[np.maximum(sub, 0)], -1).astype(np.int32), sub_scores[local]


# ---------------------------------------------------------------------------------- file format

def save_neighbours(path: str | os.PathLike, ids: np.ndarray, scores: np.ndarray, X: sp.csr_matrix,
                    meta: dict) -> None:
    """One .npz: ids, scores and the TF-IDF CSR (tfidf_*) needed to recompute any row exactly."""
    from ..common.io import save_npz

    save_npz(path, ids=ids, scores=scores, tfidf_data=X.data, tfidf_indices=X.indices,
             tfidf_indptr=X.indptr, tfidf_shape=np.asarray(X.shape, np.int64),
             meta=np.asarray(json.dumps(meta, sort_keys=True)))


def load_neighbours(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix, dict]:
    """(ids, scores, TF-IDF CSR, meta) from `save_neighbours`; InputError naming the file if broken."""
    from ..common.io import load_npz

    d = load_npz(path)
    need = ("ids", "scores", "tfidf_data", "tfidf_indices", "tfidf_indptr", "tfidf_shape", "meta")
    missing = [key for key in need if key not in d]
    if missing:
        raise InputError(f"{path}: not a neighbours file (missing arrays {missing})")
    shape = tuple(int(v) for v in d["tfidf_shape"])
    try:
        X = sp.csr_matrix((d["tfidf_data"], d["tfidf_indices"], d["tfidf_indptr"]), shape=shape)
    except ValueError as exc:
        raise InputError(f"{path}: corrupt TF-IDF matrix ({exc})") from None
    ids, scores = d["ids"], d["scores"]
    if ids.shape != scores.shape or ids.ndim != 2 or ids.shape[0] != shape[0]:
        raise InputError(f"{path}: ids {ids.shape} / scores {scores.shape} do not match {shape[0]} rows")
    return ids, scores, X, json.loads(str(d["meta"]))


# ------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    from .captions import normalise_all, read_captions
    from ..common.config import load_config
    from ..common.io import setup_logging
    from .tfidf import tfidf_matrix

    ap = argparse.ArgumentParser(prog="python -m workflow_scripts.misalign.similarity", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="workflow config (misalign.*, compute.*)")
    ap.add_argument("--captions", required=True, help="caption file, one caption per line")
    ap.add_argument("--out", required=True, help="output .npz (ids, scores, TF-IDF)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--log", help="log file")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    cfg = load_config(args.config)
    mis = cfg["misalign"]
    backend = resolve_backend(mis["backend"], cfg["compute"]["allow_cpu_fallback"])

    t0 = time.perf_counter()
    lines = read_captions(args.captions)
    t1 = time.perf_counter()
    # normalisation and TF-IDF analysis split over the threads' worth of processes (bit-identical)
    X = tfidf_matrix(lines, mis["tfidf"], workers=args.threads, preprocess=normalise_all)
    t2 = time.perf_counter()
    log.info("%s: %d captions, TF-IDF %d terms, %d non-zeros (read %.1fs, normalise + TF-IDF %.1fs)",
             args.captions, X.shape[0], X.shape[1], X.nnz, t1 - t0, t2 - t1)
    ids, scores, stats = neighbours(X, mis["n_neighbours"], backend=backend, threads=args.threads,
                                    progress=True)
    t3 = time.perf_counter()
    log.info("top-%d neighbours on %s in %.1fs (%d distinct rows; unproven after each round %s; "
             "%d rows by the exact search)", stats["k"], backend, t3 - t2, stats.get("unique_rows", 0),
             stats["unproven"], stats["exact_rows"])
    for i in range(min(2, X.shape[0])):
        if stats["k"]:
            j = int(ids[i, 0])
            log.info("example: line %d %r -> line %d %r (similarity %.3f)", i, lines[i][:60], j,
                     lines[j][:60], scores[i, 0])
    meta = {"captions": str(args.captions), "n": X.shape[0], "k": stats["k"], "backend": backend,
            "tfidf": mis["tfidf"], "timing_s": {"tfidf": t2 - t1, "neighbours": t3 - t2}}
    save_neighbours(args.out, ids, scores, X, meta)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
