"""Checks of the text files a study reads: pair CSVs, caption and rewrite files.

Every check collects all problems of a file (`Problems`), naming the user's file and 1-based line, so
that one run of the validation lists everything to fix. The rules are those of the readers
(`data.read_pairs_csv`, `data.read_text_lines`), made stricter where a file would be read differently
from what its author meant: CSV quoting is parsed strictly (`"a"b` is an error, not `ab`), and a record
must sit on one line, because line i of the caption and rewrite files belongs to CSV row i.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..common.data import IMAGE_SUFFIXES
from .problems import Problems


@dataclass
class PairsFile:
    """A pair CSV as checked: per record (= per line when the file is valid) the image path and caption,
    None where the record is unusable."""

    path: str
    images: list[str | None] = field(default_factory=list)
    captions: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def valid_images(self) -> list[str]:
        return [p for p in self.images if p is not None]


def _undecodable(text: str) -> bool:
    """True if `text` holds bytes that were not UTF-8 (decoded with surrogateescape)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _read(path: str | os.PathLike, problems: Problems) -> str | None:
    try:
        return Path(path).read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        problems.add(path, 0, "file not found")
    except IsADirectoryError:
        problems.add(path, 0, "is a directory, not a file")
    return None


def check_pairs_csv(path: str | os.PathLike, problems: Problems) -> PairsFile:
    """Check a headerless `image_path,caption` CSV record by record (strict quoting, two fields, one line
    per record, an image suffix, a non-empty UTF-8 caption)."""
    out = PairsFile(str(path))
    text = _read(path, problems)
    if text is None:
        return out
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = reader.line_num
            span = f" (the record runs to line {end})" if end > start else ""
            problems.add(path, start, f"malformed CSV quoting: {exc}{span}; quote a field with commas or "
                                      'quotes as "..." and double its quotes ("")')
            out.images.append(None)
            out.captions.append(None)
            continue
        end = reader.line_num
        image, caption = _check_record(path, start, end, row, problems)
        out.images.append(image)
        out.captions.append(caption)
    if not out.images and not problems:
        problems.add(path, 0, "no rows")
    return out


def _check_record(path, start: int, end: int, row: list[str], problems: Problems) -> tuple[str | None, str | None]:
    """The (image, caption) of one parsed record, or Nones after recording what is wrong with it."""
    if not row:
        problems.add(path, start, "empty line")
        return None, None
    if end > start:
        problems.add(path, start, f"the record spans lines {start}-{end} (a line break inside a quoted caption); "
                                  "line i of the caption files must be row i")
        return None, None
    if len(row) != 2:
        hint = ": a caption with commas must be quoted" if len(row) > 2 else ""
        problems.add(path, start, f"expected 2 fields (image_path,caption), got {len(row)}{hint}")
        return None, None
    image, caption = row
    if _undecodable(image) or _undecodable(caption):
        problems.add(path, start, "not valid UTF-8")
        return None, None
    if not image.lower().endswith(IMAGE_SUFFIXES):
        problems.add(path, start, f"{image!r} is not an image path ({'/'.join(IMAGE_SUFFIXES)})")
        image = None
    if not caption.strip():
        problems.add(path, start, "empty caption")
        caption = None
    return image, caption


def check_line_file(path: str | os.PathLike, problems: Problems) -> list[str | None]:
    """Lines of a one-caption-per-line UTF-8 file (a missing final newline is fine); empty or undecodable
    lines are problems (None in the result)."""
    text = _read(path, problems)
    if text is None:
        return []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out: list[str | None] = []
    for lineno, line in enumerate(lines, start=1):
        line = line[:-1] if line.endswith("\r") else line
        if _undecodable(line):
            problems.add(path, lineno, "not valid UTF-8")
            line = None
        elif not line.strip():
            problems.add(path, lineno, "empty line")
            line = None
        out.append(line)
    return out


def check_counts(path: str | os.PathLike, lines: Sequence[str | None], pairs: PairsFile, problems: Problems) -> None:
    """Line i of a caption/rewrite file belongs to CSV row i: the counts must agree. When the file's lines
    equal the CSV's captions up to some line, that line is named as where one went missing or extra."""
    n, m = len(pairs), len(lines)
    if n == m or not n:
        return
    agree = 0
    while agree < min(n, m) and lines[agree] is not None and lines[agree] == pairs.captions[agree]:
        agree += 1
    where = (f"; its lines equal the CSV's captions up to line {agree}, so a line is "
             f"{'missing' if m < n else 'extra'} at {path}:{agree + 1} (against {pairs.path}:{agree + 1})"
             if 0 < agree < min(n, m) else "")
    problems.add(path, min(n, m) + 1, f"{m} lines but {pairs.path} has {n} rows (line i is the text of row i){where}")


def text_summary(pairs: PairsFile) -> dict:
    """Counts worth knowing about a pair CSV (written by the validation job, shown in its log)."""
    captions = [c for c in pairs.captions if c is not None]
    images = pairs.valid_images()
    return {"rows": len(pairs), "distinct_captions": len(set(captions)),
            "distinct_images": len(set(images)), "non_ascii_captions": sum(not c.isascii() for c in captions),
            "captions_with_commas": sum("," in c for c in captions),
            "captions_with_quotes": sum('"' in c for c in captions),
            "max_caption_chars": max((len(c) for c in captions), default=0)}
