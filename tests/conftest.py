"""Shared fixtures: repository paths, a tiny synthetic world generated once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small world (200 training pairs, 40 images per eval set) shared by tests that only read it."""
    from workflow_scripts.world import generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(out, seed=3, n_train=200, n_eval=40, image_size=32, n_rewrites=2, max_caption_words=20)
    return out


def pytest_collection_modifyitems(config, items):
    """Run the real-cluster test last. Installing SLURM's client tools makes every later Snakemake start
    wait ~9 s while the test cluster is stopped (the SLURM executor plugin asks `scontrol show config` for
    MinJobAge when it is imported), and its failures are the slowest to diagnose."""
    items.sort(key=lambda item: item.module.__name__.endswith("test_slurm_cluster") if item.module else False)
