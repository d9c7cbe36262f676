"""Exp 3's orthogonality arm: the penalty against numpy and its gradient against the closed form, λo = 0
bit-identical to the fine-tune without the penalty, λo > 0 makes the neurons more orthogonal, and the
config switch adds <model>-ortho pseudo-models (off by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workflow_scripts.common import distributed
from workflow_scripts.finetune import train as finetune
from workflow_scripts.common.config import load_config, validate_config
from workflow_scripts.common.errors import InputError
from workflow_scripts.models.clip import Head, Projection

SINGLE = distributed.Dist(0, 1, 0, torch.device("cpu"))


def test_penalty_and_gradient_against_references():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(5, 7))
    want = ((P @ P.T - np.eye(5)) ** 2).sum() / 25
    rows = torch.tensor(P, requires_grad=True)
    got = finetune.orthogonality_penalty(rows)
    assert float(got.detach()) == pytest.approx(want, rel=1e-12)
    got.backward()
    closed = 4 * (P @ P.T - np.eye(5)) @ P / 25
    np.testing.assert_allclose(rows.grad.numpy(), closed, rtol=1e-10)


def _head(seed: int) -> Head:
    g = torch.Generator().manual_seed(seed)
    image_w = torch.randn(6, 4, generator=g) * 0.5          # x @ W (open_clip ViT layout)
    text_w = torch.randn(4, 5, generator=g) * 0.5            # nn.Linear layout: [out, in]
    names = {"visual.proj": image_w, "text_projection.weight": text_w}
    return Head(Projection(image_w, False), Projection(text_w, True), names, 10.0)


class Features:
    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(3)
        self.image, self.text = torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g)

    def __call__(self, idx, epoch, step):
        i = torch.as_tensor(idx)
        return self.image[i], self.text[i]


SETTINGS = {"epochs": 3, "batch_size": 16, "lr": 1e-2, "lr_start": 1e-4, "lr_end": 1e-4, "warmup_epochs": 1,
            "weight_decay": 0.1, "betas": [0.9, 0.98], "eps": 1e-8, "checkpoint_every": 100}


def _train(extra: dict) -> tuple[Head, list[dict]]:
    head = _head(1)
    history = finetune.train(head, Features(), 64, {**SETTINGS, **extra}, 0, SINGLE)
    return head, history


def test_lambda_zero_is_bit_identical_to_the_original_recipe():
    """finetune.train without the key (every model that is not an arm), with λo = 0, and with the config's
    finetune.orthogonality section among the settings (as the tests pass finetune.* through) all agree."""
    base, base_log = _train({})
    section, _ = _train({"orthogonality": {"arm": True, "lambda": 2.0}})
    for a, b in zip(base.parameters, section.parameters):
        assert torch.equal(a, b)
    zero, zero_log = _train({"ortho_lambda": 0.0})
    for a, b in zip(base.parameters, zero.parameters):
        assert torch.equal(a, b)
    assert base_log == zero_log
    assert not torch.equal(base.parameters[0], _head(1).parameters[0])        # it did train


def test_positive_lambda_makes_the_neurons_more_orthogonal():
    base, _ = _train({})
    arm, arm_log = _train({"ortho_lambda": 5.0})

    def penalty(head):
        return sum(float(finetune.orthogonality_penalty(r)) for r in head.matrices())

    assert penalty(arm) < penalty(base)
    assert all(np.isfinite(r["loss"]) for r in arm_log)


REPO = Path(__file__).resolve().parents[1]


def _config(**orthogonality):
    return load_config(REPO / "config.yaml", {"finetune": {"models": ["clip"], "orthogonality": orthogonality}})


def test_arm_is_off_by_default_and_adds_pseudo_models_when_on():
    off = _config()
    assert off["finetune"]["models"] == ["clip"] and not [m for m in off["models"] if "finetune_of" in m]
    assert not any("finetune_of" in spec for spec in off["models"].values())
    on = _config(arm=True, **{"lambda": 0.5})
    assert on["finetune"]["models"] == ["clip", "clip-ortho"]
    arm = on["models"]["clip-ortho"]
    assert arm["finetune_of"] == "clip" and arm["finetune_orthogonality"] == 0.5
    assert arm["source"] == "checkpoint" and arm["checkpoint"].endswith("pretrain/clip/checkpoint.pt")
    assert arm["arch"] == on["models"]["clip"]["arch"]
    assert validate_config(on) == on                                          # idempotent


def test_a_model_named_like_the_arm_is_refused():
    models = {name: {"source": "pretrain", "arch": "fp-tiny-vit"} for name in ("clip", "laclip", "clip-ortho")}
    with pytest.raises(InputError, match=r"models\.clip-ortho"):
        load_config(REPO / "config.yaml", {"finetune": {"models": ["clip"], "orthogonality": {"arm": True}},
                                           "models": models})


def test_rule_settings_are_unchanged_for_models_that_are_not_arms():
    from workflow_scripts.common.config import arm_finetune_settings, finetune_source

    on = _config(arm=True, **{"lambda": 0.5})
    settings = {"epochs": 10, "lr": 1e-3, "orthogonality": on["finetune"]["orthogonality"]}
    assert arm_finetune_settings(settings, on["models"]["clip"]) == {"epochs": 10, "lr": 1e-3}
    assert arm_finetune_settings(settings, on["models"]["clip-ortho"]) == {"epochs": 10, "lr": 1e-3,
                                                                           "orthogonality": 0.5}
    assert finetune_source(on, "clip-ortho") == "clip" and finetune_source(on, "clip") == "clip"


def test_arm_table_puts_base_and_arm_side_by_side():
    import pandas as pd

    from workflow_scripts.finetune.orthogonality_arm import arm_table

    def rows(model, shift):
        base = {"strategy": "similarity", "cs": 0.5, "n": 3, "ci_low": 0.0, "ci_high": 1.0, "diff_ci_low": -1.0,
                "diff_ci_high": 1.0, "text_changed": 0.4, "contradicts_any": 0.3, "model": model}
        purity = pd.DataFrame([{**base, "metric": "avg_abs_cos_sim", "projection": "text", "mean": 0.1 - shift,
                                "diff": 0.01}])
        metrics = pd.DataFrame([{**base, "metric": "acc1", "set": "shape", "mean": 0.5, "diff": -0.02 - shift}])
        return purity, metrics

    def effective(purity, metrics):     # as workflow_scripts.report.aggregate.exp3_tables writes exp3_effective
        return pd.concat([purity.assign(quantity="purity " + purity["projection"]).drop(columns="projection"),
                          metrics.assign(quantity="acc1 " + metrics["set"]).drop(columns="set")], ignore_index=True)

    (pb, mb), (pa, ma) = rows("clip", 0.0), rows("clip-ortho", 0.01)
    table = arm_table(effective(pd.concat([pb, pa]), pd.concat([mb, ma])), {"clip-ortho": "clip"})
    purity = table[table["quantity"] == "purity_text"].iloc[0]
    assert purity["mean_base"] == pytest.approx(0.1) and purity["mean_arm"] == pytest.approx(0.09)
    acc = table[table["quantity"] == "acc1_shape"].iloc[0]
    assert acc["diff_base"] == pytest.approx(-0.02) and acc["diff_arm"] == pytest.approx(-0.03)
    assert acc["text_changed"] == 0.4 and list(table["arm"].unique()) == ["clip-ortho"]
    with pytest.raises(InputError, match="clip-ortho"):
        arm_table(effective(pb, mb), {"clip-ortho": "clip"})


def test_the_arm_uses_its_base_models_checkpoint_towers_and_features(tmp_path):
    """With the arm on, the plan has the arm's own fine-tunes and evaluations, but no import of its
    checkpoint, no second feature extraction or evaluation-feature job and no second concept encoding:
    the arm's towers are its base model's."""
    import subprocess
    import sys

    import yaml
    from local_env import local_env

    arm = tmp_path / "arm.yaml"
    arm.write_text(yaml.safe_dump({"finetune": {"orthogonality": {"arm": True, "lambda": 1.0}}}))
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                          "--directory", str(tmp_path), "--configfile", str(REPO / "config.yaml"), str(arm),
                          "-n", "--forceall", "--cores", "1"],
                         capture_output=True, text=True, env=local_env(), timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    plan = out.stdout
    assert "results/finetune/clip-ortho/similarity/Cs0.8/seed2/checkpoint.pt" in plan
    assert "results/eval/pretrained/clip-ortho/metrics.parquet" in plan          # its Exp 1 / Exp 3 reference row
    assert "results/sparse/clip-ortho/sweep.parquet" in plan
    for other in ("rule import_checkpoint", "results/pretrain/clip-ortho/", "results/eval/features/clip-ortho",
                  "results/features/clip-ortho/", "results/sparse/clip-ortho/concepts.npz"):
        assert other not in plan, other
