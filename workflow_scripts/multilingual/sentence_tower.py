"""The text tower of multilingual models with source sentence_transformers: real captions encoded by a
SentenceTransformer saved in a local directory (multilingual.models.<name>.path), on the CPU, never
downloaded (offline mode, local files only).

Caption files (multilingual.captions.{train,heldout}): one UTF-8 CSV per split, header `id,language,caption`,
standard CSV quoting (captions may contain commas, quotes, line breaks and non-ASCII text). `id` is the
row index of data.train_csv (train) or data.heldout_csv (heldout); at most one caption per image and
language; every language of multilingual.languages has captions and no other language appears. Errors
name the file and the line (a quoted caption spanning lines: its first line).

    id,language,caption
    0,en,"a red circle, left of a blue square"
    0,it,"un cerchio rosso, a sinistra di un quadrato blu"
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..common.errors import InputError

if TYPE_CHECKING:                   # imported offline by load_sentence_model
    from sentence_transformers import SentenceTransformer

HEADER = ["id", "language", "caption"]


def _caption_row(row: list[str], where: str, split: str, languages: Sequence[str],
                 n_images: int) -> tuple[int, str, str]:
    """(image id, language, caption) of one CSV record, checked; `where` names its file and line."""
    if len(row) != 3:
        raise InputError(f"{where}: {len(row)} fields, expected 3 ({','.join(HEADER)})")
    ident, lang, caption = row
    try:
        image = int(ident)
    except ValueError:
        raise InputError(f"{where}: id {ident!r} is not an integer") from None
    if lang not in languages:
        raise InputError(f"{where}: unknown language {lang!r} (multilingual.languages: {list(languages)})")
    if not 0 <= image < n_images:
        raise InputError(f"{where}: id {image} is not a row of data.{split}_csv (rows 0..{n_images - 1})")
    if not caption.strip():
        raise InputError(f"{where}: empty caption (id {image}, language {lang!r})")
    return image, lang, caption


def read_caption_table(path: str | Path, split: str, languages: Sequence[str],
                       n_images: int) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per language (in `languages` order): the image ids (int64, file order) and their captions."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: caption file not found (multilingual.captions.{split})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise InputError(f"{path}, line {line}: not UTF-8 ({err.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    found: dict[str, tuple[list[int], list[str]]] = {lang: ([], []) for lang in languages}
    first_line: dict[tuple[int, str], int] = {}
    start, header = 1, None                                   # start: the line the next record begins on
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            where = f"{path}, line {line}"
            if header is None:
                header = [field.strip() for field in row]
                if header != HEADER:
                    raise InputError(f"{where}: header must be {','.join(HEADER)}, got {','.join(row) or 'nothing'}")
                continue
            if not row:
                continue                                      # a blank line
            image, lang, caption = _caption_row(row, where, split, languages, n_images)
            if (image, lang) in first_line:
                raise InputError(f"{where}: a second caption for id {image} in language {lang!r} "
                                 f"(the first on line {first_line[image, lang]})")
            first_line[image, lang] = line
            found[lang][0].append(image)
            found[lang][1].append(caption)
    except csv.Error as exc:
        raise InputError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    if header is None:
        raise InputError(f"{path}: empty file (expected the header {','.join(HEADER)})")
    for lang, (ids, _) in found.items():
        if not ids:
            raise InputError(f"{path}: language {lang!r} has no captions")
    return {lang: (np.asarray(ids, dtype=np.int64), texts) for lang, (ids, texts) in found.items()}


def load_sentence_model(path: str | Path, key: str = "path") -> SentenceTransformer:
    """The SentenceTransformer saved in directory `path` (config key `key`), on the CPU, from local files
    only: offline mode is switched on before sentence_transformers is imported."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"key '{key}': {path} is not a directory (a saved SentenceTransformer)")
    if not (path / "modules.json").is_file():
        raise InputError(f"key '{key}': {path} is not a saved SentenceTransformer (no modules.json)")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()                # no weight-loading bars in the job logs
    try:
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"key '{key}': {path}: not a loadable SentenceTransformer ({exc})") from None


def encode_distinct(encode_fn: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
    """encode_fn's rows for `texts` (float32, `texts` order), each distinct text encoded once."""
    distinct, index = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    return np.asarray(encode_fn(distinct.tolist()), dtype=np.float32)[index.ravel()]


def encode(model: SentenceTransformer, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """(n, d) float32 sentence embeddings of `texts` (as the model returns them; each distinct text once)."""
    return encode_distinct(lambda batch: model.encode(batch, batch_size=batch_size, convert_to_numpy=True,
                                                      show_progress_bar=False), texts)
