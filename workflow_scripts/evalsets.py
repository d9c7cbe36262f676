"""Downstream evaluation sets: ImageFolder directories and torchvision datasets behind one interface.

Every set yields (uint8 HWC images in batches, int64 labels, class names, prompt templates).
torchvision sets are read from local roots and never downloaded unless the config says `download: true`.

- Class names follow the original Exp 1 convention ('_' and '/' become spaces); `raw_classnames: true`
  keeps them as the dataset spells them (the original Exp 2's prompts, e.g. `aquarium_fish`).
- Templates, first match: the set's `templates` in the config; an imagefolder set's own templates.txt;
  `evaluate.templates`. Which one a set used is its `templates_source` (logged and stored by the
  evaluate stage); a config list that differs from the set's templates.txt wins, with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .data import load_image_array, read_imagefolder
from .errors import InputError

log = logging.getLogger(__name__)

TORCHVISION_SETS = {  # kind -> (torchvision class name, split keyword handling)
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "food101": "Food101",
    "caltech101": "Caltech101",
    "oxford_pets": "OxfordIIITPet",
    "stl10": "STL10",
    "dtd": "DTD",
    "eurosat": "EuroSAT",
}


@dataclass
class EvalSet:
    """A labelled downstream set; images are decoded lazily in batches."""

    name: str
    labels: np.ndarray
    classnames: list[str]
    templates: list[str]
    _batches: object
    templates_source: str = "evaluate.templates"   # or "config" (evaluate.sets.<name>.templates), "templates.txt"
    raw_classnames: bool = False

    def batches(self, batch_size: int, image_size: int, interpolation: str = "bicubic",
                resize: str = "shorter_side_center_crop") -> Iterator[np.ndarray]:
        """uint8 (B, image_size, image_size, 3) arrays in label order (data.resize_image's policies)."""
        return self._batches(batch_size, image_size, interpolation, resize)

    def __len__(self) -> int:
        return len(self.labels)


def clean_classname(name: str) -> str:
    """'aquarium_fish' -> 'aquarium fish' (the original Exp 1 prompt convention)."""
    return " ".join(name.replace("_", " ").replace("/", " ").split())


def choose_templates(name: str, spec: dict, set_file: Sequence[str], default_templates: Sequence[str]
                     ) -> tuple[list[str], str]:
    """(templates, source) of a set: its config `templates`, else its templates.txt, else the default."""
    if spec.get("templates"):
        if set_file and list(set_file) != list(spec["templates"]):
            log.warning("evaluate.sets.%s.templates %s overrides the set's templates.txt %s", name,
                        list(spec["templates"]), list(set_file))
        return list(spec["templates"]), "config"
    if set_file:
        return list(set_file), "templates.txt"
    return list(default_templates), "evaluate.templates"


def open_set(name: str, spec: dict, default_templates: Sequence[str]) -> EvalSet:
    """Open the set `name` described by a config `evaluate.sets.<name>` entry."""
    kind = spec["kind"]
    raw = bool(spec.get("raw_classnames", False))
    if kind == "imagefolder":
        root = spec["root"]
        rel_paths, labels, classnames, set_templates = read_imagefolder(root, raw_names=raw)

        def batches(batch_size: int, image_size: int, interpolation: str, resize: str):
            for start in range(0, len(rel_paths), batch_size):
                yield load_image_array(rel_paths[start:start + batch_size], root, image_size, desc=name,
                                       interpolation=interpolation, resize=resize)

        templates, source = choose_templates(name, spec, set_templates, default_templates)
        return EvalSet(name, labels, class_names(classnames, raw), templates, batches, source, raw)
    if kind in TORCHVISION_SETS:
        return _torchvision_set(name, spec, default_templates)
    raise InputError(f"evaluate.sets.{name}.kind: unknown kind {kind!r}")


def class_names(names: Sequence[str], raw: bool) -> list[str]:
    """The names as given (raw) or cleaned (clean_classname)."""
    return list(names) if raw else [clean_classname(c) for c in names]


def _torchvision_set(name: str, spec: dict, default_templates: Sequence[str]) -> EvalSet:
    import torchvision.datasets as tvd

    from .data import resize_image

    kind, root, split, download = spec["kind"], spec["root"], spec.get("split", "test"), spec.get("download", False)
    cls = getattr(tvd, TORCHVISION_SETS[kind])
    try:
        if kind in ("cifar10", "cifar100"):
            ds = cls(root, train=(split == "train"), download=download)
        elif kind in ("caltech101", "eurosat"):
            ds = cls(root, download=download)
        elif kind == "oxford_pets":
            ds = cls(root, split="test" if split == "test" else "trainval", target_types="category", download=download)
        else:
            ds = cls(root, split=split, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted. You can use download=True..."
        raise InputError(f"evaluate.sets.{name}: {kind} not found under {root} ({exc}); "
                         "point root at a local copy or set download: true") from None
    if kind == "caltech101":
        classnames = list(ds.categories)
        labels = np.asarray(ds.y, dtype=np.int64)
    elif hasattr(ds, "targets"):
        classnames, labels = list(ds.classes), np.asarray(ds.targets, dtype=np.int64)
    elif hasattr(ds, "labels"):
        classnames, labels = list(ds.classes), np.asarray(ds.labels, dtype=np.int64)
    else:
        classnames = list(ds.classes)
        labels = np.asarray([ds[i][1] for i in range(len(ds))], dtype=np.int64)

    def batches(batch_size: int, image_size: int, interpolation: str, resize: str):
        for start in range(0, len(ds), batch_size):
            imgs = []
            for i in range(start, min(len(ds), start + batch_size)):
                img = ds[i][0].convert("RGB")
                imgs.append(np.asarray(resize_image(img, image_size, interpolation, resize), dtype=np.uint8))
            yield np.stack(imgs)

    raw = bool(spec.get("raw_classnames", False))
    templates, source = choose_templates(name, spec, [], default_templates)
    return EvalSet(name, labels, class_names(classnames, raw), templates, batches, source, raw)
