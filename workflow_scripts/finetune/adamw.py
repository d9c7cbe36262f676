"""AdamW for short jobs: torch's own AdamW update (`torch.optim.adamw.adamw`, the function that
`torch.optim.AdamW.step` calls) over moment and step state held here.

Why not `torch.optim.AdamW` itself: `Optimizer.__init__` (through `add_param_group`), `zero_grad`,
`state_dict` and `load_state_dict` are wrapped by `torch._disable_dynamo`, whose first call imports
torch._dynamo and sympy. On this project's 2-core machine that import took 1.1-1.5 s (3 runs of
`torch.optim.AdamW([p])` after `import torch`), a quarter to a third of a cached-mode fine-tune job,
paid by every one of the embedded study's 27 fine-tunes. The functional update does not import it
(outside torch.compile). The arithmetic is torch's: with the same settings the parameters are
bit-identical to torch.optim.AdamW's, step after step (tests/test_adamw.py), on CPU (single-tensor
path) and on CUDA (foreach path), because the backend choice is torch's too.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.optim.adamw import adamw


def _step_dtype() -> torch.dtype:
    """The dtype torch.optim keeps a non-fused, non-capturable step count in."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class AdamW:
    """AdamW over `params` (one parameter group), with the lr settable per step as `lr`.

    Defaults as torch.optim.AdamW: amsgrad off, foreach/fused chosen by torch for the parameters' device.
    """

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        self.params = list(params)
        if not self.params:
            raise ValueError("AdamW got an empty parameter list")
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(betas), float(eps), float(weight_decay)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.tensor(0.0, dtype=_step_dtype()) for _ in self.params]

    def zero_grad(self) -> None:
        """Drop the gradients (set_to_none, as torch.optim's default)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (torch.optim skips the others the same way)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        for i in live:
            if self.params[i].grad.is_sparse:
                raise RuntimeError("AdamW does not support sparse gradients")
        adamw([self.params[i] for i in live], [self.params[i].grad for i in live],
              [self.exp_avg[i] for i in live], [self.exp_avg_sq[i] for i in live], [],
              [self.steps[i] for i in live], amsgrad=False, beta1=self.betas[0], beta2=self.betas[1],
              lr=self.lr, weight_decay=self.weight_decay, eps=self.eps, maximize=False,
              has_complex=any(torch.is_complex(self.params[i]) for i in live))

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        """The moments and step counts (CPU copies), for a resumable state file."""
        return {k: [t.detach().cpu().clone() for t in getattr(self, k)] for k in ("exp_avg", "exp_avg_sq", "steps")}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        """Restore what state_dict returned (onto the parameters' devices)."""
        for key in ("exp_avg", "exp_avg_sq", "steps"):
            saved = state[key]
            if len(saved) != len(self.params):
                raise ValueError(f"optimizer state '{key}' has {len(saved)} entries for {len(self.params)} parameters")
            mine = getattr(self, key)
            for i, t in enumerate(saved):
                if t.shape != mine[i].shape:
                    raise ValueError(f"optimizer state '{key}'[{i}] has shape {tuple(t.shape)}, "
                                     f"expected {tuple(mine[i].shape)}")
                mine[i] = t.to(device=mine[i].device, dtype=mine[i].dtype).clone()
