"""CLIPScore, F-CLIPScore and the misaligned words of one caption (peers.md §3.4-3.5).

- CLIPScore = 2.5 * max(cos, 0).
- Threshold mode: the words (punctuation-only words dropped) whose attribution is below epsilon, sorted
  ascending; their sum is the negative sum (0 when none), and F-CLIPScore = negative sum * (1 - max(cos, 0))
  (<= 0; closer to 0 = more aligned; a ranking score).
- Most-negative mode: the single lowest-scoring word (any word, as the original).
- `score_table` gives both per pair (negative_sum, fclipscore, worst_word...), vectorised.
- Spans (HAT): flagged words with consecutive indices merged, each span scored by its mean; the most
  negative span is the prediction.
- epsilon: the original's absolute -5e-5 (clip4dm.epsilon.absolute; tuned on fp16 ViT-B/32..H/14) or, per model, a quantile of the
  word attributions of held-out aligned pairs (attribution scales differ by orders of magnitude between
  models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from .words import is_punctuation

CLIPSCORE_W = 2.5


def clip_score(cos: np.ndarray | float) -> np.ndarray:
    return CLIPSCORE_W * np.maximum(np.asarray(cos, np.float64), 0.0)


def f_clip_score(negative_sum: np.ndarray | float, cos: np.ndarray | float) -> np.ndarray:
    """The original's F-CLIPScore: sum of below-epsilon attributions times (1 - max(cos, 0))."""
    return np.asarray(negative_sum, np.float64) * (1.0 - np.maximum(np.asarray(cos, np.float64), 0.0))


def flagged(words: Sequence[str], scores: np.ndarray, epsilon: float) -> list[tuple[int, str, float]]:
    """(index, word, score) of the non-punctuation words scoring below epsilon, most negative first."""
    out = [(i, w, float(s)) for i, (w, s) in enumerate(zip(words, scores))
           if not is_punctuation(w) and np.isfinite(s) and s < epsilon]
    return sorted(out, key=lambda t: (t[2], t[0]))


@dataclass(frozen=True)
class Span:
    start: int
    end: int             # exclusive
    text: str
    score: float         # mean attribution of its words


def spans(words: Sequence[str], scores: np.ndarray, epsilon: float) -> list[Span]:
    """Flagged words merged into runs of consecutive indices, most negative (mean) first."""
    marks = sorted((i, s) for i, _, s in flagged(words, scores, epsilon))
    runs: list[list[tuple[int, float]]] = []
    for i, s in marks:
        if runs and runs[-1][-1][0] == i - 1:
            runs[-1].append((i, s))
        else:
            runs.append([(i, s)])
    out = [Span(r[0][0], r[-1][0] + 1, " ".join(words[j] for j, _ in r), float(np.mean([s for _, s in r])))
           for r in runs]
    return sorted(out, key=lambda sp: (sp.score, sp.start))


def calibrate_epsilon(words: Sequence[Sequence[str]], scores: Sequence[np.ndarray], quantile: float) -> float:
    """The `quantile` of the word attributions (punctuation-only words and NaN dropped) of aligned pairs."""
    values = [float(s) for ws, ss in zip(words, scores) for w, s in zip(ws, ss)
              if not is_punctuation(w) and np.isfinite(s)]
    if not values:
        raise InputError("epsilon calibration: no word attributions in the held-out pairs")
    return float(np.quantile(values, quantile))


def score_table(words: Sequence[Sequence[str]], scores: Sequence[np.ndarray], cos: np.ndarray,
                epsilon: float) -> dict[str, np.ndarray]:
    """Per pair: cos, clipscore, negative_sum, fclipscore, n_flagged, most-negative word/index/score.

    Vectorised over the flattened words; equal to plain per-pair loops over `flagged`'s rule and the first
    lowest finite score (tests/test_clip4dm_scores.py)."""
    cos = np.asarray(cos, np.float64)
    n = len(scores)
    sizes = np.asarray([len(s) for s in scores], np.int64)
    flat = np.concatenate([np.asarray(s, np.float64) for s in scores]) if sizes.sum() else np.zeros(0)
    flat_words = [w for ws in words for w in ws]
    owner = np.repeat(np.arange(n), sizes)
    punct = np.fromiter((is_punctuation(w) for w in flat_words), bool, len(flat_words))
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
    return {"cos": cos, "clipscore": clip_score(cos), "negative_sum": neg, "fclipscore": f_clip_score(neg, cos),
            "n_flagged": n_flagged, "worst_index": worst_index, "worst_word": worst_word, "worst_score": worst_score}
