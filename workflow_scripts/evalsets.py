"""Downstream evaluation sets: ImageFolder directories and torchvision datasets behind one interface.

Every set yields (uint8 HWC images in batches, int64 labels, readable class names, prompt templates).
torchvision sets are read from local roots and never downloaded unless the config says `download: true`.
Class names follow the original Exp 1 convention ('_' and '/' become spaces, seed_spec.md section 3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .data import load_image_array, read_imagefolder
from .errors import InputError

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

    def batches(self, batch_size: int, image_size: int) -> Iterator[np.ndarray]:
        """uint8 (B, image_size, image_size, 3) arrays in label order."""
        return self._batches(batch_size, image_size)

    def __len__(self) -> int:
        return len(self.labels)


def clean_classname(name: str) -> str:
    """'aquarium_fish' -> 'aquarium fish' (the original Exp 1 prompt convention)."""
    return " ".join(name.replace("_", " ").replace("/", " ").split())


def open_set(name: str, spec: dict, default_templates: Sequence[str]) -> EvalSet:
    """Open the set `name` described by a config `evaluate.sets.<name>` entry."""
    kind = spec["kind"]
    if kind == "imagefolder":
        root = spec["root"]
        rel_paths, labels, classnames, templates = read_imagefolder(root)

        def batches(batch_size: int, image_size: int):
            for start in range(0, len(rel_paths), batch_size):
                yield load_image_array(rel_paths[start:start + batch_size], root, image_size, desc=name)

        return EvalSet(name, labels, [clean_classname(c) for c in classnames],
                       templates or list(default_templates), batches)
    if kind in TORCHVISION_SETS:
        return _torchvision_set(name, spec, default_templates)
    raise InputError(f"evaluate.sets.{name}.kind: unknown kind {kind!r}")


def _torchvision_set(name: str, spec: dict, default_templates: Sequence[str]) -> EvalSet:
    import torchvision.datasets as tvd

    from .data import _resize_center_crop

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

    def batches(batch_size: int, image_size: int):
        for start in range(0, len(ds), batch_size):
            imgs = []
            for i in range(start, min(len(ds), start + batch_size)):
                img = ds[i][0].convert("RGB")
                imgs.append(np.asarray(_resize_center_crop(img, image_size), dtype=np.uint8))
            yield np.stack(imgs)

    return EvalSet(name, labels, [clean_classname(c) for c in classnames], list(default_templates), batches)
