"""The alignment heads and their loss terms (peers.md §4.1-4.2; crosslingual-contrastive's
align_text_to_image.py).

- `LinearHead`: t̃ = t·W with W = I_rect + ΔW, ΔW zero-initialised, I_rect the d_text × d_img rectangular
  identity (ones on the main diagonal), so at initialisation the head returns the frozen embeddings
  exactly (truncated or zero-padded when the widths differ).
- `MLPHead`: t̃ = t·I_rect + fc2(GELU(fc1 t)), fc2 zero-initialised, so at initialisation it equals the linear
  head at initialisation; as the original's ResidualMLPHead (base = x @ eye_rect) for any widths. At equal
  widths t·I_rect is t itself (the product is skipped, so the equal-width head is the plain residual t + …).
- `frozen_head`: the "frozen" baseline, the linear head at initialisation (t ↦ t·I_rect): the text rows
  themselves when d_text = d_img, truncated / zero-padded to the image width otherwise (where the original,
  which compares raw text rows to image rows, cannot score its baseline).
- `info_nce`: symmetric InfoNCE with a fixed temperature, 0.5·[CE(S) + CE(Sᵀ)], S = T̃Vᵀ/τ on unit rows.
- `prox_id`: mean(ΔW²) = ‖W − I‖²_F / (d_text·d_img) (the code's mean, not the paper's sum); for the MLP
  head the mean square of all its parameters.
- `orthogonality`: ‖WᵀW − I‖²_F / d_img² (linear head only).
Gradients come from autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.errors import InputError
from ..finetune.train import orthogonality_penalty, symmetric_cross_entropy

HEADS = ("linear", "mlp")


def rect_identity(d_text: int, d_img: int, dtype=torch.float32) -> torch.Tensor:
    """The d_text × d_img matrix with ones on the main diagonal."""
    return torch.eye(d_text, d_img, dtype=dtype)


class LinearHead(nn.Module):
    """t ↦ t·(I_rect + ΔW)."""

    def __init__(self, d_text: int, d_img: int):
        super().__init__()
        self.register_buffer("identity", rect_identity(d_text, d_img))
        self.delta = nn.Parameter(torch.zeros(d_text, d_img))

    @property
    def weight(self) -> torch.Tensor:
        return self.identity + self.delta

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t @ self.weight


class MLPHead(nn.Module):
    """t ↦ t·I_rect + fc2(GELU(fc1 t)), fc2 zero-initialised (I_rect: a buffer outside the state dict)."""

    def __init__(self, d_text: int, d_img: int, hidden: int):
        super().__init__()
        self.square = d_text == d_img
        self.register_buffer("identity", rect_identity(d_text, d_img), persistent=False)
        self.fc1 = nn.Linear(d_text, hidden)
        self.fc2 = nn.Linear(hidden, d_img)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        base = t if self.square else t @ self.identity
        return base + self.fc2(F.gelu(self.fc1(t)))


def frozen_head(d_text: int, d_img: int) -> LinearHead:
    """The frozen baseline: the linear head at initialisation (ΔW = 0), t ↦ t·I_rect."""
    return LinearHead(d_text, d_img).eval()


def make_head(kind: str, d_text: int, d_img: int, hidden: int = 1024) -> nn.Module:
    if kind == "linear":
        return LinearHead(d_text, d_img)
    if kind == "mlp":
        return MLPHead(d_text, d_img, hidden)
    raise InputError(f"multilingual.align.heads: unknown head {kind!r}; known: {list(HEADS)}")


def info_nce(text: torch.Tensor, image: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of paired rows (row i of text with row i of image), fixed temperature."""
    s = F.normalize(text, dim=-1) @ F.normalize(image, dim=-1).T / temperature
    return symmetric_cross_entropy(s)


def prox_id(head: nn.Module) -> torch.Tensor:
    """Prox-ID: mean(ΔW²) for the linear head; mean square of all parameters for the MLP head."""
    if isinstance(head, LinearHead):
        return head.delta.pow(2).mean()
    flat = torch.cat([p.reshape(-1) for p in head.parameters()])
    return flat.pow(2).mean()


def orthogonality(W: torch.Tensor) -> torch.Tensor:
    """‖WᵀW − I‖²_F / d², d = W.shape[1] (columns pushed toward orthonormality): the fine-tune's
    orthogonality penalty with W's columns as the rows."""
    return orthogonality_penalty(W.T)


def head_loss(head: nn.Module, text_by_lang: list[torch.Tensor], image: torch.Tensor, temperature: float,
              lambda_prox: float, lambda_ortho: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L = mean over languages of info_nce(head(T_l), V) + λp·prox_id + λo·orthogonality (linear head).

    Each language's block pairs the batch's images with their caption in that language, so an image
    never appears as its own negative (docs/multilingual.md, the declared deviations)."""
    clip = torch.stack([info_nce(head(t), image, temperature) for t in text_by_lang]).mean()
    total = clip
    parts = {"clip": float(clip.detach())}
    if lambda_prox:
        p = prox_id(head)
        total = total + lambda_prox * p
        parts["prox_id"] = float(p.detach())
    if lambda_ortho:
        if not isinstance(head, LinearHead):
            raise InputError("multilingual.align.ortho > 0 applies to the linear head only")
        o = orthogonality(head.weight)
        total = total + lambda_ortho * o
        parts["ortho"] = float(o.detach())
    return total, parts
