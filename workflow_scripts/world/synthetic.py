"""The embedded synthetic image-caption world: deterministic images, web-like captions and rewrites.

Each training image holds 1-3 copies of one object (shape, colour, size) in distinct quadrants on a
textured background, with nuisance variation (colour jitter, pixel noise, a distractor dot, partial
occlusion). Each image gets one "human" caption, varied like web alt-text (templates, synonyms, omitted
attributes, word order, occasional junk), and K LaCLIP-style rewrites made, like LaCLIP's LLM rewrites,
from the caption's text alone: paraphrases that name what the caption names, plus at a configurable rate
one "hallucinated" attribute drawn from the world's prior, blind to the image. Downstream sets are
ImageFolder directories with different label spaces (shape ~ CIFAR-10, shape x colour ~ CIFAR-100,
colour, count, position). The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..common.errors import InputError
from ..common.config import load_config
from ..common.io import progress, run_cli, setup_logging, write_json, write_lines, write_table

log = logging.getLogger(__name__)

SHAPES = ["circle", "square", "triangle", "diamond", "cross", "ring", "star", "heart"]
SHAPE_SYNONYMS = {
    "circle": ["circle", "disc", "round dot", "circle"],
    "square": ["square", "box", "block", "square"],
    "triangle": ["triangle", "wedge", "triangle"],
    "diamond": ["diamond", "rhombus", "diamond"],
    "cross": ["cross", "plus sign", "cross"],
    "ring": ["ring", "donut", "hoop", "ring"],
    "star": ["star", "star shape", "star"],
    "heart": ["heart", "love heart", "heart"],
}
PLURALS = {"cross": "crosses", "box": "boxes", "plus sign": "plus signs", "rhombus": "rhombi"}
COLOURS = {  # name -> RGB in [0, 1]
    "red": (0.90, 0.12, 0.10), "orange": (1.00, 0.55, 0.05), "yellow": (0.98, 0.92, 0.10),
    "green": (0.10, 0.75, 0.20), "cyan": (0.10, 0.85, 0.90), "blue": (0.12, 0.25, 0.95),
    "purple": (0.60, 0.15, 0.80), "white": (0.97, 0.97, 0.97),
}
COLOUR_SYNONYMS = {
    "red": ["red", "crimson", "scarlet", "red"], "orange": ["orange", "amber", "orange"],
    "yellow": ["yellow", "golden", "yellow"], "green": ["green", "emerald", "green"],
    "cyan": ["cyan", "turquoise", "aqua"], "blue": ["blue", "navy", "cobalt", "blue"],
    "purple": ["purple", "violet", "purple"], "white": ["white", "snow white", "white"],
}
SIZES = {"small": 0.14, "large": 0.23}  # object radius as a fraction of the image side
SIZE_SYNONYMS = {"small": ["small", "tiny", "little"], "large": ["large", "big", "huge"]}
QUADRANTS = ["top left", "top right", "bottom left", "bottom right"]
QUADRANT_SYNONYMS = {
    "top left": ["top left", "upper left"], "top right": ["top right", "upper right"],
    "bottom left": ["bottom left", "lower left"], "bottom right": ["bottom right", "lower right"],
}
BACKGROUNDS = ["plain", "striped", "checkered", "dotted", "gradient", "noisy", "grid", "wavy"]
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
COUNT_PROBS = (0.6, 0.25, 0.15)
JUNK_CAPTIONS = ["untitled image", "stock photo", "image for illustration only", "free download",
                 "picture of the day", "graphic element", "wallpaper hd", "clip art"]

EVAL_SETS = {  # name -> (label attribute, template)
    "shape": ("shape", "a photo of a {c}"),
    "shape_colour": ("shape_colour", "a photo of a {c}"),
    "colour": ("colour", "a photo of a {c} shape"),
    "count": ("count", "a photo of {c}"),
    "position": ("position", "a photo of a shape in the {c}"),
}


@dataclass(frozen=True)
class Scene:
    """The attributes of one image."""

    shape: str
    colour: str
    size: str
    count: int
    quadrants: tuple[int, ...]
    background: str
    distractor: bool

    @property
    def position(self) -> str:
        return QUADRANTS[self.quadrants[0]]


# ----------------------------------------------------------------------------- scenes


def sample_scene(rng: np.random.Generator, count: int | None = None, shape: str | None = None,
                 colour: str | None = None) -> Scene:
    """Draw the attributes of one image (fixed ones may be given, e.g. to balance an eval set)."""
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    size = list(SIZES)[rng.integers(len(SIZES))]
    count = count or int(rng.choice([1, 2, 3], p=COUNT_PROBS))
    quadrants = tuple(int(q) for q in rng.permutation(4)[:count])
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return Scene(shape, colour, size, count, quadrants, background, bool(rng.random() < 0.3))


# ----------------------------------------------------------------------------- rendering


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape of radius r at offsets (dx, dy) from its centre (y points down)."""
    ax, ay = np.abs(dx), np.abs(dy)
    dist = np.hypot(dx, dy)
    if shape == "circle":
        return dist <= r
    if shape == "square":
        return np.maximum(ax, ay) <= 0.8 * r
    if shape == "diamond":
        return ax + ay <= 1.05 * r
    if shape == "triangle":
        return (dy <= 0.75 * r) & (ax <= (dy + r) / 1.75 * 0.95)
    if shape == "cross":
        return ((ax <= 0.33 * r) & (ay <= r)) | ((ay <= 0.33 * r) & (ax <= r))
    if shape == "ring":
        return (dist <= r) & (dist >= 0.55 * r)
    if shape == "star":
        theta = np.arctan2(dy, dx) + np.pi / 2
        return dist <= r * (0.5 + 0.5 * np.abs(np.cos(2.5 * theta)))
    if shape == "heart":
        x, y = dx / (0.9 * r), -dy / (0.9 * r) + 0.25
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    raise ValueError(f"unknown shape {shape!r}")


def background_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A muted textured background (size, size, 3) in [0, 1]."""
    base = 0.25 + 0.3 * rng.random(3)
    base = base.mean() * 0.6 + base * 0.4  # desaturate so that object colours stay identifiable
    alt = np.clip(base + rng.choice([-1, 1]) * (0.10 + 0.08 * rng.random()), 0, 1)
    yy, xx = np.mgrid[0:size, 0:size]
    period = int(rng.integers(3, 6))
    if kind == "plain":
        pattern = np.zeros((size, size), bool)
    elif kind == "striped":
        pattern = (yy // period) % 2 == 0
    elif kind == "checkered":
        pattern = ((yy // period) + (xx // period)) % 2 == 0
    elif kind == "dotted":
        pattern = ((yy % period) == 0) & ((xx % period) == 0)
    elif kind == "grid":
        pattern = ((yy % (period + 2)) == 0) | ((xx % (period + 2)) == 0)
    elif kind == "wavy":
        pattern = np.sin(xx / 2.0 + 3 * np.sin(yy / 4.0)) > 0
    elif kind == "gradient":
        t = (xx + yy)[..., None] / (2 * size - 2)
        return (1 - t) * base + t * alt
    elif kind == "noisy":
        return np.clip(base + 0.08 * rng.standard_normal((size, size, 3)), 0, 1)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return np.where(pattern[..., None], alt, base)


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render a scene to uint8 RGB (size, size, 3)."""
    img = background_image(scene.background, size, rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    colour = np.asarray(COLOURS[scene.colour])
    half = size / 2
    base_r = SIZES[scene.size] * size
    for q in scene.quadrants:
        cy = (q // 2 + 0.5) * half + rng.uniform(-0.12, 0.12) * half
        cx = (q % 2 + 0.5) * half + rng.uniform(-0.12, 0.12) * half
        r = base_r * rng.uniform(0.9, 1.1)
        jitter = np.clip(colour * rng.uniform(0.85, 1.1) + rng.normal(0, 0.04, 3), 0, 1)
        mask = shape_mask(scene.shape, xx - cx, yy - cy, r)
        img[mask] = jitter
    if scene.distractor:  # a small dot of another colour, sometimes occluding part of an object
        cy, cx = rng.uniform(0, size, 2)
        dot_colour = np.asarray(list(COLOURS.values())[rng.integers(len(COLOURS))]) * 0.8
        img[np.hypot(xx - cx, yy - cy) <= max(1.5, 0.06 * size)] = dot_colour
    img = img + rng.normal(0, 0.035, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- captions


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[rng.integers(len(options))]


def _plural(word: str) -> str:
    return PLURALS.get(word, word + "s")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def human_caption(scene: Scene, rng: np.random.Generator, max_words: int) -> str:
    """A web-alt-text-like caption: varied template, synonyms, omissions and word order."""
    if rng.random() < 0.03:
        return _pick(rng, JUNK_CAPTIONS)
    shape = _pick(rng, SHAPE_SYNONYMS[scene.shape])
    colour = _pick(rng, COLOUR_SYNONYMS[scene.colour]) if rng.random() > 0.15 else ""
    size = _pick(rng, SIZE_SYNONYMS[scene.size]) if rng.random() < 0.5 else ""
    noun = shape if scene.count == 1 else _plural(shape)
    count = "" if scene.count == 1 else (COUNT_WORDS[scene.count] if rng.random() < 0.7 else "some")
    where = f"in the {_pick(rng, QUADRANT_SYNONYMS[scene.position])}" if scene.count == 1 and rng.random() < 0.5 else ""
    bg = f"{scene.background} background" if rng.random() < 0.4 else ""
    adjectives = " ".join(w for w in (count, size, colour) if w)
    phrase = f"{adjectives} {noun}".strip()
    single = scene.count == 1
    template = int(rng.integers(8))
    if template == 0:
        text = f"{_article(phrase) + ' ' if single else ''}{phrase} {where}"
    elif template == 1:
        text = f"photo of {_article(phrase) + ' ' if single else ''}{phrase}"
    elif template == 2:
        text = f"{noun} in {colour or 'color'} on a {bg or 'background'}"
    elif template == 3:
        text = f"{_article(noun) + ' ' if single else ''}{size + ' ' if size else ''}{noun}, {colour or 'colorful'}"
    elif template == 4:
        text = f"{phrase} {where} {'on ' + bg if bg else ''}"
    elif template == 5:
        text = f"close up of {_article(noun) if single else count or 'some'} {noun}"
    elif template == 6:
        text = f"stock image: {colour + ' ' if colour else ''}{_plural(shape)}"
    else:
        text = f"{bg.replace(' background', '') or 'simple'} pattern with {phrase}"
    words = " ".join(text.split()).split(" ")
    return " ".join(words[:max_words])


# The world's prior over what a caption can name, as sample_scene draws it (every value equally likely;
# the position is that of a single object). An "LLM hallucination" draws from it, blind to the image.
PRIOR = {"shape": SHAPES, "colour": list(COLOURS), "size": list(SIZES), "position": QUADRANTS,
         "background": BACKGROUNDS}
SYNONYMS = {"shape": SHAPE_SYNONYMS, "colour": COLOUR_SYNONYMS, "size": SIZE_SYNONYMS,
            "position": QUADRANT_SYNONYMS, "background": {b: [] for b in BACKGROUNDS}}


def _surface_forms() -> dict[str, dict[str, tuple[str, bool]]]:
    """attribute -> {phrase a caption may use: (canonical value, whether the phrase is plural)}."""
    def table(synonyms: dict[str, list[str]]) -> dict[str, tuple[str, bool]]:
        return {w: (value, False) for value, words in synonyms.items() for w in (value, *words)}

    forms = {attribute: table(synonyms) for attribute, synonyms in SYNONYMS.items()}
    forms["shape"].update({_plural(w): (value, True) for w, (value, _) in list(forms["shape"].items())})
    forms["count"] = {word: (word, n > 1) for n, word in COUNT_WORDS.items()}
    return forms


SURFACE_FORMS = _surface_forms()
_FORM_PATTERNS = {attribute: re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(forms, key=len, reverse=True))
                                        + r")\b") for attribute, forms in SURFACE_FORMS.items()}


def read_caption(text: str) -> tuple[dict[str, str], bool]:
    """What a caption's words say, as a text-only rewriter reads them: {attribute: canonical value} for
    each attribute it names (the first mention) and whether its object noun is plural."""
    lower = text.lower()
    values, plural = {}, bool(re.search(r"\bsome\b", lower))
    for attribute, pattern in _FORM_PATTERNS.items():
        match = pattern.search(lower)
        if match:
            values[attribute], is_plural = SURFACE_FORMS[attribute][match.group(1)]
            plural = plural or is_plural
    return values, plural


REWRITE_FRAMES = [  # sentence frames of an LLM paraphrase; {np} the object phrase, {rest} its clauses
    "{np}{rest}",
    "The image shows {np}{rest}",
    "A picture of {np}{rest}",
    "This photo features {np}{rest}",
    "There {is_are} {np}{rest} in this image",
    "In this picture, {np} {is_are} visible{rest}",
]
POSITION_CLAUSES = ["in the {p}", "in the {p} corner", "positioned in the {p}", "toward the {p}"]
BACKGROUND_CLAUSES = ["on a {b} background", "against a {b} background", "set on a {b} background",
                      "over a {b} backdrop"]
QUANTIFIERS = ["some", "several", "a few", "a group of"]
JUNK_FRAMES = ["{c}", "An image captioned {c}", "{a} {c}, with no further description"]
FILLERS = [", a simple digital illustration", " in a minimalist style", ", shown in high resolution",
           ", perfect for a presentation", " in a clean graphic style"]   # content-free: no attribute words


def _paraphrase_word(rng: np.random.Generator, values: dict[str, str], attribute: str) -> str:
    """The word for a named attribute: its canonical value (as an LLM tends to normalise) or one of its
    synonyms; "" when the attribute is not named."""
    if attribute not in values:
        return ""
    value = values[attribute]
    return value if rng.random() < 0.6 else _pick(rng, SYNONYMS[attribute][value])


def _object_phrase(values: dict[str, str], plural: bool, rng: np.random.Generator) -> str:
    """The noun phrase naming exactly the object attributes in `values` (shape, colour, size, count)."""
    noun = _paraphrase_word(rng, values, "shape") or _pick(rng, ["object", "shape"])
    noun = _plural(noun) if plural else noun
    size = _paraphrase_word(rng, values, "size")
    colour = _paraphrase_word(rng, values, "colour")
    if colour and rng.random() < 0.3:     # reordered: the colour after the noun
        words = f"{size} {noun} {_pick(rng, ['in', 'coloured'])} {colour}"
    else:
        words = f"{size} {colour} {noun}"
    words = " ".join(words.split())
    if not plural:
        return f"{_article(words)} {words}"
    return f"{values.get('count') or _pick(rng, QUANTIFIERS)} {words}"


def rewrite_caption(caption: str, rng: np.random.Generator, hallucination_rate: float, max_words: int) -> str:
    """A LaCLIP-style rewrite made from the caption's text alone, as an LLM paraphrase is.

    It names what the caption names (read by `read_caption`), in canonical words or synonyms, in another
    sentence frame, with its clauses reordered and sometimes content-free filler. With probability
    `hallucination_rate` it also adds one attribute the caption does not name (a position only for a
    single object; never a count), its value drawn from the world's PRIOR, independent of the image.
    A caption that names nothing (web junk) is paraphrased around its own words.
    """
    named, plural = read_caption(caption)
    values = dict(named)
    if rng.random() < hallucination_rate:
        unnamed = [a for a in PRIOR if a not in values and not (a == "position" and plural)]
        if unnamed:
            attribute = _pick(rng, unnamed)
            values[attribute] = _pick(rng, PRIOR[attribute])
    subject = caption.rstrip(".")
    if not values:                                      # web junk, nothing to name: reword around it
        text = _pick(rng, JUNK_FRAMES).format(c=subject, a=_article(subject))
    else:
        clauses = []
        if "position" in values:
            clauses.append(_pick(rng, POSITION_CLAUSES).format(p=_paraphrase_word(rng, values, "position")))
        if "background" in values:
            clauses.append(_pick(rng, BACKGROUND_CLAUSES).format(b=values["background"]))
        clauses = [clauses[i] for i in rng.permutation(len(clauses))]
        rest = "".join(" " + c for c in clauses)
        phrase = _object_phrase(values, plural, rng)
        is_are = "are" if plural else "is"
        if not named:                                   # junk plus a hallucinated attribute
            text = f"{subject} showing {phrase}{rest}"
        elif clauses and rng.random() < 0.3:            # fronted: "On a striped background, ..."
            text = f"{clauses[0]}, {phrase} {is_are} shown" + "".join(" " + c for c in clauses[1:])
        else:
            text = _pick(rng, REWRITE_FRAMES).format(np=phrase, rest=rest, is_are=is_are)
        if len(text.split()) > max_words:
            text = phrase + rest
    filler = _pick(rng, FILLERS) if rng.random() < 0.4 else ""
    if len((text + filler).split()) <= max_words:
        text += filler
    text = text[0].upper() + text[1:] + "."
    return " ".join(text.split()[:max_words])


# ----------------------------------------------------------------------------- eval sets


def eval_label(scene: Scene, attribute: str) -> str:
    """The class name of a scene in a downstream set's label space."""
    if attribute == "shape":
        return scene.shape
    if attribute == "colour":
        return scene.colour
    if attribute == "shape_colour":
        return f"{scene.colour} {scene.shape}"
    if attribute == "count":
        return {1: "one shape", 2: "two shapes", 3: "three shapes"}[scene.count]
    if attribute == "position":
        return scene.position
    raise ValueError(attribute)


def eval_classes(attribute: str) -> list[str]:
    """All class names of a label space, in label order."""
    if attribute == "shape":
        return list(SHAPES)
    if attribute == "colour":
        return list(COLOURS)
    if attribute == "shape_colour":
        return [f"{c} {s}" for s in SHAPES for c in COLOURS]
    if attribute == "count":
        return ["one shape", "two shapes", "three shapes"]
    if attribute == "position":
        return list(QUADRANTS)
    raise ValueError(attribute)


def eval_scene(attribute: str, label: int, rng: np.random.Generator) -> Scene:
    """A scene whose label in `attribute` is `label` (other attributes random)."""
    if attribute == "shape":
        return sample_scene(rng, shape=SHAPES[label])
    if attribute == "colour":
        return sample_scene(rng, colour=list(COLOURS)[label])
    if attribute == "shape_colour":
        return sample_scene(rng, shape=SHAPES[label // len(COLOURS)], colour=list(COLOURS)[label % len(COLOURS)])
    if attribute == "count":
        return sample_scene(rng, count=label + 1)
    if attribute == "position":
        s = sample_scene(rng, count=1)
        return Scene(s.shape, s.colour, s.size, 1, (label,), s.background, s.distractor)
    raise ValueError(attribute)


# ----------------------------------------------------------------------------- writing


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG", optimize=False, compress_level=6)


def _save_pngs(batch: list[tuple[Path, np.ndarray]]) -> None:
    for path, pixels in batch:
        _save_png(path, pixels)


class PngWriter:
    """Saves PNGs in `threads` - 1 worker processes, in batches, while the caller draws the next images;
    with threads = 1 it saves in the caller's process. The drawing stays sequential (one random stream),
    so the images are the same whatever the process count. Use as a context manager: leaving it waits for
    every write and raises the first error."""

    BATCH = 512

    def __init__(self, threads: int = 1):
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(threads - 1) if threads > 1 else None
        self.batch: list[tuple[Path, np.ndarray]] = []
        self.pending: list = []

    def save(self, path: Path, pixels: np.ndarray) -> None:
        if self.pool is None:
            _save_png(path, pixels)
            return
        self.batch.append((path, pixels))
        if len(self.batch) >= self.BATCH:
            self._submit()

    def _submit(self) -> None:
        if self.batch:
            self.pending.append(self.pool.submit(_save_pngs, self.batch))
            self.batch = []
        while len(self.pending) > 4:            # bounded memory; surfaces errors early
            self.pending.pop(0).result()

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None and self.pool is not None:
                self._submit()
                while self.pending:
                    self.pending.pop(0).result()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)


HELDOUT_STREAMS = 10   # first random stream of the held-out pairs (training pairs: 0, 1, 2)


def training_examples(seed: int, n_train: int, image_size: int, n_rewrites: int, max_caption_words: int,
                      rewrite_hallucination_rate: float,
                      first_stream: int = 0) -> Iterator[tuple[Scene, np.ndarray, str, list[str]]]:
    """The training pairs in order: (scene, pixels, human caption, its n_rewrites rewrites).

    Independent streams per purpose: scenes and pixels, human captions, rewrites. Rewrite settings
    therefore change nothing but the rewrites, and the rewrites see only the caption. Held-out pairs are
    drawn the same way from streams starting at HELDOUT_STREAMS."""
    train_rng, caption_rng, rewrite_rng = (np.random.default_rng([seed, first_stream + i]) for i in range(3))
    for _ in range(n_train):
        scene = sample_scene(train_rng)
        pixels = render(scene, image_size, train_rng)
        caption = human_caption(scene, caption_rng, max_caption_words)
        rewrites = [rewrite_caption(caption, rewrite_rng, rewrite_hallucination_rate, max_caption_words)
                    for _ in range(n_rewrites)]
        yield scene, pixels, caption, rewrites


def heldout_scenes(world: dict, n: int, captions=None, where=lambda i: f"held-out pair {i}") -> list[Scene]:
    """The scenes of the first n held-out pairs, regenerated as generate_world drew them (`world`: the
    config's world section or world.json; its seed, image_size and max_caption_words). With `captions`,
    each regenerated human caption must equal captions[i], else InputError at `where(i)` (the held-out file
    was written with other world settings)."""
    examples = training_examples(world["seed"], n, world["image_size"], 0, world["max_caption_words"], 0.0,
                                 HELDOUT_STREAMS)
    scenes = []
    for i, (scene, _, caption, _) in enumerate(examples):
        if captions is not None and caption != captions[i]:
            raise InputError(f"{where(i)}: caption {captions[i]!r} is not the one the world's seed {world['seed']} "
                             f"regenerates ({caption!r}); the world settings do not match the held-out file")
        scenes.append(scene)
    return scenes


def generate_world(out: Path, seed: int, n_train: int, n_eval: int, image_size: int, n_rewrites: int,
                   max_caption_words: int, sets: list[str] | None = None,
                   rewrite_hallucination_rate: float = 0.1, n_heldout: int = 0, threads: int = 1) -> dict:
    """Write the whole world under `out`; return its description (also written to world.json). `threads`
    only parallelises the PNG writing: the world is the same for any value."""
    with PngWriter(threads) as writer:
        save_png = writer.save
        out = Path(out)
        sets = list(EVAL_SETS) if sets is None else sets
        rel_paths, captions, rows = [], [], []
        rewrites: list[list[str]] = [[] for _ in range(n_rewrites)]
        examples = training_examples(seed, n_train, image_size, n_rewrites, max_caption_words,
                                     rewrite_hallucination_rate)
        for i, (scene, pixels, caption, scene_rewrites) in enumerate(progress(examples, total=n_train,
                                                                               desc="training images")):
            rel = f"images/train/{i:06d}.png"
            save_png(out / rel, pixels)
            rel_paths.append(rel)
            captions.append(caption)
            for k, text in enumerate(scene_rewrites):
                rewrites[k].append(text)
            rows.append({"image": rel, "shape": scene.shape, "colour": scene.colour, "size": scene.size,
                         "count": scene.count, "position": scene.position, "background": scene.background,
                         "distractor": scene.distractor})
        from ..common.data import write_pairs_csv

        write_pairs_csv(out / "train.csv", rel_paths, captions)
        write_lines(out / "captions.txt", captions)
        for k in range(n_rewrites):
            write_lines(out / f"rewrites_k{k}.txt", rewrites[k])
        import pandas as pd

        write_table(pd.DataFrame(rows), out / "train_attributes.csv")
        if n_heldout:
            held = training_examples(seed, n_heldout, image_size, 0, max_caption_words, 0.0, HELDOUT_STREAMS)
            held_paths, held_captions = [], []
            for i, (_, pixels, caption, _) in enumerate(progress(held, total=n_heldout, desc="held-out pairs")):
                held_paths.append(f"images/heldout/{i:06d}.png")
                save_png(out / held_paths[-1], pixels)
                held_captions.append(caption)
            write_pairs_csv(out / "heldout.csv", held_paths, held_captions)

        for s_index, name in enumerate(sets):
            attribute, template = EVAL_SETS[name]
            classes = eval_classes(attribute)
            rng = np.random.default_rng([seed, 100 + s_index])
            # At least one image per class, so every class directory exists (as ImageFolder requires).
            labels = rng.permutation(np.arange(max(n_eval, len(classes))) % len(classes))
            width = len(str(len(classes) - 1))
            dirs = [f"{j:0{width}d}_{c.replace(' ', '_')}" for j, c in enumerate(classes)]
            for i, label in enumerate(progress(labels, desc=f"eval set {name}")):
                scene = eval_scene(attribute, int(label), rng)
                save_png(out / "eval" / name / dirs[label] / f"{i:06d}.png", render(scene, image_size, rng))
            write_lines(out / "eval" / name / "classnames.txt", classes)
            write_lines(out / "eval" / name / "templates.txt", [template])
        info = {"seed": seed, "n_train": n_train, "n_eval": n_eval, "n_heldout": n_heldout, "image_size": image_size,
                "n_rewrites": n_rewrites, "rewrite_hallucination_rate": rewrite_hallucination_rate,
                "max_caption_words": max_caption_words, "shapes": SHAPES,
                "colours": list(COLOURS), "sizes": list(SIZES), "positions": QUADRANTS,
                "backgrounds": BACKGROUNDS, "eval_sets": {s: EVAL_SETS[s][0] for s in sets}}
        write_json(out / "world.json", info)
        return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="workflow config (world.* keys)")
    parser.add_argument("--out", required=True, help="output directory, e.g. results/world")
    parser.add_argument("--log", help="log file")
    parser.add_argument("--threads", type=int, default=1, help="threads (the second and further write PNGs)")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    w = load_config(args.config)["world"]
    info = generate_world(Path(args.out), w["seed"], w["n_train"], w["n_eval"], w["image_size"],
                          w["n_rewrites"], w["max_caption_words"],
                          rewrite_hallucination_rate=w["rewrite_hallucination_rate"], n_heldout=w["n_heldout"],
                          threads=args.threads)
    log.info("world written to %s: %d training pairs, %d rewrites each, eval sets %s",
             args.out, info["n_train"], info["n_rewrites"], ", ".join(info["eval_sets"]))
    return 0


if __name__ == "__main__":
    run_cli(main)
