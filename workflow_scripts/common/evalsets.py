"""Downstream evaluation sets: ImageFolder directories and torchvision datasets behind one interface.

Every set yields (uint8 HWC images in batches, int64 labels, class names, prompt templates).
torchvision sets are read from local roots and never downloaded unless the config says `download: true`.
CIFAR-10/100 copies that are not the official archive (a re-packed subset, a test's files) are read with
`verify_checksums: false` (`unverified_cifar`).

- Class names follow the original Exp 1 convention ('_' and '/' become spaces); `raw_classnames: true`
  keeps them as the dataset spells them (the original Exp 2's prompts, e.g. `aquarium_fish`).
- Templates, first match: the set's `templates` in the config; an imagefolder set's own templates.txt;
  `evaluate.templates`. Which one a set used is its `templates_source` (logged and stored by the
  evaluate stage); a config list that differs from the set's templates.txt wins, with a warning.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

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
    # for the validation (workflow_scripts/validation): the files on disk the set reads, item i decoded as
    # an RGB PIL image, and the file behind item i (None where items are rows of a data file, e.g. CIFAR's)
    _files: Callable[[], list[str]] | None = None
    _image: Callable[[int], object] | None = None
    _item_file: Callable[[int], str | None] | None = None

    def batches(self, batch_size: int, image_size: int, interpolation: str = "bicubic",
                resize: str = "shorter_side_center_crop") -> Iterator[np.ndarray]:
        """uint8 (B, image_size, image_size, 3) arrays in label order (data.resize_image's policies)."""
        return self._batches(batch_size, image_size, interpolation, resize)

    def __len__(self) -> int:
        return len(self.labels)

    def data_files(self) -> list[str]:
        """The files the set reads (a torchvision set's data files, an imagefolder set's images)."""
        return self._files() if self._files is not None else []

    def image(self, i: int):
        """Item i decoded (an RGB PIL image, full size); raises what the decoder raises for a bad item."""
        return self._image(i)

    def item_file(self, i: int) -> str | None:
        """The file item i is read from, when it is a file of its own."""
        return self._item_file(i) if self._item_file is not None else None


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

        def image(i: int):
            from PIL import Image

            with Image.open(Path(root) / rel_paths[i]) as img:
                return img.convert("RGB")

        templates, source = choose_templates(name, spec, set_templates, default_templates)
        return EvalSet(name, labels, class_names(classnames, raw), templates, batches, source, raw,
                       _files=lambda: [str(Path(root) / p) for p in rel_paths], _image=image,
                       _item_file=lambda i: str(Path(root) / rel_paths[i]))
    if kind in TORCHVISION_SETS:
        return _torchvision_set(name, spec, default_templates)
    raise InputError(f"evaluate.sets.{name}.kind: unknown kind {kind!r}")


def class_names(names: Sequence[str], raw: bool) -> list[str]:
    """The names as given (raw) or cleaned (clean_classname)."""
    return list(names) if raw else [clean_classname(c) for c in names]


@functools.lru_cache(maxsize=None)
def unverified_cifar(cls: type) -> type:
    """torchvision's CIFAR10 or CIFAR100 class (`cls`) without its checksums (`verify_checksums: false`).

    torchvision checks every batch file and batches.meta against the md5 of the official archive and
    refuses anything else as "Dataset not found or corrupted", so a set in the CIFAR python format that is
    not the archive byte for byte (a user's re-packed subset, a test's fixture) cannot be opened. This
    subclass lists the same files with md5 None, for which torchvision.datasets.utils.check_integrity checks
    presence only; everything else (the files read, their unpickling, the HWC arrays, the class names) is
    torchvision's own loading."""
    strip = lambda files: [[filename, None] for filename, _ in files]
    return type(f"Unverified{cls.__name__}", (cls,), {
        "__doc__": unverified_cifar.__doc__, "__module__": __name__,
        "train_list": strip(cls.train_list), "test_list": strip(cls.test_list),
        "meta": {**cls.meta, "md5": None},
    })


def cifar_files(cls: type, root: str | os.PathLike) -> list[Path]:
    """The files torchvision's CIFAR class `cls` opens under root (every batch, then the meta file)."""
    folder = Path(root) / cls.base_folder
    return [folder / f for f, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]


def _cifar_fault(cls: type, root: str | os.PathLike, train: bool, verify: bool) -> tuple[Path, str] | None:
    """After torchvision failed to open a CIFAR set: the first file at fault and what is wrong with it, in
    the order torchvision reads them (presence and checksum of every batch, the split's batches, the meta
    file); None when no file is found at fault."""
    from torchvision.datasets.utils import check_integrity

    folder = Path(root) / cls.base_folder
    batches = [(folder / f, md5) for f, md5 in cls.train_list + cls.test_list]
    meta = (folder / cls.meta["filename"], cls.meta["md5"])
    for path, md5 in batches + [meta]:
        if not path.is_file():
            return path, "not found"
        if verify and md5 and not check_integrity(str(path), md5):
            return path, ("its md5 differs from the official archive's (for a re-packed or partial copy in the "
                          "CIFAR format set verify_checksums: false)")
    split = {f for f, _ in (cls.train_list if train else cls.test_list)}
    for path, _ in [b for b in batches if b[0].name in split] + [meta]:
        try:
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
        except Exception as exc:  # unpickling damaged bytes raises many types
            return path, f"not a CIFAR python-format file ({type(exc).__name__}: {exc})"
        if path == meta[0]:
            if not isinstance(entry, dict) or cls.meta["key"] not in entry:
                return path, f"no {cls.meta['key']!r} in it"
            continue
        labels = entry.get("labels", entry.get("fine_labels")) if isinstance(entry, dict) else None
        data = entry.get("data") if isinstance(entry, dict) else None
        if data is None or labels is None:
            return path, "not a CIFAR batch (a dict with 'data' and 'labels' or 'fine_labels')"
        size = np.asarray(data).size
        if size % 3072 or size // 3072 != len(labels):
            return path, (f"'data' of shape {np.shape(data)} is not one 3x32x32 image per label "
                          f"({len(labels)} labels)")
    return None


def _data_files(ds, kind: str, root: str) -> list[str]:
    """The files a torchvision set reads, for the validation's manifest: CIFAR's batch and meta files; for
    the others every file under the set's own directory (e.g. <root>/food-101), so that a root shared by
    several sets is not listed whole for each."""
    if kind in ("cifar10", "cifar100"):
        return [str(p) for p in cifar_files(type(ds), root)]
    folder = getattr(ds, "_base_folder", None)
    if folder is None and isinstance(getattr(ds, "base_folder", None), str):
        folder = Path(root) / ds.base_folder
    if folder is None:
        folder = getattr(ds, "root", root)
    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file())


def _item_files(ds, kind: str) -> Callable[[int], str | None] | None:
    """The file behind item i of a torchvision set whose items are files (torchvision's attributes)."""
    if kind == "caltech101":
        return lambda i: os.path.join(ds.root, "101_ObjectCategories", ds.categories[ds.y[i]],
                                      f"image_{ds.index[i]:04d}.jpg")
    for attr in ("_image_files", "_images"):
        if isinstance(getattr(ds, attr, None), list):
            files = getattr(ds, attr)
            return lambda i: str(files[i])
    if isinstance(getattr(ds, "samples", None), list):
        return lambda i: str(ds.samples[i][0])
    return None


def _torchvision_set(name: str, spec: dict, default_templates: Sequence[str]) -> EvalSet:
    import torchvision.datasets as tvd

    from .data import resize_image

    kind, root, split, download = spec["kind"], spec["root"], spec.get("split", "test"), spec.get("download", False)
    verify = bool(spec.get("verify_checksums", True))
    cls = getattr(tvd, TORCHVISION_SETS[kind])
    if kind in ("cifar10", "cifar100") and not verify:
        cls = unverified_cifar(cls)
    try:
        if kind in ("cifar10", "cifar100"):
            ds = cls(root, train=(split == "train"), download=download)
        elif kind in ("caltech101", "eurosat"):
            ds = cls(root, download=download)
        elif kind == "oxford_pets":
            ds = cls(root, split="test" if split == "test" else "trainval", target_types="category", download=download)
        else:
            ds = cls(root, split=split, download=download)
    except Exception as exc:  # torchvision: RuntimeError "Dataset not found or corrupted..."; damaged files: many types
        fault = _cifar_fault(cls, root, split == "train", verify) if kind in ("cifar10", "cifar100") else None
        if fault is not None and fault[1] == "not found":
            raise InputError(f"evaluate.sets.{name}: {kind} not found under {root}: {fault[0]} is missing; "
                             "point root at a local copy or set download: true") from None
        if fault is not None:
            raise InputError(f"evaluate.sets.{name}: {kind} under {root} cannot be read: {fault[0]}: "
                             f"{fault[1]}") from None
        if isinstance(exc, RuntimeError):
            raise InputError(f"evaluate.sets.{name}: {kind} not found under {root} ({exc}); "
                             "point root at a local copy or set download: true") from None
        raise InputError(f"evaluate.sets.{name}: {kind} under {root} cannot be read "
                         f"({type(exc).__name__}: {exc})") from None
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
    if len(labels) != len(ds):
        raise InputError(f"evaluate.sets.{name}: {kind} under {root} has {len(ds)} images but {len(labels)} labels")

    def image(i: int):
        return ds[i][0].convert("RGB")

    def batches(batch_size: int, image_size: int, interpolation: str, resize: str):
        for start in range(0, len(ds), batch_size):
            imgs = []
            for i in range(start, min(len(ds), start + batch_size)):
                img = image(i)
                imgs.append(np.asarray(resize_image(img, image_size, interpolation, resize), dtype=np.uint8))
            yield np.stack(imgs)

    raw = bool(spec.get("raw_classnames", False))
    templates, source = choose_templates(name, spec, [], default_templates)
    return EvalSet(name, labels, class_names(classnames, raw), templates, batches, source, raw,
                   _files=lambda: _data_files(ds, kind, root), _image=image, _item_file=_item_files(ds, kind))
