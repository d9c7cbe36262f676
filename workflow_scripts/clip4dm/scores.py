"""CLIPScore, F-CLIPScore, RefCLIPScore and the misaligned words of one caption (peers.md §3.4-3.5).

- CLIPScore = 2.5 * max(cos, 0).
- F-CLIPScore = (negative term) * (1 - max(cos, 0)) (<= 0; closer to 0 = more aligned; a ranking score), with
  the negative term by mode (clip4dm.fclipscore, per reader), as the original's main.py computes it:
  - `threshold`: the sum of the attributions below epsilon of the words the threshold mode keeps (the
    punctuation filter, clip4dm.punctuation), 0 when none (the original's sorted_by='threshold'; its
    Rich-HF / SeeTRUE rule);
  - `most_negative`: the single lowest word attribution, any word, punctuation included (sorted_by=
    'most_negative'; its FOIL / nocaps-FOIL rule);
  - `span_mean`: the flagged words of the threshold mode merged into runs of consecutive indices (indices
    counted after the punctuation filter, as the original's enumerate), each run scored by its mean; the most
    negative run's mean, 0 when nothing is flagged (its HAT rule, utils.word_seq_to_tokens_with_score).
- The most-negative word (localisation, every mode) is the first lowest finite score.
- RefCLIPScore: harmonic mean of CLIPScore and weight * max(max over the references of cos(text, ref), 0)
  (clip4dm.refclipscore; `first` = only the first reference, the original's get_reference_term, which
  returns inside its loop).
- epsilon: the original's absolute -5e-5 (clip4dm.epsilon.absolute; tuned on fp16 ViT-B/32..H/14) or, per
  model, a quantile of the word attributions of held-out aligned pairs (attribution scales differ by orders
  of magnitude between models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..common.errors import InputError
from .words import is_punctuation

CLIPSCORE_W = 2.5
FCLIP_MODES = ("threshold", "most_negative", "span_mean")
REFERENCE_RULES = ("all", "first")


def clip_score(cos: np.ndarray | float) -> np.ndarray:
    return CLIPSCORE_W * np.maximum(np.asarray(cos, np.float64), 0.0)


def f_clip_score(negative: np.ndarray | float, cos: np.ndarray | float) -> np.ndarray:
    """The original's F-CLIPScore: the mode's negative term times (1 - max(cos, 0))."""
    return np.asarray(negative, np.float64) * (1.0 - np.maximum(np.asarray(cos, np.float64), 0.0))


def check_mode(mode: str) -> str:
    if mode not in FCLIP_MODES:
        raise InputError(f"unknown F-CLIPScore mode {mode!r}; known: {list(FCLIP_MODES)}")
    return mode


def flagged(words: Sequence[str], scores: np.ndarray, epsilon: float,
            punctuation: str = "original") -> list[tuple[int, str, float]]:
    """(index, word, score) of the words the threshold mode keeps scoring below epsilon, most negative first."""
    out = [(i, w, float(s)) for i, (w, s) in enumerate(zip(words, scores))
           if not is_punctuation(w, punctuation) and np.isfinite(s) and s < epsilon]
    return sorted(out, key=lambda t: (t[2], t[0]))


@dataclass(frozen=True)
class Span:
    start: int           # index of its first word in `words`
    end: int             # index after its last word
    text: str            # its words joined by spaces
    score: float         # mean attribution of its words


def spans(words: Sequence[str], scores: np.ndarray, epsilon: float, punctuation: str = "original") -> list[Span]:
    """Flagged words merged into runs of consecutive indices, counted after the punctuation filter (a dropped
    "," between two flagged words does not split them, as in the original), most negative (mean) first;
    ties: the earlier run."""
    kept = [i for i, w in enumerate(words) if not is_punctuation(w, punctuation)]
    runs: list[list[int]] = []        # positions k in `kept`
    last = None
    for k, i in enumerate(kept):
        s = scores[i]
        if not (np.isfinite(s) and s < epsilon):
            continue
        if runs and last == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
        last = k
    out = []
    for r in runs:
        idx = [kept[k] for k in r]
        out.append(Span(idx[0], idx[-1] + 1, " ".join(words[i] for i in idx),
                        float(np.mean([scores[i] for i in idx]))))
    return sorted(out, key=lambda sp: (sp.score, sp.start))


def calibrate_epsilon(words: Sequence[Sequence[str]], scores: Sequence[np.ndarray], quantile: float,
                      punctuation: str = "original") -> float:
    """The `quantile` of the word attributions (the words the threshold mode keeps, NaN dropped) of aligned
    pairs."""
    values = [float(s) for ws, ss in zip(words, scores) for w, s in zip(ws, ss)
              if not is_punctuation(w, punctuation) and np.isfinite(s)]
    if not values:
        raise InputError("epsilon calibration: no word attributions in the held-out pairs")
    return float(np.quantile(values, quantile))


def score_table(words: Sequence[Sequence[str]], scores: Sequence[np.ndarray], cos: np.ndarray,
                epsilon: float, mode: str = "threshold", punctuation: str = "original") -> dict[str, np.ndarray]:
    """Per pair: cos, clipscore, negative_sum (threshold), span_score, span (text), worst word/index/score,
    negative (the mode's term), fclipscore (by `mode`), n_flagged.

    The threshold sum and the most-negative word are vectorised over the flattened words; equal to plain
    per-pair loops of the original's rules (tests/test_clip4dm_scores.py)."""
    check_mode(mode)
    cos = np.asarray(cos, np.float64)
    n = len(scores)
    sizes = np.asarray([len(s) for s in scores], np.int64)
    flat = np.concatenate([np.asarray(s, np.float64) for s in scores]) if sizes.sum() else np.zeros(0)
    flat_words = [w for ws in words for w in ws]
    owner = np.repeat(np.arange(n), sizes)
    punct = np.fromiter((is_punctuation(w, punctuation) for w in flat_words), bool, len(flat_words))
    finite = np.isfinite(flat)
    below = finite & ~punct & (flat < epsilon)
    neg = np.bincount(owner[below], weights=flat[below], minlength=n)
    n_flagged = np.bincount(owner[below], minlength=n)
    # most negative word: the first minimum of each pair's finite scores
    order = np.lexsort((np.arange(len(flat)), np.where(finite, flat, np.inf), owner))
    first = np.ones(len(order), bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    picks = order[first]
    worst_index = np.full(n, -1)
    worst_score = np.full(n, np.nan)
    worst_word = np.full(n, "", dtype=object)
    ok = finite[picks]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pick_owner = owner[picks][ok]
    worst_index[pick_owner] = picks[ok] - starts[pick_owner]
    worst_score[pick_owner] = flat[picks[ok]]
    worst_word[pick_owner] = [flat_words[j] for j in picks[ok]]
    span_score = np.zeros(n)
    span_text = np.full(n, "", dtype=object)
    for i in np.flatnonzero(n_flagged):       # only pairs with a flagged word have a span
        best = spans(words[i], np.asarray(scores[i], np.float64), epsilon, punctuation)[0]
        span_score[i], span_text[i] = best.score, best.text
    negative = {"threshold": neg, "span_mean": span_score,
                "most_negative": np.where(np.isfinite(worst_score), worst_score, 0.0)}[mode]
    return {"cos": cos, "clipscore": clip_score(cos), "negative_sum": neg, "span_score": span_score,
            "span": span_text, "worst_index": worst_index, "worst_word": worst_word, "worst_score": worst_score,
            "negative": negative, "fclipscore": f_clip_score(negative, cos), "n_flagged": n_flagged}


def ref_clip_score(clipscore: np.ndarray, text_emb: np.ndarray, refs: Sequence[np.ndarray],
                   rule: str = "all", weight: float = CLIPSCORE_W) -> np.ndarray:
    """RefCLIPScore per caption: 2 a b / (a + b) with a = CLIPScore and b = weight * max(max_r cos(text,
    ref_r), 0) over the caption's references (rule all) or its first reference only (rule first, the
    original's get_reference_term); 0 where a + b = 0; NaN for a caption without references.
    `text_emb` [N, E] and each refs[i] [R_i, E] are normalised here."""
    if rule not in REFERENCE_RULES:
        raise InputError(f"unknown clip4dm.refclipscore.references {rule!r}; known: {list(REFERENCE_RULES)}")
    a = np.asarray(clipscore, np.float64)
    text = np.asarray(text_emb, np.float64)
    text = text / np.linalg.norm(text, axis=-1, keepdims=True)
    out = np.full(len(a), np.nan)
    for i, r in enumerate(refs):
        r = np.asarray(r, np.float64).reshape(-1, text.shape[-1])
        if not len(r):
            continue
        if rule == "first":
            r = r[:1]
        r = r / np.linalg.norm(r, axis=-1, keepdims=True)
        b = weight * max(float((r @ text[i]).max()), 0.0)
        out[i] = 2 * a[i] * b / (a[i] + b) if a[i] + b > 0 else 0.0
    return out
