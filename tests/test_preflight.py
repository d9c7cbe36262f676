"""workflow_scripts.cluster.preflight: sbatch requests read from a dry run, and the site checks against fake
sinfo / sacctmgr / scontrol answers (unit tests), plus the CLI on the real workflow with stub SLURM tools."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from local_env import local_env
from workflow_scripts.cluster import preflight
from workflow_scripts.common.errors import InputError
from workflow_scripts.cluster.preflight import Job, Settings, check, sbatch_options

REPO = Path(__file__).resolve().parents[1]

SINFO = "cpu|(null)\ngpu|gpu:a100:4(S:0-1)\ngpu|gpu:h100:8\ndebug|gpu:2\n"
SCONTROL_DBD = "Configuration data as of 2026-12-02T10:00:00\nAccountingStorageType   = accounting_storage/slurmdbd\nMinJobAge               = 300 sec\n"
SCONTROL_NO_DBD = SCONTROL_DBD.replace("accounting_storage/slurmdbd", "accounting_storage/none")


def fake(answers: dict[str, tuple[int, str] | None]):
    """A runner answering by command name (None: the command is not installed), recording the calls."""
    calls = []

    def run(cmd):
        calls.append(list(cmd))
        return answers.get(cmd[0])

    run.calls = calls
    return run


def site(**over):
    answers = {"sinfo": (0, SINFO), "sacctmgr": (0, "lab42\nother\n"), "scontrol": (0, SCONTROL_DBD)}
    answers.update(over)
    return fake(answers)


def job(rule, gpus=0, partition="cpu", account="lab42", model=None, threads=1, **extra):
    res = {"mem_mb": "4000", "runtime": "60", "slurm_partition": partition, "slurm_account": account, **extra}
    if gpus:
        res["gpu"] = str(gpus)
    if model is not None:
        res["gpu_model"] = model
    fields = {"output": f"results/{rule}.out", "resources": ", ".join(f"{k}={v}" for k, v in res.items())}
    if threads > 1:
        fields["threads"] = str(threads)
    return Job(rule=rule, local=False, jobid=len(rule), fields=fields)


def settings(status="sacct", init=40, files=()):
    return Settings(executor="slurm", jobs=100, latency_wait=60, retries=1, keep_going=True, requeue=True,
                    status_command=status, init_seconds=init, profile_files=list(files))


JOBS = [job("make_world", threads=2), job("finetune", gpus=2, partition="gpu", model="a100")]


def test_sbatch_options_follow_the_resources():
    assert sbatch_options(JOBS[0]) == ["-A lab42", "-p cpu", "-t 60", "--mem 4000", "--cpus-per-task=2"]
    assert sbatch_options(JOBS[1], requeue=True) == ["-A lab42", "-p gpu", "-t 60", "--mem 4000", "--requeue",
                                                     "--cpus-per-task=1", "--gpus=a100:2"]
    assert sbatch_options(job("x", gpus=1, partition="gpu", model=""))[-1] == "--gpus=1"   # any GPU model
    table = preflight.request_table([*JOBS, JOBS[1], Job("all", local=False, jobid=0)])   # `all`: no output
    assert [(r, n) for r, n, _ in table] == [("finetune", 2), ("make_world", 1)]


def test_a_consistent_site_passes_and_names_what_it_checked():
    rep = check(settings(), JOBS, site(), "alice")
    assert rep.problems == [] and rep.skipped == []
    assert any("partitions: cpu, gpu exist" in m for m in rep.ok)
    assert any("accounts: lab42" in m for m in rep.ok)
    assert any("job status command sacct" in m for m in rep.ok)


def test_placeholders_fail_first_and_name_the_profile_file(tmp_path):
    prof = tmp_path / "config.yaml"
    prof.write_text('default-resources:\n  slurm_partition: "EDIT_cpu_partition"\n')
    jobs = [job("make_world", partition="EDIT_cpu_partition"), job("finetune", 1, "gpu", model="EDIT_gpu_model")]
    run = site()
    rep = check(settings(files=[prof]), jobs, run, "alice")
    assert len(rep.problems) == 2
    assert "EDIT_cpu_partition is still a placeholder (slurm_partition of rules make_world)" in rep.problems[0]
    assert str(prof) in rep.problems[0] and "make slurm-profile" in rep.problems[0]
    assert "EDIT_gpu_model" in rep.problems[1] and "the command line" in rep.problems[1]
    assert run.calls == [], "no site query before the placeholders are filled in"


@pytest.mark.parametrize("jobs, expected", [
    ([job("make_world", partition="cpux")], "partition 'cpux' (rule make_world) does not exist; sinfo lists: cpu, debug, gpu"),
    ([job("finetune", 1, partition="cpu", model="")], "partition 'cpu' (GPU rule finetune) has no GPUs"),
    ([job("finetune", 1, partition="gpu", model="v100")], "partition 'gpu' has no GPUs of model 'v100' (rule finetune); its GRES lists: a100, h100"),
    ([job("make_world", account="nolab")], "account 'nolab' is not one of alice's accounts (sacctmgr lists: lab42, other)"),
])
def test_site_mismatches_fail_with_the_reason(jobs, expected):
    rep = check(settings(), jobs, site(), "alice")
    assert rep.problems == [expected] or any(expected in p for p in rep.problems), rep.problems


def test_untyped_gpus_accept_any_model_request():
    rep = check(settings(), [job("finetune", 1, partition="debug", model="")], site(), "alice")
    assert rep.problems == []


def test_sacct_without_accounting_fails_and_squeue_passes():
    no_dbd = site(scontrol=(0, SCONTROL_NO_DBD), sacctmgr=(1, "sacctmgr: error: accounting storage is disabled"))
    rep = check(settings("sacct"), JOBS, no_dbd, "alice")
    assert len(rep.problems) == 1 and "slurm-status-command: sacct" in rep.problems[0]
    assert "would hang" in rep.problems[0] and "squeue" in rep.problems[0]
    assert any("accounts lab42: sacctmgr not found or accounting disabled" in s for s in rep.skipped)
    assert check(settings("squeue", init=40), JOBS, no_dbd, "alice").problems == []
    # None = the plugin's default, which is sacct wherever sacct is installed
    assert len(check(settings(None), JOBS, no_dbd, "alice").problems) == 1


def test_squeue_with_a_short_min_job_age_falls_back_to_sacct():
    short = SCONTROL_NO_DBD.replace("300 sec", "60 sec")
    rep = check(settings("squeue", init=40), JOBS, site(scontrol=(0, short)), "alice")
    assert len(rep.problems) == 1 and "MinJobAge >= 3 x" in rep.problems[0] and "120 s" in rep.problems[0]
    assert check(settings("squeue", init=10), JOBS, site(scontrol=(0, short)), "alice").problems == []


def test_missing_tools_are_skipped_not_passed():
    rep = check(settings(), JOBS, fake({}), "alice")
    assert rep.problems == [] and rep.ok == []
    assert len(rep.skipped) == 3 and all("not found" in s for s in rep.skipped)


def test_a_local_executor_is_refused():
    rep = check(Settings(None, None, 5, 0, False, None, None, None), JOBS, site(), "alice")
    assert rep.problems and "not 'slurm'" in rep.problems[0]


def test_sinfo_failure_is_an_error():
    with pytest.raises(InputError, match="sinfo failed"):
        check(settings(), JOBS, site(sinfo=(1, "slurm_load_partitions: Unable to contact slurm controller")), "a")


# --------------------------------------------------------------------------- write-profile


def test_write_profile_fills_the_template(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    dest = preflight.write_profile("cpuq", "gpuq", None, "", status_command="squeue")
    assert dest == tmp_path / "snakemake" / "slurm" / "config.yaml"
    text = dest.read_text()
    assert "EDIT" not in text
    prof = yaml.safe_load(text)
    assert "slurm_account" not in prof["default-resources"], "no account: the line is removed"
    assert prof["default-resources"]["slurm_partition"] == "cpuq"
    assert prof["set-resources"]["finetune"] == {"slurm_partition": "gpuq", "gpu_model": ""}
    assert prof["slurm-status-command"] == "squeue"
    assert preflight.write_profile("cpuq", "gpuq", None, "", status_command="squeue") == dest   # same: no-op
    with pytest.raises(InputError, match="exists with other values; add FORCE=1"):
        preflight.write_profile("cpuq", "gpuq", "lab", "a100")
    preflight.write_profile("cpuq", "gpuq", "lab", "a100", force=True)
    assert yaml.safe_load(dest.read_text())["default-resources"]["slurm_account"] == "lab"


@pytest.mark.parametrize("args, message", [
    (("", "gpu", None, ""), "PARTITION=''"),
    (("cpu", "gpu q", None, ""), "GPU_PARTITION='gpu q'"),
    (("cpu", "gpu", "a;b", ""), "ACCOUNT='a;b'"),
    (("cpu", "gpu", None, "a100:2"), "GPU_MODEL='a100:2'"),
])
def test_write_profile_rejects_bad_values(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        preflight.write_profile(*args)
    assert not (tmp_path / "snakemake").exists()


# --------------------------------------------------------------------------- the CLI on the real workflow


def _stub_tools(bin_dir: Path, scontrol: str) -> None:
    bin_dir.mkdir()
    answers = {"sinfo": "cpuq|(null)\ngpuq|gpu:h100:4\n", "sacctmgr": "lab42\n", "scontrol": scontrol,
               "sacct": "", "squeue": ""}   # the plugin looks for sacct/squeue once it finds sinfo
    for name, text in answers.items():
        (bin_dir / f"{name}.txt").write_text(text)
        (bin_dir / name).write_text(f"#!/bin/sh\ncat {bin_dir / (name + '.txt')}\n")
        (bin_dir / name).chmod(0o755)


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed")
@pytest.mark.parametrize("scontrol, rc", [(SCONTROL_DBD, 0), (SCONTROL_NO_DBD, 1)])
def test_cli_prints_requests_and_exits_by_the_checks(tmp_path, scontrol, rc):
    env = local_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    env.pop("SNAKEMAKE_PROFILE", None)
    _stub_tools(tmp_path / "bin", scontrol)
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    preflight_cli = [sys.executable, "-m", "workflow_scripts.cluster.preflight"]
    subprocess.run([*preflight_cli, "write-profile", "--partition", "cpuq", "--gpu-partition", "gpuq", "--account",
                    "lab42", "--gpu-model", "h100"], env=env, check=True, capture_output=True, timeout=120)
    run = tmp_path / "run"
    run.mkdir()
    cfg = yaml.safe_load((REPO / "tests/config/test.yaml").read_text())
    cfg["finetune"]["gpus"] = 2
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/eval/finetune/clip/similarity/Cs0.5/seed0/metrics.parquet"   # before --configfile (nargs=+)
    proc = subprocess.run([*preflight_cli, "check", target, "--profile", "slurm", "--snakefile", str(REPO / "Snakefile"),
                           "--configfile", "config.yaml"],
                          cwd=run, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == rc, out + proc.stderr
    assert "executor slurm, jobs 100, latency-wait 60 s, retries 1" in out
    assert str(tmp_path / "xdg/snakemake/slurm/config.yaml") in out
    ft = [line for line in out.splitlines() if line.strip().startswith("finetune ")]
    assert ft and "-A lab42 -p gpuq -t 120 --mem 3000 --requeue --cpus-per-task=1 --gpus=h100:2" in ft[0], out
    assert "  ok    partitions: cpuq, gpuq exist (sinfo)" in out
    if rc:
        assert "FAIL  slurm-status-command: sacct" in out and "nothing was submitted" in out
    else:
        assert "preflight: ready to submit" in out


def test_a_profile_not_written_yet_says_how_to_write_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"(?s)no profile.yaml.*make slurm-profile PARTITION="):
        preflight.effective_settings(["--profile", "slurm"])
