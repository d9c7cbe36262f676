"""The frozen image tower's embeddings, read from the core stages' caches of the base model (no image is
decoded again and no tower runs): training images from its feature cache (view 0), held-out pairs and
evaluation sets from its evaluation features, each through the model's image projection, L2-normalised.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..evaluate import run as evaluate
from ..common.errors import InputError
from ..evaluate.run import SEP, load_projections


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    return evaluate.normalize(np.asarray(x, dtype=np.float32))


def train_image_embeddings(cache_index: str, projections: str, image_paths: Sequence[str]) -> np.ndarray:
    """(N, d) embeddings of the training images in `image_paths` order, from the base model's feature cache."""
    from ..finetune.features import load_feature_cache

    cache = load_feature_cache(cache_index)
    cached = cache["image_paths"].tolist()
    if list(image_paths) != cached:
        first = next((i for i, (a, b) in enumerate(zip(image_paths, cached)) if a != b), min(len(cached), len(image_paths)))
        raise InputError(f"{cache_index}: cached images differ from the caption table's ({len(cached)} vs "
                         f"{len(image_paths)} rows, first difference at row {first})")
    image_p, _ = load_projections(projections)
    return normalize(np.asarray(cache["image"][0], dtype=np.float64) @ image_p.T)


def eval_image_embeddings(eval_features: dict, projections: str, key: str, n: int | None = None) -> np.ndarray:
    """(n, d) embeddings of one image array of the base model's evaluation features (e.g. heldout_pairs)."""
    name = f"{key}{SEP}image"
    if name not in eval_features:
        raise InputError(f"evaluation features lack {name!r}; known: {sorted(k for k in eval_features if k.endswith('image'))}")
    feats = eval_features[name]
    if n is not None:
        if len(feats) < n:
            raise InputError(f"evaluation features hold {len(feats)} {key} images, fewer than the {n} requested")
        feats = feats[:n]
    image_p, _ = load_projections(projections)
    return normalize(np.asarray(feats, dtype=np.float64) @ image_p.T)
