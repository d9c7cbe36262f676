"""Centring and recomposition (SpLiCE, peers.md 5.1-5.2), NumPy over rows.

- concept dictionary: C = normalize(normalize(T) - mean_k normalize(T)_k), T the concepts' text embeddings;
- image mean: mu = mean_i normalize(x_i) over training images (not renormalised, as SpLiCE's shipped means
  are used);
- centred image: z_c = normalize(normalize(z) - mu);
- recomposed embedding: z_hat = normalize(normalize(w C) + mu) (w = 0 gives normalize(mu)).

Captions (SpLiCE's `decomp_text` path) use the same functions with their own mean: mu_text = mean_i
normalize(t_i) over training captions, centred normalize(normalize(t) - mu_text), recomposed
normalize(normalize(w C) + mu_text).
"""

from __future__ import annotations

import numpy as np

from ..evaluate import run as evaluate


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), in float64."""
    return evaluate.normalize(np.asarray(x, dtype=np.float64))


def center_concepts(text: np.ndarray) -> np.ndarray:
    """(K, d) concept dictionary: normalised, centred by the concept mean, renormalised."""
    unit = normalize(text)
    return normalize(unit - unit.mean(axis=0, keepdims=True))


def image_mean(images: np.ndarray) -> np.ndarray:
    """(d,) mean of the normalised embeddings (images; also captions, for the caption mean)."""
    return normalize(images).mean(axis=0)


def center_images(images: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """(N, d) normalize(normalize(z) - mu)."""
    return normalize(normalize(images) - mu[None, :])


def recompose(weights: np.ndarray, concepts: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """(N, d) normalize(normalize(w C) + mu)."""
    return normalize(normalize(np.asarray(weights, np.float64) @ concepts) + mu[None, :])
