"""Batched CLIP4DM attributions (peers.md §3.2) for any open_clip CLIP text tower.

For each (image, caption) pair: s = cos(image embedding, text embedding); for each of the last L text
blocks, A_l = its attention probabilities [heads, T, T]; cam_l = mean over heads of (ds/dA_l * A_l);
R = mean_l cam_l (no clamp, no rollout, no identity); the token attributions are the EOT row R[eot, :].
Pairs in a batch do not interact (per-row LayerNorm, per-sample attention), so one backward pass of the
summed cosines gives every pair's own gradient: the batched result equals the one-pair-at-a-time loop of
the original (tests/test_clip4dm_attributions.py checks it against an independent autograd reference).
The blocks before the last L run without autograd (they do not change ds/dA_l). float32 on CPU; fp16
autocast on a GPU (the original ran its HF models in fp16).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..common.errors import InputError
from ..models.clip import tower_autocast
from .tower import TextTower
from .words import Tokenized, word_scores


def is_causal(mask: torch.Tensor | None) -> bool:
    """A float causal mask: -inf strictly above the diagonal, 0 on and below it."""
    if mask is None or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    upper = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.isneginf(mask[upper]).all() and (mask[~upper] == 0).all())


def token_attributions(tower: TextTower, tokens: torch.Tensor, image_emb: torch.Tensor,
                       layers: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine [B], token attributions [B, T]) of B (image, caption) pairs in one forward/backward.

    `tokens` [B, T] as the tokenizer makes them; `image_emb` [B, E] projected image embeddings (normalised
    here). Row b, position j of the result is R_b[eot_b, j] (SOT, template and padding included; the caller
    picks the real tokens). `layers` is clipped to the tower's depth. Under a causal mask the batch is cut
    after its last EOT (later positions cannot reach it); the cut positions get 0."""
    device = tokens.device
    full = tokens
    mask = tower.mask
    eot = tower.eot_positions(tokens)
    if is_causal(mask):
        t = int(eot.max()) + 1
        tokens, mask = tokens[:, :t], mask[:t, :t]
    keep = max(1, min(int(layers), tower.layers))
    img = F.normalize(image_emb.float(), dim=-1)
    rows = torch.arange(tokens.shape[0], device=device)
    with tower_autocast(device):
        with torch.no_grad():
            x = tower.embed(tokens)
            for i in range(tower.layers - keep):
                x = tower.block(i, x, mask)
        x = x.detach().requires_grad_(True)
        probs: list[torch.Tensor] = []
        with torch.enable_grad():
            for i in range(tower.layers - keep, tower.layers):
                x = tower.block(i, x, mask, on_probs=probs.append)
            pooled = tower._ln(x, "ln_final")[rows, eot]
            cos = (F.normalize(tower.project(pooled).float(), dim=-1) * img).sum(-1)
            grads = torch.autograd.grad(cos.sum(), probs)
    cam = sum((g.float()[rows, :, eot] * a.detach().float()[rows, :, eot]).mean(dim=1)
              for g, a in zip(grads, probs)) / keep
    out = torch.zeros(full.shape, dtype=torch.float32, device=device)
    out[:, :cam.shape[1]] = cam
    return cos.detach(), out


class Attributor:
    """Word attributions of (image embedding, caption) pairs for one model, in batches."""

    def __init__(self, tower: TextTower, tokenizer, template: str = "A photo depicts ", layers: int = 3,
                 batch_size: int = 256, truncate: bool = False, words: str = "original"):
        self.tower = tower
        self.words = words          # the word rule (clip4dm.words)
        self.tokenizer = tokenizer
        self.template = template
        self.layers = layers
        self.batch_size = int(batch_size)
        self.truncate = truncate
        self.context = tower.context_length
        self.device = tower.params["positional_embedding"].device

    def tokenize(self, captions: list[str], where: list[str] | None = None) -> list[Tokenized]:
        """Tokenize every caption (errors name `where[i]`, e.g. 'file:line'); distinct captions once."""
        from .token_table import TokenTable

        table = TokenTable(self.template, self.context, "", self.truncate, tokenizer=self.tokenizer, words=self.words)
        return table.items(captions, where)

    def attribute(self, items: list[Tokenized], image_emb: np.ndarray | torch.Tensor,
                  progress_desc: str | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """(cosines [N], per caption its word attributions) for pairs (image_emb[i], items[i]).

        Pairs go through in batches of similar length (each batch is cut after its longest EOT, exact
        under the causal mask); results come back in input order."""
        if len(items) != len(image_emb):
            raise InputError(f"{len(items)} captions but {len(image_emb)} image embeddings")
        image_emb = image_emb if torch.is_tensor(image_emb) else torch.from_numpy(np.asarray(image_emb, np.float32))
        order = np.argsort([t.eot for t in items], kind="stable")
        cos_out = np.empty(len(items), np.float64)
        words: list[np.ndarray | None] = [None] * len(items)
        starts = range(0, len(items), self.batch_size)
        if progress_desc:
            from ..common.io import progress

            starts = progress(starts, desc=progress_desc, unit="batch")
        for s in starts:
            idx = order[s:s + self.batch_size]
            batch = [items[i] for i in idx]
            tokens = torch.from_numpy(np.stack([t.tokens for t in batch])).to(self.device)
            cos, attr = token_attributions(self.tower, tokens, image_emb[torch.from_numpy(idx)].to(self.device),
                                           self.layers)
            cos_out[idx] = cos.cpu().numpy()
            for i, w in zip(idx, word_scores(attr.cpu().numpy(), batch)):
                words[i] = w
        return cos_out, words
