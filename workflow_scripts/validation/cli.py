"""The validation jobs at the head of the DAG (rules/validate.smk).

    python -m workflow_scripts.validation.cli text --train-csv T.csv --captions C.txt \\
        --rewrites R0.txt R1.txt --heldout-csv H.csv --out results/validate/text.json
    python -m workflow_scripts.validation.cli images --image-root ROOT --csv train=T.csv \\
        --imagefolder shape=results/world/eval/shape --workers 2 --out results/validate/train_images.parquet

Both exit 2 with a list of every problem (file:line: what) when the data are not usable, so that no
expensive job starts on them; on success `text` writes counts (JSON) and `images` the manifest.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from ..data import read_imagefolder
from ..errors import InputError
from ..io import run_cli, setup_logging, write_json, write_table
from .images import check_images
from .manifest import manifest_table
from .problems import Problems
from .text import check_counts, check_line_file, check_pairs_csv, text_summary

log = logging.getLogger(__name__)


def validate_text(train_csv: str, captions: str, rewrites: list[str], heldout_csv: str | None,
                  limit: int = 1000) -> dict:
    """Check the pair CSVs and the caption/rewrite files against the training CSV; raise InputError
    listing every problem, else return counts per file."""
    problems = Problems(limit)
    pairs = check_pairs_csv(train_csv, problems)
    summary = {"train_csv": {"path": train_csv, **text_summary(pairs)}}
    for path in [captions, *rewrites]:
        lines = check_line_file(path, problems)
        check_counts(path, lines, pairs, problems)
        summary[path] = {"lines": len(lines)}
    if heldout_csv:
        heldout = check_pairs_csv(heldout_csv, problems)
        summary["heldout_csv"] = {"path": heldout_csv, **text_summary(heldout)}
        shared = set(heldout.valid_images()) & set(pairs.valid_images())
        if shared:
            log.warning("%s: %d held-out images are also training images (e.g. %s): the diagnostics are not "
                        "held out for them", heldout_csv, len(shared), sorted(shared)[0])
        summary["heldout_csv"]["images_also_in_train_csv"] = len(shared)
    problems.raise_if_any("data check")
    return summary


def _named(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"{flag} {item!r}: expected NAME=PATH")
        out.append((name, path))
    return out


def validate_images(image_root: str, csvs: list[tuple[str, str]], folders: list[tuple[str, str]], workers: int = 1,
                    limit: int = 1000):
    """Check every image of the named pair CSVs (paths under image_root) and ImageFolder sets; raise
    InputError listing every problem (naming the CSV line), else return the manifest DataFrame."""
    problems = Problems(limit)
    # per image: (set, path as the study names it, file, (file to name in a problem, its line))
    images: list[tuple[str, str, str, tuple[str, int]]] = []
    for name, csv_path in csvs:
        pairs = check_pairs_csv(csv_path, problems)
        images += [(name, rel, str(Path(image_root) / rel), (csv_path, lineno))
                   for lineno, rel in enumerate(pairs.images, start=1) if rel is not None]
    for name, root in folders:
        try:
            rel_paths = read_imagefolder(root)[0]
        except InputError as exc:
            problems.add(root, 0, f"evaluation set {name}: {exc}")
            continue
        images += [(name, rel, str(Path(root) / rel), (str(Path(root) / rel), 0)) for rel in rel_paths]
    problems.raise_if_any("data check")
    sets, paths, files, where = (list(column) for column in zip(*images)) if images else ([], [], [], [])
    unique = list(dict.fromkeys(files))
    by_file = dict(zip(unique, check_images(unique, workers=workers)))
    records = [by_file[f] for f in files]
    for record, (file, line) in zip(records, where):
        if record.problem:
            problems.add(file, line, record.problem if file == record.file else f"{record.file}: {record.problem}")
    problems.raise_if_any("data check")
    table = manifest_table(sets, paths, records)
    for name, group in table.groupby("set", sort=False):
        log.info("%s: %d images (%d files); formats %s; modes %s; width %d-%d, height %d-%d", name, len(group),
                 group["file"].nunique(), dict(Counter(group["format"])), dict(Counter(group["mode"])),
                 group["width"].min(), group["width"].max(), group["height"].min(), group["height"].max())
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate a study's data before any expensive job reads it.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("text", help="pair CSVs, caption and rewrite files")
    t.add_argument("--train-csv", required=True)
    t.add_argument("--captions", required=True)
    t.add_argument("--rewrites", nargs="*", default=[])
    t.add_argument("--heldout-csv")
    t.add_argument("--out", required=True, help="counts per file (.json)")
    i = sub.add_parser("images", help="every image present and decodable (header level); writes the manifest")
    i.add_argument("--image-root", required=True, help="directory the CSVs' image paths are relative to")
    i.add_argument("--csv", action="append", default=[], metavar="NAME=CSV", help="a pair CSV's images")
    i.add_argument("--imagefolder", action="append", default=[], metavar="NAME=ROOT", help="an ImageFolder set")
    i.add_argument("--workers", type=int, default=1, help="processes")
    i.add_argument("--changed", help="file listing the images changed since the last manifest (logged)")
    i.add_argument("--out", required=True, help="manifest (.parquet)")
    for p in (t, i):
        p.add_argument("--max-problems", type=int, default=1000, help="problems recorded in the log")
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "text":
        summary = validate_text(args.train_csv, args.captions, args.rewrites, args.heldout_csv, args.max_problems)
        log.info("text files: %s", summary)
        write_json(args.out, summary)
        return 0
    if args.changed and Path(args.changed).exists() and Path(args.changed).stat().st_size:
        log.info("images changed since the last manifest:\n%s", Path(args.changed).read_text(encoding="utf-8"))
    table = validate_images(args.image_root, _named(args.csv, "--csv"), _named(args.imagefolder, "--imagefolder"),
                            args.workers, args.max_problems)
    write_table(table, args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
