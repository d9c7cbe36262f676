"""The concept vocabulary: the most frequent one- and two-word phrases of the training captions, or a
vocabulary file in SpLiCE's format (one concept per line, sorted from least to most frequent, so the top
k are the LAST k lines; peers.md 5.1).

    python -m workflow_scripts.sparse.dictionary --captions results/world/captions.txt --top-k 500 \\
        --out results/sparse/vocabulary.txt

Phrases: lower-cased word tokens ([a-z0-9]+, apostrophe suffixes kept); two-word phrases are adjacent
tokens of one caption. With stop words (scikit-learn's English list) a phrase containing one is dropped
("photo of", "of a"), as a frequency list would otherwise be topped by them. Ties in frequency are broken
alphabetically, so the list is a deterministic function of the captions.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from typing import Iterable, Sequence

from ..common.data import read_text_lines
from ..common.errors import InputError
from ..common.io import run_cli, setup_logging, write_lines

log = logging.getLogger(__name__)
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def stop_word_set(stop_words: str | None) -> frozenset[str]:
    """'english' = scikit-learn's ENGLISH_STOP_WORDS; None or 'none' = keep every word."""
    if stop_words in (None, "none"):
        return frozenset()
    if stop_words != "english":
        raise InputError(f"sparse.stop_words: expected 'english' or 'none', got {stop_words!r}")
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def caption_phrases(captions: Iterable[str], stop: frozenset[str] = frozenset(), max_words: int = 2) -> Counter:
    """Occurrences of every 1..max_words-word phrase (adjacent tokens) without a stop word."""
    counts: Counter = Counter()
    for caption in captions:
        tokens = TOKEN.findall(caption.lower())
        for n in range(1, max_words + 1):
            counts.update(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)
                          if not stop.intersection(tokens[i:i + n]))
    return counts


def top_phrases(counts: Counter, k: int) -> list[str]:
    """The k most frequent phrases, most frequent first (ties alphabetical)."""
    if k < 1:
        raise InputError(f"sparse.top_k: expected a positive number of concepts, got {k}")
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [phrase for phrase, _ in ranked[:k]]


def to_vocabulary_lines(concepts_most_frequent_first: Sequence[str]) -> list[str]:
    """SpLiCE's file order: least frequent first, most frequent last."""
    return list(reversed(concepts_most_frequent_first))


def read_vocabulary(path: str, k: int | None = None) -> list[str]:
    """The top-k concepts of a SpLiCE-format vocabulary file (the last k lines; all when k is None), most
    frequent first. A line's concept is its text before the first ", " (as SpLiCE's loader reads it:
    `line.strip().split(", ")[0]`; SpLiCE's shipped files have one concept per line and no commas).
    Empty lines and non-UTF-8 bytes are errors naming the line; repeated concepts keep their most frequent
    (last) occurrence, with a log line."""
    lines = read_text_lines(path)            # errors name the file and line (empty line, non-UTF-8)
    if not lines:
        raise InputError(f"{path}: empty vocabulary file (expected one concept per line)")
    concepts = [line.strip().split(", ")[0] for line in reversed(lines)]
    return dedupe(concepts, path)[:k] if k else dedupe(concepts, path)


def dedupe(concepts: Sequence[str], where: str) -> list[str]:
    """Concepts in order without repeats (first occurrence kept); empty concepts are an error."""
    for i, c in enumerate(concepts):
        if not c.strip():
            raise InputError(f"{where}: concept {i} is empty")
    out = list(dict.fromkeys(concepts))
    if len(out) < len(concepts):
        dropped = [c for c, n in Counter(concepts).items() if n > 1]
        log.warning("%s: %d repeated concept(s) removed (kept the first, most frequent occurrence): %s", where,
                    len(concepts) - len(out), dropped[:10])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Concept vocabulary from training captions (SpLiCE format).")
    parser.add_argument("--captions", required=True, help="caption file, one caption per line")
    parser.add_argument("--top-k", type=int, required=True)
    parser.add_argument("--stop-words", default="english", help="'english' or 'none'")
    parser.add_argument("--out", required=True, help="vocabulary .txt (least frequent first)")
    args = parser.parse_args(argv)
    setup_logging()
    counts = caption_phrases(read_text_lines(args.captions, allow_empty=True), stop_word_set(args.stop_words))
    if not counts:
        raise InputError(f"{args.captions}: no words in the captions")
    concepts = top_phrases(counts, args.top_k)
    log.info("%d distinct phrases; kept the top %d (least frequent kept: %r, %d times)", len(counts),
             len(concepts), concepts[-1], counts[concepts[-1]])
    write_lines(args.out, to_vocabulary_lines(concepts))
    return 0


if __name__ == "__main__":
    run_cli(main)
