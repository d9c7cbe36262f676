"""FOIL / nocaps-FOIL / HAT readers: records, labels and clear errors naming the file and record."""

from __future__ import annotations

import json

import pytest

from workflow_scripts.errors import InputError


def write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_foil_format(tmp_path):
    from workflow_scripts.clip4dm.readers import read_items

    path = write(tmp_path, "foil.json", {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"id": 10, "image_id": 1, "caption": "a dog on grass ", "foil_word": "ORIG", "foil": False},
                        {"id": 11, "image_id": 1, "caption": "a cat on grass", "foil_word": "cat", "foil": True},
                        {"id": 12, "image_id": 1, "caption": "a cow on grass", "foil_word": "cow"}]})
    items = read_items("foil", path)
    assert [(i.image, i.caption, i.is_foil, i.truth) for i in items] == [
        ("a.jpg", "a dog on grass", False, ""), ("a.jpg", "a cat on grass", True, "cat"),
        ("a.jpg", "a cow on grass", True, "cow")]


def test_nocaps_gives_foil_and_baseline(tmp_path):
    from workflow_scripts.clip4dm.readers import read_items

    path = write(tmp_path, "nocaps.json", [{"image_path": "x.jpg", "baseline": "a red bus", "foil": "a red car",
                                             "replacement": ["bus", "car"], "domain": "near-domain"}])
    items = read_items("nocaps_foil", path)
    assert [(i.caption, i.is_foil, i.truth, i.group) for i in items] == [
        ("a red car", True, "car", "near-domain"), ("a red bus", False, "", "near-domain")]


def test_hat_truth_from_grounding(tmp_path):
    from workflow_scripts.clip4dm.readers import read_items

    path = write(tmp_path, "hat.json", [
        {"sample_id": 0, "image_path": "h.jpg", "caption": "a man with a red frisbee.",
         "grounding": [["a", 0], ["man", 0], ["with", 0], ["a", 0], ["red", 1], ["frisbee.", 1]]},
        {"sample_id": 1, "image_path": "h.jpg", "caption": "a man.", "grounding": [["a", 0], ["man.", 0]]}])
    items = read_items("hat", path)
    assert [(i.is_foil, i.truth) for i in items] == [(True, "red frisbee"), (False, "")]


@pytest.mark.parametrize("fmt, obj, message", [
    ("foil", {"images": [], "annotations": []}, "no records"),
    ("foil", {"images": [{"id": 1, "file_name": "a.jpg"}],
              "annotations": [{"id": 1, "image_id": 2, "caption": "x", "foil_word": "ORIG"}]},
     r"annotations\[0\]: image_id 2 is not in 'images'"),
    ("foil", {"images": [{"id": 1, "file_name": "a.jpg"}],
              "annotations": [{"id": 1, "image_id": 1, "caption": "  ", "foil_word": "ORIG"}]},
     r"annotations\[0\]: field 'caption' is empty"),
    ("nocaps_foil", [{"image_path": "x.jpg", "baseline": "b", "foil": "f", "replacement": ["bus"]}],
     r"record 0: 'replacement' should be"),
    ("hat", [{"sample_id": 0, "image_path": "h.jpg", "caption": "c", "grounding": [["a"]]}],
     r"record 0: grounding\[0\] should be"),
    ("hat", [{"sample_id": 0, "caption": "c", "grounding": []}], r"record 0: missing field 'image_path'"),
    ("hat", "{not json", "not valid JSON"),
])
def test_malformed_records_are_named(tmp_path, fmt, obj, message):
    from workflow_scripts.clip4dm.readers import read_items

    path = write(tmp_path, "bad.json", obj)
    with pytest.raises(InputError, match=message) as info:
        read_items(fmt, path)
    assert str(path) in str(info.value)


def test_unknown_format():
    from workflow_scripts.clip4dm.readers import read_items

    with pytest.raises(InputError, match="unknown benchmark format"):
        read_items("seetrue", "x.json")
