"""adamw.AdamW against the library's reference, torch.optim.AdamW: the same parameters bit for bit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from workflow_scripts.finetune.adamw import AdamW


def _objective(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    a, b = params
    return ((x @ a).tanh() @ b).pow(2).mean() + a.abs().sum() * 1e-3


def _train(make_optimizer, set_lr, dtype: torch.dtype, steps: int = 25, skip_grad_at: int = 7):
    """Steps of a small two-matrix objective with a per-step lr; at step `skip_grad_at` the second matrix
    gets no gradient (the optimizer must leave it and its state alone, as torch.optim does)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(6, 5, generator=g, dtype=dtype).requires_grad_(),
              torch.randn(5, 3, generator=g, dtype=dtype).requires_grad_()]
    opt = make_optimizer(params)
    trajectory = []
    for step in range(steps):
        x = torch.randn(16, 6, generator=g, dtype=dtype)
        opt.zero_grad()
        _objective(params, x).backward()
        if step == skip_grad_at:
            params[1].grad = None
        set_lr(opt, 1e-2 * (0.9 ** step))
        opt.step()
        trajectory.append([p.detach().clone() for p in params])
    return params, opt, trajectory


SETTINGS = {"betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.2}


def _reference(params):
    return torch.optim.AdamW(params, lr=1e-2, **SETTINGS)


def _reference_lr(opt, lr):
    for group in opt.param_groups:
        group["lr"] = lr


def _ours(params):
    return AdamW(params, lr=1e-2, **SETTINGS)


def _our_lr(opt, lr):
    opt.lr = lr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_step_equals_torch_optim_adamw_bit_for_bit(dtype):
    _, _, want = _train(_reference, _reference_lr, dtype)
    _, _, got = _train(_ours, _our_lr, dtype)
    assert not torch.equal(want[0][0], want[-1][0]), "nothing trained"
    for step, (w, o) in enumerate(zip(want, got)):
        for p_want, p_got in zip(w, o):
            assert torch.equal(p_want, p_got), f"step {step} differs"


def test_state_round_trip_resumes_the_same_trajectory():
    """Stopping after some steps, saving state_dict and continuing in a new optimizer over copies of the
    parameters gives the same parameters as running on."""
    params, opt, _ = _train(_ours, _our_lr, torch.float32, steps=10)
    state = opt.state_dict()
    copies = [p.detach().clone().requires_grad_() for p in params]
    resumed = AdamW(copies, lr=1e-2, **SETTINGS)
    resumed.load_state_dict(state)
    g = torch.Generator().manual_seed(5)
    for step in range(5):
        x = torch.randn(16, 6, generator=g)
        for o, ps in ((opt, params), (resumed, copies)):
            o.zero_grad()
            _objective(ps, x).backward()
            o.lr = 1e-3
            o.step()
    for a, b in zip(params, copies):
        assert torch.equal(a, b)


def test_a_state_of_other_parameters_is_refused():
    opt = AdamW([torch.zeros(3, requires_grad=True)], lr=1e-3)
    with pytest.raises(ValueError, match="'exp_avg'.*shape"):
        opt.load_state_dict({"exp_avg": [torch.zeros(4)], "exp_avg_sq": [torch.zeros(4)], "steps": [torch.tensor(1.0)]})
    with pytest.raises(ValueError, match="2 entries for 1 parameters"):
        opt.load_state_dict({"exp_avg": [torch.zeros(3)] * 2, "exp_avg_sq": [torch.zeros(3)], "steps": [torch.tensor(1.0)]})


def test_stepping_does_not_import_torch_dynamo():
    """The reason the module exists: torch.optim.Optimizer imports torch._dynamo on construction."""
    code = ("import sys, torch\n"
            "from workflow_scripts.finetune.adamw import AdamW\n"
            "p = torch.zeros(3, requires_grad=True)\n"
            "o = AdamW([p], lr=1e-3)\n"
            "p.sum().backward(); o.step(); o.zero_grad(); o.state_dict()\n"
            "print('torch._dynamo' in sys.modules)\n"
            "torch.optim.AdamW([torch.zeros(3, requires_grad=True)])\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
