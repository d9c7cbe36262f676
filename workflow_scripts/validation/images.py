"""Header-level image checks: present, non-empty, and decodable as far as can be told without decoding.

PNG: `Image.verify` walks every chunk and checks its CRC (a truncated or damaged file fails). JPEG: the
markers up to the first scan are parsed by `Image.open`; a file that does not end with the end-of-image
marker is then decoded at 1/8 scale (`Image.draft`), which tells a truncated file (an error) from one with
trailing padding (fine). Other formats are decoded fully (rare in image-caption sets). Files are checked
in parallel processes; each check also returns the file's size and mtime for the manifest.

torchvision evaluation sets (CIFAR, Food-101, ...: `check_eval_set`) are opened exactly as the evaluation
opens them (evalsets.open_set: the same errors) and every item is decoded in full, in one process; their
manifest rows are the set's data files (size, mtime), so that replacing one is noticed like an image.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple, Sequence

from ..common.errors import InputError

JPEG_END = b"\xff\xd9"
TAIL_BYTES = 1024


class ImageRecord(NamedTuple):
    """What one check found: the file's stat, its header, and a problem ('' when the image is usable)."""

    file: str
    bytes: int
    mtime_ns: int
    format: str
    mode: str
    width: int
    height: int
    problem: str


def _ends_with_jpeg_end(file: str, size: int) -> bool:
    with open(file, "rb") as fh:
        fh.seek(max(0, size - TAIL_BYTES))
        return fh.read().rstrip(b"\x00\r\n\t ").endswith(JPEG_END)


def check_image(file: str) -> ImageRecord:
    """Check one image file (see the module docstring); never raises for a bad file."""
    from PIL import Image

    try:
        st = os.stat(file)
    except FileNotFoundError:
        return ImageRecord(file, -1, -1, "", "", 0, 0, "image not found")
    except OSError as exc:
        return ImageRecord(file, -1, -1, "", "", 0, 0, f"cannot stat ({exc})")
    if st.st_size == 0:
        return ImageRecord(file, 0, st.st_mtime_ns, "", "", 0, 0, "empty file")
    fmt = mode = ""
    width = height = 0
    try:
        with Image.open(file) as img:
            fmt, mode, (width, height) = img.format or "", img.mode, img.size
            if fmt == "PNG":
                img.verify()
            elif fmt == "JPEG":
                if not _ends_with_jpeg_end(file, st.st_size):
                    img.draft(mode if mode in ("L", "RGB") else None, (1, 1))
                    img.load()
            else:
                img.load()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad files
        return ImageRecord(file, st.st_size, st.st_mtime_ns, fmt, mode, width, height,
                           f"corrupt or unreadable image ({type(exc).__name__}: {exc})")
    if width < 1 or height < 1:
        return ImageRecord(file, st.st_size, st.st_mtime_ns, fmt, mode, width, height, "image has no pixels")
    return ImageRecord(file, st.st_size, st.st_mtime_ns, fmt, mode, width, height, "")


def _check_chunk(files: Sequence[str]) -> list[ImageRecord]:
    return [check_image(f) for f in files]


def check_images(files: Sequence[str], workers: int = 1, chunk: int = 512, desc: str = "images") -> list[ImageRecord]:
    """check_image over many files, in order, with `workers` processes and a progress bar."""
    from ..common.io import progress

    chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    bar = progress(total=len(files), desc=desc, unit="img")
    out: list[ImageRecord] = []
    if workers <= 1 or len(chunks) <= 1:
        results = map(_check_chunk, chunks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_check_chunk, chunks)
    try:
        for records in results:
            out += records
            bar.update(len(records))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    return out


class SetCheck(NamedTuple):
    """What check_eval_set found: the set's items, one record per data file (for the manifest), the range of
    its images' sizes, and its problems as (file, message), the file being the root where none is known."""

    items: int
    records: list[ImageRecord]
    sizes: tuple[int, int, int, int]        # min width, max width, min height, max height
    problems: list[tuple[str, str]]


def check_eval_set(name: str, spec: dict, default_templates: Sequence[str] = ("{c}",)) -> SetCheck:
    """Open evaluation set `name` (config `evaluate.sets.<name>`) through evalsets.open_set and decode every
    item; never raises for bad data. A set that cannot be opened is one problem (the open_set error, which
    names the set and, where it can, the file); an item that cannot be decoded is one problem per item."""
    from ..common.evalsets import open_set
    from ..common.io import progress

    root = str(spec["root"])
    try:
        evalset = open_set(name, spec, default_templates)
    except InputError as exc:
        return SetCheck(0, [], (0, 0, 0, 0), [(root, str(exc))])
    problems: list[tuple[str, str]] = []
    widths, heights = [], []
    for i in progress(range(len(evalset)), desc=f"{name} items", unit="img"):
        try:
            img = evalset.image(i)
            width, height = img.size
            if width < 1 or height < 1:
                raise ValueError("image has no pixels")
        except Exception as exc:  # whatever the set's decoder raises for a bad item
            problems.append((evalset.item_file(i) or root, f"evaluation set {name}: item {i} (label "
                             f"{int(evalset.labels[i])}) cannot be decoded ({type(exc).__name__}: {exc})"))
            continue
        widths.append(width)
        heights.append(height)
    records = []
    for file in evalset.data_files():
        try:
            st = os.stat(file)
        except OSError as exc:
            problems.append((file, f"evaluation set {name}: data file gone after the set was opened ({exc})"))
            continue
        records.append(ImageRecord(file, st.st_size, st.st_mtime_ns, spec["kind"], "", 0, 0, ""))
    sizes = (min(widths), max(widths), min(heights), max(heights)) if widths else (0, 0, 0, 0)
    return SetCheck(len(evalset), records, sizes, problems)
