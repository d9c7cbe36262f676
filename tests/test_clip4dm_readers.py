"""FOIL / nocaps-FOIL / HAT readers: records, labels and clear errors naming the file and record."""

from __future__ import annotations

import json

import pytest

from workflow_scripts.common.errors import InputError


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


def test_foil_references_are_the_other_original_captions_of_the_image(tmp_path):
    """Plain rule: an item's references are the non-foil captions of its image whose annotation id differs
    from its own (a foil sharing its source caption's id does not get that caption), never itself; or, with
    a COCO captions file, that file's captions of the image with another id."""
    from workflow_scripts.clip4dm.readers import read_items

    anns = [{"id": 1, "image_id": 7, "caption": "a dog on grass", "foil_word": "ORIG", "foil": False},
            {"id": 2, "image_id": 7, "caption": "a brown dog", "foil_word": "ORIG", "foil": False},
            {"id": 3, "image_id": 7, "caption": "a dog lying down", "foil_word": "ORIG", "foil": False},
            {"id": 2, "image_id": 7, "caption": "a brown cat", "foil_word": "cat", "foil": True},
            {"id": 9, "image_id": 8, "caption": "a red bus", "foil_word": "ORIG", "foil": False},
            {"id": 10, "image_id": 8, "caption": "a red car", "foil_word": "car", "foil": True}]
    path = write(tmp_path, "foil.json", {"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 8, "file_name": "b.jpg"}],
                                         "annotations": anns})
    items = read_items("foil", path)
    plain = []
    for ann in anns:
        plain.append(tuple(o["caption"] for o in anns if not o["foil"] and o["image_id"] == ann["image_id"]
                           and o["id"] != ann["id"] and o["caption"] != ann["caption"]))
    assert [i.references for i in items] == plain
    assert items[3].references == ("a dog on grass", "a dog lying down") and items[4].references == ()
    coco = write(tmp_path, "captions.json", {"annotations": [
        {"id": 1, "image_id": 7, "caption": "a dog on grass"}, {"id": 5, "image_id": 7, "caption": "grass "},
        {"id": 9, "image_id": 8, "caption": "a red bus"}]})
    items = read_items("foil", path, coco)
    assert [i.references for i in items] == [("grass",), ("a dog on grass", "grass"), ("a dog on grass", "grass"),
                                             ("a dog on grass", "grass"), (), ("a red bus",)]
    with pytest.raises(InputError, match="for the foil format only"):
        read_items("hat", path, coco)


def test_nocaps_and_hat_references_from_the_records(tmp_path):
    from workflow_scripts.clip4dm.readers import read_items

    path = write(tmp_path, "nocaps.json", [{"image_path": "x.jpg", "baseline": "a red bus", "foil": "a red car",
                                             "replacement": ["bus", "car"], "references": ["a red bus", "a bus "]}])
    items = read_items("nocaps_foil", path)
    assert [i.references for i in items] == [("a red bus", "a bus"), ("a bus",)]
    path = write(tmp_path, "hat.json", [{"sample_id": 0, "image_path": "h.jpg", "caption": "a man.",
                                         "grounding": [["a", 0], ["man.", 0]], "references": ["a person", "a man."]}])
    assert read_items("hat", path)[0].references == ("a person",)
    bad = write(tmp_path, "bad.json", [{"sample_id": 0, "image_path": "h.jpg", "caption": "a man.",
                                        "grounding": [], "references": "a person"}])
    with pytest.raises(InputError, match=r"record 0: field 'references' should be a list of strings"):
        read_items("hat", bad)


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
