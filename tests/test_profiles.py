"""The Snakemake profiles: their keys, and what Snakemake resolves from each way of naming the cluster
profile (dry runs and Snakemake's own argument parser; no cluster, no jobs run)."""

from __future__ import annotations

import importlib.util
import json
import re
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
# What profiles/default may hold: keys that mean the same on a laptop and under the SLURM executor.
HARMLESS_ON_A_CLUSTER = {"cores", "printshellcmds", "show-failed-logs", "rerun-incomplete"}
SITE = {"partition": "cpuq", "gpu_partition": "gpuq", "account": "lab42", "gpu_model": "h100"}
TEMPLATE_VALUES = {"partition": "EDIT_cpu_partition", "gpu_partition": "EDIT_gpu_partition",
                   "account": "EDIT_account", "gpu_model": "EDIT_gpu_model"}
needs_plugin = pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                                  reason="snakemake-executor-plugin-slurm not installed "
                                         "(pip install -r envs/requirements-slurm.txt)")


def profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def test_default_profile_holds_only_keys_that_are_harmless_on_a_cluster():
    p, cluster = profile("default"), profile("slurm")
    assert set(p) <= HARMLESS_ON_A_CLUSTER, f"local-only keys in profiles/default: {set(p) - HARMLESS_ON_A_CLUSTER}"
    assert p["cores"] == "all"
    for key in set(p) - {"cores"}:   # cores: see test_cluster_settings_as_resolved (threads are not capped)
        assert p[key] == cluster[key], f"profiles/default would override {key} of profiles/slurm"


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
    assert set(re.findall(r"EDIT_\w+", text)) == PLACEHOLDERS
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


# --------------------------------------------------------------------------- what Snakemake resolves

def _run_dir(tmp_path: Path, gpus: int) -> Path:
    """A scratch run directory that looks like the repository root (profiles/ is a link to the real one)
    with the test config asking for `gpus` GPUs per GPU job."""
    cfg = yaml.safe_load((REPO / "tests/config/test.yaml").read_text())
    cfg.setdefault("finetune", {})["gpus"] = gpus
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "profiles").symlink_to(PROFILES)
    return tmp_path


_RESOLVE = """
import json, sys
from workflow_scripts.cluster.preflight import effective_settings
s = effective_settings(sys.argv[1:])
print(json.dumps({k: (v if k != "profile_files" else [str(p) for p in v]) for k, v in vars(s).items()}))
"""


def _resolve(run_dir: Path, args: list[str], env: dict) -> tuple[dict, dict]:
    """(settings as Snakemake's parser resolves them, jobs of `snakemake -n`) for these arguments."""
    base = ["--snakefile", str(REPO / "Snakefile"), "--configfile", "config.yaml", *args]
    proc = subprocess.run([sys.executable, "-c", _RESOLVE, *base], cwd=run_dir, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = json.loads(proc.stdout.strip().splitlines()[-1])
    dry = subprocess.run([sys.executable, "-m", "snakemake", *base, "--dry-run"], cwd=run_dir, capture_output=True,
                         text=True, timeout=300, env=env)
    assert dry.returncode == 0, f"dry run failed:\n{dry.stdout[-3000:]}\n{dry.stderr[-3000:]}"
    return settings, parse_run(dry.stdout + dry.stderr)


def _write_user_profile(config_home: Path, env: dict) -> Path:
    """The documented one-time step (`make slurm-profile ...` runs this command)."""
    proc = subprocess.run([sys.executable, "-m", "workflow_scripts.cluster.preflight", "write-profile",
                           "--partition", SITE["partition"], "--gpu-partition", SITE["gpu_partition"],
                           "--account", SITE["account"], "--gpu-model", SITE["gpu_model"]],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    written = config_home / "snakemake" / "slurm" / "config.yaml"
    assert written.is_file() and str(written) in proc.stdout
    return written


@needs_plugin
@pytest.mark.parametrize("naming", ["--profile slurm", "--profile profiles/slurm", "SNAKEMAKE_PROFILE=slurm"])
def test_cluster_settings_as_resolved(tmp_path, naming):
    """Each way of naming the cluster profile gives the cluster's settings: profiles/default (loaded as
    the workflow profile on top) overrides none of them and caps no GPU request."""
    run_dir = _run_dir(tmp_path / "run", gpus=2)
    env = local_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    env.pop("SNAKEMAKE_PROFILE", None)
    user_profile = _write_user_profile(tmp_path / "xdg", env)
    if naming.startswith("SNAKEMAKE_PROFILE="):
        env["SNAKEMAKE_PROFILE"], args = naming.split("=", 1)[1], []
    else:
        args = naming.split()
    settings, jobs = _resolve(run_dir, args, env)

    shipped = profile("slurm")
    assert settings["executor"] == "slurm"
    assert settings["jobs"] == shipped["jobs"]
    assert settings["latency_wait"] == shipped["latency-wait"]
    assert settings["retries"] == shipped["retries"]
    assert settings["keep_going"] is True and settings["requeue"] is True
    assert settings["status_command"] == shipped["slurm-status-command"]
    assert settings["init_seconds"] == shipped["slurm-init-seconds-before-status-checks"]
    expected_file = user_profile if "profiles/" not in naming else PROFILES / "slurm/config.yaml"
    assert Path(settings["profile_files"][0]).resolve() == expected_file.resolve()
    assert Path(settings["profile_files"][-1]).resolve() == (PROFILES / "default/config.yaml").resolve()

    site = SITE if "profiles/" not in naming else TEMPLATE_VALUES
    submitted = [j for j in jobs.values() if j.submitted]
    assert {j.rule for j in submitted} >= GPU_RULES
    declared_threads = {"make_world": 2, "extract_features": 2, "eval_features": 2, "caption_neighbours": 2, "misalign_swaps": 1,
                        "validate_train_images": 2, "validate_eval_images": 2}
    for job in submitted:
        res = job.resources
        assert job.threads == declared_threads.get(job.rule, 1), f"{job.rule}: threads capped to {job.threads}"
        assert res["slurm_account"] == site["account"], job.rule
        if job.rule in GPU_RULES:
            assert job.gpus == (1 if job.rule == "pretrain" else 2), f"{job.rule}: gpu={job.gpus}"
            assert (res["slurm_partition"], res["gpu_model"]) == (site["gpu_partition"], site["gpu_model"]), job.rule
        else:
            assert job.gpus == 0 and res["slurm_partition"] == site["partition"], job.rule
            assert "gpu_model" not in res, job.rule
        assert "tasks" not in res, f"{job.rule}: `tasks` would become --ntasks-per-gpu (one GPU per process)"


def test_user_profile_is_the_template_with_the_site_values(tmp_path):
    env = local_env(XDG_CONFIG_HOME=str(tmp_path))
    written = yaml.safe_load(_write_user_profile(tmp_path, env).read_text())
    shipped = profile("slurm")
    assert set(written) == set(shipped)
    for key in set(shipped) - {"default-resources", "set-resources"}:
        assert written[key] == shipped[key], key
    assert written["default-resources"] == {**shipped["default-resources"], "slurm_partition": SITE["partition"],
                                            "slurm_account": SITE["account"]}
    for rule in shipped["set-resources"]:
        assert written["set-resources"][rule] == {"slurm_partition": SITE["gpu_partition"],
                                                  "gpu_model": SITE["gpu_model"]}
    make = subprocess.run(["make", "-n", "--no-print-directory", "slurm-profile", "PARTITION=a", "GPU_PARTITION=b",
                           "ACCOUNT=", "GPU_MODEL=a100"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "workflow_scripts.cluster.preflight write-profile" in make.stdout, make.stdout + make.stderr


# --------------------------------------------------------------------------- local runs

def test_local_gpu_jobs_start_finetune_gpus_processes(tmp_path):
    """Nothing caps a local job's `gpu` request: finetune.gpus: 4 starts 4 processes per fine-tune."""
    run_dir = _run_dir(tmp_path, gpus=4)
    env = local_env()
    env.pop("SNAKEMAKE_PROFILE", None)
    settings, jobs = _resolve(run_dir, [], env)
    assert settings["executor"] in (None, "local")
    dry = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile",
                          "config.yaml", "--dry-run", "--printshellcmds"],
                         cwd=run_dir, capture_output=True, text=True, timeout=300, env=env)
    finetunes = [j for j in jobs.values() if j.rule == "finetune"]
    assert finetunes and all(j.gpus == 4 for j in finetunes), [j.gpus for j in finetunes]
    shells = [line for line in dry.stdout.splitlines() if "-m workflow_scripts.finetune.train" in line]
    assert shells and all("--nproc-per-node=4" in s and "--gpus 4" in s for s in shells), shells[:1]


@pytest.mark.parametrize("cap, ok", [(4, True), (3, False)])
def test_a_gpu_cap_below_finetune_gpus_is_an_error(tmp_path, cap, ok):
    """Snakemake would lower the fine-tunes' `gpu` request to the cap (fewer processes): refused instead."""
    run_dir = _run_dir(tmp_path, gpus=4)
    dry = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--configfile",
                          "config.yaml", "--resources", f"gpu={cap}", "--dry-run"],
                         cwd=run_dir, capture_output=True, text=True, timeout=300, env=local_env())
    out = dry.stdout + dry.stderr
    assert (dry.returncode == 0) == ok, out[-3000:]
    if not ok:
        assert f"--resources gpu={cap} is below the 4 GPUs a job asks for" in out


def test_make_run_caps_gpus_only_when_asked():
    plain = subprocess.run(["make", "-n", "--no-print-directory", "run"], cwd=REPO, capture_output=True, text=True,
                           timeout=60).stdout
    capped = subprocess.run(["make", "-n", "--no-print-directory", "run", "GPUS=4"], cwd=REPO, capture_output=True,
                            text=True, timeout=60).stdout
    assert "snakemake" in plain and "--resources" not in plain, plain
    assert "--resources gpu=4" in capped, capped


def test_a_job_with_more_processes_than_gpus_stops(monkeypatch):
    import torch

    from workflow_scripts.common import distributed
    from workflow_scripts.common.errors import InputError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    distributed.check_gpu_count(torch.device("cuda", 0), 2)
    distributed.check_gpu_count(torch.device("cpu"), 4)      # CPU (gloo) processes: no GPU needed
    with pytest.raises(InputError, match=r"starts 4 processes, one per GPU .* sees 2 GPU\(s\)"):
        distributed.check_gpu_count(torch.device("cuda", 0), 4)
