"""Readers for the on-disk formats shared by synthetic and real data.

- Training pairs: the original CsvDataset format, a headerless CSV `image_path,caption` whose paths are
  relative to an image root (seed_spec.md section 2.3).
- Caption and rewrite files: one caption per line.
- Downstream sets: ImageFolder directories `<root>/<class_dir>/*.png` with `classnames.txt` (one readable
  class name per class directory, in sorted directory order) and optional `templates.txt`.
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
# OpenAI CLIP normalisation (what the original evaluations used; seed_spec.md section 3).
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


def load_image(path: str | os.PathLike, image_size: int | None = None) -> np.ndarray:
    """Load one image as RGB uint8 (H, W, 3); resize (short side) + centre-crop when image_size is given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if image_size is not None and img.size != (image_size, image_size):
                img = _resize_center_crop(img, image_size)
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise InputError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: corrupt or unreadable image ({exc})") from None


def _resize_center_crop(img, size: int):
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image_array(rel_paths: Sequence[str], root: str | os.PathLike, image_size: int | None = None,
                     desc: str = "images") -> np.ndarray:
    """Decode images under `root` into one uint8 array (N, H, W, 3), with a progress bar.

    All images must share a size unless image_size is given (then each is resized + centre-cropped).
    """
    from .io import progress

    root = Path(root)
    first = load_image(root / rel_paths[0], image_size)
    out = np.empty((len(rel_paths),) + first.shape, dtype=np.uint8)
    out[0] = first
    for i in progress(range(1, len(rel_paths)), desc=desc, total=len(rel_paths) - 1):
        img = load_image(root / rel_paths[i], image_size)
        if img.shape != first.shape:
            raise InputError(f"{root / rel_paths[i]}: size {img.shape[:2]} differs from {first.shape[:2]} "
                             f"of {root / rel_paths[0]}; set an image size to resize")
        out[i] = img
    return out


def to_model_input(batch, mean: Sequence[float], std: Sequence[float], augment: bool = False,
                   generator=None, scale: tuple[float, float] = (0.5, 1.0)):
    """uint8 NHWC batch (tensor or array) -> normalised float32 NCHW tensor.

    augment applies the original's RandomResizedCrop(scale=(0.5, 1.0), ratio 3/4..4/3, bilinear) per
    image, drawn from `generator` so that runs are reproducible.
    """
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(batch).permute(0, 3, 1, 2).float().div_(255.0)
    if augment:
        x = random_resized_crop(x, generator=generator, scale=scale)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def random_resized_crop(x, generator=None, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
    """RandomResizedCrop on a float NCHW batch, output the input size (torchvision's sampling rule)."""
    import math

    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    out = torch.empty_like(x)
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for i in range(n):
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
            ar = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)))
            cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
                break
        else:  # fall back to the whole image, as torchvision's centre-crop fallback at full scale
            ch, cw, top, left = h, w, 0, 0
        crop = x[i : i + 1, :, top : top + ch, left : left + cw]
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    return out


def read_imagefolder(root: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """Read an ImageFolder set: (relative image paths, int64 labels, class names, prompt templates).

    Class directories are taken in sorted order (torchvision.datasets.ImageFolder's rule), so labels
    agree with ImageFolder. classnames.txt gives the readable name per class directory (default: the
    directory name with '_' -> ' '); templates.txt (optional) gives prompt templates with '{c}'.
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
        classnames = [d.replace("_", " ") for d in class_dirs]
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


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file, naming it on error."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
