"""The conda environments mirror the pinned pip requirements exactly."""

from __future__ import annotations

import yaml


def _requirements(path):
    lines = [l.strip() for l in open(path) if l.strip() and not l.startswith("#")]
    out = []
    for line in lines:
        if line.startswith("-r "):
            out += _requirements(path.parent / line[3:])
        else:
            out.append(line)
    return out


def test_conda_envs_mirror_requirements(repo):
    for req, env in (("requirements-cpu.txt", "workflow.yaml"), ("requirements-gpu.txt", "workflow-gpu.yaml")):
        pip = _requirements(repo / "envs" / req)
        spec = yaml.safe_load((repo / "envs" / env).read_text())
        conda_pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        assert conda_pip == pip, env
    assert "cupy-cuda12x==14.2.0" in _requirements(repo / "envs/requirements-gpu.txt")
