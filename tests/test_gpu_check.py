"""bench/gpu_check.py without a GPU: its help works and it refuses to measure anything on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_help():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "2 no GPU here" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: run the check itself")
def test_without_a_gpu_it_stops_and_says_nothing_was_measured():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "torch finds no CUDA GPU" in proc.stderr and "Nothing was measured" in proc.stderr
    assert proc.stdout == "", "nothing may be printed as a measurement"


def test_the_optimizer_check_passes_on_equal_optimizers_and_fails_on_a_different_one(monkeypatch):
    """The check's own logic, on the CPU (where the result means nothing about CUDA): it passes for the
    real pair and fails when the step differs (an lr off by a factor)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    check = gpu_check.Check()
    gpu_check.check_adamw(check, steps=3, device="cpu")
    assert check.failures == []

    from workflow_scripts.finetune import adamw

    original = adamw.AdamW.step
    def off_step(self):
        self.lr *= 1.01
        original(self)
    monkeypatch.setattr(adamw.AdamW, "step", off_step)
    gpu_check.check_adamw(check, steps=3, device="cpu")
    assert len(check.failures) == 1
