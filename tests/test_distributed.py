"""Device selection: a job given a GPU that finds none fails clearly unless the config allows the CPU
fallback (issue 7), in every entry point that runs the towers."""

from __future__ import annotations

import logging

import pytest
import torch

from workflow_scripts.common.distributed import select_device
from workflow_scripts.common.errors import InputError

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
NO_FALLBACK = {"compute": {"device": "auto", "allow_cpu_fallback": False}}


def test_cpu_is_cpu_whatever_was_asked():
    assert select_device("cpu", want_gpu=True, allow_cpu_fallback=False).type == "cpu"


@needs_no_cuda
def test_auto_without_a_gpu_request_runs_on_cpu_silently(caplog):
    with caplog.at_level(logging.WARNING):
        assert select_device("auto", want_gpu=False, allow_cpu_fallback=False).type == "cpu"
    assert not caplog.records


@needs_no_cuda
@pytest.mark.parametrize("device,want_gpu", [("auto", True), ("cuda", False)])
def test_gpu_requested_but_missing_fails_without_fallback(monkeypatch, device, want_gpu):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(InputError, match=r"requested a GPU but torch finds none \(CUDA_VISIBLE_DEVICES=1\)"):
        select_device(device, want_gpu=want_gpu, allow_cpu_fallback=False)


@needs_no_cuda
def test_fallback_is_logged(caplog):
    with caplog.at_level(logging.WARNING):
        assert select_device("auto", want_gpu=True, allow_cpu_fallback=True).type == "cpu"
    assert "falling back to CPU" in caplog.text


@needs_no_cuda
def test_tower_entry_points_check_the_device_first(tmp_path):
    """Feature cache and evaluation features refuse before touching the (here missing) checkpoint."""
    from workflow_scripts.evaluate.run import extract_eval_features
    from workflow_scripts.finetune.features import extract

    missing = str(tmp_path / "missing.pt")
    with pytest.raises(InputError, match="requested a GPU"):
        extract_eval_features(NO_FALLBACK, "clip", missing, want_gpu=True)
    with pytest.raises(InputError, match="requested a GPU"):
        extract(NO_FALLBACK, "clip", missing, str(tmp_path / "out.npz"), want_gpu=True)


@needs_no_cuda
def test_pretraining_checks_the_device_before_training(tiny_world, tmp_path):
    from test_pretrain import make_config

    from workflow_scripts.models import pretrain

    config = make_config(tiny_world, steps=2)
    config["compute"] = {**config.get("compute", {}), "device": "auto", "allow_cpu_fallback": False}
    out = tmp_path / "clip" / "checkpoint.pt"
    with pytest.raises(InputError, match="requested a GPU"):
        pretrain.run(config, "clip", out, tmp_path / "log.jsonl", want_gpu=True)
    assert not out.exists() and not out.with_name(pretrain.PARTIAL_NAME).exists()
