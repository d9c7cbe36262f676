"""A copy of this checkout's source files, for tests that run the workflow from elsewhere (a moved checkout,
SLURM jobs that run their own copy)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_checkout(dest: Path) -> Path:
    """Copy what git tracks or would track (not results/, .venv/...) to `dest`; returns `dest`. Outside a
    git checkout: the workflow's own files."""
    dest.mkdir(parents=True, exist_ok=True)
    listing = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True)
    if listing.returncode == 0:
        for rel in listing.stdout.splitlines():
            if (REPO / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, dest / rel)
    else:
        for name in ("rules", "workflow_scripts", "envs", "profiles"):
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("Snakefile", "config.yaml"):
            shutil.copy2(REPO / name, dest / name)
    return dest
