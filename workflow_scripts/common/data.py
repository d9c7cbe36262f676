"""Readers for the on-disk formats shared by synthetic and real data.

- Training pairs: the original CsvDataset format, a headerless CSV `image_path,caption` whose paths are
  relative to an image root (docs/original_code.md, "Exp 3, stage 2").
- Caption and rewrite files: one caption per line.
- Downstream sets: ImageFolder directories `<root>/<class_dir>/*.png` with `classnames.txt` (one readable
  class name per class directory, in sorted directory order) and optional `templates.txt`.
- Images to model input, per stage as `models.preprocess_config` prescribes: resize policy and
  interpolation (`resize_image`, torchvision's Resize/CenterCrop arithmetic on PIL images), the original's
  RandomResizedCrop of the full image (`random_resized_crops`), and normalisation (`to_model_input`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# OpenAI CLIP normalisation (what the original evaluations used; docs/original_code.md, "Exp 1").
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def read_pairs_csv(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read a headerless `image_path,caption` CSV; return (relative image paths, captions).

    Unlike the original reader, rows are never skipped silently: a row without two fields or with a
    path that is not an image file is an error naming the line.
    """
    path = Path(path)
    paths: list[str] = []
    captions: list[str] = []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                if len(row) != 2:
                    raise InputError(f"{path}:{lineno}: expected 2 fields (image_path,caption), got {len(row)}")
                image, caption = row
                if not image.lower().endswith(IMAGE_SUFFIXES):
                    raise InputError(f"{path}:{lineno}: {image!r} is not an image path ({'/'.join(IMAGE_SUFFIXES)})")
                if not caption.strip():
                    raise InputError(f"{path}:{lineno}: empty caption")
                paths.append(image)
                captions.append(caption)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 ({exc})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV ({exc})") from None
    if not paths:
        raise InputError(f"{path}: no rows")
    return paths, captions


def write_pairs_csv(path: str | os.PathLike, image_paths: Sequence[str], captions: Sequence[str]) -> None:
    """Write the headerless `image_path,caption` CSV atomically (csv quoting where needed)."""
    from .io import atomic_path

    if len(image_paths) != len(captions):
        raise InputError(f"{path}: {len(image_paths)} image paths but {len(captions)} captions")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        for image, caption in zip(image_paths, captions):
            writer.writerow([image, caption])


def read_text_lines(path: str | os.PathLike, allow_empty: bool = False) -> list[str]:
    """Read a one-item-per-line UTF-8 text file (without newlines).

    A missing final newline is accepted. Non-UTF-8 bytes and (unless allow_empty) empty lines are
    errors naming the 1-based line number.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for lineno, line in enumerate(lines, start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not allow_empty and not text.strip():
            raise InputError(f"{path}:{lineno}: empty line")
        out.append(text)
    return out


INTERPOLATIONS = ("bicubic", "bilinear")
# Resize/crop policies (models.<name>.preprocess.<stage>.resize), both with torchvision's arithmetic:
# shorter_side_center_crop = Resize(size) + CenterCrop(size) (the original's and open_clip's);
# squash = Resize((size, size)), the aspect ratio not kept.
RESIZE_POLICIES = ("shorter_side_center_crop", "squash")
# The original train.py's augmentation: RandomResizedCrop(size, scale=(0.5, 1.0)), default ratio 3/4..4/3.
AUGMENT_SCALE = (0.5, 1.0)
AUGMENT_RATIO = (3 / 4, 4 / 3)


def _pil_filter(interpolation: str):
    from PIL import Image

    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
    if interpolation not in filters:
        raise InputError(f"unknown interpolation {interpolation!r}; known: {list(filters)}")
    return filters[interpolation]


def open_image(path: str | os.PathLike):
    """One image as a decoded RGB PIL image (full size), naming the file if it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            rgb.load()
            return rgb
    except FileNotFoundError:
        raise InputError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: corrupt or unreadable image ({exc})") from None


def resize_image(img, size: int, interpolation: str = "bicubic", resize: str = "shorter_side_center_crop"):
    """A PIL image brought to size x size by a resize policy, with torchvision's arithmetic.

    shorter_side_center_crop: the shorter side to `size`, the longer to int(size * long / short)
    (torchvision.transforms.Resize(size)), then the centre crop with torchvision's rounding (CenterCrop).
    squash: Resize((size, size)). An image already of the target size is returned unchanged.
    """
    flt = _pil_filter(interpolation)
    w, h = img.size
    if resize == "squash":
        return img if (w, h) == (size, size) else img.resize((size, size), flt)
    if resize != "shorter_side_center_crop":
        raise InputError(f"unknown resize policy {resize!r}; known: {list(RESIZE_POLICIES)}")
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), flt)
    if (new_w, new_h) == (size, size):
        return img
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | os.PathLike, image_size: int | None = None, interpolation: str = "bicubic",
               resize: str = "shorter_side_center_crop") -> np.ndarray:
    """Load one image as RGB uint8 (H, W, 3), brought to image_size x image_size by `resize` when given."""
    img = open_image(path)
    if image_size is not None:
        img = resize_image(img, image_size, interpolation, resize)
    return np.asarray(img, dtype=np.uint8).copy()


def load_image_array(rel_paths: Sequence[str], root: str | os.PathLike, image_size: int | None = None,
                     desc: str = "images", interpolation: str = "bicubic",
                     resize: str = "shorter_side_center_crop") -> np.ndarray:
    """Decode images under `root` into one uint8 array (N, H, W, 3), with a progress bar.

    All images must share a size unless image_size is given (then each goes through resize_image).
    """
    from .io import progress

    root = Path(root)
    first = load_image(root / rel_paths[0], image_size, interpolation, resize)
    out = np.empty((len(rel_paths),) + first.shape, dtype=np.uint8)
    out[0] = first
    for i in progress(range(1, len(rel_paths)), desc=desc, total=len(rel_paths) - 1):
        img = load_image(root / rel_paths[i], image_size, interpolation, resize)
        if img.shape != first.shape:
            raise InputError(f"{root / rel_paths[i]}: size {img.shape[:2]} differs from {first.shape[:2]} "
                             f"of {root / rel_paths[0]}; set an image size to resize")
        out[i] = img
    return out


def load_preprocessed(rel_paths: Sequence[str], root: str | os.PathLike, pre: dict, desc: str = "images") -> np.ndarray:
    """uint8 (N, S, S, 3) images as a stage's preprocessing dict (models.preprocess_config) prescribes."""
    return load_image_array(rel_paths, root, pre["image_size"], desc=desc, interpolation=pre["interpolation"],
                            resize=pre["resize"])


def load_full_images(rel_paths: Sequence[str], root: str | os.PathLike, desc: str = "images") -> list:
    """Decoded full-size RGB PIL images (the input of random_resized_crops)."""
    from .io import progress

    root = Path(root)
    return [open_image(root / p) for p in progress(rel_paths, desc=desc, total=len(rel_paths))]


def random_resized_crop_box(width: int, height: int, generator=None, scale=AUGMENT_SCALE,
                            ratio=AUGMENT_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop box: torchvision's RandomResizedCrop.get_params, operation
    for operation (float32 draws, ten tries, then the centre-crop fallback), drawn from `generator` instead
    of torch's global generator, so that torch.manual_seed(s) there equals Generator().manual_seed(s) here."""
    import math

    import torch

    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return top, left, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crops(images: Sequence, size: int, generator=None, interpolation: str = "bilinear",
                         scale=AUGMENT_SCALE, ratio=AUGMENT_RATIO) -> np.ndarray:
    """The original's augmentation of full-size PIL images: per image (in order, from one generator), a
    RandomResizedCrop box of the whole image, cropped and resized to size x size with PIL (what
    torchvision.transforms.RandomResizedCrop does to a PIL image). uint8 (N, size, size, 3)."""
    flt = _pil_filter(interpolation)
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for k, img in enumerate(images):
        top, left, h, w = random_resized_crop_box(img.size[0], img.size[1], generator, scale, ratio)
        crop = img.crop((left, top, left + w, top + h))
        out[k] = np.asarray(crop if crop.size == (size, size) else crop.resize((size, size), flt), dtype=np.uint8)
    return out


def to_model_input(batch, mean: Sequence[float], std: Sequence[float]):
    """uint8 NHWC batch (tensor or array) -> normalised float32 NCHW tensor: x / 255, then (x - mean) / std
    (torchvision's ToTensor + Normalize)."""
    import torch

    x = torch.as_tensor(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def read_imagefolder(root: str | os.PathLike, raw_names: bool = False) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """Read an ImageFolder set: (relative image paths, int64 labels, class names, prompt templates).

    Class directories are taken in sorted order (torchvision.datasets.ImageFolder's rule), so labels
    agree with ImageFolder. classnames.txt gives the readable name per class directory (default: the
    directory name with '_' -> ' ', or the directory name verbatim with raw_names); templates.txt
    (optional) gives prompt templates with '{c}' ([] without the file).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: evaluation set directory not found")
    class_dirs = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not class_dirs:
        raise InputError(f"{root}: no class directories")
    names_file = root / "classnames.txt"
    if names_file.exists():
        classnames = read_text_lines(names_file)
        if len(classnames) != len(class_dirs):
            raise InputError(f"{names_file}: {len(classnames)} class names for {len(class_dirs)} class directories")
    else:
        classnames = list(class_dirs) if raw_names else [d.replace("_", " ") for d in class_dirs]
    templates_file = root / "templates.txt"
    templates = read_text_lines(templates_file) if templates_file.exists() else []
    for lineno, t in enumerate(templates, start=1):
        if "{c}" not in t:
            raise InputError(f"{templates_file}:{lineno}: template lacks the '{{c}}' placeholder")
    paths: list[str] = []
    labels: list[int] = []
    for label, d in enumerate(class_dirs):
        files = sorted(f.name for f in (root / d).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += [f"{d}/{f}" for f in files]
        labels += [label] * len(files)
    if not paths:
        raise InputError(f"{root}: no images")
    return paths, np.asarray(labels, dtype=np.int64), classnames, templates


def read_json(path: str | os.PathLike) -> dict | list:
    """Read a JSON file (UTF-8), naming it on error."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (not UTF-8: {exc})") from None
