"""Alignment heads and losses against hand-computed values, penalty gradients against their closed forms,
the schedule, the sweep's bad input and a tiny end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workflow_scripts.common.config import load_config
from workflow_scripts.common.errors import InputError
from workflow_scripts.multilingual import align, head as H


def test_zero_delta_gives_exactly_the_frozen_embeddings():
    t = torch.randn(7, 5)
    assert torch.equal(H.LinearHead(5, 5)(t), t)
    wide = H.LinearHead(5, 8)(t)                      # rectangular identity: zero-padded
    assert torch.equal(wide[:, :5], t) and torch.equal(wide[:, 5:], torch.zeros(7, 3))
    assert torch.equal(H.LinearHead(5, 3)(t), t[:, :3])
    torch.manual_seed(0)
    assert torch.equal(H.MLPHead(5, 5, 16)(t), t)


def test_info_nce_against_hand_computation():
    rng = np.random.default_rng(0)
    t, v, tau = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), 0.07
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    s = tn @ vn.T / tau

    def ce(m):   # mean over rows of -log softmax at the diagonal, written out
        return np.mean([math.log(sum(math.exp(x) for x in row)) - row[i] for i, row in enumerate(m.tolist())])

    want = 0.5 * (ce(s) + ce(s.T))
    got = H.info_nce(torch.tensor(t), torch.tensor(v), tau)
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_penalties_against_hand_values():
    head = H.LinearHead(3, 2)
    with torch.no_grad():
        head.delta.copy_(torch.tensor([[0.5, 0.0], [0.0, -1.0], [2.0, 1.0]], dtype=torch.float32))
    assert float(H.prox_id(head).detach()) == pytest.approx((0.25 + 1 + 4 + 1) / 6)
    W = np.array([[1.5, 0.0], [0.0, 0.0], [2.0, 1.0]])      # I_rect + ΔW
    gram = W.T @ W - np.eye(2)
    assert float(H.orthogonality(head.weight).detach()) == pytest.approx((gram ** 2).sum() / 4, rel=1e-6)
    mlp = H.MLPHead(2, 2, 3)
    flat = np.concatenate([p.detach().numpy().ravel() for p in mlp.parameters()])
    assert float(H.prox_id(mlp).detach()) == pytest.approx((flat ** 2).mean(), rel=1e-6)


def test_penalty_gradients_match_their_closed_forms():
    torch.manual_seed(1)
    head = H.LinearHead(4, 3).double()
    with torch.no_grad():
        head.delta.normal_()
    H.prox_id(head).backward()
    torch.testing.assert_close(head.delta.grad, 2 * head.delta.detach() / 12)
    W = head.weight.detach().clone().requires_grad_(True)
    H.orthogonality(W).backward()
    Wd = W.detach()
    torch.testing.assert_close(W.grad, 4 * Wd @ (Wd.T @ Wd - torch.eye(3, dtype=Wd.dtype)) / 9)


def test_head_loss_adds_the_weighted_terms():
    torch.manual_seed(2)
    head = H.LinearHead(3, 3)
    with torch.no_grad():
        head.delta.normal_(std=0.1)
    texts, image = [torch.randn(5, 3), torch.randn(5, 3)], torch.randn(5, 3)
    total, parts = H.head_loss(head, texts, image, 0.1, 0.3, 0.7)
    clip = (H.info_nce(head(texts[0]), image, 0.1) + H.info_nce(head(texts[1]), image, 0.1)) / 2
    want = clip + 0.3 * H.prox_id(head) + 0.7 * H.orthogonality(head.weight)
    assert float(total.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert set(parts) == {"clip", "prox_id", "ortho"}
    with pytest.raises(InputError, match="linear head only"):
        H.head_loss(H.MLPHead(3, 3, 4), texts, image, 0.1, 0.0, 0.1)


def test_schedule_warms_up_then_ends_at_the_floor():
    lrs = [align.lr_at(s, 100, 10, 1.0, 0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_negative_lambda_is_refused_with_its_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("multilingual:\n  align:\n    prox_id: [0.0, -1.0e-3]\n")
    with pytest.raises(InputError, match=r"multilingual\.align\.prox_id\.1"):
        load_config(path)
    with pytest.raises(InputError, match=r"multilingual\.align\.ortho: -0\.1"):
        align.sweep_grid({"heads": ["linear"], "prox_id": [0.0], "ortho": [-0.1]})


def test_sweep_grid_leaves_out_mlp_with_orthogonality():
    grid = align.sweep_grid({"heads": ["linear", "mlp"], "prox_id": [0.0, 1e-3], "ortho": [0.0, 1e-4]})
    assert len(grid) == 6 and not [g for g in grid if g["head"] == "mlp" and g["ortho"] > 0]


def _toy(n=200, d=6, langs=("en", "it")):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(n, d)).astype(np.float32)
    data = {"train::image": image}
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]          # both languages misaligned the same way
    for lang in langs:
        data[f"train::{lang}::text"] = (image @ rot + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
        data[f"train::{lang}::ids"] = np.arange(n)
    return data


def test_a_run_trains_and_keeps_its_best_epoch():
    settings = {"validation_fraction": 0.2, "validation_max": 1000, "batch_per_lang": 16, "mlp_hidden": 8,
                "lr": 3e-2, "weight_decay": 0.0, "epochs": 4, "steps_per_epoch": 5, "warmup_steps": 2,
                "lr_floor": 0.1, "temperature": 0.1, "max_grad_norm": 1.0, "patience": 0}
    run = {"head": "linear", "prox_id": 1e-3, "ortho": 1e-4}
    summary, history, state = align.train_run(_toy(), ["en", "it"], run, settings, seed=0, base_seed=0)
    assert len(history) == 4 and summary["n_val"] == 40
    best = max(h["val_macro_r1"] for h in history)
    assert summary["val_macro_r1"] == best and history[summary["best_epoch"] - 1]["val_macro_r1"] == best
    assert summary["val_macro_r1"] > summary["val_macro_r1_frozen"]      # the shared rotation is learnt
    assert set(state) == {"identity", "delta"}


def test_a_language_without_captions_is_named():
    data = _toy()
    data["train::it::ids"] = np.arange(0)
    with pytest.raises(InputError, match="'it' has no captions"):
        align.paired_rows(data, "train", ["en", "it"])


def test_a_headline_outside_the_sweep_is_named():
    import pandas as pd

    from workflow_scripts.multilingual.report import chosen_runs

    sweeps = pd.DataFrame({"model": ["m", "m"], "head": ["linear", "mlp"], "prox_id": [0.0, 0.0],
                           "ortho": [0.0, 0.0], "val_macro_r1": [0.1, 0.2], "val_macro_r1_last": [0.3, 0.2]})
    runs = {(r["run"], r["rule"]): r for r in chosen_runs(sweeps, {"head": "linear", "prox_id": 0.0, "ortho": 0.0})}
    assert set(runs) == {(run, rule) for run in ("headline", "validation-best") for rule in ("selected", "last")}
    assert runs["validation-best", "selected"]["head"] == "mlp" and runs["headline", "selected"]["head"] == "linear"
    assert runs["validation-best", "last"]["head"] == "linear"          # chosen by the last epoch's score
    with pytest.raises(InputError, match="multilingual.evaluate.headline"):
        chosen_runs(sweeps, {"head": "linear", "prox_id": 1e-3, "ortho": 0.0})
