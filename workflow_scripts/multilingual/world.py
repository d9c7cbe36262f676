"""Multilingual captions for the embedded world: one caption per image and language, drawn from the
image's scene attributes alone, one random stream per language.

English is the world's own caption (results/world/captions.txt, heldout.csv): it was drawn from the scene
with the world's caption stream. Every other language draws from its own stream (seed, language stream,
split), so no caption is a translation of another and adding or removing a language changes nobody
else's captions; the image is the only link between them. The world itself is read, never rewritten:
training scenes from train_attributes.csv; held-out scenes are regenerated with world.heldout_scenes
(the same seed and streams that wrote heldout.csv, checked caption by caption).

    python -m workflow_scripts.multilingual.world --config C --world results/world \\
        --train-out results/multilingual/captions/train.parquet --heldout-out .../heldout.parquet
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..common.errors import InputError
from ..common.io import run_cli, setup_logging, write_table
from .lexicon import LANGUAGES

log = logging.getLogger(__name__)

ENGLISH = "en"
LANGUAGE_STREAMS = {"it": 1, "de": 2}     # fixed per language: a stream never depends on the language list
SPLITS = {"train": 0, "heldout": 1}
SCENE_COLUMNS = ("shape", "colour", "size", "count", "position", "background")


def language_rng(seed: int, code: str, split: str) -> np.random.Generator:
    """The random stream of one language's captions on one split."""
    return np.random.default_rng([seed, 300 + LANGUAGE_STREAMS[code], SPLITS[split]])


def captions_for(code: str, scenes: Iterable[dict], seed: int, split: str) -> list[str]:
    """Captions in language `code` (not English) for scenes in order, from that language's own stream."""
    if code not in LANGUAGES:
        raise InputError(f"multilingual.languages: no caption grammar for {code!r}; known: "
                         f"{[ENGLISH, *sorted(LANGUAGES)]}")
    lang, rng = LANGUAGES[code], language_rng(seed, code, split)
    return [lang.caption(lang, scene, rng) for scene in scenes]


def read_train_scenes(path: str | Path) -> pd.DataFrame:
    """The world's training attributes (one row per training image, in train.csv order)."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found (the world's train_attributes.csv)") from None
    missing = [c for c in ("image", *SCENE_COLUMNS) if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}")
    return df


def heldout_scenes(world_info: dict, heldout_csv: str | Path) -> pd.DataFrame:
    """The held-out pairs (image, English caption) with their scenes, regenerated from the world's seed and
    held-out streams (world.heldout_scenes); each regenerated caption must equal heldout.csv's (else the
    world was written with other settings)."""
    from ..common.data import read_pairs_csv
    from ..world.synthetic import heldout_scenes as regenerate

    paths, captions = read_pairs_csv(heldout_csv)
    scenes = regenerate(world_info, len(paths), captions, lambda i: f"{heldout_csv}:{i + 1}")
    return pd.DataFrame([{"image": path, "caption": caption, **{c: getattr(scene, c) for c in SCENE_COLUMNS}}
                         for path, caption, scene in zip(paths, captions, scenes)])


def caption_table(scenes: pd.DataFrame, english: Sequence[str], languages: Sequence[str], seed: int,
                  split: str) -> pd.DataFrame:
    """id, image, then one caption column per language (English given, the others drawn)."""
    if len(english) != len(scenes):
        raise InputError(f"{split}: {len(english)} English captions for {len(scenes)} scenes")
    records = scenes[list(SCENE_COLUMNS)].to_dict("records")
    table = pd.DataFrame({"id": np.arange(len(scenes), dtype=np.int64), "image": scenes["image"].to_numpy()})
    for code in languages:
        table[code] = list(english) if code == ENGLISH else captions_for(code, records, seed, split)
    return table


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config
    from ..common.data import read_json, read_text_lines

    ap = argparse.ArgumentParser(description="Multilingual captions of the embedded world (train + held-out).")
    ap.add_argument("--config", required=True)
    ap.add_argument("--world", required=True, help="the world's directory (results/world)")
    ap.add_argument("--train-out", required=True)
    ap.add_argument("--heldout-out", required=True)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    config = load_config(args.config)
    ml = config["multilingual"]
    world = Path(args.world)
    languages = ml["languages"]
    train = read_train_scenes(world / "train_attributes.csv")
    english = read_text_lines(world / "captions.txt")
    write_table(caption_table(train, english, languages, ml["seed"], "train"), args.train_out)
    held = heldout_scenes(read_json(world / "world.json"), world / "heldout.csv")
    write_table(caption_table(held, list(held["caption"]), languages, ml["seed"], "heldout"), args.heldout_out)
    log.info("captions in %s for %d training and %d held-out images", languages, len(train), len(held))
    return 0


if __name__ == "__main__":
    run_cli(main)
