"""An open_clip CLIP text tower as plain tensors, with a functional forward.

`TextTower.from_model(model)` takes the tensors of any model of the model layer whose text tower is open_clip's
standard one (embedded fp-* models, open_clip checkpoints, converted LaCLIP); `to_arrays` / `from_arrays`
carry it in an .npz, so that the per-set detection jobs load only torch (importing open_clip costs a job
2-4 s). `encode` is open_clip's `encode_text` step by step, with the last `keep` blocks' attention made
explicit (attention.self_attention); tests check it against `model.encode_text`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..common.errors import InputError
from .attention import ProbsHook, self_attention

ACTIVATIONS = ("gelu", "quick_gelu")
BLOCK_KEYS = ("ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
              "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
              "mlp.c_proj.weight", "mlp.c_proj.bias")


def _activation(module: nn.Module, where: str) -> str:
    from open_clip.transformer import QuickGELU

    if isinstance(module, QuickGELU):
        return "quick_gelu"
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return "gelu"
    raise InputError(f"{where}: activation {type(module).__name__} is not supported by CLIP4DM attributions")


def _gamma(ls: nn.Module, where: str) -> torch.Tensor | None:
    if isinstance(ls, nn.Identity):
        return None
    if hasattr(ls, "gamma") and not getattr(ls, "inplace", False):
        return ls.gamma.detach()
    raise InputError(f"{where}: layer scale {type(ls).__name__} is not supported")


@dataclass
class TextTower:
    """Tensors and settings of a CLIP text tower (open_clip key names), fp32 unless moved."""

    params: dict[str, torch.Tensor]
    layers: int
    heads: int
    activation: str
    eps: float
    pool: str = "argmax"
    eos_id: int | None = None
    projection: str = "matmul"             # "matmul": x @ P, "linear": Linear(P), "none"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: nn.Module) -> "TextTower":
        """The text tower of an open_clip CLIP (InputError naming what is not supported)."""
        from open_clip.transformer import ResidualAttentionBlock

        if not hasattr(model, "token_embedding") or not hasattr(model, "transformer"):
            raise InputError(f"CLIP4DM needs an open_clip CLIP text tower, not {type(model).__name__}")
        if not getattr(model.transformer, "batch_first", True):
            raise InputError("CLIP4DM: the text transformer is not batch-first")
        pool = getattr(model, "text_pool_type", "argmax")
        if pool not in ("argmax", "eos"):
            raise InputError(f"CLIP4DM reads the EOT row; text_pool_type {pool!r} is not supported")
        params = {"token_embedding.weight": model.token_embedding.weight.detach(),
                  "positional_embedding": model.positional_embedding.detach(),
                  "ln_final.weight": model.ln_final.weight.detach(), "ln_final.bias": model.ln_final.bias.detach()}
        if model.attn_mask is not None:
            params["attn_mask"] = model.attn_mask.detach()
        blocks = model.transformer.resblocks
        acts, eps = set(), set()
        for i, blk in enumerate(blocks):
            where = f"text block {i}"
            if not isinstance(blk, ResidualAttentionBlock) or hasattr(blk, "ln_1_kv"):
                raise InputError(f"{where}: CLIP4DM attributions support open_clip ResidualAttentionBlock text "
                                 f"blocks, not {type(blk).__name__}")
            if not getattr(blk.attn, "_qkv_same_embed_dim", False) or blk.attn.in_proj_weight is None \
                    or blk.attn.in_proj_bias is None or blk.attn.out_proj.bias is None:
                raise InputError(f"{where}: attention without a fused in_proj with biases is not supported")
            sd = blk.state_dict()
            for key in BLOCK_KEYS:
                params[f"blocks.{i}.{key}"] = sd[key].detach()
            for name in ("ls_1", "ls_2"):
                gamma = _gamma(getattr(blk, name), where)
                if gamma is not None:
                    params[f"blocks.{i}.{name}.gamma"] = gamma
            acts.add(_activation(blk.mlp.gelu, where))
            eps.update({blk.ln_1.eps, blk.ln_2.eps})
        eps.add(model.ln_final.eps)
        if len(acts) != 1 or len(eps) != 1:
            raise InputError(f"CLIP4DM: mixed activations {acts} or LayerNorm eps {eps} in the text tower")
        proj = model.text_projection
        if proj is None:
            kind = "none"
        elif isinstance(proj, nn.Linear):
            kind = "linear"
            params["text_projection.weight"] = proj.weight.detach()
            if proj.bias is not None:
                params["text_projection.bias"] = proj.bias.detach()
        elif isinstance(proj, torch.Tensor):
            kind = "matmul"
            params["text_projection"] = proj.detach()
        else:
            raise InputError(f"CLIP4DM: text projection {type(proj).__name__} is not supported")
        return cls(params, len(blocks), int(blocks[0].attn.num_heads), acts.pop(), float(eps.pop()), pool,
                   getattr(model, "text_eos_id", None), kind)

    def to_arrays(self, prefix: str = "tower.") -> dict[str, np.ndarray]:
        meta = {"layers": self.layers, "heads": self.heads, "activation": self.activation, "eps": self.eps,
                "pool": self.pool, "eos_id": self.eos_id, "projection": self.projection}
        out = {f"{prefix}param.{k}": v.detach().float().cpu().numpy() for k, v in self.params.items()}
        out[f"{prefix}meta"] = np.asarray(json.dumps(meta, sort_keys=True))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, where: str, prefix: str = "tower.") -> "TextTower":
        try:
            meta = json.loads(str(arrays[f"{prefix}meta"]))
            params = {k[len(f"{prefix}param."):]: torch.from_numpy(np.array(v, np.float32))
                      for k, v in arrays.items() if k.startswith(f"{prefix}param.")}
            if meta["activation"] not in ACTIVATIONS:
                raise ValueError(f"activation {meta['activation']!r}")
            return cls(params, int(meta["layers"]), int(meta["heads"]), meta["activation"], float(meta["eps"]),
                       meta["pool"], meta["eos_id"], meta["projection"])
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"{where}: no usable text tower ({type(exc).__name__}: {exc})") from None

    def to(self, device: torch.device | str) -> "TextTower":
        self.params = {k: v.to(device) for k, v in self.params.items()}
        return self

    # ------------------------------------------------------------------ forward
    @property
    def context_length(self) -> int:
        return int(self.params["positional_embedding"].shape[0])

    @property
    def mask(self) -> torch.Tensor | None:
        return self.params.get("attn_mask")

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The pooled position of each row, as open_clip's text_global_pool picks it."""
        if self.pool == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.params[f"{name}.weight"], self.params[f"{name}.bias"], self.eps)

    def block(self, i: int, x: torch.Tensor, mask: torch.Tensor | None, on_probs: ProbsHook | None = None) -> torch.Tensor:
        """open_clip ResidualAttentionBlock i: x + ls_1(attn(ln_1 x)), then + ls_2(mlp(ln_2 x))."""
        p = {k[len(f"blocks.{i}."):]: v for k, v in self.params.items() if k.startswith(f"blocks.{i}.")}
        a = self_attention(self._ln(x, f"blocks.{i}.ln_1"), p["attn.in_proj_weight"], p["attn.in_proj_bias"],
                           p["attn.out_proj.weight"], p["attn.out_proj.bias"], self.heads, mask, on_probs)
        x = x + (a * p["ls_1.gamma"] if "ls_1.gamma" in p else a)
        h = F.linear(self._ln(x, f"blocks.{i}.ln_2"), p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h) if self.activation == "quick_gelu" else F.gelu(h)
        m = F.linear(h, p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])
        return x + (m * p["ls_2.gamma"] if "ls_2.gamma" in p else m)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = self.params["positional_embedding"][:tokens.shape[1]]
        return F.embedding(tokens, self.params["token_embedding.weight"]) + pos

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.projection == "matmul":
            return pooled @ self.params["text_projection"]
        if self.projection == "linear":
            return F.linear(pooled, self.params["text_projection.weight"], self.params.get("text_projection.bias"))
        return pooled

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised text embeddings [B, E] (= open_clip's encode_text)."""
        mask = self.mask
        x = self.embed(tokens)
        for i in range(self.layers):
            x = self.block(i, x, None if mask is None else mask[:x.shape[1], :x.shape[1]])
        x = self._ln(x, "ln_final")
        return self.project(x[torch.arange(x.shape[0], device=x.device), self.eot_positions(tokens)])
