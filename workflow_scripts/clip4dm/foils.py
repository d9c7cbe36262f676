"""FOIL-style captions on the embedded world's held-out images: exactly one attribute word replaced.

Each held-out image (its scene regenerated from the world's seed; the human captions must match
data.heldout_csv) gets a canonical caption in the world's vocabulary,
  one object:   "a {colour} {shape} in the {top|bottom} {left|right}"
  2-3 objects:  "{two|three} {colour} {shapes}"
and, per attribute, one foil with a wrong value drawn at random (seeded):
- colour: another colour with the same article ("a"/"an"), so that only the colour word changes (an
  orange object gets no colour foil, and no foil says orange);
- shape: another shape (plural form for several objects);
- count: two <-> three (several objects only; "one" would change the noun's number too);
- position: top <-> bottom or left <-> right (one object only), the replaced word is the foil word.
The original caption of every image is the positive class of the FOIL AP.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..common.errors import InputError

FOIL_ATTRIBUTES = ("colour", "shape", "count", "position")
FLIP = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


def heldout_scenes(world: dict, n: int, captions: Sequence[str] | None = None, where: str = "held-out pairs"):
    """The scenes of the first n held-out pairs (world.heldout_scenes, settings: config `world`); given
    `captions` must be their human captions, a mismatch is named '{where}, pair {i}'."""
    from ..world.synthetic import heldout_scenes as regenerate

    return regenerate(world, n, captions, lambda i: f"{where}, pair {i}")


def canonical_words(scene) -> list[str]:
    """The canonical caption of a scene as words."""
    from ..world.synthetic import COUNT_WORDS, _article, _plural

    if scene.count == 1:
        return [_article(scene.colour), scene.colour, scene.shape, "in", "the", *scene.position.split()]
    return [COUNT_WORDS[scene.count], scene.colour, _plural(scene.shape)]


def scene_foils(scene, rng: np.random.Generator, attributes: Sequence[str]) -> list[tuple[str, list[str], int]]:
    """(attribute, foil caption words, index of the foil word) for each applicable attribute."""
    from ..world.synthetic import COLOURS, COUNT_WORDS, SHAPES, _article, _plural

    words = canonical_words(scene)
    out = []
    for attribute in attributes:
        foil = list(words)
        if attribute == "colour":
            options = [c for c in COLOURS if c != scene.colour and _article(c) == _article(scene.colour)]
            if not options:
                continue
            index, foil[1] = 1, options[rng.integers(len(options))]
        elif attribute == "shape":
            options = [s for s in SHAPES if s != scene.shape]
            new = options[rng.integers(len(options))]
            index, foil[2] = 2, (new if scene.count == 1 else _plural(new))
        elif attribute == "count":
            if scene.count == 1:
                continue
            index, foil[0] = 0, COUNT_WORDS[5 - scene.count]
        elif attribute == "position":
            if scene.count != 1:
                continue
            index = 5 + int(rng.integers(2))
            foil[index] = FLIP[foil[index]]
        else:
            raise InputError(f"clip4dm.foils.attributes: unknown attribute {attribute!r}; known: {list(FOIL_ATTRIBUTES)}")
        out.append((attribute, foil, index))
    return out


def foil_table(scenes: Sequence, attributes: Sequence[str], seed: int) -> pd.DataFrame:
    """One row per caption: image, kind ('original' or 'foil'), attribute, caption, foil word and index
    (originals: attribute '', foil word '', index -1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, scene in enumerate(scenes):
        rows.append({"image": i, "kind": "original", "attribute": "", "caption": " ".join(canonical_words(scene)),
                     "foil_word": "", "foil_index": -1})
        for attribute, words, index in scene_foils(scene, rng, attributes):
            rows.append({"image": i, "kind": "foil", "attribute": attribute, "caption": " ".join(words),
                         "foil_word": words[index], "foil_index": index})
    return pd.DataFrame(rows)
