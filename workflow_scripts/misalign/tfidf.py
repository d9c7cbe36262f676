"""TfidfVectorizer(...).fit_transform, bit-identical, with the text analysis split over processes.

Why: at 1M captions scikit-learn's TfidfVectorizer spends almost all of its time single-threaded in
pure Python (the analyzer and the dict counting of `CountVectorizer._count_vocab`), plus the caption
normalisation before it. Those steps are independent per caption, so `tfidf_matrix(workers=k)` runs
them on k contiguous chunks (the calling process takes chunk 0, forked children the rest) and then
redoes, on the merged counts, exactly what scikit-learn does after counting.

Why the result is bit-identical to the serial path:
- every chunk is analysed by the vectorizer's own public `build_analyzer()` and counted like
  `_count_vocab` (terms numbered in first-appearance order); renumbering each chunk's terms into the
  global first-appearance order (chunk 0's terms, then each later chunk's new terms in their order)
  gives the same vocabulary ids and the same count matrix as one pass over all texts;
- the rest repeats `CountVectorizer.fit_transform` for a learned vocabulary step by step on the same
  scipy types and with the same numpy/scipy operations (`_finish`): document counts from min_df and
  max_df, `_sort_features`, `_limit_features` (its argsort tie order included), column selection,
  then the public TfidfTransformer fit + transform(copy=False). The in-row order before the L2
  normalisation (which sums the squares of a row in that order), and so every float, is the serial one.

Version dependence: this mirrors scikit-learn internals and was verified against `SKLEARN_VERSION`
only (the requirements pin it). What a new version could change: `_count_vocab` (first-appearance
ids, int32 indices unless nnz > 2**31 - 1, sort_indices), the order and content of the steps in
`CountVectorizer.fit_transform` and `TfidfVectorizer.fit_transform` (copy=False), `_sort_features`,
`_limit_features` (argsort of -tfs), the `sparse_interface` config, the error messages (copied so
that both paths raise the same InputError), and the private `_validate_params` and
`_validate_ngram_range` called here. tests/test_tfidf.py compares both paths bit for bit.
"""

from __future__ import annotations

import multiprocessing as mp
from array import array
from collections import defaultdict
from itertools import repeat
from numbers import Integral
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from ..common.errors import InputError

SKLEARN_VERSION = "1.9.1"   # the scikit-learn whose CountVectorizer/TfidfVectorizer steps we repeat
MIN_PARALLEL_TEXTS = 20_000  # below this, process start-up and the merge cost more than they save

Preprocess = Callable[[list[str]], list[str]]
Chunk = tuple[dict[str, int] | list[str], np.ndarray, np.ndarray, np.ndarray]  # terms, j, values, indptr

_SHARED: tuple[Sequence[str], Callable[[str], list[str]], Preprocess | None] | None = None


def _vectorizer(params: dict[str, Any]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        max_features=params["max_features"],
        stop_words=params["stop_words"],
        ngram_range=tuple(params["ngram_range"]),
        min_df=params["min_df"],
        max_df=params["max_df"],
        dtype=np.float64,
    )


def _as_csr(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sort_indices()
    return X


def tfidf_matrix(texts: Sequence[str], params: dict[str, Any], workers: int = 1,
                 preprocess: Preprocess | None = None) -> sp.csr_matrix:
    """TfidfVectorizer(**params).fit_transform(preprocess(texts)) as float64 CSR, sorted indices.

    `preprocess` (a module-level function such as captions.normalise_all) maps a list of texts to
    the texts to vectorise. `workers` > 1 runs it and the analysis in that many processes (forked;
    serial below MIN_PARALLEL_TEXTS texts or without fork); the result is bit-identical.
    Any ValueError of the vectorizer becomes an InputError naming misalign.tfidf.
    """
    n = len(texts)
    try:
        if workers <= 1 or n < MIN_PARALLEL_TEXTS or "fork" not in mp.get_all_start_methods():
            docs = list(texts) if preprocess is None else preprocess(list(texts))
            return _as_csr(_vectorizer(params).fit_transform(docs))
        X, _ = _parallel(texts, params, workers, preprocess)
        return X
    except InputError:
        raise
    except ValueError as exc:  # empty vocabulary, min_df > max_df, ...
        raise InputError(f"misalign.tfidf: TF-IDF failed on {n} captions ({exc})") from None


def _parallel(texts: Sequence[str], params: dict[str, Any], workers: int,
              preprocess: Preprocess | None) -> tuple[sp.csr_matrix, list[str]]:
    """The parallel path: (TF-IDF matrix, feature names in column order)."""
    global _SHARED
    vec = _vectorizer(params)
    vec._validate_params()          # what CountVectorizer.fit_transform's @_fit_context checks first
    vec._validate_ngram_range()
    analyze = vec.build_analyzer()  # built once here, inherited by the forked children
    n = len(texts)
    bounds = [(n * k // workers, n * (k + 1) // workers) for k in range(workers)]
    _SHARED = (texts, analyze, preprocess)
    try:
        with mp.get_context("fork").Pool(workers - 1) as pool:
            pending = pool.map_async(_count_child, bounds[1:])
            first = _count_range(bounds[0])
            rest = [(t.split("\n") if isinstance(t, str) else t, *arrays)
                    for t, *arrays in pending.get()]
    finally:
        _SHARED = None
    terms, X = _merge(first, rest, n)
    return _finish(vec, X, terms)


def _count_range(bounds: tuple[int, int]) -> Chunk:
    """count_chunk of texts[a:b] of the shared texts, after the preprocess."""
    texts, analyze, preprocess = _SHARED
    docs = list(texts[bounds[0]:bounds[1]])
    return count_chunk(docs if preprocess is None else preprocess(docs), analyze)


def _count_child(bounds: tuple[int, int]) -> tuple[str | list[str], np.ndarray, np.ndarray,
                                                   np.ndarray]:
    """_count_range in a child; the terms go back '\\n'-joined (10x faster to pickle than a list).

    Word n-grams of the default token pattern never contain a newline; a list is sent otherwise.
    """
    terms, j_indices, values, indptr = _count_range(bounds)
    joined = "\n".join(terms)
    if joined.count("\n") != len(terms) - 1:
        return list(terms), j_indices, values, indptr
    return joined, j_indices, values, indptr


def count_chunk(docs: Sequence[str], analyze: Callable[[str], list[str]]) -> Chunk:
    """Counts like CountVectorizer._count_vocab: ({term: id}, j_indices, values, indptr).

    A term gets the next id when first seen; per document the ids are listed in first-appearance
    order with their counts: j_indices, values (C int) and indptr, as in sklearn.
    """
    vocabulary: defaultdict[str, int] = defaultdict()
    vocabulary.default_factory = vocabulary.__len__
    j_indices, values, indptr = array("i"), array("i"), array("q", [0])
    for doc in docs:
        counter: dict[int, int] = {}
        for feature in analyze(doc):
            idx = vocabulary[feature]
            counter[idx] = counter.get(idx, 0) + 1
        j_indices.extend(counter)
        values.extend(counter.values())
        indptr.append(len(j_indices))
    vocabulary.default_factory = None  # a plain mapping from here on
    return (vocabulary, np.frombuffer(j_indices, np.intc), np.frombuffer(values, np.intc),
            np.frombuffer(indptr, np.int64))


def _merge(first: Chunk, rest: list[Chunk], n: int) -> tuple[list[str], sp.csr_array]:
    """Global vocabulary (first-appearance order) and the count matrix _count_vocab would build.

    Chunk 0's ids are already global (its dict is extended in place); a later chunk's terms (a
    list) are looked up once and its new terms get the next ids in the chunk's order.
    """
    vocabulary = first[0]
    j_parts, indptr_parts, offset = [first[1]], [first[3]], int(first[3][-1])
    for terms, j, _, indptr in rest:
        ids = np.fromiter(map(vocabulary.get, terms, repeat(-1)), np.int64, len(terms))
        new = np.flatnonzero(ids < 0)  # terms first seen in this chunk, in its order
        ids[new] = np.arange(len(vocabulary), len(vocabulary) + len(new))
        vocabulary.update(zip(map(terms.__getitem__, new.tolist()), ids[new].tolist()))
        j_parts.append(ids.take(j))
        indptr_parts.append(indptr[1:] + offset)
        offset += int(indptr[-1])
    if not vocabulary:
        raise ValueError("empty vocabulary; perhaps the documents only contain stop words")
    dtype = np.int64 if offset > np.iinfo(np.int32).max else np.int32
    values = np.concatenate([first[2]] + [c[2] for c in rest])
    j_indices, indptr = np.concatenate(j_parts).astype(dtype), np.concatenate(indptr_parts).astype(dtype)
    X = sp.csr_array((values, j_indices, indptr), shape=(n, len(vocabulary)), dtype=np.float64)
    X.sort_indices()
    return list(vocabulary), X


def _finish(vec, X: sp.csr_array, terms: list[str]) -> tuple[sp.csr_matrix, list[str]]:
    """CountVectorizer.fit_transform after _count_vocab (learned vocabulary), then the TF-IDF.

    Steps of scikit-learn 1.9.1 repeated here: the count matrix in the configured sparse interface
    (`sparse_interface`, spmatrix by default); max/min document counts (an Integral is a count, a
    float a fraction of n); `_sort_features` before `_limit_features` when max_features is set,
    after it otherwise; TfidfVectorizer.fit_transform's TfidfTransformer fit and transform(copy=False).
    Columns are tracked as `cols` (first-appearance id of each column's term): the returned terms,
    in column order, are sklearn's vocabulary_ sorted by id.
    """
    from sklearn import get_config
    from sklearn.feature_extraction.text import TfidfTransformer

    if get_config().get("sparse_interface", "spmatrix") == "spmatrix":
        X = sp.csr_matrix(X)
    n_doc = X.shape[0]
    high = vec.max_df if isinstance(vec.max_df, Integral) else vec.max_df * n_doc
    low = vec.min_df if isinstance(vec.min_df, Integral) else vec.min_df * n_doc
    if high < low:
        raise ValueError("max_df corresponds to < documents than min_df")
    cols = np.arange(len(terms))
    if vec.max_features is not None:
        X, order = _sort_features(X, terms)
        cols = cols[order]
    X, kept = _limit_features(X, high, low, vec.max_features)
    cols = cols[kept]
    if vec.max_features is None:
        X, order = _sort_features(X, [terms[c] for c in cols])
        cols = cols[order]
    tfidf = TfidfTransformer(norm=vec.norm, use_idf=vec.use_idf, smooth_idf=vec.smooth_idf,
                             sublinear_tf=vec.sublinear_tf)
    tfidf.fit(X)
    return _as_csr(tfidf.transform(X, copy=False)), [terms[c] for c in cols]


def _sort_features(X, names: list[str]) -> tuple[Any, np.ndarray]:
    """CountVectorizer._sort_features: columns renumbered by name; (X, old column of each new one)."""
    order = np.array(sorted(range(len(names)), key=names.__getitem__), dtype=np.int64)
    map_index = np.empty(len(names), dtype=X.indices.dtype)
    map_index[order] = np.arange(len(names))
    X.indices = map_index.take(X.indices, mode="clip")
    return X, order


def _limit_features(X, high, low, limit: int | None) -> tuple[Any, np.ndarray]:
    """CountVectorizer._limit_features: document-frequency bounds, then the `limit` most frequent."""
    dfs = np.bincount(X.indices, minlength=X.shape[1])
    mask = np.ones(len(dfs), dtype=bool)
    mask &= dfs <= high
    mask &= dfs >= low
    if limit is not None and mask.sum() > limit:
        tfs = np.asarray(X.sum(axis=0)).ravel()
        mask_inds = (-tfs[mask]).argsort()[:limit]  # same (unstable) sort as sklearn: same ties
        new_mask = np.zeros(len(dfs), dtype=bool)
        new_mask[np.where(mask)[0][mask_inds]] = True
        mask = new_mask
    kept = np.where(mask)[0]
    if len(kept) == 0:
        raise ValueError("After pruning, no terms remain. Try a lower min_df or a higher max_df.")
    return X[:, kept], kept
