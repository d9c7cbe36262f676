"""From BPE tokens to words, as CLIP4DM does it (peers.md §3.3, utils.space_tokenize / tokenizer2space).

The prompted text (template + caption) is split on spaces with "." and "," as words of their own; a word's
attribution is the mean over its BPE tokens; the template's words are dropped. Instead of encoding each
word alone and walking the full encoding by token counts (which drifts when a punctuation run such as
"..." is one BPE chunk of the full text but three "words"), each regex chunk of the tokenizer is assigned
to the word its first character belongs to: identical whenever the original's walk is consistent, and a
word that gets no token of its own (the 2nd and 3rd "." of "...") has no score (NaN) instead of shifting
every later word. The model input is built from the same chunks, so it equals `tokenizer(text)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

_WORD_RE = re.compile(r"[^\s.,]+|[.,]")


@dataclass(frozen=True)
class Tokenized:
    """One prompted caption: model tokens and the word each token belongs to."""

    tokens: np.ndarray          # [context] int64: SOT, BPE ids, EOT, zero padding (== tokenizer(text))
    eot: int                    # position of EOT (the pooled token)
    words: list[str]            # the caption's words (template dropped), lower-cased as the tokenizer cleans
    word_of_token: np.ndarray   # [context] int64: index into `words`, -1 for SOT/EOT/padding/template
    truncated: bool             # the text did not fit the context (trailing words dropped)


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text`: runs of non-space characters, with '.' and ',' apart."""
    return [m.span() for m in _WORD_RE.finditer(text)]


def _require_simple_tokenizer(tokenizer) -> None:
    for attr in ("pat", "bpe", "byte_encoder", "encoder", "clean_fn", "sot_token_id", "eot_token_id"):
        if not hasattr(tokenizer, attr):
            raise InputError(f"CLIP4DM word attributions need open_clip's SimpleTokenizer, not "
                             f"{type(tokenizer).__name__} (no {attr!r})")


def _chunk_tokens(tokenizer, chunk: str) -> list[int]:
    mapped = "".join(tokenizer.byte_encoder[b] for b in chunk.encode("utf-8"))
    return [tokenizer.encoder[t] for t in tokenizer.bpe(mapped).split(" ")]


def template_words(tokenizer, template: str) -> int:
    """The number of words of the cleaned template (InputError unless the tokenizer is open_clip's
    SimpleTokenizer): once per tokenizer and template, not per caption."""
    _require_simple_tokenizer(tokenizer)
    return len(split_words(tokenizer.clean_fn(template))) if template.strip() else 0


def tokenize_caption(tokenizer, caption: str, template: str, context_length: int,
                     truncate: bool = False, where: str = "caption", n_template: int | None = None) -> Tokenized:
    """Tokens and token->word map of `template + caption`.

    Raises InputError naming `where` for an empty caption and, unless `truncate`, for a text longer than
    the context; with `truncate`, open_clip's rule applies (cut, last position = EOT) and only the words
    whose tokens all fit are kept. `n_template`: template_words(tokenizer, template), computed here unless
    the caller has it."""
    if n_template is None:
        n_template = template_words(tokenizer, template)
    if not caption or not caption.strip():
        raise InputError(f"{where}: empty caption")
    text = tokenizer.clean_fn(template + caption)
    spans = split_words(text)
    starts = np.asarray([s for s, _ in spans])
    ids: list[int] = [tokenizer.sot_token_id]
    word_ids: list[int] = [-1]
    for m in tokenizer.pat.finditer(text):
        word = int(np.searchsorted(starts, m.start(), side="right")) - 1
        toks = _chunk_tokens(tokenizer, m.group(0))
        ids += toks
        word_ids += [word - n_template if word >= n_template else -1] * len(toks)
    ids.append(tokenizer.eot_token_id)
    word_ids.append(-1)
    words = [text[s:e] for s, e in spans[n_template:]]
    if not words:
        raise InputError(f"{where}: no words after the template {template!r}")
    truncated = len(ids) > context_length
    if truncated:
        if not truncate:
            raise InputError(f"{where}: {len(ids)} tokens with the template {template!r}, longer than the "
                             f"model's context of {context_length}: {caption!r}")
        cut = word_ids[context_length - 1]    # the word whose token gives its place to EOT, and later ones
        ids = ids[:context_length - 1] + [tokenizer.eot_token_id]
        word_ids = [w if (w < cut or cut < 0) else -1 for w in word_ids[:context_length - 1]] + [-1]
        words = words[:cut] if cut >= 0 else words
    tokens = np.zeros(context_length, np.int64)
    tokens[:len(ids)] = ids
    word_of_token = np.full(context_length, -1, np.int64)
    word_of_token[:len(word_ids)] = word_ids
    return Tokenized(tokens, len(ids) - 1, words, word_of_token, truncated)


def word_scores(token_scores: np.ndarray, items: list[Tokenized]) -> list[np.ndarray]:
    """Per caption, the mean token score of each word ([B, context] -> B arrays; NaN: word without tokens)."""
    token_scores = np.asarray(token_scores, np.float64)
    sizes = np.asarray([len(t.words) for t in items])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    wot = np.stack([t.word_of_token for t in items])
    flat = np.where(wot >= 0, wot + offsets[:-1, None], -1).ravel()
    keep = flat >= 0
    total = int(offsets[-1])
    sums = np.bincount(flat[keep], weights=token_scores.ravel()[keep], minlength=total)
    counts = np.bincount(flat[keep], minlength=total)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return [means[offsets[i]:offsets[i + 1]] for i in range(len(items))]


def is_punctuation(word: str) -> bool:
    """A word made of punctuation only (dropped by the threshold mode)."""
    return not any(ch.isalnum() for ch in word)
