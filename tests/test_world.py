"""The synthetic world: determinism, formats read back as real data would be, caption properties."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from workflow_scripts import world
from workflow_scripts.data import load_image_array, read_imagefolder, read_pairs_csv, read_text_lines
from workflow_scripts.errors import InputError


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


def test_rewrites_name_every_attribute_and_human_captions_vary(tiny_world):
    import pandas as pd

    attrs = pd.read_csv(tiny_world / "train_attributes.csv")
    rewrites = read_text_lines(tiny_world / "rewrites_k0.txt")
    for row, text in zip(attrs.itertuples(), rewrites):
        lower = text.lower()
        assert row.colour in lower and row.size in lower and row.background in lower
        assert row.shape in lower or world._plural(row.shape) in lower
    captions = read_text_lines(tiny_world / "captions.txt")
    assert len(set(captions)) > 0.6 * len(captions)
    assert max(len(c.split()) for c in captions) <= 20
    # Web-like: some captions omit the colour entirely.
    synonyms = {s for v in world.COLOUR_SYNONYMS.values() for s in v}
    assert any(not any(s in c for s in synonyms) for c in captions)


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
