"""Environment for the tests' local (non-SLURM) Snakemake runs.

snakemake-executor-plugin-slurm 2.8.0 runs `scontrol show config` when Snakemake loads its plugins,
i.e. at every Snakemake start, and scontrol retries for about 9 s when SLURM's client tools are
installed (tests/test_slurm_cluster.py installs them) but no controller answers. Local runs never
use SLURM, so they get a `scontrol` that fails at once: the plugin then takes its no-SLURM path,
exactly as on a machine without SLURM. The SLURM test itself uses the real tools.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_STUB_DIR: Path | None = None


def _stub_dir() -> Path:
    global _STUB_DIR
    if _STUB_DIR is None:
        _STUB_DIR = Path(tempfile.mkdtemp(prefix="no-slurm-"))
        stub = _STUB_DIR / "scontrol"
        stub.write_text("#!/bin/sh\necho 'scontrol disabled for local test runs (tests/local_env.py)' >&2\nexit 1\n")
        stub.chmod(0o755)
    return _STUB_DIR


def venv_env(**extra: str) -> dict[str, str]:
    """os.environ with this interpreter's bin first on PATH: rules call `python -m ...` and `torchrun`,
    which must come from the test's environment (as `make` arranges)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, **extra}


def local_env(**extra: str) -> dict[str, str]:
    """`venv_env` with the failing scontrol before any real one."""
    env = venv_env(**extra)
    env["PATH"] = os.pathsep.join([str(_stub_dir()), env["PATH"]])
    return env
