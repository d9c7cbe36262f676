"""The workflow on a real SLURM cluster: a single node with 2 fake GPUs started for this module.

Needs root (the daemons switch users) and Debian's slurmctld slurmd slurm-client munge plus the
executor plugin (.ci/slurm/install-slurm.sh installs what is missing); skipped with the reason
otherwise, or with SLURM_CLUSTER_TEST=0. The cluster (.ci/slurm/start-slurm.sh) has partitions `cpu`
and `gpu` and two GPUs of model `fake`: SLURM schedules them and sets CUDA_VISIBLE_DEVICES, CUDA
finds none, so the test config sets finetune.gpus: 1 and compute.allow_cpu_fallback: true and the
GPU jobs must log the fallback. Runs through profiles/slurm layered with profiles/slurm-ci:

    snakemake <target> --profile profiles/slurm --workflow-profile profiles/slurm-ci --configfile <test config>

The target is one fine-tune's evaluation (TARGET): 9 SLURM jobs, with every rule that asks for a GPU
(pretrain, extract_features, finetune, eval_features) and the stage-1 CPU rules. Each SLURM job costs
10-40 s here (a Snakemake start inside the job plus the plugin's polling), so the rest of the DAG
(pruning, figures, report: CPU rules submitted the same way) is left to the local whole-workflow run
of tests/test_workflow.py, which keeps the suite within its time budget.

The workflow's code is snapshot first, so that edits to the checkout during the test cannot make
Snakemake rerun jobs (code files are rule inputs). Daemon logs and SLURM's job records are copied to
<tmp>/slurm-daemon-logs before the cluster stops. SLURM_TEST_SNAKEFILE=<path> runs another
Snakefile (to debug this harness only).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from local_env import venv_env
from slurm_log import Job, parse_jobcomp, parse_run

REPO = Path(__file__).resolve().parents[1]
CI = REPO / ".ci" / "slurm"
SPOOL = Path("/var/spool/slurm-ci")
LOCK = Path("/tmp/slurm-ci.lock")  # one CI cluster per machine: concurrent test runs wait here
LOCAL_RULES = {"all"}  # the only jobs allowed to run outside SLURM
TARGET = "results/eval/finetune/clip/similarity/Cs0.5/seed0/metrics.parquet"  # see the module docstring
FALLBACK_LOGGED = "falling back to CPU"  # workflow_scripts.distributed.select_device
NO_GPU_ERROR = "requested a GPU but torch finds none"

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    jobcomp: Path  # one line per finished SLURM job

    def records(self) -> dict[int, dict[str, str]]:
        return parse_jobcomp(self.jobcomp.read_text()) if self.jobcomp.exists() else {}


@dataclass
class Run:
    rc: int
    output: str
    jobs: dict[int, Job]

    def submitted(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.local]


def _sh(*cmd, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)


def _acquire_lock(timeout_s: float = 540):
    """Serialise test runs on this machine (they share /etc/slurm and the daemons' ports)."""
    fh = open(LOCK, "w")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"another SLURM cluster test held {LOCK} for {timeout_s:.0f} s")
            time.sleep(2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get("SLURM_CLUSTER_TEST") == "0":
        pytest.skip("SLURM cluster test disabled by SLURM_CLUSTER_TEST=0")
    if os.geteuid() != 0:
        pytest.skip("SLURM cluster test needs root (apt-get and daemons that switch users)")
    inst = _sh(CI / "install-slurm.sh", sys.executable, timeout=300)
    if inst.returncode != 0:
        pytest.skip(f"SLURM cluster test: cannot install SLURM: {inst.stderr.strip()}")
    lock = _acquire_lock()
    try:
        _sh(CI / "stop-slurm.sh")  # daemons left by a run that was killed (their pid files)
        # twice the cores as SLURM CPUs: jobs are mostly Python start-up and poll waits, so they overlap
        cpus = str(2 * (os.cpu_count() or 1))
        start = _sh(CI / "start-slurm.sh", env={**os.environ, "FAKE_GPUS": "2", "SLURM_CI_CPUS": cpus})
        assert start.returncode == 0, f"start-slurm.sh failed:\n{start.stdout}\n{start.stderr}"
        yield Cluster(jobcomp=SPOOL / "log" / "jobcomp.txt")
    finally:
        keep = tmp_path_factory.mktemp("slurm-daemon-logs")
        if (SPOOL / "log").is_dir():
            shutil.copytree(SPOOL / "log", keep, dirs_exist_ok=True)
        stop = _sh(CI / "stop-slurm.sh", timeout=120)
        lock.close()
        assert stop.returncode == 0, f"stop-slurm.sh failed:\n{stop.stdout}\n{stop.stderr}"
        # every daemon start-slurm.sh started was stopped (their pid files are removed after the kill)
        assert not list(Path("/run/slurm-ci").glob("*.pid")), "a SLURM daemon was not stopped"


def _snapshot(dst: Path) -> Path:
    """A copy of the checkout's source files (what git tracks or would track); SLURM jobs run it."""
    if os.environ.get("SLURM_TEST_SNAKEFILE"):
        return Path(os.environ["SLURM_TEST_SNAKEFILE"])
    listing = _sh("git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard")
    if listing.returncode == 0:
        for rel in listing.stdout.splitlines():
            if (REPO / rel).is_file():
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, dst / rel)
    else:  # not a git checkout
        for d in ("rules", "workflow_scripts", "envs"):
            shutil.copytree(REPO / d, dst / d, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(REPO / "Snakefile", dst / "Snakefile")
    return dst / "Snakefile"


@dataclass
class Workspace:
    """A run directory, the workflow copy it runs, and the SLURM test configs."""

    dir: Path
    snakefile: Path

    def snakemake(self, *args: str, config: str = "config.yaml", timeout: float = 600) -> Run:
        """Run the workflow through the SLURM profiles; the main process's output is kept in a log."""
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(self.snakefile), "--configfile", config,
               "--profile", str(REPO / "profiles/slurm"), "--workflow-profile", str(REPO / "profiles/slurm-ci"),
               "--max-threads", str(os.cpu_count() or 1), *args]
        log = self.dir / f"snakemake-run{len(list(self.dir.glob('snakemake-run*.log')))}.log"
        env = venv_env(OMP_NUM_THREADS="1")   # the real SLURM tools: no scontrol stub here
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True, env=env)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                subprocess.run([*cmd, "--unlock"], cwd=self.dir, capture_output=True, env=env, timeout=120)
                pytest.fail(f"snakemake did not finish in {timeout:.0f} s; see {log}:\n{log.read_text()[-3000:]}")
        text = log.read_text()
        return Run(rc, text, parse_run(text))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """tests/config/test.yaml asking for 1 GPU per GPU job, with one strategy and one fine-tune seed (TARGET
    exists under it), and a copy without the CPU fallback."""
    wd = tmp_path_factory.mktemp("slurm-run")
    cfg = yaml.safe_load((REPO / "tests/config/test.yaml").read_text())
    cfg.setdefault("finetune", {})["gpus"] = 1
    cfg["finetune"]["seeds"] = cfg["finetune"].get("seeds", [0])[:1]
    cfg["misalign"]["strategies"] = cfg["misalign"]["strategies"][:1]
    cfg["compute"] = {**cfg.get("compute", {}), "device": "auto", "allow_cpu_fallback": True}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (wd / "config.nofallback.yaml").write_text(
        yaml.safe_dump({**cfg, "compute": {**cfg["compute"], "allow_cpu_fallback": False}}, sort_keys=False))
    return Workspace(wd, _snapshot(tmp_path_factory.mktemp("workflow")))


@pytest.fixture(scope="module")
def full_run(cluster, workspace) -> Run:
    run = workspace.snakemake(TARGET)
    assert run.rc == 0, f"the workflow failed on SLURM:\n{run.output[-6000:]}"
    return run


def _scontrol(slurm_id: int) -> dict[str, str]:
    """What SLURM was asked for (the controller keeps finished jobs for MinJobAge = 300 s)."""
    out = _sh("scontrol", "-o", "show", "job", slurm_id).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def _state(cluster: Cluster, job: Job) -> dict[str, str]:
    rec = cluster.records().get(job.slurm_ids[-1] if job.slurm_ids else -1)
    assert rec is not None, f"{job.rule} {job.wildcards}: no SLURM record of job {job.slurm_ids}"
    return rec


def test_every_target_is_made_by_a_slurm_job(full_run, workspace, cluster):
    jobs = full_run.jobs.values()
    assert len(full_run.submitted()) >= 3, "the DAG under test is implausibly small"
    assert {j.rule for j in jobs if j.local} <= LOCAL_RULES, "jobs ran outside SLURM"
    for job in full_run.submitted():
        what = f"{job.rule} {job.wildcards}"
        assert job.finished, f"{what} never finished"
        assert job.slurm_ids, f"{what} was not submitted to SLURM"
        assert Path(job.slurm_logs[-1]).is_file(), f"{what}: no SLURM log {job.slurm_logs[-1]}"
        assert Path(job.slurm_logs[-1]).is_relative_to(workspace.dir / "logs/slurm"), "slurm-logdir not used"
        assert _state(cluster, job)["JobState"] == "COMPLETED", what
        for path in job.files("output"):
            assert (workspace.dir / path).exists(), f"{what}: output {path} missing"
    # every file the final target needs exists (nothing is left to do)
    again = workspace.snakemake(TARGET, "--dry-run", timeout=120)
    assert again.rc == 0 and "Nothing to be done" in again.output, again.output[-3000:]


def test_gpu_jobs_get_a_gpu_on_the_gpu_partition(full_run, cluster, workspace):
    gpu_jobs = [j for j in full_run.submitted() if j.gpus > 0]
    assert gpu_jobs, "no job of the test DAG asked for a GPU (finetune.gpus: 1)"
    for job in gpu_jobs:
        what = f"{job.rule} {job.wildcards}"
        assert _state(cluster, job)["Partition"] == "gpu", f"{what}: set-resources partition not applied"
        assert job.resources.get("gpu_model") == "fake", what
        log = (workspace.dir / job.files("log")[0]).read_text()
        visible = [l for l in log.splitlines() if l.startswith("CUDA_VISIBLE_DEVICES=")]
        assert visible and visible[0].split("=", 1)[1] in ("0", "1"), f"{what}: {visible} in its log"
        assert FALLBACK_LOGGED in log, f"{what}: the CPU fallback was not logged"
    for job in full_run.submitted():
        if job.gpus == 0:
            assert _state(cluster, job)["Partition"] == "cpu", f"{job.rule}: CPU job on the GPU partition"


def _producer_and_consumer(run: Run) -> tuple[Job, Job]:
    """A GPU job (a fine-tune if any) and a submitted job that reads one of its outputs."""
    gpu_jobs = sorted((j for j in run.submitted() if j.gpus > 0), key=lambda j: j.rule != "finetune")
    for producer in gpu_jobs:
        made = set(producer.files("output"))
        for job in run.submitted():
            if made & set(job.files("input")):
                return producer, job
    pytest.fail("no submitted job reads the output of a GPU job")


def test_forcerun_resubmits_only_what_the_target_needs(full_run, workspace):
    producer, consumer = _producer_and_consumer(full_run)
    target = consumer.files("output")[0]
    run = workspace.snakemake(target, "--forcerun", producer.rule, timeout=300)
    assert run.rc == 0, run.output[-4000:]
    redone = sorted((j.rule, j.wildcards) for j in run.jobs.values())
    assert redone == sorted([(producer.rule, producer.wildcards), (consumer.rule, consumer.wildcards)])
    assert all(j.slurm_ids and j.finished for j in run.jobs.values()), "rerun not submitted to SLURM"
    for job in run.jobs.values():
        info = _scontrol(job.slurm_ids[-1])
        assert info["Requeue"] == "1", f"{job.rule}: slurm-requeue of profiles/slurm not applied: {info}"
        if job.gpus:
            assert info["TresPerJob"] == f"gres:gpu:fake:{job.gpus}", info


def test_failing_job_fails_the_run_with_a_clear_message(full_run, workspace, cluster):
    """A GPU job without a usable GPU and without allow_cpu_fallback fails; the run reports why.
    (The evaluation features if the DAG has them: a plain-python GPU job fails within the plugin's 12 s
    poll, where a torchrun job is seen one poll (21 s) later; tests/test_distributed.py checks every
    entry point.)"""
    gpu_job = min((j for j in full_run.submitted() if j.gpus > 0), key=lambda j: j.rule != "eval_features")
    target = gpu_job.files("output")[0]
    run = workspace.snakemake(target, "--forcerun", gpu_job.rule, config="config.nofallback.yaml", timeout=300)
    assert run.rc != 0, "the run succeeded although its GPU job could not get a GPU"
    (job,) = run.jobs.values()
    assert not job.local and job.slurm_ids, "the failing job was not submitted to SLURM"
    assert _state(cluster, job)["JobState"] == "FAILED"
    assert f"SLURM-job '{job.slurm_ids[-1]}' failed" in run.output
    assert f"Error in rule {gpu_job.rule}" in run.output
    assert NO_GPU_ERROR in run.output, "the job's own error message is not shown (show-failed-logs)"
    # profiles/slurm retries once; the rules' memory requests double with each attempt
    assert len(job.slurm_ids) == 2, f"expected 2 attempts (retries: 1), SLURM jobs {job.slurm_ids}"
    mem = [_scontrol(i)["MinMemoryNode"] for i in job.slurm_ids]
    assert int(mem[1].rstrip("M")) == 2 * int(mem[0].rstrip("M")), f"memory per attempt: {mem}"
