"""Whole-model embeddings: L2-normalised image and text embeddings through towers and projections.

Used where a model is evaluated as a whole (evaluation features, pretraining's zero-shot check, the
multilingual frozen baseline), as opposed to the cached pre-projection features of finetune.features.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..common.io import progress


def embed_images(model, batches, pre: dict, device, total: int | None = None) -> np.ndarray:
    """L2-normalised image embeddings (N, D) float32 of uint8 image batches, through the whole model."""
    import torch

    from ..common.data import to_model_input

    out = []
    bar = progress(total=total, desc="image embeddings", unit="img")
    with torch.no_grad():
        for batch in batches:
            x = to_model_input(batch, pre["mean"], pre["std"]).to(device)
            out.append(torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1).cpu().numpy())
            bar.update(len(batch))
    bar.close()
    return np.concatenate(out)


def text_encoder(model, tokenizer, device, batch_size: int = 256):
    """A function mapping texts to L2-normalised text embeddings (n, D) float32, through the whole model."""
    import torch

    def encode(texts: Sequence[str]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
                out.append(torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1).cpu().numpy())
        return np.concatenate(out)

    return encode
