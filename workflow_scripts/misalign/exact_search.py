"""Exact cosine scores of TF-IDF rows and the exact top-K kernels behind the neighbour search.

- similarity(i, j) = sum over shared terms t, in ascending term index, of x_it * x_jt in float64, where x
  are the L2-normalised TF-IDF rows. Every path computes final scores with this one function
  (`pair_scores`, `exact_dot`), so equal rows give bit-equal scores.
- `ExactScan` (backend cpu): accumulates every distinct row's scores against all distinct rows over an
  inverted index, term by term in ascending term order, so the sums are already the exact scores, and
  keeps the best K + 1 members in a heap.
- `ExactSearcher`: an exact pruned search (document-at-a-time over impact-ordered postings, with an L2 bound
  on the score of documents not yet seen), optionally among `allowed` rows only; the swap loop
  (workflow_scripts.misalign.pairing) calls its kernel `exact_rows` to recompute a row among the unused captions.

The numba kernels release the GIL; `over_chunks` spreads rows over threads. How the search uses them:
workflow_scripts.misalign.similarity.
"""

from __future__ import annotations

import math
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numba as nb
import numpy as np
import scipy.sparse as sp

EPS = 1e-9          # margin of the float64 bounds in the exact search


# ------------------------------------------------------------------------- exact scores and heaps

@nb.njit(cache=True, nogil=True)
def exact_dot(indptr, indices, data, a, b):
    """Exact similarity of rows a and b: shared terms in ascending term order, float64."""
    pa, ea, pb, eb = indptr[a], indptr[a + 1], indptr[b], indptr[b + 1]
    s = 0.0
    while pa < ea and pb < eb:
        ta, tb = indices[pa], indices[pb]
        if ta == tb:
            s += data[pa] * data[pb]
            pa += 1
            pb += 1
        elif ta < tb:
            pa += 1
        else:
            pb += 1
    return s


@nb.njit(cache=True, nogil=True)
def _pair_scores(indptr, indices, data, a, b, out):
    for i in range(a.shape[0]):
        out[i] = exact_dot(indptr, indices, data, a[i], b[i])


def pair_scores(X: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact similarities of the row pairs (a[i], b[i]) (float64)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    out = np.empty(a.shape[0], np.float64)
    _pair_scores(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data, a, b, out)
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def _worse(s1, i1, s2, i2):
    """(s1, i1) ranks after (s2, i2) in the order (-score, index ascending)."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@nb.njit(cache=True, nogil=True)
def heap_push(hs, hi, size, k, s, i):
    """Keep the k best (score, index) in a heap whose root is the worst kept; returns the new size."""
    if size < k:
        pos = size
        hs[pos] = s
        hi[pos] = i
        while pos > 0:
            parent = (pos - 1) // 2
            if _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
                hs[pos], hs[parent] = hs[parent], hs[pos]
                hi[pos], hi[parent] = hi[parent], hi[pos]
                pos = parent
            else:
                break
        return size + 1
    if _worse(hs[0], hi[0], s, i):
        hs[0] = s
        hi[0] = i
        _sift_down(hs, hi, size)
    return size


@nb.njit(cache=True, nogil=True)
def _sift_down(hs, hi, size):
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and _worse(hs[c + 1], hi[c + 1], hs[c], hi[c]):
            c += 1
        if _worse(hs[c], hi[c], hs[pos], hi[pos]):
            hs[c], hs[pos] = hs[pos], hs[c]
            hi[c], hi[pos] = hi[pos], hi[c]
            pos = c
        else:
            break


@nb.njit(cache=True, nogil=True)
def heap_drain(hs, hi, size, out_i, out_s):
    """Write the heap's content best first into out_i/out_s."""
    while size > 0:
        size -= 1
        out_s[size] = hs[0]
        out_i[size] = hi[0]
        hs[0] = hs[size]
        hi[0] = hi[size]
        _sift_down(hs, hi, size)


# ----------------------------------------------------------------------------- exact pruned search

@nb.njit(cache=True, nogil=True, inline="always")
def _unseen_bound(qj, w, r, remj):
    """Largest qj*x + r*sqrt(1 - x^2) over x in [0, w]: the best score of a unit-norm document not
    seen yet whose weight on the current term is at most w (r = norm of the query's later terms)."""
    if w * remj >= qj:
        return remj
    return qj * w + r * math.sqrt(max(0.0, 1.0 - w * w))


@nb.njit(cache=True, nogil=True)
def exact_rows(rows, indptr, indices, data, pptr, pdoc, pw, df, allowed, k, eps,
                stamp, qd, st0, out_i, out_s):
    n = indptr.shape[0] - 1
    maxm = 1
    for x in range(rows.shape[0]):
        maxm = max(maxm, indptr[rows[x] + 1] - indptr[rows[x]])
    hs = np.empty(max(k, 1))
    hi = np.empty(max(k, 1), np.int64)
    qt = np.empty(maxm, np.int64)
    qw = np.empty(maxm)
    rem = np.empty(maxm + 1)
    for x in range(rows.shape[0]):
        q = rows[x]
        st = st0 + x
        a = indptr[q]
        m = indptr[q + 1] - a
        for j in range(m):
            qt[j] = indices[a + j]
            qw[j] = data[a + j]
            qd[indices[a + j]] = data[a + j]
        # query terms, rarest first (short posting lists raise the K-th score cheaply)
        for j in range(1, m):
            t, w, l = qt[j], qw[j], j - 1
            while l >= 0 and (df[qt[l]] > df[t] or (df[qt[l]] == df[t] and qt[l] > t)):
                qt[l + 1] = qt[l]
                qw[l + 1] = qw[l]
                l -= 1
            qt[l + 1] = t
            qw[l + 1] = w
        rem[m] = 0.0
        for j in range(m - 1, -1, -1):
            rem[j] = rem[j + 1] + qw[j] * qw[j]
        for j in range(m + 1):
            rem[j] = math.sqrt(rem[j])
        size = 0
        stamp[q] = st
        done = False
        for j in range(m):
            t, qj, r, remj = qt[j], qw[j], rem[j + 1], rem[j]
            for p in range(pptr[t], pptr[t + 1]):
                if size == k and _unseen_bound(qj, pw[p], r, remj) + eps < hs[0]:
                    done = True      # no document unseen so far can reach the K-th score
                    break
                d = pdoc[p]
                if stamp[d] == st or not allowed[d]:
                    continue
                stamp[d] = st
                s = 0.0
                for y in range(indptr[d], indptr[d + 1]):   # == exact_dot(q, d): same terms, same order
                    s += qd[indices[y]] * data[y]
                size = heap_push(hs, hi, size, k, s, d)
            if done:
                break
        for j in range(m):
            qd[indices[a + j]] = 0.0
        d = 0
        while size < k and d < n:       # zero similarities: smallest allowed indices not seen
            if allowed[d] and stamp[d] != st:
                size = heap_push(hs, hi, size, k, 0.0, d)
            d += 1
        out_i[x, :] = -1
        out_s[x, :] = 0.0
        heap_drain(hs, hi, size, out_i[x], out_s[x])


@nb.njit(cache=True)
def _impact_order(pptr, data):
    """Entry order of each posting list (CSC column, documents ascending) by weight descending;
    equal weights keep document order (stable sort)."""
    order = np.empty(data.shape[0], np.int64)
    for t in range(pptr.shape[0] - 1):
        a, b = pptr[t], pptr[t + 1]
        order[a:b] = a + np.argsort(-data[a:b], kind="mergesort")
    return order


class _Scratch:
    """Per-thread scratch arrays, made on first use and handed back after each task."""

    def __init__(self, make):
        self._make = make
        self._free: queue.Queue = queue.Queue()

    def run(self, task):
        try:
            work = self._free.get_nowait()
        except queue.Empty:
            work = self._make()
        try:
            return task(work)
        finally:
            self._free.put(work)


def over_chunks(n: int, chunk: int, threads: int, task) -> None:
    """task(lo, hi) for the [lo, hi) chunks of 0..n, on `threads` threads (numba kernels without GIL)."""
    spans = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    if threads == 1 or len(spans) == 1:
        for lo, hi in spans:
            task(lo, hi)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda span: task(*span), spans))


class ExactSearcher:
    """Exact top-k neighbours of chosen rows, optionally among `allowed` rows only.

    Impact-ordered inverted index (weight descending, document ascending) built once; one scratch
    workspace per thread. Used for rows the block path cannot prove and for the swap's recomputes.
    """

    def __init__(self, X: sp.csr_matrix, threads: int = 1):
        X = sp.csr_matrix(X, dtype=np.float64)
        X.sort_indices()
        self.n, self.n_terms = X.shape
        self.indptr = X.indptr.astype(np.int64)
        self.indices = X.indices.astype(np.int64)
        self.data = X.data
        C = X.tocsc()
        C.sort_indices()
        order = _impact_order(C.indptr.astype(np.int64), C.data)
        self.pptr = C.indptr.astype(np.int64)
        self.pdoc = C.indices[order].astype(np.int64)
        self.pw = C.data[order]
        self.df = np.diff(C.indptr).astype(np.int64)
        # the arrays `exact_rows` searches, in its argument order
        self.index = (self.indptr, self.indices, self.data, self.pptr, self.pdoc, self.pw, self.df)
        self.threads = max(1, int(threads))
        self._scratch = _Scratch(lambda: (np.full(self.n, -1, np.int64), np.zeros(self.n_terms)))
        self._stamp = 0
        self._all = np.ones(self.n, np.bool_)

    def search(self, rows: Sequence[int] | np.ndarray, k: int, allowed: np.ndarray | None = None,
               chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of shape (len(rows), k): the k best allowed j != row, by (-score, j).

        Rows with fewer than k allowed candidates end with ids -1 (score 0).
        """
        rows = np.asarray(rows, np.int64)
        allowed = self._all if allowed is None else np.asarray(allowed, np.bool_)
        out_i = np.full((len(rows), k), -1, np.int64)
        out_s = np.zeros((len(rows), k), np.float64)
        if k == 0 or len(rows) == 0:
            return out_i, out_s
        base = self._stamp
        self._stamp += len(rows)

        def task(lo: int, hi: int) -> None:
            self._scratch.run(lambda work: exact_rows(rows[lo:hi], *self.index, allowed, k, EPS, work[0],
                                                       work[1], base + lo, out_i[lo:hi], out_s[lo:hi]))

        over_chunks(len(rows), chunk, self.threads, task)
        return out_i, out_s


# ------------------------------------------------------------------ exact scan (backend cpu)

@nb.njit(cache=True, nogil=True)
def _scan_rows(urows, indptr, indices, data, pptr, pdoc, pw, ptr, members, k1, acc, touched,
               li, ls, n_mem):
    """Exact member lists of unique rows `urows`: full scores by term-at-a-time accumulation.

    Query terms in ascending term index, each posting list in document order: every document's
    score is summed over the shared terms in ascending term order from 0.0, i.e. exactly `exact_dot`.
    acc (zeros, one per unique row) and touched (one more) are per-thread scratch; a touched entry
    is recognised by acc == 0 (scores of shared terms are positive) and acc is zeroed again after.
    """
    hs = np.empty(k1)
    hi = np.empty(k1, np.int64)
    for r in range(urows.shape[0]):
        q = urows[r]
        nt = 0
        for j in range(indptr[q], indptr[q + 1]):
            t = indices[j]
            qv = data[j]
            for p in range(pptr[t], pptr[t + 1]):
                d = pdoc[p]
                v = acc[d]
                touched[nt] = d                  # kept only when d is new (branch-free)
                nt += np.int64(v == 0.0)
                acc[d] = v + qv * pw[p]
        size = 0
        for x in range(nt):
            d = touched[x]
            s = acc[d]
            acc[d] = 0.0
            if size == k1 and s < hs[0]:
                continue
            for mm in range(ptr[d], min(ptr[d + 1], ptr[d] + k1)):
                size = heap_push(hs, hi, size, k1, s, members[mm])
        n_mem[r] = size
        li[r, :] = -1
        ls[r, :] = 0.0
        heap_drain(hs, hi, size, li[r], ls[r])


class ExactScan:
    """Top-(k+1) member lists of unique rows by exact accumulation over an inverted index.

    The CPU backend: one multiply-add per stored entry of the block product, like sparse_dot_topn,
    but the accumulated scores are already exact (`_scan_rows`), so no rescoring and no proof
    rounds are needed; rows are split over threads (the kernel releases the GIL).
    """

    def __init__(self, U: sp.csr_matrix, ptr: np.ndarray, members: np.ndarray, k1: int, threads: int = 1):
        C = U.tocsc()
        C.sort_indices()
        m = U.shape[0]
        self.args = (U.indptr.astype(np.int64), U.indices.astype(np.int32), U.data,
                     C.indptr.astype(np.int64), C.indices.astype(np.int32), C.data, ptr, members, k1)
        self.k1, self.threads = k1, max(1, int(threads))
        self._scratch = _Scratch(lambda: (np.zeros(m), np.empty(m + 1, np.int64)))  # +1: branch-free write

    def __call__(self, urows: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids (b, k1), scores (b, k1) and list lengths (b,) of the unique rows `urows`."""
        b = len(urows)
        li = np.empty((b, self.k1), np.int64)
        ls = np.empty((b, self.k1), np.float64)
        n_mem = np.empty(b, np.int64)

        def task(lo: int, hi: int) -> None:
            self._scratch.run(lambda work: _scan_rows(urows[lo:hi], *self.args, work[0], work[1],
                                                      li[lo:hi], ls[lo:hi], n_mem[lo:hi]))

        over_chunks(b, chunk, self.threads, task)
        return li, ls, n_mem
