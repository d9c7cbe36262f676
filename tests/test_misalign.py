"""Swaps against a plain dense implementation of the original algorithm; outputs; CSV assembly."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from workflow_scripts.misalign import pairing as P
from workflow_scripts.misalign import swap as M
from workflow_scripts.misalign import similarity as S
from workflow_scripts.common.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def tie_free_rows(n, v, seed):
    """Random unit rows that all share term 0 (so every similarity is positive) with continuous
    weights: no two similarities are equal, so the original's argsort order is unambiguous."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, v))
    for i in range(n):
        terms = rng.choice(np.arange(1, v), size=rng.integers(1, 5), replace=False)
        X[i, terms] = rng.random(len(terms)) + 0.1
        X[i, 0] = rng.random() * 0.3 + 0.01
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return sp.csr_matrix(X)


def rows_with_zeros(n, v, seed):
    """Unit rows of one or two terms out of v, some empty, some repeated: many similarities are 0
    and many are equal (ties)."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, v))
    for i in range(n):
        if rng.random() < 0.15:
            continue                                   # empty TF-IDF row: similarity 0 to all
        if i and rng.random() < 0.2:
            X[i] = X[rng.integers(i)]                  # a repeated caption
            continue
        X[i, rng.choice(v, size=rng.integers(1, 3), replace=False)] = rng.random(2)[: 1] + 0.2
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return sp.csr_matrix(X / np.where(norms > 0, norms, 1))


def original_swap(X, cs, top_k=10, seed=42, tie_break=False):
    """docs/original_code.md, "Exp 3, stage 1", as written: dense N x N matrix, global legacy RNG, argsort tail.

    tie_break: candidates ordered by (-similarity, index) instead of the argsort's unspecified
    order among equal similarities (the documented tie-break of pairing.similarity_swaps)."""
    sim = (X @ X.T).toarray()
    n = sim.shape[0]
    target = int(cs * n)
    used, pairs, swapped = set(), [], 0
    np.random.seed(seed)
    order = np.arange(n)
    np.random.shuffle(order)
    for s in order:
        if swapped >= target:
            break
        if s in used:
            continue
        row = sim[s].copy()
        row[s] = -1
        for e in used:
            row[e] = -1
        if tie_break:
            ok = np.flatnonzero(row >= 0)
            cand = list(ok[np.lexsort((ok, -row[ok]))][:top_k][::-1])
        else:
            idx = np.argsort(row)[-top_k:]
            cand = [i for i in idx if row[i] >= 0]
        if cand:
            t = np.random.choice(cand)
            used |= {s, t}
            pairs.append((s, t))
            swapped += 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@pytest.mark.parametrize("n,k,seed,batch_min", [(240, 32, 0, 256), (301, 12, 1, 256), (260, 11, 2, 3)])
def test_similarity_swaps_equal_the_dense_original(n, k, seed, batch_min):
    X = tie_free_rows(n, 40, seed)
    ids, scores, _ = S.neighbours(X, k)
    target = int(0.8 * n)
    pairs, stats = P.similarity_swaps(ids, scores, X, target, top_k=10, seed=42, batch_min=batch_min)
    if k < 32:  # short lists: exclusions exhaust rows, which are then recomputed exactly
        assert stats["row_recomputes"] + stats["batch_recomputes"] > 0
    if batch_min == 3:
        assert stats["batch_recomputes"] > 0
    for cs in (0.1, 0.3, 0.5, 0.8):
        ref = original_swap(X, cs)
        np.testing.assert_array_equal(pairs[: P.n_pairs(cs, n)], ref)


@pytest.mark.parametrize("k,batch_min,window,path", [
    (32, 256, None, "stored"),          # long lists: hardly any recompute
    (6, -1, None, "rows"),               # batches off: every exhausted list is recomputed alone
    (6, 0, 7, "batch"),                  # a batch at every exhausted list, short look-ahead
    (6, 2, 1000, "batch"),               # few row recomputes between batches over all later sources
    (2, 3, 20, "batch"),                 # stored lists shorter than top_k
    (0, 3, 20, "batch"),                 # nothing stored
])
def test_similarity_swaps_with_zero_and_tied_similarities(k, batch_min, window, path):
    n = 230
    X = rows_with_zeros(n, 25, 4)
    ids, scores, _ = S.neighbours(X, k)
    pairs, stats = P.similarity_swaps(ids, scores, X, int(0.9 * n), top_k=10, seed=42,
                                      batch_min=batch_min, window=window)
    if path == "rows":
        assert stats["row_recomputes"] > 0 and stats["batch_recomputes"] == 0
    elif path == "batch":
        assert stats["batch_rows"] > 0
    for cs in (0.3, 0.9):
        ref = original_swap(X, cs, tie_break=True)
        np.testing.assert_array_equal(pairs[: P.n_pairs(cs, n)], ref)


def test_randint_emulates_the_legacy_random_state():
    highs = [1, 2, 3, 4, 5, 7, 8, 9, 10, 10, 1, 16, 17, 31, 33, 100, 2**16 + 1, 10**6, 2**31, 2**31 + 1,
             2**32 - 1, 2**32] * 40
    ref = np.random.RandomState(3)
    expected = [ref.choice(np.arange(h)) if h <= 100 else ref.randint(0, h) for h in highs]
    next_raw = ref.randint(0, 2**32, dtype=np.uint32)
    buf = np.random.RandomState(3).randint(0, 2**32, size=10 * len(highs), dtype=np.uint32)
    st = np.zeros(8, np.int64)
    got = [P._randint(buf, st, h) for h in highs]
    assert got == expected
    assert buf[st[P._BPOS]] == next_raw            # exactly the outputs RandomState consumed
    assert P._randint(buf, st, 1) == 0 and buf[st[P._BPOS]] == next_raw     # randint(0, 1) draws nothing
    st[P._BPOS] = 0                                # outputs run out during the rejection loop:
    assert P._randint(np.array([3, 3], np.uint32), st, 3) == -1 and st[P._BPOS] == 0    # -1, position kept


@pytest.mark.parametrize("chunk", [1, 5])
def test_tiny_random_buffers_give_the_same_pairs(monkeypatch, chunk):
    n = 260
    X = tie_free_rows(n, 40, 2)
    ids, scores, _ = S.neighbours(X, 11)
    sim = P.similarity_swaps(ids, scores, X, int(0.8 * n), top_k=10, seed=42, batch_min=3)[0]
    rnd = P.random_swaps(n, int(0.8 * n), seed=42)
    monkeypatch.setattr(P, "RNG_CHUNK", chunk)
    np.testing.assert_array_equal(P.similarity_swaps(ids, scores, X, int(0.8 * n), top_k=10, seed=42,
                                                     batch_min=3)[0], sim)
    np.testing.assert_array_equal(P.random_swaps(n, int(0.8 * n), seed=42), rnd)


def test_list_ends_do_not_trust_float32_zeros():
    tiny = 1e-25                                   # similarity 1e-50: positive, but 0 in float32
    big = np.sqrt(1 - tiny**2)
    X = sp.csr_matrix(np.array([[big, tiny, 0, 0], [0, 0, 0, 1.0], [0, tiny, big, 0]]))
    ids, scores, _ = S.neighbours(X, 2)
    assert ids[0].tolist() == [2, 1] and scores[0].tolist() == [0.0, 0.0]
    ends = P._list_ends(np.arange(3), ids, scores, 2, X)
    assert ends.tolist() == [1, 0, 1]              # row 0: one positive entry (row 2), then zeros
    pairs, _ = P.similarity_swaps(ids, scores, X, 2, top_k=2, seed=0)
    np.testing.assert_array_equal(pairs, original_swap(X, 2 / 3, top_k=2, seed=0, tie_break=True))


@pytest.mark.parametrize("strategy", ["similarity", "random"])
def test_fraction_prefix_and_multiset(strategy):
    n = 257
    X = tie_free_rows(n, 30, 5)
    ids, scores, _ = S.neighbours(X, 16)
    lines = [f"caption {i}" for i in range(n)]
    runs = {}
    for cs in (0.0, 0.1, 0.3, 0.5, 0.8, 1.0):
        target = P.target_lines(cs, n)
        if strategy == "similarity":
            pairs, _ = P.similarity_swaps(ids, scores, X, target, top_k=10, seed=42)
        else:
            pairs = P.random_swaps(n, target, seed=42)
        runs[cs] = pairs
        swapped = M.apply_swaps(lines, pairs)
        changed = sum(a != b for a, b in zip(lines, swapped))
        assert changed == len(pairs) * 2
        if cs < 1.0:
            assert changed / n == 2 * math.ceil(int(cs * n) / 2) / n
        assert Counter(swapped) == Counter(lines)
        assert len(set(pairs.ravel().tolist())) == 2 * len(pairs)        # disjoint pairs
    assert len(runs[1.0]) == n // 2                                      # odd n: one caption left alone
    for small, large in [(0.1, 0.3), (0.3, 0.5), (0.5, 0.8), (0.8, 1.0)]:
        np.testing.assert_array_equal(runs[large][: len(runs[small])], runs[small])


def test_random_swaps_follow_the_documented_pool_rule():
    n, target = 50, 30
    rng = np.random.RandomState(7)
    order = np.arange(n)
    rng.shuffle(order)
    pool, used, ref = list(range(n)), set(), []
    for s in order:
        if len(ref) * 2 >= target:
            break
        if s in used:
            continue
        for i in (s,):
            j = pool.index(i)
            pool[j] = pool[-1]
            pool.pop()
        t = pool[rng.randint(len(pool))]
        j = pool.index(t)
        pool[j] = pool[-1]
        pool.pop()
        used |= {s, t}
        ref.append((s, t))
    np.testing.assert_array_equal(P.random_swaps(n, target, seed=7), np.array(ref))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x"])
def test_invalid_cs(bad):
    with pytest.raises(InputError, match="Cs"):
        P.target_lines(bad, 100)


def write_config(tmp_path, **misalign):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["misalign"].update(misalign)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_end_to_end(tmp_path):
    from workflow_scripts.misalign.similarity import main as sim_main

    words = ["red", "blue", "green", "dog", "cat", "bird", "car", "tree", "house", "boat", "ball", "hat"]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=4)) + ("," if i % 3 else " \"quoted\"") for i in range(120)]
    captions = tmp_path / "captions.txt"
    captions.write_bytes(("\n".join(lines)).encode())            # no final newline
    train = tmp_path / "train.csv"
    with open(train, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([[f"images/{i:06d}.png", c] for i, c in enumerate(lines)])
    config = write_config(tmp_path, n_neighbours=8, top_k=5, tfidf={"min_df": 1})
    npz = tmp_path / "nb.npz"
    assert sim_main(["--config", str(config), "--captions", str(captions), "--out", str(npz),
                     "--threads", "1"]) == 0
    outs = [tmp_path / f"Cs{c}" for c in ("0.0", "0.5")]
    argv = ["swap", "--config", str(config), "--captions", str(captions), "--neighbours", str(npz),
            "--strategy", "similarity", "--cs", "0.0", "0.5",
            "--out-captions", *[str(o / "captions.txt") for o in outs],
            "--out-manifest", *[str(o / "swaps.parquet") for o in outs], "--summary", str(tmp_path / "s.tsv"),
            "--log", str(tmp_path / "swap.log")]
    assert M.main(argv) == 0
    assert re.search(r"pair 1 \(similarity \d\.\d{3}\): line \d+: .* / line \d+: ", (tmp_path / "swap.log").read_text())
    swapped = (outs[1] / "captions.txt").read_text(encoding="utf-8")
    assert swapped.endswith("\n") and swapped.count("\n") == 120
    assert (outs[0] / "captions.txt").read_text(encoding="utf-8").splitlines() == lines
    man = pd.read_parquet(outs[1] / "swaps.parquet")
    assert list(man.columns) == ["pair", "line_a", "line_b", "similarity"] and len(man) == 30
    new = swapped.splitlines()
    for a, b in zip(man.line_a, man.line_b):
        assert new[a] == lines[b] and new[b] == lines[a]
    assert pd.read_csv(tmp_path / "s.tsv", sep="\t").realised_fraction.tolist() == [0.0, 0.5]
    out_csv = tmp_path / "train_swapped.csv"
    assert M.main(["assemble", "--train-csv", str(train), "--captions", str(outs[1] / "captions.txt"),
                   "--out", str(out_csv)]) == 0
    rows = list(csv.reader(open(out_csv, newline="", encoding="utf-8")))
    assert [r[0] for r in rows] == [f"images/{i:06d}.png" for i in range(120)]
    assert [r[1] for r in rows] == new


def test_assemble_refuses_bad_inputs(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("a.png,one\nb.png,two\nc.png,three\n", encoding="utf-8")
    caps = tmp_path / "caps.txt"
    caps.write_text("x\ny\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"train\.csv has 3 rows but .*caps\.txt has 2 captions"):
        M.assemble_csv(str(train), str(caps), str(tmp_path / "out.csv"))
    assert not (tmp_path / "out.csv").exists()
    train.write_text("a.png,one\nb.png\nc.png,three\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"train\.csv:2: expected 2 fields"):
        M.assemble_csv(str(train), str(caps), str(tmp_path / "out.csv"))


def test_swap_cli_refuses_mismatched_files(tmp_path):
    X = tie_free_rows(20, 10, 0)
    ids, scores, _ = S.neighbours(X, 5)
    S.save_neighbours(tmp_path / "nb.npz", ids, scores, X, {})
    caps = tmp_path / "caps.txt"
    caps.write_text("".join(f"c{i}\n" for i in range(19)), encoding="utf-8")
    config = write_config(tmp_path)
    base = ["swap", "--config", str(config), "--captions", str(caps), "--neighbours", str(tmp_path / "nb.npz"),
            "--strategy", "random"]
    with pytest.raises(InputError, match="20 rows but .* 19 captions"):
        M.main(base + ["--cs", "0.1", "--out-captions", "a", "--out-manifest", "b.parquet"])
    with pytest.raises(InputError, match="not in"):
        M.main(base + ["--cs", "1.1", "--out-captions", "a", "--out-manifest", "b.parquet"])
