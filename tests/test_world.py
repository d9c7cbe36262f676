"""The synthetic world: determinism, formats read back as real data would be, caption properties."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest

from workflow_scripts.world import synthetic as world
from workflow_scripts.common.config import load_config
from workflow_scripts.common.data import load_image_array, read_imagefolder, read_pairs_csv, read_text_lines
from workflow_scripts.common.errors import InputError


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    kwargs = dict(seed=11, n_train=60, n_eval=20, image_size=32, n_rewrites=2, max_caption_words=20)
    world.generate_world(tmp_path / "a", **kwargs)
    world.generate_world(tmp_path / "b", **kwargs)
    a, b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 60 + 5 * 20
    assert all(a[k] == b[k] for k in a)
    world.generate_world(tmp_path / "c", **{**kwargs, "seed": 12})
    c = _all_files(tmp_path / "c")
    assert c["captions.txt"] != a["captions.txt"]
    assert c["images/train/000000.png"] != a["images/train/000000.png"]


def test_writer_processes_change_no_byte(tmp_path, monkeypatch):
    """threads > 1 writes the PNGs in worker processes (in batches, here of 16 so that several are in
    flight); the files are those of the single-process run."""
    kwargs = dict(seed=5, n_train=70, n_eval=12, image_size=32, n_rewrites=1, max_caption_words=20, n_heldout=9)
    world.generate_world(tmp_path / "one", **kwargs)
    monkeypatch.setattr(world.PngWriter, "BATCH", 16)
    world.generate_world(tmp_path / "two", threads=2, **kwargs)
    assert _all_files(tmp_path / "one") == _all_files(tmp_path / "two")


def test_a_failed_png_write_fails_the_world(tmp_path):
    blocked = tmp_path / "out"
    (blocked / "images").mkdir(parents=True)
    (blocked / "images" / "train").write_text("a file where the image directory goes")
    with pytest.raises(OSError):
        world.generate_world(blocked, seed=1, n_train=5, n_eval=2, image_size=32, n_rewrites=1,
                             max_caption_words=20, threads=2)


def test_training_set_independent_of_eval_size(tmp_path):
    kwargs = dict(seed=5, n_train=30, image_size=32, n_rewrites=1, max_caption_words=20)
    world.generate_world(tmp_path / "a", n_eval=10, **kwargs)
    world.generate_world(tmp_path / "b", n_eval=25, **kwargs)
    assert (tmp_path / "a/train.csv").read_bytes() == (tmp_path / "b/train.csv").read_bytes()


def test_csv_format_matches_original_csvdataset(tiny_world):
    # The original reader: csv.reader rows, row[0] relative path ending in .png/.jpg, row[1] caption.
    with open(tiny_world / "train.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 200 and all(len(r) == 2 and r[0].endswith(".png") for r in rows)
    paths, captions = read_pairs_csv(tiny_world / "train.csv")
    assert paths == [r[0] for r in rows] and captions == [r[1] for r in rows]
    assert read_text_lines(tiny_world / "captions.txt") == captions
    images = load_image_array(paths[:10], tiny_world)
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    for k in range(2):
        rewrites = read_text_lines(tiny_world / f"rewrites_k{k}.txt")
        assert len(rewrites) == 200


def test_eval_sets_read_by_torchvision_imagefolder(tiny_world):
    from torchvision.datasets import ImageFolder

    for name, (attribute, _) in world.EVAL_SETS.items():
        root = tiny_world / "eval" / name
        paths, labels, classnames, templates = read_imagefolder(root)
        assert classnames == world.eval_classes(attribute)
        assert templates and all("{c}" in t for t in templates)
        tv = ImageFolder(str(root))
        assert len(tv) == len(paths) == max(40, len(classnames))
        assert [t for _, t in tv.samples] == labels.tolist()
        assert [str(Path(p).relative_to(root)) for p, _ in tv.samples] == paths
        img, label = tv[0]
        assert img.size == (32, 32) and label == labels[0]


def test_human_captions_vary_and_omit_attributes(tiny_world):
    captions = read_text_lines(tiny_world / "captions.txt")
    assert len(set(captions)) > 0.6 * len(captions)
    assert max(len(c.split()) for c in captions) <= 20
    # Web-like: some captions omit the colour entirely.
    synonyms = {s for v in world.COLOUR_SYNONYMS.values() for s in v}
    assert any(not any(s in c for s in synonyms) for c in captions)


# ----------------------------------------------------------------------------- rewrites


def _vocabulary() -> dict[str, dict[str, str]]:
    """attribute -> {phrase: value} from the world's word lists: the test's own reading of what a text
    names (independent of the rewriter's `read_caption`)."""
    def table(synonyms: dict[str, list[str]]) -> dict[str, str]:
        return {w: value for value, words in synonyms.items() for w in (value, *words)}

    shape = table(world.SHAPE_SYNONYMS)
    shape.update({world._plural(w): value for w, value in list(shape.items())})
    return {"shape": shape, "colour": table(world.COLOUR_SYNONYMS), "size": table(world.SIZE_SYNONYMS),
            "count": {word: str(n) for n, word in world.COUNT_WORDS.items()},
            "position": table(world.QUADRANT_SYNONYMS), "background": {b: b for b in world.BACKGROUNDS}}


VOCABULARY = _vocabulary()
PATTERNS = {a: re.compile(r"\b(" + "|".join(map(re.escape, sorted(forms, key=len, reverse=True))) + r")\b")
            for a, forms in VOCABULARY.items()}


def _named(text: str) -> dict[str, set[str]]:
    """{attribute: the values a text names}, for every attribute it names."""
    lower = text.lower()
    return {a: {VOCABULARY[a][m] for m in pattern.findall(lower)} for a, pattern in PATTERNS.items()
            if pattern.search(lower)}


def _truth(scene: world.Scene) -> dict[str, str]:
    return {"shape": scene.shape, "colour": scene.colour, "size": scene.size, "count": str(scene.count),
            "position": scene.position, "background": scene.background}


@pytest.fixture(scope="module")
def default_world(repo):
    """The embedded default world's training pairs (config.yaml), without writing images: ~12 s."""
    w = load_config(repo / "config.yaml")["world"]
    examples = world.training_examples(w["seed"], w["n_train"], w["image_size"], w["n_rewrites"],
                                       w["max_caption_words"], w["rewrite_hallucination_rate"])
    return w, [(scene, caption, rewrites) for scene, _, caption, rewrites in examples]


def test_rewrites_name_only_their_caption_plus_chance_hallucinations(default_world):
    """Over the whole default world: every attribute value a rewrite names is named by its caption,
    except at most one added attribute per rewrite (an LLM hallucination). Those come at about the
    configured rate and agree with the image no more than chance under the prior (1 / number of values;
    sample_scene draws every value equally often): within 4 binomial standard errors, per attribute and
    pooled. A rewriter that reads the image fails both (its additions are always true)."""
    w, pairs = default_world
    rate = w["rewrite_hallucination_rate"]
    violations, added = [], []              # added: (attribute, agrees with the image)
    for scene, caption, rewrites in pairs:
        said, truth = _named(caption), _truth(scene)
        for text in rewrites:
            new = {a: v for a, v in _named(text).items() if not v <= said.get(a, set())}
            if len(new) > 1 or any(a in said or a == "count" or len(v) > 1 for a, v in new.items()):
                violations.append((caption, text))
            elif new:
                (a, values), = new.items()
                added.append((a, truth[a] in values))
    assert not violations, f"{len(violations)} rewrites name what their caption does not, e.g. {violations[:3]}"
    n = len(pairs) * w["n_rewrites"]
    assert n == 16384 * 4 and 0 < rate < 1
    se = math.sqrt(rate * (1 - rate) / n)
    # at most the rate; a little below it since a caption naming everything leaves nothing to add
    assert 0.9 * rate - 4 * se <= len(added) / n <= rate + 4 * se, len(added) / n
    expected = variance = agreed = 0.0
    for attribute in world.PRIOR:
        hits = [ok for a, ok in added if a == attribute]
        chance = 1 / len(set(VOCABULARY[attribute].values()))
        margin = 4 * math.sqrt(chance * (1 - chance) / max(len(hits), 1))
        assert len(hits) >= 30, (attribute, len(hits))
        assert abs(np.mean(hits) - chance) <= margin, (attribute, np.mean(hits), chance, margin)
        expected, variance, agreed = (expected + chance * len(hits), variance + chance * (1 - chance) * len(hits),
                                      agreed + sum(hits))
    assert abs(agreed - expected) <= 4 * math.sqrt(variance), (agreed, expected, math.sqrt(variance))


def test_rewrite_paraphrases_its_caption_and_hallucinates_at_the_given_rate():
    rng = np.random.default_rng(0)
    caption = "two big crimson boxes on striped background"
    plain = [world.rewrite_caption(caption, rng, 0.0, 20) for _ in range(200)]
    assert all(_named(t) == _named(caption) for t in plain)
    assert len(set(plain)) > 50 and caption not in plain
    assert {"squares", "red", "large"} <= {w for t in plain for w in t.lower().replace(",", "").split()}
    # rate 1: exactly one attribute more, never a count, a position only for a single object
    for caption, open_slots in [("a crimson box", {"size", "position", "background"}),
                                ("some boxes", {"colour", "size", "background"})]:
        always = [_named(world.rewrite_caption(caption, rng, 1.0, 20)) for _ in range(200)]
        assert all(len(t) == len(_named(caption)) + 1 for t in always)
        assert {a for t in always for a in t} - set(_named(caption)) == open_slots
    junk = [world.rewrite_caption("stock photo", rng, 0.0, 20) for _ in range(50)]
    assert all("stock photo" in t.lower() and not _named(t) for t in junk)
    assert all(len(t.split()) <= 6 for t in (world.rewrite_caption(caption, rng, 1.0, 6) for _ in range(50)))


def test_rewrite_settings_change_only_the_rewrites(tmp_path):
    kwargs = dict(seed=2, n_train=40, n_eval=10, image_size=32, n_rewrites=2, max_caption_words=20)
    world.generate_world(tmp_path / "a", rewrite_hallucination_rate=0.0, **kwargs)
    world.generate_world(tmp_path / "b", rewrite_hallucination_rate=1.0, **kwargs)
    a, b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    rewrite_files = {"rewrites_k0.txt", "rewrites_k1.txt", "world.json"}
    assert a.keys() == b.keys() and rewrite_files <= a.keys()
    assert all(a[k] == b[k] for k in a.keys() - rewrite_files)
    assert a["rewrites_k0.txt"] != b["rewrites_k0.txt"]


def test_eval_labels_are_balanced_and_match_rendered_scene(tmp_path):
    rng = np.random.default_rng(0)
    for label in range(len(world.SHAPES)):
        scene = world.eval_scene("shape", label, rng)
        assert scene.shape == world.SHAPES[label]
    scene = world.eval_scene("position", 2, rng)
    assert scene.count == 1 and scene.position == "bottom left"
    world.generate_world(tmp_path, seed=0, n_train=16, n_eval=24, image_size=32, n_rewrites=0, max_caption_words=20)
    _, labels, _, _ = read_imagefolder(tmp_path / "eval" / "shape")
    assert np.bincount(labels).tolist() == [3] * 8


def test_corrupt_and_missing_images_are_named(tiny_world, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match="bad.png"):
        load_image_array(["bad.png"], tmp_path)
    with pytest.raises(InputError, match="missing.png"):
        load_image_array(["missing.png"], tmp_path)


def test_malformed_csv_names_the_line(tmp_path):
    p = tmp_path / "pairs.csv"
    p.write_text("a.png,a caption\nb.png\n")
    with pytest.raises(InputError, match=r"pairs.csv:2"):
        read_pairs_csv(p)
    p.write_text("a.png,fine\nnot_an_image.txt,caption\n")
    with pytest.raises(InputError, match=r"pairs.csv:2"):
        read_pairs_csv(p)
    p.write_bytes(b"a.png,caf\xe9\n")
    with pytest.raises(InputError, match="pairs.csv"):
        read_pairs_csv(p)


def test_text_lines_errors(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(b"one\n\nthree")
    with pytest.raises(InputError, match=r"c.txt:2: empty line"):
        read_text_lines(p)
    p.write_bytes(b"one\ntwo\xff\n")
    with pytest.raises(InputError, match=r"c.txt:2: not valid UTF-8"):
        read_text_lines(p)
    p.write_bytes(b"one\ntwo")  # missing final newline is fine
    assert read_text_lines(p) == ["one", "two"]


def test_heldout_pairs_come_from_their_own_streams(tmp_path):
    """Held-out pairs (for the representation diagnostics) change nothing else the world writes, and are
    new images, not copies of training images."""
    from workflow_scripts.common.data import read_pairs_csv
    from workflow_scripts.world.synthetic import generate_world

    plain, held = tmp_path / "plain", tmp_path / "held"
    generate_world(plain, seed=5, n_train=30, n_eval=10, image_size=32, n_rewrites=1, max_caption_words=20, sets=[])
    generate_world(held, seed=5, n_train=30, n_eval=10, image_size=32, n_rewrites=1, max_caption_words=20, sets=[],
                   n_heldout=12)
    for name in ("train.csv", "captions.txt", "rewrites_k0.txt", "train_attributes.csv", "images/train/000007.png"):
        assert (plain / name).read_bytes() == (held / name).read_bytes(), name
    assert not (plain / "heldout.csv").exists()
    paths, captions = read_pairs_csv(held / "heldout.csv")
    assert len(paths) == 12 and all(p.startswith("images/heldout/") for p in paths)
    train = {(plain / p).read_bytes() for p in read_pairs_csv(plain / "train.csv")[0]}
    assert not train & {(held / p).read_bytes() for p in paths}
