"""The validation jobs at the head of the DAG (rules/validation.smk).

    python -m workflow_scripts.validation.cli text --train-csv T.csv --captions C.txt \\
        --rewrites R0.txt R1.txt --heldout-csv H.csv --out results/validate/text.json
    python -m workflow_scripts.validation.cli images --image-root ROOT --csv train=T.csv \\
        --imagefolder shape=results/world/eval/shape --workers 2 --out results/validate/train_images.parquet
    python -m workflow_scripts.validation.cli images --image-root ROOT --csv heldout=H.csv \\
        --torchvision cifar10 --config SETTINGS.yaml --out results/validate/eval_images.parquet

`--torchvision NAME` checks the torchvision set `evaluate.sets.NAME` of the config: opened as the evaluation
opens it (evalsets.open_set) and every item decoded (images.check_eval_set).

Both exit 2 with a list of every problem (file:line: what) when the data are not usable, so that no
expensive job starts on them; on success `text` writes counts (JSON) and `images` the manifest.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..common.data import read_imagefolder
from ..common.errors import InputError
from ..common.io import run_cli, setup_logging, write_json, write_table
from .images import ImageRecord, check_eval_set, check_images
from .manifest import manifest_table
from .problems import Problems
from .text import check_counts, check_line_file, check_pairs_csv, text_summary

log = logging.getLogger(__name__)


def validate_text(train_csv: str, captions: str, rewrites: list[str], heldout_csv: str | None,
                  limit: int = 1000, config: dict | None = None) -> dict:
    """Check the pair CSVs and the caption/rewrite files against the training CSV; raise InputError
    listing every problem, else return counts per file. With the study's `config`, captions longer than a
    model's text context are counted per architecture (validation.long_captions; a problem each when
    CLIP4DM is on with clip4dm.long_captions error)."""
    problems = Problems(limit)
    pairs = check_pairs_csv(train_csv, problems)
    summary = {"train_csv": {"path": train_csv, **text_summary(pairs)}}
    texts: dict[str, list[str | None]] = {}
    for path in [captions, *rewrites]:
        lines = check_line_file(path, problems)
        check_counts(path, lines, pairs, problems)
        summary[path] = {"lines": len(lines)}
        texts[path] = lines
    if heldout_csv:
        heldout = check_pairs_csv(heldout_csv, problems)
        texts[heldout_csv] = heldout.captions
        summary["heldout_csv"] = {"path": heldout_csv, **text_summary(heldout)}
        shared = set(heldout.valid_images()) & set(pairs.valid_images())
        if shared:
            log.warning("%s: %d held-out images are also training images (e.g. %s): the diagnostics are not "
                        "held out for them", heldout_csv, len(shared), sorted(shared)[0])
        summary["heldout_csv"]["images_also_in_train_csv"] = len(shared)
    if config is not None:
        summary["long_captions"] = _long_captions(config, texts, problems)
    problems.raise_if_any("data check")
    return summary


def _long_captions(config: dict, texts: dict[str, list[str | None]], problems: Problems) -> dict:
    """validation.long_captions over the study's caption files, with the CLIP4DM template when it is on."""
    from .long_captions import count_long_captions, model_contexts

    contexts, skipped = model_contexts(config["models"])
    if skipped:
        log.info("long captions not counted for %s (not open_clip's BPE tokenizer)", skipped)
    c4 = config["clip4dm"]
    template = c4["template"] if c4["enabled"] else None
    refuse = c4["enabled"] and c4["long_captions"] == "error"
    return count_long_captions(texts, contexts, template, problems if refuse else None)


def _named(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"{flag} {item!r}: expected NAME=PATH")
        out.append((name, path))
    return out


def _benchmark_images(name: str, spec: dict, problems: Problems) -> list[tuple[str, str, str, tuple[str, int]]]:
    """The images of a CLIP4DM real benchmark (clip4dm.real_data.<name>: format, json, image_root), read as
    its job reads them (clip4dm.readers), one entry per image, named by the first record that uses it."""
    from ..clip4dm.readers import read_items

    try:
        items = read_items(spec["format"], spec["json"])
    except InputError as exc:
        problems.add(spec["json"], 0, f"clip4dm.real_data.{name}: {exc}")
        return []
    first = {}
    for item in items[:spec.get("limit") or len(items)]:
        first.setdefault(item.image, item.record)
    return [(f"clip4dm:{name}", rel, str(Path(spec["image_root"]) / rel), (record, 0)) for rel, record in first.items()]


def validate_images(image_root: str, csvs: list[tuple[str, str]], folders: list[tuple[str, str]], workers: int = 1,
                    limit: int = 1000, torchvision: Sequence[tuple[str, dict]] = (),
                    templates: Sequence[str] = ("{c}",), benchmarks: Sequence[tuple[str, dict]] = ()):
    """Check every image of the named pair CSVs (paths under image_root), ImageFolder sets and torchvision
    sets (name, `evaluate.sets.<name>` spec: opened and every item decoded) and CLIP4DM real benchmarks (name,
    `clip4dm.real_data.<name>` spec: the images its records name); raise InputError listing every
    problem (naming the CSV line, the set and file), else return the manifest DataFrame (a torchvision set's
    rows are its data files)."""
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
    for name, spec in benchmarks:
        images += _benchmark_images(name, spec, problems)
    # the images are checked only when every listing could be read; the torchvision sets are checked either
    # way, so that their problems are listed with those of the listings or with those of the images
    listings_usable = not problems
    set_rows: list[tuple[str, str, ImageRecord]] = []
    for name, spec in torchvision:
        found = check_eval_set(name, spec, templates)
        for file, message in found.problems:
            problems.add(file, 0, message)
        set_rows += [(name, os.path.relpath(r.file, spec["root"]), r) for r in found.records]
        if found.items:
            log.info("%s: %s under %s, %d items (%d data files); images %d-%d x %d-%d", name, spec["kind"],
                     spec["root"], found.items, len(found.records), *found.sizes)
    if not listings_usable:
        problems.raise_if_any("data check")
    sets, paths, files, where = (list(column) for column in zip(*images)) if images else ([], [], [], [])
    unique = list(dict.fromkeys(files))
    by_file = dict(zip(unique, check_images(unique, workers=workers)))
    records = [by_file[f] for f in files]
    for record, (file, line) in zip(records, where):
        if record.problem:
            problems.add(file, line, record.problem if file == record.file else f"{record.file}: {record.problem}")
    problems.raise_if_any("data check")
    table = manifest_table(sets + [r[0] for r in set_rows], paths + [r[1] for r in set_rows],
                           records + [r[2] for r in set_rows])
    torchvision_names = {name for name, _ in torchvision}
    for name, group in table.groupby("set", sort=False):
        if name in torchvision_names:
            continue
        log.info("%s: %d images (%d files); formats %s; modes %s; width %d-%d, height %d-%d", name, len(group),
                 group["file"].nunique(), dict(Counter(group["format"])), dict(Counter(group["mode"])),
                 group["width"].min(), group["width"].max(), group["height"].min(), group["height"].max())
    return table


def _torchvision_sets(config: dict, config_path: str, names: list[str]) -> tuple[list[tuple[str, dict]], list[str]]:
    """(name, spec) of the named torchvision sets of a config, and its evaluate.templates."""
    from ..common.evalsets import TORCHVISION_SETS

    ev = config["evaluate"]
    out = []
    for name in names:
        spec = ev["sets"].get(name)
        if spec is None or spec["kind"] not in TORCHVISION_SETS:
            raise InputError(f"--torchvision {name}: {config_path} has no torchvision set evaluate.sets.{name}")
        out.append((name, spec))
    return out, list(ev["templates"])


def _benchmarks(config: dict, config_path: str, names: list[str]) -> list[tuple[str, dict]]:
    """(name, spec) of the named CLIP4DM real benchmarks of a config."""
    real = config["clip4dm"]["real_data"]
    unknown = [n for n in names if n not in real]
    if unknown:
        raise InputError(f"--benchmark {unknown[0]}: {config_path} has no clip4dm.real_data.{unknown[0]}")
    return [(n, real[n]) for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate a study's data before any expensive job reads it.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("text", help="pair CSVs, caption and rewrite files")
    t.add_argument("--train-csv", required=True)
    t.add_argument("--captions", required=True)
    t.add_argument("--rewrites", nargs="*", default=[])
    t.add_argument("--heldout-csv")
    t.add_argument("--out", required=True, help="counts per file (.json)")
    t.add_argument("--config", help="the study's config (settings file): count captions longer than each "
                   "model's text context")
    i = sub.add_parser("images", help="every image present and decodable (header level); writes the manifest")
    i.add_argument("--image-root", required=True, help="directory the CSVs' image paths are relative to")
    i.add_argument("--csv", action="append", default=[], metavar="NAME=CSV", help="a pair CSV's images")
    i.add_argument("--imagefolder", action="append", default=[], metavar="NAME=ROOT", help="an ImageFolder set")
    i.add_argument("--torchvision", action="append", default=[], metavar="NAME",
                   help="the torchvision set evaluate.sets.NAME of --config (opened, every item decoded)")
    i.add_argument("--benchmark", action="append", default=[], metavar="NAME",
                   help="the CLIP4DM real benchmark clip4dm.real_data.NAME of --config (the images of its records)")
    i.add_argument("--config", help="the config (settings file) naming the --torchvision sets and --benchmarks")
    i.add_argument("--workers", type=int, default=1, help="processes")
    i.add_argument("--changed", help="file listing the images changed since the last manifest (logged)")
    i.add_argument("--out", required=True, help="manifest (.parquet)")
    for p in (t, i):
        p.add_argument("--max-problems", type=int, default=1000, help="problems recorded in the log")
    args = parser.parse_args(argv)
    if args.command == "images" and (args.torchvision or args.benchmark) and not args.config:
        parser.error("--torchvision and --benchmark need --config")
    setup_logging()
    config = None
    if args.config:
        from ..common.config import load_config

        config = load_config(args.config)
    if args.command == "text":
        summary = validate_text(args.train_csv, args.captions, args.rewrites, args.heldout_csv, args.max_problems,
                                config)
        log.info("text files: %s", summary)
        write_json(args.out, summary)
        return 0
    if args.changed and Path(args.changed).exists() and Path(args.changed).stat().st_size:
        log.info("images changed since the last manifest:\n%s", Path(args.changed).read_text(encoding="utf-8"))
    torchvision, templates = (_torchvision_sets(config, args.config, args.torchvision) if args.torchvision
                              else ([], ["{c}"]))
    benchmarks = _benchmarks(config, args.config, args.benchmark) if args.benchmark else []
    table = validate_images(args.image_root, _named(args.csv, "--csv"), _named(args.imagefolder, "--imagefolder"),
                            args.workers, args.max_problems, torchvision, templates, benchmarks)
    write_table(table, args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
