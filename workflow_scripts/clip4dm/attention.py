"""Multi-head self-attention computed explicitly, exposing the probabilities that multiply V.

open_clip's `ResidualAttentionBlock.attention` calls `nn.MultiheadAttention(need_weights=False)`, and even
with `need_weights=True` PyTorch returns a *view* of the softmax that is not on the path to the output, so
`autograd.grad(score, weights)` is not defined for it. `self_attention` recomputes the attention from the
block's own `in_proj` / `out_proj` tensors exactly as `F.multi_head_attention_forward` does in eval mode
(no dropout) and hands the softmax tensor it multiplies with V to a callback, which may also replace it
(tests/test_clip4dm_attributions.py perturbs it and checks the block output against open_clip's block).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

ProbsHook = Callable[[torch.Tensor], "torch.Tensor | None"]


def self_attention(x: torch.Tensor, in_w: torch.Tensor, in_b: torch.Tensor | None, out_w: torch.Tensor,
                   out_b: torch.Tensor | None, heads: int, mask: torch.Tensor | None,
                   on_probs: ProbsHook | None = None) -> torch.Tensor:
    """Attention output [B, T, W] of `x` [B, T, W]; `on_probs(A)` sees A [B, heads, T, T] (the softmax
    multiplied with V) and may return a replacement."""
    b, t, width = x.shape
    d = width // heads
    q, k, v = F.linear(x, in_w, in_b).chunk(3, dim=-1)
    q, k, v = (z.reshape(b, t, heads, d).transpose(1, 2) for z in (q, k, v))
    scores = (q * (1.0 / math.sqrt(d))) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask.to(scores.dtype)
    probs = scores.softmax(dim=-1)
    if on_probs is not None:
        replaced = on_probs(probs)
        probs = probs if replaced is None else replaced
    out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(b, t, width)
    return F.linear(out, out_w, out_b)
