"""Caption files for stage 1: read them verbatim and normalise them like the original.

Reading rule (`read_captions`, via `workflow_scripts.common.data.read_text_lines`): the file is UTF-8, one
caption per line; lines end with '\\n' or '\\r\\n' (the '\\r' is dropped); a missing final newline is
fine. Empty or whitespace-only lines and bytes that are not UTF-8 are errors naming the file and the
1-based line number. Lines are kept verbatim (without their newline) and every output written from
them ends each line with exactly one '\\n', so the original's bug (a moved last line without a newline
merging two captions) cannot happen.

Normalisation (`normalise`, docs/original_code.md, "Exp 3, stage 1", used only for TF-IDF): lowercase; every character
matching `[^\\w\\s]` becomes a space; whitespace runs collapse to one space; strip.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

from ..common.data import read_text_lines
from ..common.errors import InputError

_NON_WORD = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def read_captions(path: str | os.PathLike) -> list[str]:
    """Caption lines of `path`, verbatim without newlines (see the module docstring for the rule)."""
    lines = read_text_lines(path)
    if not lines:
        raise InputError(f"{path}: no captions")
    return lines


def normalise(text: str) -> str:
    """The original preprocessing: lowercase, non-word characters to spaces, collapse whitespace."""
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text.lower())).strip()


def normalise_all(lines: Iterable[str]) -> list[str]:
    """`normalise` applied to every line."""
    return [normalise(line) for line in lines]
