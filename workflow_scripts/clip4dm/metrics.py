"""Detection and localisation metrics, and the misalignment rate estimated from scores alone.

- `ap_auroc`: sklearn average_precision_score / roc_auc_score (NaN when only one class is present).
- `localisation_accuracy`: the most-negative word equals the foil word (lower-case exact match after the
  original's split()[0].split("_")[-1], as its FOIL evaluation).
- `span_correct`: HAT's rule, the predicted span is a substring of the ground-truth hallucinated string.
- `estimate_misaligned_fraction`: Storey's estimator of the null proportion with the held-out aligned
  pairs as the null distribution: each pair's p-value is its score's position in the aligned scores
  (randomised between ties, so that aligned pairs' p-values are uniform even for the tied F-CLIPScores
  at 0); pi0 = #{p > lambda} / (n (1 - lambda)); misaligned = 1 - pi0, clipped to [0, 1]. It assumes
  misaligned pairs rarely score like the upper half of aligned ones (otherwise it underestimates), and
  that the held-out pairs are distributed like the set's aligned pairs (pairs the model was trained on
  score higher than held-out ones, which also biases it down).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ap_auroc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(AP, AUROC) of `scores` (higher = positive) for binary `labels`; NaN without both classes."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    if labels.all() or not labels.any():
        return float("nan"), float("nan")
    return float(average_precision_score(labels, scores)), float(roc_auc_score(labels, scores))


def predicted_foil_word(word: str) -> str:
    """The original's FOIL prediction from the most-negative word: lower-cased, its first whitespace-separated
    part, the part after its last "_" (main.py: negative_word.split()[0].split("_")[-1]); "" for none."""
    parts = word.strip().lower().split()
    return parts[0].split("_")[-1] if parts else ""


def localisation_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Fraction of foils whose predicted word (predicted_foil_word) equals the foil word (lower case)."""
    if not len(truth):
        return float("nan")
    return float(np.mean([predicted_foil_word(p) == t.strip().lower() for p, t in zip(predicted, truth)]))


def span_correct(span: str, truth: str) -> bool:
    """HAT: the predicted span is a non-empty substring of the ground-truth hallucinated words."""
    return bool(span) and span.lower() in truth.lower()


def null_pvalues(scores: np.ndarray, null: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomised p-values of `scores` under the null sample (low score = evidence of misalignment):
    P(null < s) + U * P(null == s)."""
    null = np.sort(np.asarray(null, np.float64))
    scores = np.asarray(scores, np.float64)
    below = np.searchsorted(null, scores, side="left")
    at_or_below = np.searchsorted(null, scores, side="right")
    if not len(null):
        return np.full(len(scores), np.nan)
    u = rng.random(len(scores))
    return (below + u * (at_or_below - below)) / len(null)


def estimate_misaligned_fraction(scores: np.ndarray, null: np.ndarray, lam: float = 0.5,
                                 seed: int = 0) -> float:
    """1 - Storey's pi0 with the held-out aligned scores as the null (see the module docstring)."""
    if not len(null) or not len(scores):       # no held-out aligned pairs: no estimate
        return float("nan")
    p = null_pvalues(scores, null, np.random.default_rng(seed))
    pi0 = float(np.mean(p > lam)) / (1.0 - lam)
    return float(np.clip(1.0 - pi0, 0.0, 1.0))


def flagged_fraction(scores: np.ndarray, null: np.ndarray, fpr: float) -> float:
    """Fraction of pairs below the `fpr` quantile of the aligned scores (a fixed-FPR flag rate)."""
    if not len(null):
        return float("nan")
    return float(np.mean(np.asarray(scores) < np.quantile(null, fpr)))
