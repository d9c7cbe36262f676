"""Controlled caption misalignment: disjoint caption swaps per Cs, and the training CSVs.

`similarity` strategy = the original `simple_similarity_swap` (seed_spec.md section 1), exactly:

    target = int(Cs * N); rng = np.random.RandomState(seed)        # == np.random.seed(seed) per Cs
    order = np.arange(N); rng.shuffle(order)
    for s in order:
        if swapped >= target: stop
        if s is used: continue
        cand = the top_k most similar unused captions other than s, listed in ascending similarity
               (the original's argsort tail; zero similarities allowed)
        if cand: t = rng.choice(cand); swap captions s and t; used |= {s, t}; swapped += 2

Candidates come from the stored top-K neighbour lists (workflow_scripts.similarity), whose order is
(-similarity, index ascending): the top_k unused entries of a row, reversed, are the original's
candidates, with ties broken deterministically (among equal similarities the smaller index is the
more similar; the original's quicksort left this undefined). When exclusions leave fewer than top_k
unused entries in a row, that row is recomputed exactly among the unused captions; when such
recomputes become frequent (more than 1/8 of the unused captions since the last time), the lists of
all unused captions are recomputed among the unused ones at once (the same search on the sub-matrix of unused rows; index order, hence tie-break, is kept).

`random` strategy: the same loop, seed, order and stopping rule, but the partner is uniform among
all unused captions other than s: the unused indices are kept in an array `pool` (initially
0..N-1) from which an index is removed by moving the pool's last entry into its place; s is removed
first, then t = pool[rng.randint(len(pool))] is drawn and removed.

Both strategies draw the same random numbers whatever Cs is until they stop, so the pairs of a
smaller Cs are a prefix of those of a larger Cs: one run at the largest Cs gives every Cs, with
ceil(int(Cs * N) / 2) pairs (fewer only if the captions run out), i.e. a realised misaligned fraction
of 2 * ceil(int(Cs * N) / 2) / N.

Outputs per (strategy, Cs): the caption file with the swapped lines (same line count, verbatim lines,
each ending with one '\\n'), and a manifest (pair, line_a, line_b, similarity) where pair is the
0-based order in which the pair was made, line_a the source s and line_b its partner t (0-based line
indices, as in the log), and similarity their exact TF-IDF cosine.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from typing import Sequence

import numba as nb
import numpy as np
import scipy.sparse as sp

from .errors import InputError

log = logging.getLogger("workflow_scripts.misalign")

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


def target_lines(cs: float, n: int) -> int:
    """The original's target: int(Cs * N) misaligned lines."""
    return int(check_cs(cs) * n)


def n_pairs(cs: float, n: int) -> int:
    """Pairs the original makes for Cs when captions do not run out: ceil(int(Cs * N) / 2)."""
    return (target_lines(cs, n) + 1) // 2


class _Lists:
    """Per-caption candidate lists for the similarity swap, with exact recomputation on exhaustion."""

    def __init__(self, ids: np.ndarray, X: sp.csr_matrix, threads: int = 1,
                 batch_min: int = 256):
        from .similarity import ExactSearcher

        self.n, self.k0 = ids.shape
        self.ids = np.array(ids, np.int32)       # mutable copy: recomputed rows are replaced
        # a list is complete when it holds every other caption (nothing can be missing from it)
        self.complete = np.full(self.n, self.k0 >= self.n - 1)
        self.X = X
        self.threads = threads
        self.searcher = ExactSearcher(X, threads=1)
        self.row_recomputes = 0
        self.batch_recomputes = 0
        self._since_batch = 0
        self.batch_min = batch_min

    def candidates(self, s: int, used: np.ndarray, top_k: int) -> np.ndarray:
        """The top_k most similar unused captions other than s, best first."""
        out = np.empty(top_k, np.int64)
        got = _first_free(self.ids[s], used, out)
        if got < top_k and not self.complete[s]:
            self._recompute(s, used, top_k)
            got = _first_free(self.ids[s], used, out)
        return out[:got]

    def _recompute(self, s: int, used: np.ndarray, top_k: int) -> None:
        unused = ~used
        self._since_batch += 1
        if self._since_batch > max(self.batch_min, int(np.count_nonzero(unused)) // 8) and self.k0 > 0:
            self._recompute_all(unused)       # s is unused, so its list is fresh too
            return
        # s is a source only once, so its new list needs just the top_k best unused captions
        ids, _ = self.searcher.search([s], top_k, allowed=unused)
        self._widen(top_k)
        self.ids[s] = -1
        self.ids[s, :top_k] = ids[0]
        self.complete[s] = True
        self.row_recomputes += 1

    def _widen(self, k: int) -> None:
        if self.ids.shape[1] < k:
            self.ids = np.concatenate([self.ids, np.full((self.n, k - self.ids.shape[1]), -1, np.int32)], 1)

    def _recompute_all(self, unused: np.ndarray) -> None:
        """Lists of all unused captions among the unused ones (valid for every later, smaller set).

        They hold up to 2K entries (the stored width grows once) so that they last longer."""
        from .similarity import neighbours

        rows = np.flatnonzero(unused)
        k = 2 * self.k0
        sub_ids, _, _ = neighbours(self.X[rows], k, threads=self.threads)
        kk = sub_ids.shape[1]
        self._widen(k)
        self.ids[rows] = -1
        self.ids[rows, :kk] = rows[sub_ids]
        self.complete[rows] = kk >= len(rows) - 1
        self.batch_recomputes += 1
        self._since_batch = 0
        log.info("recomputed the lists of the %d unused captions among themselves", len(rows))


@nb.njit(cache=True)
def _first_free(row, used, out):
    """Copy the first len(out) entries of `row` that are not -1 and not used; return how many."""
    got = 0
    for j in row:
        if got == out.shape[0]:
            break
        if j >= 0 and not used[j]:
            out[got] = j
            got += 1
    return got


def similarity_swaps(ids: np.ndarray, X: sp.csr_matrix, target: int, top_k: int,
                     seed: int, threads: int = 1, show_progress: bool = False,
                     batch_min: int = 256) -> tuple[np.ndarray, dict]:
    """The original similarity swap for `target` lines (module docstring).

    ids: stored neighbour lists (N, K) ordered by (-similarity, index); X: the TF-IDF rows.
    After more than max(batch_min, unused / 8) single-row recomputes, all unused rows are
    recomputed at once.
    Returns pairs (P, 2) [source, partner] in the order made, and statistics.
    """
    from .io import progress

    n = ids.shape[0]
    lists = _Lists(ids, X, threads=threads, batch_min=batch_min)
    rng = np.random.RandomState(seed)
    order = np.arange(n)
    rng.shuffle(order)
    used = np.zeros(n, np.bool_)
    pairs: list[tuple[int, int]] = []
    swapped = 0
    bar = progress(total=target, desc="similarity swaps", unit="line", disable=not show_progress)
    for s in order:
        if swapped >= target:
            break
        if used[s]:
            continue
        cand = lists.candidates(int(s), used, top_k)
        if len(cand) == 0:
            continue
        t = int(rng.choice(cand[::-1]))                 # ascending similarity, like the argsort tail
        used[s] = used[t] = True
        pairs.append((int(s), t))
        swapped += 2
        bar.update(2)
    bar.close()
    stats = {"row_recomputes": lists.row_recomputes, "batch_recomputes": lists.batch_recomputes}
    return np.asarray(pairs, np.int64).reshape(-1, 2), stats


def random_swaps(n: int, target: int, seed: int) -> np.ndarray:
    """Pairs (P, 2) of the random strategy for `target` lines (module docstring)."""
    rng = np.random.RandomState(seed)
    order = np.arange(n)
    rng.shuffle(order)
    pool = np.arange(n)
    where = np.arange(n)
    size = n
    used = np.zeros(n, np.bool_)
    pairs: list[tuple[int, int]] = []
    swapped = 0

    def remove(i: int) -> None:
        nonlocal size
        size -= 1
        last = pool[size]
        pool[where[i]] = last
        where[last] = where[i]

    for s in order:
        if swapped >= target:
            break
        if used[s]:
            continue
        remove(int(s))
        used[s] = True
        if size == 0:
            break
        t = int(pool[rng.randint(size)])
        remove(t)
        used[t] = True
        pairs.append((int(s), t))
        swapped += 2
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def apply_swaps(lines: Sequence[str], pairs: np.ndarray) -> list[str]:
    """A copy of `lines` with the captions of every pair exchanged."""
    out = list(lines)
    for a, b in pairs:
        out[a], out[b] = lines[b], lines[a]
    return out


def manifest(pairs: np.ndarray, sims: np.ndarray):
    """Swap manifest table: pair (0-based order), line_a, line_b (0-based lines), similarity."""
    import pandas as pd

    return pd.DataFrame({"pair": np.arange(len(pairs), dtype=np.int64), "line_a": pairs[:, 0],
                         "line_b": pairs[:, 1], "similarity": sims.astype(np.float64)})


def log_examples(lines: Sequence[str], swapped: Sequence[str], pairs: np.ndarray, sims: np.ndarray,
                 how_many: int = 2) -> None:
    """Like the original: the first pairs with the caption that now sits at each line (0-based)."""
    for p in range(min(how_many, len(pairs))):
        a, b = (int(v) for v in pairs[p])
        log.info("pair %d (similarity %.3f): line %d: %s / line %d: %s", p + 1, sims[p], a,
                 swapped[a].strip()[:60], b, swapped[b].strip()[:60])


def assemble_csv(train_csv: str, captions: str, out: str) -> int:
    """Zip column 0 of the headerless train CSV with the caption lines into `out` (same format)."""
    from .captions import read_captions
    from .data import read_pairs_csv, write_pairs_csv

    paths, _ = read_pairs_csv(train_csv)
    lines = read_captions(captions)
    if len(paths) != len(lines):
        raise InputError(f"{train_csv} has {len(paths)} rows but {captions} has {len(lines)} captions; "
                         "line i of the caption file must belong to row i of the CSV")
    write_pairs_csv(out, paths, lines)
    return len(paths)


# ------------------------------------------------------------------------------------------- CLI

def _swap(args: argparse.Namespace) -> int:
    from .captions import read_captions
    from .config import format_cs, load_config
    from .io import write_lines, write_table
    from .similarity import load_neighbours, pair_scores

    cfg = load_config(args.config)["misalign"]
    cs_values = [check_cs(c) for c in args.cs]
    if not (len(cs_values) == len(args.out_captions) == len(args.out_manifest)):
        raise InputError(f"--cs has {len(cs_values)} values but --out-captions has {len(args.out_captions)} "
                         f"and --out-manifest {len(args.out_manifest)} paths")
    lines = read_captions(args.captions)
    ids, _, X, _ = load_neighbours(args.neighbours)
    n = len(lines)
    if ids.shape[0] != n:
        raise InputError(f"{args.neighbours} has {ids.shape[0]} rows but {args.captions} has {n} captions")
    target = max(target_lines(c, n) for c in cs_values)
    t0 = time.perf_counter()
    if args.strategy == "similarity":
        if ids.shape[1] < min(cfg["top_k"], n - 1):
            log.warning("n_neighbours %d < top_k %d: every row will be recomputed", ids.shape[1], cfg["top_k"])
        pairs, stats = similarity_swaps(ids, X, target, cfg["top_k"], cfg["seed"],
                                        threads=args.threads, show_progress=True)
    elif args.strategy == "random":
        pairs, stats = random_swaps(n, target, cfg["seed"]), {}
    else:
        raise InputError(f"--strategy: unknown strategy {args.strategy!r} (known: {', '.join(STRATEGIES)})")
    sims = pair_scores(X, pairs[:, 0], pairs[:, 1])
    log.info("%s: %d pairs for %d target lines of %d in %.1fs %s", args.strategy, len(pairs), target, n,
             time.perf_counter() - t0, stats)
    summary = []
    for cs, out_captions, out_manifest in zip(cs_values, args.out_captions, args.out_manifest):
        count = min(n_pairs(cs, n), len(pairs))
        sub, sub_sims = pairs[:count], sims[:count]
        swapped = apply_swaps(lines, sub)
        log.info("Cs=%s: target %d lines (%.1f%%), %d pairs = %d lines, realised %.1f%%", format_cs(cs),
                 target_lines(cs, n), 100 * cs, count, 2 * count, 100 * 2 * count / n)
        log_examples(lines, swapped, sub, sub_sims)
        write_lines(out_captions, swapped)
        write_table(manifest(sub, sub_sims), out_manifest)
        summary.append({"strategy": args.strategy, "cs": cs, "n": n, "target_lines": target_lines(cs, n),
                        "pairs": count, "misaligned_lines": 2 * count, "realised_fraction": 2 * count / n,
                        "mean_similarity": float(sub_sims.mean()) if count else math.nan})
    if args.summary:
        import pandas as pd

        write_table(pd.DataFrame(summary), args.summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    import os

    from .io import setup_logging

    ap = argparse.ArgumentParser(prog="python -m workflow_scripts.misalign",
                                 description="Caption swaps per Cs and training CSV assembly.")
    sub = ap.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("swap", help="swapped caption files + manifests for one strategy, one or more Cs")
    sw.add_argument("--config", required=True)
    sw.add_argument("--captions", required=True, help="caption file (one caption per line)")
    sw.add_argument("--neighbours", required=True, help="neighbours .npz from workflow_scripts.similarity")
    sw.add_argument("--strategy", required=True, choices=STRATEGIES)
    sw.add_argument("--cs", required=True, nargs="+", help="Cs values (each in [0, 1])")
    sw.add_argument("--out-captions", required=True, nargs="+", help="one caption file per Cs")
    sw.add_argument("--out-manifest", required=True, nargs="+", help="one .parquet manifest per Cs")
    sw.add_argument("--summary", help="optional .tsv/.csv with one row per Cs")
    sw.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    sw.add_argument("--log")
    asm = sub.add_parser("assemble", help="training CSV = image paths of --train-csv + caption lines")
    asm.add_argument("--train-csv", required=True, help="headerless image_path,caption CSV")
    asm.add_argument("--captions", required=True, help="caption file, line i for row i")
    asm.add_argument("--out", required=True, help="output CSV (same headerless format)")
    asm.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    if args.command == "swap":
        return _swap(args)
    rows = assemble_csv(args.train_csv, args.captions, args.out)
    log.info("wrote %s (%d rows)", args.out, rows)
    return 0


if __name__ == "__main__":
    from .io import run_cli

    run_cli(main)
