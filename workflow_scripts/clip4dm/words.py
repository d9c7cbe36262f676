"""From BPE tokens to words (peers.md §3.3, the original's utils.space_tokenize / tokenizer2space).

Two rules (clip4dm.words):
- `original` (default): the original's. The raw prompted text (template + caption) is split on " " only, with
  "." and "," words of their own (so "dog\tand" is one word); each word is BPE-encoded alone and that many
  tokens of the full encoding are taken in order (the walk); a word's attribution is the mean over its tokens;
  a word that gets no token (e.g. a lone "\t", or a word past the end of the walk) is dropped; then the first
  len(template.split()) words are dropped. Where one BPE chunk of the full text spans several words (a
  punctuation run such as "..." or "!."), the walk drifts exactly as the original's does. With truncation,
  the tokens past the context have no score and a word cut by the context keeps the mean of its tokens that
  fit (as the original's zip over the truncated scores). Words keep their raw spelling.
- `cleaned` (ours, earlier default): the tokenizer-cleaned text (ftfy, html unescape, whitespace collapsed,
  lower case) split on any whitespace with "." and "," apart; each regex chunk of the tokenizer is assigned to
  the word its first character belongs to, so a punctuation run leaves the extra words without a score (NaN)
  instead of shifting every later word; with truncation, only the words whose tokens all fit are kept.
In both, the model input equals `tokenizer(template + caption)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..common.errors import InputError

_WORD_RE = re.compile(r"[^\s.,]+|[.,]")
WORD_RULES = ("original", "cleaned")
PUNCTUATION_RULES = ("original", "alphanumeric")
ORIGINAL_PUNCTUATION = '.,!"?;:" '      # the original's threshold-mode filter: a word that is a substring is dropped


@dataclass(frozen=True)
class Tokenized:
    """One prompted caption: model tokens and the word each token belongs to."""

    tokens: np.ndarray          # [context] int64: SOT, BPE ids, EOT, zero padding (== tokenizer(text))
    eot: int                    # position of EOT (the pooled token)
    words: list[str]            # the caption's words (template dropped)
    word_of_token: np.ndarray   # [context] int64: index into `words`, -1 for SOT/EOT/padding/template
    truncated: bool             # the text did not fit the context


def _check_rule(rule: str) -> None:
    if rule not in WORD_RULES:
        raise InputError(f"unknown clip4dm.words rule {rule!r}; known: {list(WORD_RULES)}")


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text` (cleaned rule): runs of non-whitespace, '.' and ',' apart."""
    return [m.span() for m in _WORD_RE.finditer(text)]


def space_tokenize(text: str) -> list[str]:
    """The original's utils.space_tokenize: split on " " only, "." and "," words of their own."""
    return re.findall(r"[^ .,]+|[.,]", text)


def _require_simple_tokenizer(tokenizer) -> None:
    for attr in ("pat", "bpe", "byte_encoder", "encoder", "clean_fn", "sot_token_id", "eot_token_id", "encode"):
        if not hasattr(tokenizer, attr):
            raise InputError(f"CLIP4DM word attributions need open_clip's SimpleTokenizer, not "
                             f"{type(tokenizer).__name__} (no {attr!r})")


def _chunk_tokens(tokenizer, chunk: str) -> list[int]:
    mapped = "".join(tokenizer.byte_encoder[b] for b in chunk.encode("utf-8"))
    return [tokenizer.encoder[t] for t in tokenizer.bpe(mapped).split(" ")]


def template_words(tokenizer, template: str, rule: str = "original") -> int:
    """The number of template words dropped from the front (InputError unless the tokenizer is open_clip's
    SimpleTokenizer): len(template.split()) as the original (rule original), or the words of the cleaned
    template (rule cleaned). Once per tokenizer and template, not per caption."""
    _require_simple_tokenizer(tokenizer)
    _check_rule(rule)
    if rule == "original":
        return len(template.split())
    return len(split_words(tokenizer.clean_fn(template))) if template.strip() else 0


_COUNTS: dict[int, tuple[object, dict[str, int]]] = {}


def _token_count(tokenizer, word: str) -> int:
    """len(tokenizer.encode(word)), cached per tokenizer (words repeat across captions)."""
    held = _COUNTS.get(id(tokenizer))
    if held is None or held[0] is not tokenizer:
        held = _COUNTS[id(tokenizer)] = (tokenizer, {})
    counts = held[1]
    n = counts.get(word)
    if n is None:
        n = counts[word] = len(tokenizer.encode(word))
    return n


def _original_walk(tokenizer, text: str, context_length: int, n_template: int):
    """(ids, word_ids, words, truncated) by the original's walk (see the module docstring)."""
    ids = tokenizer.encode(text)
    truncated = len(ids) + 2 > context_length
    scored = context_length - 2 if truncated else len(ids)     # tokens that reach the model (have a score)
    ids = ids[:scored]
    word_ids = [-1] * len(ids)
    words: list[str] = []
    pos = 0
    for word in space_tokenize(text):
        start = pos
        pos += _token_count(tokenizer, word)
        stop = min(pos, scored)
        if stop <= start:          # no token of its own: dropped, as the original's ZeroDivisionError branch
            continue
        for j in range(start, stop):
            word_ids[j] = len(words)
        words.append(word)
    word_ids = [w - n_template if w >= n_template else -1 for w in word_ids]
    return ids, word_ids, words[n_template:], truncated


def _cleaned_chunks(tokenizer, text: str, context_length: int, n_template: int):
    """(ids, word_ids, words, truncated) by chunk assignment over the cleaned text (rule cleaned)."""
    text = tokenizer.clean_fn(text)
    spans = split_words(text)
    starts = np.asarray([s for s, _ in spans])
    ids: list[int] = []
    word_ids: list[int] = []
    for m in tokenizer.pat.finditer(text):
        word = int(np.searchsorted(starts, m.start(), side="right")) - 1
        toks = _chunk_tokens(tokenizer, m.group(0))
        ids += toks
        word_ids += [word - n_template if word >= n_template else -1] * len(toks)
    words = [text[s:e] for s, e in spans[n_template:]]
    truncated = len(ids) + 2 > context_length
    if truncated:
        cut = word_ids[context_length - 2]    # the word whose token gives its place to EOT, and later ones
        ids = ids[:context_length - 2]
        word_ids = [w if (w < cut or cut < 0) else -1 for w in word_ids[:context_length - 2]]
        words = words[:cut] if cut >= 0 else words
    return ids, word_ids, words, truncated


def tokenize_caption(tokenizer, caption: str, template: str, context_length: int,
                     truncate: bool = False, where: str = "caption", n_template: int | None = None,
                     rule: str = "original") -> Tokenized:
    """Tokens and token->word map of `template + caption` by the word `rule` (module docstring).

    Raises InputError naming `where` for an empty caption, a caption without words after the template and,
    unless `truncate`, for a text longer than the context; with `truncate`, open_clip's rule applies (cut,
    last position = EOT). `n_template`: template_words(tokenizer, template, rule), computed here unless the
    caller has it."""
    _check_rule(rule)
    if n_template is None:
        n_template = template_words(tokenizer, template, rule)
    if not caption or not caption.strip():
        raise InputError(f"{where}: empty caption")
    walk = _original_walk if rule == "original" else _cleaned_chunks
    ids, word_ids, words, truncated = walk(tokenizer, template + caption, context_length, n_template)
    if truncated and not truncate:
        n = len(tokenizer.encode(template + caption)) + 2
        raise InputError(f"{where}: {n} tokens with the template {template!r}, longer than the "
                         f"model's context of {context_length}: {caption!r}")
    if not words and not truncated:
        raise InputError(f"{where}: no words after the template {template!r}: {caption!r}")
    ids = [tokenizer.sot_token_id] + ids + [tokenizer.eot_token_id]
    word_ids = [-1] + word_ids + [-1]
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


def is_punctuation(word: str, rule: str = "original") -> bool:
    """A word the threshold mode drops (clip4dm.punctuation): `original` = a substring of '.,!"?;:" ' or
    whitespace only (the original's two filters); `alphanumeric` = no letter or digit (ours, earlier)."""
    if rule == "original":
        return word in ORIGINAL_PUNCTUATION or not word.strip()
    if rule == "alphanumeric":
        return not any(ch.isalnum() for ch in word)
    raise InputError(f"unknown clip4dm.punctuation rule {rule!r}; known: {list(PUNCTUATION_RULES)}")
