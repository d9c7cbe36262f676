"""Swapped caption files, their manifests and the training CSVs (the pairs come from `pairing`).

Outputs per (strategy, Cs): the caption file with the swapped lines (same line count, verbatim lines,
each ending with one '\\n'; gathered as bytes by `LineBuffer`), and a manifest (pair, line_a,
line_b, similarity) where pair is the 0-based order in which the pair was made, line_a the source s
and line_b its partner t (0-based line indices, as in the log), and similarity their exact TF-IDF
cosine.

CLI: `python -m workflow_scripts.misalign.swap swap ...` writes every Cs of one strategy (the pairs of a
smaller Cs are a prefix of those of a larger one); `... assemble ...` zips a caption file with the image
paths of the training CSV.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from typing import Sequence

import numba as nb
import numpy as np

from ..common.errors import InputError
from .exact_search import pair_scores
from .pairing import (
    STRATEGIES, check_cs, n_pairs, random_swaps, replicate_seed, similarity_swaps, swap_sources, target_lines,
)

log = logging.getLogger("workflow_scripts.misalign.swap")


def apply_swaps(lines: Sequence[str], pairs: np.ndarray) -> list[str]:
    """A copy of `lines` with the captions of every (disjoint) pair exchanged."""
    return [lines[i] for i in swap_sources(len(lines), pairs).tolist()]


class LineBuffer:
    """Caption lines as one UTF-8 buffer with line offsets, so that reordered copies of a million
    lines are gathered as bytes instead of being joined from Python strings."""

    def __init__(self, lines: Sequence[str]):
        self.blob = np.frombuffer(("\n".join(lines) + "\n").encode("utf-8"), np.uint8)
        self.ends = np.flatnonzero(self.blob == ord("\n")) + 1
        if len(self.ends) != len(lines):
            raise ValueError("a caption line contains a newline")

    def write(self, path: str, source: np.ndarray) -> None:
        """Write lines source[0], source[1], ... verbatim, each ending with one '\\n', atomically."""
        from ..common.io import atomic_path

        out = np.empty_like(self.blob)
        _gather_lines(self.blob, self.ends, np.asarray(source, np.int64), out)
        with atomic_path(path) as tmp:
            tmp.write_bytes(out)


@nb.njit(cache=True)
def _gather_lines(blob, ends, source, out):
    p = 0
    for i in source:
        a = ends[i - 1] if i > 0 else 0
        out[p:p + ends[i] - a] = blob[a:ends[i]]
        p += ends[i] - a


def manifest(pairs: np.ndarray, sims: np.ndarray):
    """Swap manifest table: pair (0-based order), line_a, line_b (0-based lines), similarity."""
    import pandas as pd

    return pd.DataFrame({"pair": np.arange(len(pairs), dtype=np.int64), "line_a": pairs[:, 0],
                         "line_b": pairs[:, 1], "similarity": sims.astype(np.float64)})


def log_examples(lines: Sequence[str], pairs: np.ndarray, sims: np.ndarray, how_many: int = 2) -> None:
    """Like the original: the first pairs with the caption that now sits at each line (0-based)."""
    for p in range(min(how_many, len(pairs))):
        a, b = (int(v) for v in pairs[p])
        log.info("pair %d (similarity %.3f): line %d: %s / line %d: %s", p + 1, sims[p], a,
                 lines[b].strip()[:60], b, lines[a].strip()[:60])


def assemble_csv(train_csv: str, captions: str, out: str) -> int:
    """Zip column 0 of the headerless train CSV with the caption lines into `out` (same format)."""
    from .captions import read_captions
    from ..common.data import write_pairs_csv

    lines = read_captions(captions)
    paths = training_paths(train_csv, len(lines), captions)
    write_pairs_csv(out, paths, lines)
    return len(paths)


def training_paths(train_csv: str, n_captions: int, captions: str) -> list[str]:
    """Column 0 of the headerless train CSV, checked to have one row per caption line."""
    from ..common.data import read_pairs_csv

    paths, _ = read_pairs_csv(train_csv)
    if len(paths) != n_captions:
        raise InputError(f"{train_csv} has {len(paths)} rows but {captions} has {n_captions} captions; "
                         "line i of the caption file must belong to row i of the CSV")
    return paths


# ------------------------------------------------------------------------------------------- CLI

def _swap(args: argparse.Namespace) -> int:
    from .captions import read_captions
    from ..common.config import format_cs, load_config
    from ..common.data import write_pairs_csv
    from ..common.io import write_table
    from .similarity import load_neighbours

    cfg = load_config(args.config)["misalign"]
    cs_values = [check_cs(c) for c in args.cs]
    if not (len(cs_values) == len(args.out_captions) == len(args.out_manifest)):
        raise InputError(f"--cs has {len(cs_values)} values but --out-captions has {len(args.out_captions)} "
                         f"and --out-manifest {len(args.out_manifest)} paths")
    if bool(args.train_csv) != bool(args.out_csv) or (args.out_csv and len(args.out_csv) != len(cs_values)):
        raise InputError("--train-csv and --out-csv go together, with one --out-csv per Cs")
    lines = read_captions(args.captions)
    paths = training_paths(args.train_csv, len(lines), args.captions) if args.train_csv else None
    ids, scores, X, _ = load_neighbours(args.neighbours)
    n = len(lines)
    if ids.shape[0] != n:
        raise InputError(f"{args.neighbours} has {ids.shape[0]} rows but {args.captions} has {n} captions")
    target = max(target_lines(c, n) for c in cs_values)
    seed = replicate_seed(cfg["seed"], args.replicate)
    t0 = time.perf_counter()
    if args.strategy == "similarity":
        if ids.shape[1] < min(cfg["top_k"], n - 1):
            log.warning("n_neighbours %d < top_k %d: every row will be recomputed", ids.shape[1], cfg["top_k"])
        pairs, stats = similarity_swaps(ids, scores, X, target, cfg["top_k"], seed,
                                        threads=args.threads, show_progress=True)
    elif args.strategy == "random":
        pairs, stats = random_swaps(n, target, seed, show_progress=True), {}
    else:
        raise InputError(f"--strategy: unknown strategy {args.strategy!r} (known: {', '.join(STRATEGIES)})")
    sims = pair_scores(X, pairs[:, 0], pairs[:, 1])
    log.info("%s: %d pairs for %d target lines of %d in %.1fs %s", args.strategy, len(pairs), target, n,
             time.perf_counter() - t0, stats)
    buffer = LineBuffer(lines)
    summary = []
    for cs, out_captions, out_manifest in zip(cs_values, args.out_captions, args.out_manifest):
        count = min(n_pairs(cs, n), len(pairs))
        sub, sub_sims = pairs[:count], sims[:count]
        log.info("Cs=%s: target %d lines (%.1f%%), %d pairs = %d lines, realised %.1f%%", format_cs(cs),
                 target_lines(cs, n), 100 * cs, count, 2 * count, 100 * 2 * count / n)
        log_examples(lines, sub, sub_sims)
        source = swap_sources(n, sub)
        buffer.write(out_captions, source)
        write_table(manifest(sub, sub_sims), out_manifest)
        if args.train_csv:   # the same lines, zipped with the image paths (no re-read of the caption file)
            write_pairs_csv(args.out_csv[cs_values.index(cs)], paths, [lines[i] for i in source])
        summary.append({"strategy": args.strategy, "cs": cs, "seed": args.replicate, "swap_seed": seed, "n": n,
                        "target_lines": target_lines(cs, n),
                        "pairs": count, "misaligned_lines": 2 * count, "realised_fraction": 2 * count / n,
                        "mean_similarity": float(sub_sims.mean()) if count else math.nan})
    if args.summary:
        import pandas as pd

        write_table(pd.DataFrame(summary), args.summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    import os

    from ..common.io import setup_logging

    ap = argparse.ArgumentParser(prog="python -m workflow_scripts.misalign.swap",
                                 description="Caption swaps per Cs and training CSV assembly.")
    sub = ap.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("swap", help="swapped caption files + manifests for one strategy, one or more Cs")
    sw.add_argument("--config", required=True)
    sw.add_argument("--captions", required=True, help="caption file (one caption per line)")
    sw.add_argument("--neighbours", required=True, help="neighbours .npz from workflow_scripts.misalign.similarity")
    sw.add_argument("--strategy", required=True, choices=STRATEGIES)
    sw.add_argument("--cs", required=True, nargs="+", help="Cs values (each in [0, 1])")
    sw.add_argument("--out-captions", required=True, nargs="+", help="one caption file per Cs")
    sw.add_argument("--out-manifest", required=True, nargs="+", help="one .parquet manifest per Cs")
    sw.add_argument("--replicate", type=int, default=0,
                    help="replicate index r: the swaps draw from seed misalign.seed + r (r = 0: the original's)")
    sw.add_argument("--summary", help="optional .tsv/.csv with one row per Cs")
    sw.add_argument("--train-csv", help="headerless image_path,caption CSV: also write each set's training CSV")
    sw.add_argument("--out-csv", nargs="*", default=[], help="one training CSV per Cs (with --train-csv)")
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
    from ..common.io import run_cli

    run_cli(main)
