"""Zero-shot classification from prompt templates, its metrics, and the cosine silhouette score.

Conventions (peers.md sections 1.3 and 2.1):
- classifier: for each class, the prompts `template.replace("{c}", name)` are embedded and L2-normalised,
  averaged over templates, and re-normalised; the result is [embed_dim, n_classes] like open_clip's
  `build_zero_shot_classifier`. With the default single template "a photo of a {c}" this is the
  original's classifier (docs/original_code.md, "Exp 1").
- metrics (CLIP_benchmark names, fractions in [0, 1]): acc1, acc5 (NaN when fewer than 5 classes,
  counted as classifier columns), mean_per_class_recall (= sklearn balanced_accuracy_score).
  Logits are 100 · image @ W; ties go to the lower class index (np.argmax / stable sort).
- silhouette: sklearn's silhouette_score(L2-normalised image embeddings, labels, metric="cosine") on
  the FULL set (no sample_size), as the original Exp 1 and Exp 2 do. Computed exactly in O(N·C·d)
  from per-class sums instead of the O(N²·d) distance matrix; equal to sklearn to float rounding.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..common.errors import InputError
from .purity import normalize_rows

PLACEHOLDER = "{c}"


def format_prompts(classname: str, templates: Sequence[str]) -> list[str]:
    """The prompts of one class: every template with "{c}" replaced by the class name."""
    return [t.replace(PLACEHOLDER, classname) for t in templates]


def zero_shot_classifier(encode_text: Callable[[list[str]], np.ndarray], classnames: Sequence[str],
                         templates: Sequence[str]) -> np.ndarray:
    """[embed_dim, n_classes] float32: per class the normalised mean of normalised prompt embeddings.

    `encode_text` maps a list of strings to an (n, embed_dim) array (normalised or not); all prompts
    go in one call, class-major, so the caller controls batching.
    """
    if not classnames:
        raise InputError("zero_shot_classifier: no class names")
    if not templates:
        raise InputError("zero_shot_classifier: no templates")
    bad = [t for t in templates if PLACEHOLDER not in t]
    if bad:
        raise InputError(f"zero_shot_classifier: template(s) without the {PLACEHOLDER} placeholder: {bad}")
    prompts = [p for c in classnames for p in format_prompts(c, templates)]
    emb = np.asarray(encode_text(prompts), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise InputError(f"zero_shot_classifier: encode_text returned shape {emb.shape} for {len(prompts)} prompts")
    emb = normalize_rows(emb).reshape(len(classnames), len(templates), -1).mean(axis=1)
    return normalize_rows(emb).T.astype(np.float32)


def zero_shot_logits(image_emb: np.ndarray, classifier: np.ndarray) -> np.ndarray:
    """100 · image_emb @ classifier (N, n_classes), float32 like the original."""
    image_emb, classifier = np.asarray(image_emb, np.float32), np.asarray(classifier, np.float32)
    if image_emb.ndim != 2 or classifier.ndim != 2 or image_emb.shape[1] != classifier.shape[0]:
        raise InputError(f"zero-shot: image embeddings {image_emb.shape} do not match classifier {classifier.shape}")
    return 100.0 * (image_emb @ classifier)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest logits (ties: lower class index first).

    The label's rank is counted in O(N·C), no sort: classes with a higher logit, plus classes with an
    equal logit and a lower index; this equals its position in a stable descending argsort.
    """
    labels = np.asarray(labels)
    true = np.take_along_axis(logits, labels[:, None], axis=1)
    lower_index = np.arange(logits.shape[1])[None, :] < labels[:, None]
    rank = (logits > true).sum(axis=1) + ((logits == true) & lower_index).sum(axis=1)
    return float((rank < k).mean())


def zero_shot_metrics(image_emb: np.ndarray, classifier: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """acc1, acc5 (NaN under 5 classes) and mean_per_class_recall of zero-shot predictions.

    `image_emb` (N, d) are the image embeddings as cached (normalised, or masked for pruning: argmax is
    invariant to row scaling); `classifier` is [d, n_classes]; `labels` (N,) int class ids.
    """
    return logit_metrics(zero_shot_logits(image_emb, classifier), labels)


def logit_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """zero_shot_metrics of already computed logits (N, n_classes), for callers that also need them."""
    labels = _check_labels(labels, len(logits))
    n_classes = logits.shape[1]
    if labels.max() >= n_classes:
        raise InputError(f"zero-shot: label {int(labels.max())} but the classifier has {n_classes} classes")
    pred = logits.argmax(axis=1)
    return {
        "acc1": float((pred == labels).mean()),
        "acc5": topk_accuracy(logits, labels, 5) if n_classes >= 5 else float("nan"),
        "mean_per_class_recall": mean_per_class_recall(labels, pred),
    }


def mean_per_class_recall(labels: np.ndarray, pred: np.ndarray) -> float:
    """sklearn balanced_accuracy_score(labels, pred): recall averaged over the classes present in `labels`
    (predicted classes absent from `labels` do not count). NumPy, without sklearn's per-call overhead."""
    present = np.bincount(labels)
    hits = np.bincount(labels[pred == labels], minlength=present.size)
    mask = present > 0
    return float((hits[mask] / present[mask]).mean())


def silhouette(image_emb: np.ndarray, labels: np.ndarray, block: int = 8192) -> float:
    """Mean cosine silhouette of ALL rows (= sklearn silhouette_score(normalise(X), labels, metric="cosine")).

    For unit rows u_i, the cosine distance is 1 − u_i·u_j, so the mean distance from i to class k is
    1 − u_i·S_k / n_k with S_k the sum of class k's rows (own class: exclude i, divide by n_k − 1).
    Singletons score 0 as in sklearn. NaN when there are fewer than 2 or as many labels as rows
    (sklearn raises there). All-zero rows are treated as at distance 1 from everything, like sklearn.
    Computes in the input's precision (float32 embeddings: float32, as sklearn does for them).
    """
    image_emb = np.asarray(image_emb)
    U = normalize_rows(image_emb, dtype=np.result_type(image_emb.dtype, np.float32))  # float32 stays float32
    n = U.shape[0]
    labels = _check_labels(labels, n)
    classes, y = np.unique(labels, return_inverse=True)
    if not 2 <= len(classes) <= n - 1:
        return float("nan")
    counts = np.bincount(y).astype(U.dtype)
    order = np.argsort(y, kind="stable")
    sums = np.add.reduceat(U[order], np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
    scores = np.empty(n)
    for start in range(0, n, block):                       # rows in blocks: memory O(block · C)
        rows = slice(start, min(n, start + block))
        u, yi = U[rows], y[rows]
        idx = np.arange(len(yi))
        dots = u @ sums.T                                  # u_i · S_k
        own_n = counts[yi] - 1
        own = dots[idx, yi] - (u * u).sum(axis=1)          # u_i · (S_own − u_i)
        a = np.maximum(own_n - own, 0.0) / np.maximum(own_n, 1)     # mean distance to the other members
        mean_dist = np.maximum(1.0 - dots / counts[None, :], 0.0)   # mean distance to each class
        mean_dist[idx, yi] = np.inf
        b = mean_dist.min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.nan_to_num((b - a) / np.maximum(a, b))
        scores[rows] = np.where(own_n > 0, s, 0.0)
    return float(scores.mean())


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(f"labels: expected shape ({n},), got {labels.shape}")
    if n == 0:
        raise InputError("labels: empty evaluation set")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise InputError("labels: expected non-negative integer class ids")
    return labels.astype(np.int64)
