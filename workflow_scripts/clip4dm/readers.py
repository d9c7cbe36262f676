"""Readers for the real dense-misalignment benchmarks CLIP4DM reports, from local files only.

Every reader returns `Item`s: image path (relative to the image root), caption, whether the caption is a
foil (misaligned), the ground-truth foil word(s) and a group (nocaps domain). Malformed records raise
InputError naming the file and the record.

- FOIL (COCO, foilv1.0_test_2017.json): {"images": [{"id", "file_name"}], "annotations": [{"id",
  "image_id", "caption", "foil_word", "foil" (bool; absent: foil_word == "ORIG" marks an original)}]}.
- nocaps-FOIL (ALOHa's nocaps-val-foil.json): a list of {"image_path", "baseline", "foil", "replacement":
  [original word, foil word], "domain"}; each record gives two items, the foil caption and the baseline
  (label "orig"), as the original's NoCapsDataset does.
- HAT (ALOHa's hat-trainval.json): a list of {"sample_id", "image_path", "caption", "grounding": [[token,
  aligned], ...]}; the truth is the tokens marked misaligned ("." and "," removed), joined by spaces; a
  caption without any is aligned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import read_json
from ..errors import InputError

@dataclass(frozen=True)
class Item:
    image: str
    caption: str
    is_foil: bool
    truth: str           # the foil word(s); "" for an aligned caption
    group: str = ""
    record: str = ""     # where it came from (file and record), for messages


def _records(path: str | Path) -> list[tuple[str, dict]]:
    """(where, record) for each record of a JSON file holding a list of records."""
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of records")
    return [(f"{path}: record {i}", rec) for i, rec in enumerate(data)]


def _field(record: dict, key: str, kind: type | tuple[type, ...], where: str):
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected an object, got {type(record).__name__}")
    if key not in record:
        raise InputError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InputError(f"{where}: field {key!r} should be {name}, got {type(value).__name__}")
    if kind is str and not value.strip():
        raise InputError(f"{where}: field {key!r} is empty")
    return value


def read_foil(path: str | Path) -> list[Item]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object with 'images' and 'annotations'")
    images = _field(data, "images", list, str(path))
    annotations = _field(data, "annotations", list, str(path))
    names = {}
    for i, img in enumerate(images):
        where = f"{path}: images[{i}]"
        names[_field(img, "id", (int, str), where)] = _field(img, "file_name", str, where)
    items = []
    for i, ann in enumerate(annotations):
        where = f"{path}: annotations[{i}]"
        image_id = _field(ann, "image_id", (int, str), where)
        if image_id not in names:
            raise InputError(f"{where}: image_id {image_id!r} is not in 'images'")
        foil_word = _field(ann, "foil_word", str, where).strip()
        is_foil = bool(ann["foil"]) if "foil" in ann else foil_word.upper() != "ORIG"
        items.append(Item(names[image_id], _field(ann, "caption", str, where).strip(), is_foil,
                          foil_word if is_foil else "", "", where))
    return items


def read_nocaps_foil(path: str | Path) -> list[Item]:
    items = []
    for where, rec in _records(path):
        image = _field(rec, "image_path", str, where)
        replacement = _field(rec, "replacement", list, where)
        if len(replacement) != 2 or not all(isinstance(w, str) for w in replacement):
            raise InputError(f"{where}: 'replacement' should be [original word, foil word]")
        domain = str(rec.get("domain", ""))
        foil = replacement[1] != replacement[0]
        items.append(Item(image, _field(rec, "foil", str, where).strip(), foil, replacement[1] if foil else "",
                          domain, where))
        items.append(Item(image, _field(rec, "baseline", str, where).strip(), False, "", domain, where + " (baseline)"))
    return items


def read_hat(path: str | Path) -> list[Item]:
    items = []
    for where, rec in _records(path):
        grounding = _field(rec, "grounding", list, where)
        words = []
        for j, pair in enumerate(grounding):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str):
                raise InputError(f"{where}: grounding[{j}] should be [token, aligned]")
            if pair[1]:
                words.append(pair[0].replace(".", "").replace(",", ""))
        truth = " ".join(w for w in words if w)
        items.append(Item(_field(rec, "image_path", str, where), _field(rec, "caption", str, where).strip(),
                          bool(truth), truth, "", where))
    return items


READERS = {"foil": read_foil, "nocaps_foil": read_nocaps_foil, "hat": read_hat}
FORMATS = tuple(READERS)


def read_items(fmt: str, path: str | Path) -> list[Item]:
    if fmt not in READERS:
        raise InputError(f"unknown benchmark format {fmt!r}; known: {list(FORMATS)}")
    items = READERS[fmt](path)
    if not items:
        raise InputError(f"{path}: no records")
    return items
