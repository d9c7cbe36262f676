"""Shared fixtures: repository paths, a tiny synthetic world generated once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# one thread per pytest-xdist worker (make test runs two on two cores), two for a plain pytest run
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small world (200 training pairs, 40 images per eval set) shared by tests that only read it."""
    from workflow_scripts.world.synthetic import generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(out, seed=3, n_train=200, n_eval=40, image_size=32, n_rewrites=2, max_caption_words=20)
    return out


FIRST = ("test_slurm_cluster", "test_workflow", "test_envs")


def pytest_collection_modifyitems(config, items):
    """Longest modules first, for `make test`'s two pytest-xdist workers (--dist loadfile: a module runs
    on one worker, each worker is handed two modules ahead). The real-cluster test is mostly waiting on
    SLURM's polling and the whole-workflow run is mostly process start-up, so they overlap well; the
    short test_envs is what the cluster's worker takes next. (Local Snakemake runs never wait on the
    SLURM plugin's `scontrol` probe: see tests/local_env.py.)"""
    def rank(item) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        return FIRST.index(name) if name in FIRST else len(FIRST)

    items.sort(key=rank)
