"""The disjoint caption swap pairs of each strategy and Cs: the original's swap loops, exactly.

`similarity` strategy = the original `simple_similarity_swap` (docs/original_code.md, "Exp 3, stage 1"), exactly:

    target = int(Cs * N); rng = np.random.RandomState(seed)        # == np.random.seed(seed) per Cs
    order = np.arange(N); rng.shuffle(order)
    for s in order:
        if swapped >= target: stop
        if s is used: continue
        cand = the top_k most similar unused captions other than s, listed in ascending similarity
               (the original's argsort tail; zero similarities allowed)
        if cand: t = rng.choice(cand); swap captions s and t; used |= {s, t}; swapped += 2

Candidates come from the stored top-K neighbour lists (workflow_scripts.misalign.similarity), whose order is
(-similarity, index ascending): the top_k unused entries of a row, reversed, are the original's
candidates, with ties broken deterministically (among equal similarities the smaller index is the
more similar; the original's quicksort left this undefined). A list with a zero-similarity entry
(e.g. that of an empty TF-IDF row) holds every caption of positive similarity, so its candidates
continue with the unused captions of similarity 0 by index and it never runs out. A list that does
run out (exclusions leave fewer than top_k unused entries) is recomputed exactly among the unused
captions: alone (the exact search of `exact_search.ExactSearcher` with the unused mask), and, after
more than BATCH_MIN such single recomputes, in a batch: the upcoming sources of the next N / LOOKAHEAD
positions of the order whose lists have fewer than RISK * top_k unused entries get their
max(K, 3 top_k) best unused captions from the block search (`similarity.neighbours_among`: the same
exact search on the sub-matrix of unused rows, whose index order keeps the tie-break). A recomputed
list is valid for every later, smaller unused set. Recomputes change when candidates are computed,
never which ones a source gets.

`random` strategy: the same loop, seed, order and stopping rule, but the partner is uniform among
all unused captions other than s: the unused indices are kept in an array `pool` (initially
0..N-1) from which an index is removed by moving the pool's last entry into its place; s is removed
first, then t = pool[rng.randint(len(pool))] is drawn and removed.

Both loops run in numba (`_similarity_loop`, `_random_loop`). Their random numbers are the legacy
RandomState's own: after the shuffle, its raw MT19937 outputs are drawn in chunks
(randint(0, 2**32, dtype=uint32) gives one output per value) and `_randint` turns them into
randint(0, L), i.e. choice among L, exactly as RandomState does. A loop returns to Python for a new
chunk or a batch recompute and then resumes at the same source.

Both strategies draw the same random numbers whatever Cs is until they stop, so the pairs of a
smaller Cs are a prefix of those of a larger Cs: one run at the largest Cs gives every Cs, with
ceil(int(Cs * N) / 2) pairs (fewer only if the captions run out), i.e. a realised misaligned fraction
of 2 * ceil(int(Cs * N) / 2) / N.
"""

from __future__ import annotations

import logging
from typing import Callable

import numba as nb
import numpy as np
import scipy.sparse as sp

from ..common.errors import InputError
from .exact_search import EPS, ExactSearcher, exact_rows, pair_scores
from .similarity import neighbours_among, unique_rows

log = logging.getLogger("workflow_scripts.misalign.pairing")

STRATEGIES = ("similarity", "random")


def check_cs(cs: float) -> float:
    """Cs as a float in [0, 1]; anything else is an InputError."""
    try:
        value = float(cs)
    except (TypeError, ValueError):
        raise InputError(f"misalign Cs: {cs!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise InputError(f"misalign Cs: {cs!r} is not in [0, 1]")
    return value


def replicate_seed(seed: int, replicate: int) -> int:
    """The swap seed of replicate r: seed + r, so that replicate 0 keeps the original's pairs (seed 42)."""
    if replicate < 0:
        raise InputError(f"replicate {replicate}: must be >= 0")
    return int(seed) + int(replicate)


def target_lines(cs: float, n: int) -> int:
    """The original's target: int(Cs * N) misaligned lines."""
    return int(check_cs(cs) * n)


def n_pairs(cs: float, n: int) -> int:
    """Pairs the original makes for Cs when captions do not run out: ceil(int(Cs * N) / 2)."""
    return (target_lines(cs, n) + 1) // 2


# ------------------------------------------------------------------ legacy RandomState in numba

RNG_CHUNK = 1 << 16          # raw random outputs drawn per refill of the kernels' buffer

_DONE, _NEED_RANDOM, _NEED_BATCH = 0, 1, 2       # why a swap kernel returned
# the loop state kept between kernel calls (an int64 array): position in `order`, position in the
# random buffer, pairs made, unused captions, row recomputes since the last batch recompute, all row
# recomputes, next stamp of the exact search, a lower bound of the smallest unused caption
_POS, _BPOS, _PAIRS, _UNUSED, _SINCE, _ROWS, _STAMP, _LOW = range(8)


@nb.njit(cache=True)
def _randint(buf, st, high):
    """Legacy RandomState.randint(0, high) for 1 <= high <= 2**32, which is also what
    RandomState.choice of `high` items draws, from the raw 32-bit outputs buf[st[_BPOS]:]: nothing
    is drawn when high == 1; otherwise outputs are masked to the smallest 2^b - 1 >= high - 1 and
    rejected until one is <= high - 1. Returns -1, leaving st[_BPOS] as it was, if buf runs out."""
    hi = np.int64(high - 1)
    if hi == 0:
        return np.int64(0)
    mask = hi
    for shift in (1, 2, 4, 8, 16):
        mask |= mask >> shift
    p = st[_BPOS]
    while p < buf.shape[0]:
        v = np.int64(buf[p]) & mask
        p += 1
        if v <= hi:
            st[_BPOS] = p
            return v
    return np.int64(-1)


class _RawStream:
    """The raw 32-bit outputs of a legacy RandomState, drawn in chunks for the swap kernels.

    randint(0, 2**32, dtype=uint32) returns exactly one MT19937 output per value, so the kernels
    see the stream that RandomState's own draws would consume."""

    def __init__(self, rng: np.random.RandomState):
        self.rng = rng
        self.buf = np.zeros(0, np.uint32)

    def refill(self, st: np.ndarray) -> None:
        """Keep the outputs not read yet (from st[_BPOS]) and append a fresh chunk."""
        fresh = self.rng.randint(0, 2**32, size=RNG_CHUNK, dtype=np.uint32)
        self.buf = np.concatenate([self.buf[st[_BPOS]:], fresh])
        st[_BPOS] = 0


def _run_loop(step: Callable[[np.ndarray], int], stream: _RawStream, st: np.ndarray, target: int,
              show_progress: bool, desc: str, batch: Callable[[], None] | None = None) -> None:
    """Call the kernel `step(buf)` until it is done, refilling the random outputs or running
    `batch()` whenever it returns for them."""
    from ..common.io import progress

    bar = progress(total=target, desc=desc, unit="line", disable=not show_progress)
    while True:
        code = step(stream.buf)
        bar.update(2 * int(st[_PAIRS]) - bar.n)
        if code == _DONE:
            break
        if code == _NEED_RANDOM:
            stream.refill(st)
        else:
            batch()
    bar.close()


def _start(n: int, target: int,
           seed: int) -> tuple[np.ndarray, _RawStream, np.ndarray, np.ndarray, np.ndarray]:
    """What both strategies start from: the seeded order, the random stream after the shuffle,
    the loop state, the unused mask and room for every pair the target can take."""
    rng = np.random.RandomState(seed)
    order = np.arange(n)
    rng.shuffle(order)
    st = np.zeros(8, np.int64)
    st[_UNUSED] = n
    pairs = np.empty((max(0, min((target + 1) // 2, n // 2)), 2), np.int64)
    return order, _RawStream(rng), st, np.ones(n, np.bool_), pairs


@nb.njit(cache=True)
def _pair(s, t, free, pairs, st):
    """Record the pair (s, t) and mark both captions used."""
    free[s] = False
    free[t] = False
    st[_UNUSED] -= 2
    pairs[st[_PAIRS], 0] = s
    pairs[st[_PAIRS], 1] = t
    st[_PAIRS] += 1


# ------------------------------------------------------------------------ similarity strategy

BATCH_MIN = 256     # single-row recomputes after which the next sources' lists are recomputed at once
LOOKAHEAD = 32      # such a batch looks at the sources of the next N / LOOKAHEAD positions of the order
RISK = 1.3          # and recomputes the lists with fewer than RISK * top_k unused entries

@nb.njit(cache=True)
def _positive_ends(ids, scores, requested, out):
    """Per list (row of ids/scores, -1 = no entry), ordered by (-similarity, index): its number of
    positive entries if it holds every caption of positive similarity that was allowed when it was
    made (it has a zero entry, or fewer entries than `requested`), else -1."""
    for r in range(ids.shape[0]):
        valid = 0
        positive = 0
        for x in range(ids.shape[1]):
            if ids[r, x] >= 0:
                valid += 1
                if scores[r, x] > 0:
                    positive += 1
        out[r] = positive if positive < valid or valid < requested else -1


def _list_ends(lists: np.ndarray, ids: np.ndarray, scores: np.ndarray, requested: int,
               X: sp.csr_matrix) -> np.ndarray:
    """`_positive_ends` of the lists `ids` of captions `lists`, from exact scores where a float32
    score is zero (a float32 zero could hide a positive similarity below its range)."""
    ends = np.empty(len(lists), np.int32)
    _positive_ends(ids, scores, requested, ends)
    zero = np.flatnonzero(((scores <= 0) & (ids >= 0)).any(1))
    if len(zero):
        sub = ids[zero]
        exact = pair_scores(X, np.repeat(lists[zero], sub.shape[1]), np.maximum(sub, 0).ravel())
        sub_ends = np.empty(len(zero), np.int32)
        _positive_ends(sub, exact.reshape(sub.shape), requested, sub_ends)
        ends[zero] = sub_ends
    return ends


@nb.njit(cache=True)
def _listed(row, m, j):
    """j is among the first m entries of row."""
    for x in range(m):
        if row[x] == j:
            return True
    return False


@nb.njit(cache=True)
def _candidates(row, end, s, free, st, out):
    """The first len(out) unused captions, best first, that the list `row` of s can vouch for; returns
    how many (fewer than len(out): the list ran out, unless it was complete).

    end < 0: the unused entries of the list. end >= 0 (`_positive_ends`): its first `end` entries hold
    every unused caption of positive similarity; they are followed by the unused captions of
    similarity 0, i.e. the others but s, by index (scanned from st[_LOW], the smallest unused one)."""
    got = 0
    m = row.shape[0] if end < 0 else end
    for x in range(m):
        if got == out.shape[0]:
            return got
        j = row[x]
        if j >= 0 and free[j]:
            out[got] = j
            got += 1
    if end >= 0:
        while st[_LOW] < free.shape[0] and not free[st[_LOW]]:
            st[_LOW] += 1
        j = st[_LOW]
        while got < out.shape[0] and j < free.shape[0]:
            if free[j] and j != s and not _listed(row, end, j):
                out[got] = j
                got += 1
            j += 1
    return got


@nb.njit(cache=True)
def _similarity_loop(order, target, top_k, batch_min, ids, ends, free, pairs, buf, st, index, work):
    """The similarity swap loop (module docstring) from st[_POS] on.

    A source whose list runs out gets its top_k among the unused captions by the exact search.
    Returns _DONE (target reached or order exhausted), _NEED_RANDOM (buf ran out) or _NEED_BATCH
    (more than batch_min such row recomputes since the last batch; batch_min < 0: never) at the
    start of a source, so that a call after the refill or the batch recompute resumes it."""
    indptr, indices, data, pptr, pdoc, pw, df = index
    stamp, qd = work
    cand = np.empty(top_k, np.int64)
    row = np.empty(1, np.int64)
    out_i = np.empty((1, top_k), np.int64)
    out_s = np.empty((1, top_k))
    while st[_POS] < order.shape[0] and 2 * st[_PAIRS] < target:
        s = order[st[_POS]]
        if free[s]:
            got = _candidates(ids[s], ends[s], s, free, st, cand)
            if got < top_k and ends[s] < 0:
                st[_SINCE] += 1
                if batch_min >= 0 and st[_SINCE] > batch_min:
                    return _NEED_BATCH
                # s is a source only once, so its new list needs just the top_k best unused captions
                row[0] = s
                exact_rows(row, indptr, indices, data, pptr, pdoc, pw, df, free, top_k, EPS,
                            stamp, qd, st[_STAMP], out_i, out_s)
                st[_STAMP] += 1
                st[_ROWS] += 1
                ids[s, :] = -1
                ids[s, :top_k] = out_i[0]
                _positive_ends(out_i, out_s, top_k, ends[s:s + 1])
                got = _candidates(ids[s], ends[s], s, free, st, cand)
            if got > 0:
                r = _randint(buf, st, got)
                if r < 0:
                    return _NEED_RANDOM
                _pair(s, cand[got - 1 - r], free, pairs, st)    # choice in ascending similarity
        st[_POS] += 1
    return _DONE


class _Lists:
    """Candidate lists of the similarity swap: the stored neighbour lists, widened to the batch
    width, rows replaced by the kernel's row recomputes and by `batch` recomputes; `ends` as in
    `_candidates`."""

    def __init__(self, ids: np.ndarray, scores: np.ndarray, X: sp.csr_matrix, top_k: int, window: int,
                 threads: int = 1):
        self.n, self.k0 = ids.shape
        self.top_k = top_k
        self.width = max(self.k0, 3 * top_k)     # entries of a batch-recomputed list
        self.window = window
        self.ids = np.full((self.n, self.width), -1, np.int32)   # recomputed rows are replaced
        self.ids[:, :self.k0] = ids
        # stored lists hold all captions of positive similarity only if they have a zero entry,
        # unless they hold every other caption
        requested = self.n if self.k0 >= self.n - 1 else self.k0
        self.ends = _list_ends(np.arange(self.n), ids, scores, requested, X)
        self.X = X
        self.groups = unique_rows(X)
        self.threads = threads
        self.batch_recomputes = 0
        self.batch_rows = 0

    def batch(self, upcoming: np.ndarray, free: np.ndarray) -> None:
        """New lists, among the unused captions, for the next sources at risk of running out.

        upcoming: the order from the current source on. Its first `window` entries that are unused
        and whose list may run out (ends < 0) with fewer than RISK * top_k unused entries get the
        `width` best unused captions (valid for every later, smaller unused set)."""
        ahead = upcoming[:self.window]
        ahead = ahead[free[ahead] & (self.ends[ahead] < 0)]
        lists = self.ids[ahead]
        rows = ahead[((lists >= 0) & free[lists]).sum(1) < RISK * self.top_k]
        self.batch_recomputes += 1
        if len(rows) == 0:
            return
        new, scores = neighbours_among(self.X, rows, free, self.width, threads=self.threads,
                                       groups=self.groups)
        self.ids[rows] = -1
        self.ids[rows, :new.shape[1]] = new
        self.ends[rows] = _list_ends(rows, new, scores, self.width, self.X)
        self.batch_rows += len(rows)
        log.debug("batch recompute: lists of %d upcoming sources among %d unused captions", len(rows),
                  np.count_nonzero(free))


def similarity_swaps(ids: np.ndarray, scores: np.ndarray, X: sp.csr_matrix, target: int, top_k: int,
                     seed: int, threads: int = 1, show_progress: bool = False,
                     batch_min: int = BATCH_MIN, window: int | None = None) -> tuple[np.ndarray, dict]:
    """The original similarity swap for `target` lines (module docstring).

    ids, scores: stored neighbour lists (N, K) ordered by (-similarity, index); X: the TF-IDF rows.
    After more than batch_min single-row recomputes (< 0: never), the lists of the sources at risk
    among the next `window` (default N / LOOKAHEAD) positions of the order are recomputed at once.
    Returns pairs (P, 2) [source, partner] in the order made, and statistics.
    """
    n = ids.shape[0]
    order, stream, st, free, pairs = _start(n, target, seed)
    lists = _Lists(ids, scores, X, top_k, window or max(1, n // LOOKAHEAD), threads=threads)
    index = ExactSearcher(X).index
    work = (np.full(n, -1, np.int64), np.zeros(X.shape[1]))

    def step(buf: np.ndarray) -> int:
        return _similarity_loop(order, target, top_k, batch_min, lists.ids, lists.ends, free, pairs,
                                buf, st, index, work)

    def batch() -> None:
        lists.batch(order[st[_POS]:], free)
        st[_SINCE] = 0

    _run_loop(step, stream, st, target, show_progress, "similarity swaps", batch)
    stats = {"row_recomputes": int(st[_ROWS]), "batch_recomputes": lists.batch_recomputes,
             "batch_rows": lists.batch_rows}
    return pairs[:st[_PAIRS]], stats


# ---------------------------------------------------------------------------- random strategy

@nb.njit(cache=True)
def _remove(pool, where, size, i):
    """Remove i from pool[:size] by moving the last entry into its place; returns the new size."""
    size -= 1
    last = pool[size]
    pool[where[i]] = last
    where[last] = where[i]
    return size


@nb.njit(cache=True)
def _random_loop(order, target, pool, where, free, pairs, buf, st):
    """The random swap loop (module docstring) from st[_POS] on; returns like _similarity_loop."""
    while st[_POS] < order.shape[0] and 2 * st[_PAIRS] < target:
        s = order[st[_POS]]
        if free[s]:
            if st[_UNUSED] == 1:             # s is the last caption: no partner, the original stops
                break
            r = _randint(buf, st, st[_UNUSED] - 1)      # drawn from the pool without s
            if r < 0:
                return _NEED_RANDOM
            size = _remove(pool, where, st[_UNUSED], s)
            t = pool[r]
            _remove(pool, where, size, t)
            _pair(s, t, free, pairs, st)
        st[_POS] += 1
    return _DONE


def random_swaps(n: int, target: int, seed: int, show_progress: bool = False) -> np.ndarray:
    """Pairs (P, 2) of the random strategy for `target` lines (module docstring)."""
    order, stream, st, free, pairs = _start(n, target, seed)
    pool = np.arange(n)
    where = np.arange(n)

    def step(buf: np.ndarray) -> int:
        return _random_loop(order, target, pool, where, free, pairs, buf, st)

    _run_loop(step, stream, st, target, show_progress, "random swaps")
    return pairs[:st[_PAIRS]]


def swap_sources(n: int, pairs: np.ndarray) -> np.ndarray:
    """source[i]: the line whose caption sits at line i once every (disjoint) pair is exchanged."""
    source = np.arange(n)
    source[pairs[:, 0]] = pairs[:, 1]
    source[pairs[:, 1]] = pairs[:, 0]
    return source
