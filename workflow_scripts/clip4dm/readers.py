"""Readers for the real dense-misalignment benchmarks CLIP4DM reports, from local files only.

Every reader returns `Item`s: image path (relative to the image root), caption, whether the caption is a
foil (misaligned), the ground-truth foil word(s), a group (nocaps domain) and the caption's references (for
RefCLIPScore; never the caption itself). Malformed records raise InputError naming the file and the record.

- FOIL (COCO, foilv1.0_test_2017.json): {"images": [{"id", "file_name"}], "annotations": [{"id",
  "image_id", "caption", "foil_word", "foil" (bool; absent: foil_word == "ORIG" marks an original)}]}.
  References of a caption: the original (non-foil) captions of the same image in the file whose annotation
  id differs from its own (the original excludes the caption's id); or, given a COCO captions file
  (captions_val2014.json, the original's --reference_path), that file's captions of the image whose id
  differs.
- nocaps-FOIL (ALOHa's nocaps-val-foil.json): a list of {"image_path", "baseline", "foil", "replacement":
  [original word, foil word], "domain", "references" (optional list)}; each record gives two items, the foil
  caption and the baseline (label "orig"), as the original's NoCapsDataset does, both with its references.
- HAT (ALOHa's hat-trainval.json): a list of {"sample_id", "image_path", "caption", "grounding": [[token,
  aligned], ...], "references" (optional list)}; the truth is the tokens marked misaligned ("." and ","
  removed), joined by spaces; a caption without any is aligned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..common.data import read_json
from ..common.errors import InputError


@dataclass(frozen=True)
class Item:
    image: str
    caption: str
    is_foil: bool
    truth: str           # the foil word(s); "" for an aligned caption
    group: str = ""
    record: str = ""     # where it came from (file and record), for messages
    references: tuple[str, ...] = ()     # reference captions of its image (RefCLIPScore), never itself


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


def _references(record: dict, where: str) -> list[str]:
    """A record's optional "references": a list of strings."""
    refs = record.get("references", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise InputError(f"{where}: field 'references' should be a list of strings")
    return [r.strip() for r in refs if r.strip()]


def _without(refs, caption: str) -> tuple[str, ...]:
    return tuple(r for r in refs if r != caption)


def read_coco_captions(path: str | Path) -> dict:
    """{image_id: [(caption id, caption)]} of a COCO captions file ({"annotations": [{"id", "image_id",
    "caption"}]})."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a COCO captions object with 'annotations'")
    out: dict = {}
    for i, ann in enumerate(_field(data, "annotations", list, str(path))):
        where = f"{path}: annotations[{i}]"
        out.setdefault(_field(ann, "image_id", (int, str), where), []).append(
            (ann.get("id"), _field(ann, "caption", str, where).strip()))
    return out


def read_foil(path: str | Path, references: str | Path | None = None) -> list[Item]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object with 'images' and 'annotations'")
    images = _field(data, "images", list, str(path))
    annotations = _field(data, "annotations", list, str(path))
    names = {}
    for i, img in enumerate(images):
        where = f"{path}: images[{i}]"
        names[_field(img, "id", (int, str), where)] = _field(img, "file_name", str, where)
    rows = []
    for i, ann in enumerate(annotations):
        where = f"{path}: annotations[{i}]"
        image_id = _field(ann, "image_id", (int, str), where)
        if image_id not in names:
            raise InputError(f"{where}: image_id {image_id!r} is not in 'images'")
        foil_word = _field(ann, "foil_word", str, where).strip()
        is_foil = bool(ann["foil"]) if "foil" in ann else foil_word.upper() != "ORIG"
        rows.append((image_id, ann.get("id", ("row", i)), _field(ann, "caption", str, where).strip(), is_foil,
                     foil_word if is_foil else "", where))
    if references is None:      # the file's own original captions of the image
        pool: dict = {}
        for image_id, key, caption, is_foil, _, _ in rows:
            if not is_foil:
                pool.setdefault(image_id, []).append((key, caption))
    else:
        pool = read_coco_captions(references)
    return [Item(names[image_id], caption, is_foil, truth, "", where,
                 _without([c for k, c in pool.get(image_id, []) if k != key], caption))
            for image_id, key, caption, is_foil, truth, where in rows]


def read_nocaps_foil(path: str | Path) -> list[Item]:
    items = []
    for where, rec in _records(path):
        image = _field(rec, "image_path", str, where)
        replacement = _field(rec, "replacement", list, where)
        if len(replacement) != 2 or not all(isinstance(w, str) for w in replacement):
            raise InputError(f"{where}: 'replacement' should be [original word, foil word]")
        domain = str(rec.get("domain", ""))
        foil = replacement[1] != replacement[0]
        refs = _references(rec, where)
        caption, baseline = _field(rec, "foil", str, where).strip(), _field(rec, "baseline", str, where).strip()
        items.append(Item(image, caption, foil, replacement[1] if foil else "", domain, where,
                          _without(refs, caption)))
        items.append(Item(image, baseline, False, "", domain, where + " (baseline)", _without(refs, baseline)))
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
        caption = _field(rec, "caption", str, where).strip()
        items.append(Item(_field(rec, "image_path", str, where), caption, bool(truth), truth, "", where,
                          _without(_references(rec, where), caption)))
    return items


READERS = {"foil": read_foil, "nocaps_foil": read_nocaps_foil, "hat": read_hat}
FORMATS = tuple(READERS)


def read_items(fmt: str, path: str | Path, references: str | Path | None = None) -> list[Item]:
    """The items of a benchmark file; `references`: a COCO captions file for the foil format (else its own
    original captions are the references)."""
    if fmt not in READERS:
        raise InputError(f"unknown benchmark format {fmt!r}; known: {list(FORMATS)}")
    if references is not None and fmt != "foil":
        raise InputError(f"{path}: a references file is read for the foil format only, not {fmt!r} (its "
                         "records carry their references)")
    items = read_foil(path, references) if fmt == "foil" else READERS[fmt](path)
    if not items:
        raise InputError(f"{path}: no records")
    return items
