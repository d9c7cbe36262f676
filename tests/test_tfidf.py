"""The parallel TF-IDF (workflow_scripts.misalign.tfidf) against scikit-learn's TfidfVectorizer, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from workflow_scripts.misalign import tfidf as T
from workflow_scripts.misalign.captions import normalise_all
from workflow_scripts.common.errors import InputError

WORDS = ("red blue green dog cat bird tree house car road sky sea boat man woman child ball "
         "the a of and on in with is").split()  # the last seven are English stop words


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    monkeypatch.setattr(T, "MIN_PARALLEL_TEXTS", 0)  # small corpora take the parallel path


def corpus(n, seed, max_words=7, empty=0.05):
    """Short texts over WORDS (Zipf-like, so term frequencies repeat); some empty or stop words only."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    texts = []
    for _ in range(n):
        r = rng.random()
        if r < empty:
            texts.append("")
        elif r < 2 * empty:
            texts.append(" ".join(rng.choice(WORDS[-7:], size=rng.integers(1, 4))))
        else:
            texts.append(" ".join(rng.choice(WORDS, size=rng.integers(1, max_words + 1), p=p)))
    return texts


def params(max_features=None, stop_words="english", ngram_range=(1, 2), min_df=1, max_df=1.0):
    return dict(max_features=max_features, stop_words=stop_words, ngram_range=list(ngram_range),
                min_df=min_df, max_df=max_df)


def vectorizer(p):
    return TfidfVectorizer(max_features=p["max_features"], stop_words=p["stop_words"],
                           ngram_range=tuple(p["ngram_range"]), min_df=p["min_df"], max_df=p["max_df"],
                           dtype=np.float64)


def reference(texts, p):
    """What similarity.tfidf_matrix returns: TfidfVectorizer.fit_transform as sorted float64 CSR."""
    vec = vectorizer(p)
    X = sp.csr_matrix(vec.fit_transform(texts), dtype=np.float64)
    X.sort_indices()
    return X, list(vec.get_feature_names_out())


def assert_bit_equal(X, ref):
    assert isinstance(X, sp.csr_matrix) and X.dtype == np.float64 and X.has_sorted_indices
    assert X.shape == ref.shape
    np.testing.assert_array_equal(X.indptr, ref.indptr)
    np.testing.assert_array_equal(X.indices, ref.indices)
    np.testing.assert_array_equal(X.data, ref.data)  # exact: no tolerance


CASES = [
    params(),                                                   # no pruning, sort after limit
    params(max_features=250, min_df=2, max_df=0.9),             # float max_df, ties at the cut
    params(min_df=0.003, max_df=300),                           # float min_df, int max_df, both prune
    params(max_features=7, min_df=0.002, max_df=2500),
    params(max_features=330, stop_words=None, ngram_range=(1, 3), min_df=3, max_df=0.5),  # ties
    params(stop_words=["red", "the"], ngram_range=(2, 2), min_df=1, max_df=1),
]


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_parallel_equals_tfidf_vectorizer(case, workers):
    texts = corpus(3000, seed=case)
    p = CASES[case]
    ref, ref_terms = reference(texts, p)
    X, terms = T._parallel(texts, p, workers, None)
    assert terms == ref_terms  # same vocabulary_, same column order
    assert_bit_equal(X, ref)
    assert_bit_equal(T.tfidf_matrix(texts, p, workers=workers), ref)


@pytest.mark.parametrize("case", [1, 4])
def test_max_features_cut_falls_inside_ties(case):
    # guards the test above: the max_features cut of these cases really has to break ties
    p = CASES[case]
    X = CountVectorizer(stop_words=p["stop_words"], ngram_range=tuple(p["ngram_range"]),
                        min_df=p["min_df"], max_df=p["max_df"]).fit_transform(corpus(3000, seed=case))
    tfs = np.sort(np.asarray(X.sum(axis=0)).ravel())[::-1]
    k = p["max_features"]
    assert tfs[k - 3] == tfs[k + 3]


def test_workers_1_equals_parallel():
    texts = corpus(4000, seed=7, max_words=12)
    p = params(max_features=60, min_df=2, max_df=0.95)
    serial = T.tfidf_matrix(texts, p, workers=1)
    assert_bit_equal(T.tfidf_matrix(texts, p, workers=2), serial)
    assert_bit_equal(T.tfidf_matrix(texts, p, workers=3), serial)


def test_small_inputs_stay_serial(monkeypatch):
    monkeypatch.setattr(T, "MIN_PARALLEL_TEXTS", 500)
    monkeypatch.setattr(T, "_parallel", None)  # calling it would fail
    texts = corpus(499, seed=12)
    assert_bit_equal(T.tfidf_matrix(texts, params(), workers=2), reference(texts, params())[0])


def test_sparray_interface():
    texts = corpus(2000, seed=11)
    p = params(max_features=30, min_df=2, max_df=0.9)
    with sklearn.config_context(sparse_interface="sparray"):
        ref, _ = reference(texts, p)
        assert_bit_equal(T.tfidf_matrix(texts, p, workers=2), ref)


def test_chunk_without_new_terms():
    base = corpus(1500, seed=3)
    texts = base + base[::-1]            # the second half (chunk 1 of 2) only repeats terms
    p = params(max_features=20, min_df=2, max_df=0.99)
    analyze = vectorizer(p).build_analyzer()
    first = set(T.count_chunk(base, analyze)[0])
    assert set(T.count_chunk(base[::-1], analyze)[0]) == first
    ref, ref_terms = reference(texts, p)
    X, terms = T._parallel(texts, p, 2, None)
    assert terms == ref_terms
    assert_bit_equal(X, ref)


def test_chunks_of_stop_words_and_empty_texts():
    # with 4 workers, chunk 1 is all empty and chunk 2 all stop words; with 2, chunk 0 has no terms
    texts = corpus(1000, seed=5) + [""] * 1000 + ["the of and", "a"] * 500 + corpus(1000, seed=6)
    p = params(max_features=15, min_df=2, max_df=0.9)
    ref, _ = reference(texts, p)
    for workers in (2, 3, 4):
        assert_bit_equal(T.tfidf_matrix(texts, p, workers=workers), ref)
    texts = ["the", ""] * 1000 + corpus(1000, seed=8)
    assert_bit_equal(T.tfidf_matrix(texts, p, workers=2), reference(texts, p)[0])


def test_terms_with_newlines_go_back_as_a_list(monkeypatch):
    split = lambda text: text.split(" ")  # noqa: E731
    monkeypatch.setattr(T, "_SHARED", (["a b", "c\nd e", "a"], split, None))
    assert T._count_child((0, 3))[0] == ["a", "b", "c\nd", "e"]
    monkeypatch.setattr(T, "_SHARED", (["a b", "c d", "b"], split, None))
    assert T._count_child((0, 3))[0] == "a\nb\nc\nd"


def reverse_words(texts):
    """A preprocess that changes the bigrams (normalise_all hardly changes sklearn's tokens)."""
    return [" ".join(t.split()[::-1]) for t in texts]


def test_preprocess_runs_in_the_workers():
    rng = np.random.default_rng(9)
    marks = ["", ",", ".", "!", "'s", " -", "?"]
    raw = [" ".join(w.upper() if rng.random() < 0.3 else w.capitalize() if rng.random() < 0.3 else w
                    for w in t.split()) + marks[rng.integers(len(marks))] for t in corpus(3000, seed=9)]
    raw = [t.replace(" ", str(rng.choice([" ", ", ", "  ", "-"])), 1) for t in raw]
    p = params(max_features=50, min_df=2, max_df=0.95)
    ref, _ = reference(normalise_all(raw), p)
    rev, _ = reference(reverse_words(raw), p)
    assert (rev != ref).nnz > 0  # so that a preprocess skipped in some chunk would be seen
    for workers in (1, 2, 3):
        assert_bit_equal(T.tfidf_matrix(raw, p, workers=workers, preprocess=normalise_all), ref)
        assert_bit_equal(T.tfidf_matrix(raw, p, workers=workers, preprocess=reverse_words), rev)


@pytest.mark.parametrize("workers", [1, 2])
def test_only_stop_words_is_an_input_error(workers):
    texts = ["the of and", "", "a is on"] * 50
    message = (r"misalign\.tfidf: TF-IDF failed on 150 captions "
               r"\(empty vocabulary; perhaps the documents only contain stop words\)")
    with pytest.raises(InputError, match=message):
        T.tfidf_matrix(texts, params(), workers=workers)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("min_df,max_df,message", [
    (5, 2, "max_df corresponds to < documents than min_df"),
    (0.5, 0.1, "max_df corresponds to < documents than min_df"),
    (499, 1.0, "After pruning, no terms remain"),
    (-1, 1.0, "min_df"),                        # sklearn's own parameter validation
])
def test_bad_document_frequencies_are_input_errors(workers, min_df, max_df, message):
    texts = corpus(500, seed=2)
    p = params(min_df=min_df, max_df=max_df)
    with pytest.raises(InputError, match="misalign.tfidf") as err:
        T.tfidf_matrix(texts, p, workers=workers)
    assert message in str(err.value)
    with pytest.raises(ValueError) as ref:
        vectorizer(p).fit_transform(texts)
    assert str(err.value) == f"misalign.tfidf: TF-IDF failed on 500 captions ({ref.value})"
