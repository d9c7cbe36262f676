"""What the CLIP4DM jobs share: the per-model pack (its token table: token_table.py).

The pack (`results/clip4dm/{model}/pack.npz`, written once per model by `prepare`, the only job that imports
open_clip) holds the text tower as tensors, the projection head, the training images' embeddings, every
caption the later jobs score already tokenized (training, held-out and foil captions), the training pairs'
own attributions (a swapped set differs from the original only on its swapped lines), the epsilon
calibration and the held-out aligned scores (the null for the rate estimate). The per-set detection jobs
and the localisation job then import torch and numpy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..common.errors import InputError
from .token_table import TokenTable, flatten, unflatten


# ----------------------------------------------------------------------------- pack

@dataclass
class Pack:
    arrays: dict[str, np.ndarray]
    path: str

    @classmethod
    def load(cls, path: str) -> "Pack":
        from ..common.io import load_npz

        return cls(load_npz(path), str(path))

    @property
    def settings(self) -> dict:
        return json.loads(str(self.arrays["settings"]))

    def tower(self):
        from .tower import TextTower

        return TextTower.from_arrays(self.arrays, self.path)

    def head(self):
        from ..models.clip import Head

        return Head.from_arrays(self.arrays, self.path)

    def table(self) -> TokenTable:
        return TokenTable.from_arrays(self.arrays, self.path)

    def ragged(self, name: str) -> list[np.ndarray]:
        return unflatten(self.arrays[f"{name}.values"], self.arrays[f"{name}.offsets"])


def ragged_arrays(name: str, rows: Sequence[Sequence]) -> dict[str, np.ndarray]:
    values, offsets = flatten(rows)
    return {f"{name}.values": values, f"{name}.offsets": offsets}


def with_checkpoint(tower, head, state_dict: dict, where: str):
    """(tower, head) with the projection tensors of a (projection-only) checkpoint's state dict, by name."""
    import copy

    from ..models.clip import Head

    tower = copy.copy(tower)
    tower.params = dict(tower.params)
    names = dict(head.names)
    used = 0
    for key, value in state_dict.items():
        if key in tower.params and key.startswith("text_projection"):
            tower.params[key] = value.float()
        if key in names:
            names[key] = value.float()
            used += 1
    if used != len(names):
        raise InputError(f"{where}: holds {used} of the {len(names)} projection tensors {sorted(names)}")
    arrays = {f"head.param.{k}": v.numpy() for k, v in names.items()}
    arrays.update({k: v for k, v in head.to_arrays().items() if not k.startswith("head.param.")})
    return tower, Head.from_arrays(arrays, where)


def embed_images(head, features: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Normalised projected image embeddings of pre-projection features."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(features), batch):
            x = head.image(torch.from_numpy(np.asarray(features[s:s + batch], np.float32)))
            out.append(torch.nn.functional.normalize(x, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def score_pairs(tower, table: TokenTable, captions: Sequence[str], image_emb: np.ndarray, settings: dict,
                where: Sequence[str] | None = None, desc: str | None = None):
    """(Tokenized items, cosines, word attributions) of pairs (image_emb[i], captions[i])."""
    from .attributions import Attributor

    items = table.items(captions, where)
    attributor = Attributor(tower, None, table.template, settings["layers"], settings["batch_size"],
                            table.truncate)
    cos, words = attributor.attribute(items, image_emb, desc)
    return items, cos, words
