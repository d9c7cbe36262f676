"""The Snakemake profiles: their keys, and the DAG they build (dry runs, no jobs are run)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from local_env import local_env
from slurm_log import parse_run

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"
GPU_RULES = {"pretrain", "extract_features", "finetune", "eval_features"}  # `gpu` from finetune.gpus
PLACEHOLDERS = {"EDIT_cpu_partition", "EDIT_gpu_partition", "EDIT_account", "EDIT_gpu_model"}


def profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def test_default_profile_is_local_with_a_gpu_cap():
    p = profile("default")
    assert "executor" not in p
    assert p["cores"] == "all"
    assert isinstance(p["resources"]["gpu"], int) and p["resources"]["gpu"] >= 1
    assert p["printshellcmds"] and p["show-failed-logs"] and p["rerun-incomplete"]
    assert p["keep-going"] is False
    assert p["latency-wait"] >= 1


def test_slurm_profile_keys():
    p = profile("slurm")
    assert p["executor"] == "slurm"
    assert p["jobs"] >= 1 and p["latency-wait"] >= 30 and p["retries"] >= 1
    assert p["slurm-requeue"] is True and p["slurm-logdir"]
    assert p["slurm-status-command"] in ("sacct", "squeue")
    assert "resources" not in p and "cores" not in p  # no local caps on a cluster
    d = p["default-resources"]
    assert d["slurm_partition"] == "EDIT_cpu_partition" and d["slurm_account"] == "EDIT_account"
    assert d["mem_mb"] > 0 and d["runtime"] > 0
    assert set(p["set-resources"]) == GPU_RULES
    for rule, res in p["set-resources"].items():
        assert res == {"slurm_partition": "EDIT_gpu_partition", "gpu_model": "EDIT_gpu_model"}, rule
    # the only values a site has to edit are the documented placeholders
    text = (PROFILES / "slurm/config.yaml").read_text()
    assert {w.strip('"') for w in text.split() if w.strip('"').startswith("EDIT_")} == PLACEHOLDERS
    readme = (PROFILES / "README.md").read_text()
    for key in p:
        assert f"`{key}`" in readme, f"profiles/README.md does not explain {key}"


def test_slurm_ci_profile_only_overrides_slurm_keys():
    base, ci = profile("slurm"), profile("slurm-ci")
    assert set(ci) <= set(base), "profiles/slurm-ci must only override keys of profiles/slurm"
    assert ci["slurm-status-command"] == "squeue"
    assert ci["slurm-init-seconds-before-status-checks"] == 1
    assert set(ci["set-resources"]) == set(base["set-resources"])
    assert not any(str(v).startswith("EDIT_") for r in ci["set-resources"].values() for v in r.values())
    assert not any(str(v).startswith("EDIT_") for v in ci["default-resources"].values())


def _dry_run(tmp_path: Path, *profile_args: str, gpus: int) -> str:
    """`snakemake -n` on the test config with finetune.gpus = gpus, in a scratch run directory."""
    cfg = yaml.safe_load((REPO / "tests/config/test.yaml").read_text())
    cfg.setdefault("finetune", {})["gpus"] = gpus
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile", "config.yaml",
         *profile_args, "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=local_env())
    assert proc.returncode == 0, f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def test_default_profile_dry_run(tmp_path):
    out = _dry_run(tmp_path, "--workflow-profile", str(PROFILES / "default"), gpus=0)
    jobs = parse_run(out)
    assert jobs and all(j.gpus == 0 for j in jobs.values())


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed (pip install -r envs/requirements-slurm.txt)")
def test_slurm_profile_dry_run_requests_gpus_only_for_gpu_rules(tmp_path):
    out = _dry_run(tmp_path, "--workflow-profile", str(PROFILES / "slurm"), gpus=2)
    jobs = [j for j in parse_run(out).values() if j.rule != "all"]
    gpu_rules = {j.rule for j in jobs if j.gpus > 0}
    assert gpu_rules and gpu_rules <= GPU_RULES, gpu_rules
    for job in jobs:
        res = job.resources
        assert "tasks" not in res, f"{job.rule}: `tasks` would become --ntasks-per-gpu (one GPU per process)"
        if job.gpus > 0:
            assert 1 <= job.gpus <= 2, job.rule  # finetune.gpus, or 1 for single-process pretraining
            assert (res["slurm_partition"], res["gpu_model"]) == ("EDIT_gpu_partition", "EDIT_gpu_model"), job.rule
        else:
            assert res["slurm_partition"] == "EDIT_cpu_partition" and "gpu_model" not in res, job.rule
    rules = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                            "--configfile", "config.yaml", "--list-rules"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300, env=local_env()).stdout.split()
    assert GPU_RULES <= set(rules), f"profiles name rules the workflow does not have: {GPU_RULES - set(rules)}"
