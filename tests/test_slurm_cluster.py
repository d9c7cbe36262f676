"""The workflow on a real SLURM cluster: a single node with 2 fake GPUs started for this module.

Needs root (the daemons switch users) and Debian's slurmctld slurmd slurm-client munge plus the
executor plugin (.ci/slurm/install-slurm.sh installs what is missing); skipped with the reason
otherwise, or with SLURM_CLUSTER_TEST=0. The cluster (.ci/slurm/start-slurm.sh) has partitions `cpu`
and `gpu` and two GPUs of model `fake`: SLURM schedules them and sets CUDA_VISIBLE_DEVICES, CUDA
finds none, so the test config sets finetune.gpus: 1 and compute.allow_cpu_fallback: true and the
GPU jobs must log the fallback. Runs through profiles/slurm layered with profiles/slurm-ci, with
profiles/default loaded as the workflow profile on top, exactly as a user's `--profile slurm`:

    snakemake <target> --profile profiles/slurm --profile profiles/slurm-ci --configfile <test config>

Before the run, the preflight (workflow_scripts.cluster.preflight) must pass on this cluster and stop on a
missing partition and on `slurm-status-command: sacct` (no accounting here). The forced rerun of one
fine-tune is requeued mid-training (`scontrol requeue`): the job must resume from its resume.pt, and
Snakemake must wait for it and end with projections identical to the uninterrupted run. Last, the
report built with the cluster profile must equal the one built without it.

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
import re
import threading
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import numpy as np

from checkout import copy_checkout
from local_env import venv_env
from slurm_log import Job, parse_jobcomp, parse_run

REPO = Path(__file__).resolve().parents[1]
CI = REPO / ".ci" / "slurm"
SPOOL = Path("/var/spool/slurm-ci")
LOCK = Path("/tmp/slurm-ci.lock")  # one CI cluster per machine: concurrent test runs wait here
LOCAL_RULES = {"all"}  # the only jobs allowed to run outside SLURM
TARGET = "results/eval/finetune/clip/similarity/Cs0.5/seed0/metrics.parquet"  # see the module docstring
FALLBACK_LOGGED = "falling back to CPU"  # workflow_scripts.common.distributed.select_device
NO_GPU_ERROR = "requested a GPU but torch finds none"
# workflow_scripts.finetune.train logs one line per epoch and one when it continues from resume.pt
EPOCH_LOGGED = re.compile(r"epoch 1: ")
RESUMED = re.compile(r"resumed from \S+resume\.pt at epoch (\d+) step (\d+)")
# Fine-tune epochs in this module: ~30 ms each here, so the requeue (sent once epoch 1 is logged) lands
# seconds before the end of training; the whole fine-tune job still takes ~20 s.
EPOCHS = 200
PROFILE_ARGS = ("--profile", str(REPO / "profiles/slurm"), "--profile", str(REPO / "profiles/slurm-ci"))

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
    copy_checkout(dst)
    return dst / "Snakefile"


@dataclass
class Workspace:
    """A run directory, the workflow copy it runs, and the SLURM test configs."""

    dir: Path
    snakefile: Path

    def snakemake(self, *args: str, config: str = "config.yaml", timeout: float = 600,
                  during=None) -> Run:
        """Run the workflow through the SLURM profiles (targets first in `args`); the main process's output
        is kept in a log. `during(stop: threading.Event)` runs in a thread while Snakemake runs."""
        cmd = [sys.executable, "-m", "snakemake", *args, "--snakefile", str(self.snakefile), *PROFILE_ARGS,
               "--configfile", config]
        log = self.dir / f"snakemake-run{len(list(self.dir.glob('snakemake-run*.log')))}.log"
        env = venv_env(OMP_NUM_THREADS="1")   # the real SLURM tools: no scontrol stub here
        stop = threading.Event()
        watcher = threading.Thread(target=during, args=(stop,), daemon=True) if during else None
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True, env=env)
            if watcher:
                watcher.start()
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                subprocess.run([*cmd, "--unlock"], cwd=self.dir, capture_output=True, env=env, timeout=120)
                pytest.fail(f"snakemake did not finish in {timeout:.0f} s; see {log}:\n{log.read_text()[-3000:]}")
            finally:
                stop.set()
                if watcher:
                    watcher.join(timeout=30)
        text = log.read_text()
        return Run(rc, text, parse_run(text))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """tests/config/test.yaml asking for 1 GPU per GPU job, with one strategy, one fine-tune seed (TARGET
    exists under it) and EPOCHS epochs, and a copy without the CPU fallback."""
    wd = tmp_path_factory.mktemp("slurm-run")
    cfg = yaml.safe_load((REPO / "tests/config/test.yaml").read_text())
    cfg.setdefault("finetune", {})["gpus"] = 1
    cfg["finetune"]["epochs"] = EPOCHS
    cfg["finetune"]["seeds"] = cfg["finetune"].get("seeds", [0])[:1]
    cfg["misalign"]["strategies"] = cfg["misalign"]["strategies"][:1]
    cfg["compute"] = {**cfg.get("compute", {}), "device": "auto", "allow_cpu_fallback": True}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (wd / "config.nofallback.yaml").write_text(
        yaml.safe_dump({**cfg, "compute": {**cfg["compute"], "allow_cpu_fallback": False}}, sort_keys=False))
    return Workspace(wd, _snapshot(tmp_path_factory.mktemp("workflow")))


FINETUNE_DIR = "results/finetune/clip/similarity/Cs0.5/seed0"   # the fine-tune TARGET evaluates
FINETUNE_LOG = "logs/finetune/clip/similarity/Cs0.5/seed0.log"


def _preflight(workspace: Workspace, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workflow_scripts.cluster.preflight", "check", TARGET,
                           "--snakefile", str(workspace.snakefile), *PROFILE_ARGS, "--configfile", "config.yaml",
                           *extra], cwd=workspace.dir, capture_output=True, text=True, timeout=300,
                          env=venv_env(OMP_NUM_THREADS="1"))


def test_preflight_passes_and_prints_the_sbatch_requests(cluster, workspace):
    proc = _preflight(workspace)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "executor slurm, jobs 4, latency-wait 5 s, retries 1" in out and "job status command squeue" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "--cpus-per" in line}
    assert {"pretrain", "extract_features", "finetune", "eval_features", "make_world"} <= set(rows), out
    assert "-p gpu" in rows["finetune"] and "--requeue" in rows["finetune"] and rows["finetune"].endswith("--gpus=fake:1")
    assert "-p cpu" in rows["make_world"] and "--gpus" not in rows["make_world"]
    assert "ok    partitions: cpu, gpu exist (sinfo)" in out and "ok    job status command squeue" in out


def test_preflight_stops_on_a_missing_partition_and_on_sacct_without_accounting(cluster, workspace):
    proc = _preflight(workspace, "--slurm-status-command", "sacct",
                      "--default-resources", "slurm_partition=nosuch", "mem_mb=1000", "runtime=30")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  partition 'nosuch' (rule make_world) does not exist; sinfo lists: cpu, gpu" in proc.stdout
    assert "FAIL  slurm-status-command: sacct" in proc.stdout and "accounting_storage/none" in proc.stdout
    assert not list(workspace.dir.glob("logs/slurm/*")), "the preflight submitted something"


@pytest.fixture(scope="module")
def full_run(cluster, workspace) -> Run:
    run = workspace.snakemake(TARGET)
    assert run.rc == 0, f"the workflow failed on SLURM:\n{run.output[-6000:]}"
    return run


@pytest.fixture(scope="module")
def uninterrupted_projections(full_run, workspace) -> dict[str, np.ndarray]:
    """The fine-tune's projections from the uninterrupted run (before any rerun replaces them)."""
    with np.load(workspace.dir / FINETUNE_DIR / "projections.npz") as z:
        return {k: z[k].copy() for k in z.files}


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


@dataclass
class Requeue:
    slurm_id: int | None = None
    error: str = ""


def _requeue_once_training(workspace: Workspace, record: Requeue):
    """A watcher: once the fine-tune's log shows its first epoch, `scontrol requeue` its SLURM job."""
    log = workspace.dir / FINETUNE_LOG

    def watch(stop: threading.Event) -> None:
        while not stop.wait(0.1):
            if not (log.exists() and EPOCH_LOGGED.search(log.read_text(errors="replace"))):
                continue
            running = _sh("squeue", "-h", "-t", "RUNNING", "-o", "%i %k").stdout.split("\n")
            ids = [int(line.split()[0]) for line in running if "rule_finetune" in line]
            if len(ids) != 1:
                record.error = f"expected one running fine-tune job, squeue shows: {running}"
                return
            req = _sh("scontrol", "requeue", ids[0])
            record.slurm_id, record.error = ids[0], req.stderr.strip() if req.returncode else ""
            return

    return watch


@pytest.fixture(scope="module")
def requeued_run(full_run, uninterrupted_projections, workspace) -> tuple[Run, Requeue, Job, Job]:
    """The fine-tune of TARGET forced to rerun, with its evaluation; the fine-tune is requeued mid-training.
    (The rule log is removed first: the watcher must see the rerun's first epoch, not the old one.)"""
    producer, consumer = _producer_and_consumer(full_run)
    assert producer.rule == "finetune" and producer.files("log") == [FINETUNE_LOG], producer
    (workspace.dir / FINETUNE_LOG).unlink()
    record = Requeue()
    run = workspace.snakemake(consumer.files("output")[0], "--forcerun", producer.rule, timeout=400,
                              during=_requeue_once_training(workspace, record))
    assert run.rc == 0, f"the run failed after the requeue ({record}):\n{run.output[-4000:]}"
    return run, record, producer, consumer


def test_forcerun_resubmits_only_what_the_target_needs(requeued_run):
    run, _, producer, consumer = requeued_run
    redone = sorted((j.rule, j.wildcards) for j in run.jobs.values())
    assert redone == sorted([(producer.rule, producer.wildcards), (consumer.rule, consumer.wildcards)])
    assert all(j.slurm_ids and j.finished for j in run.jobs.values()), "rerun not submitted to SLURM"
    for job in run.jobs.values():
        info = _scontrol(job.slurm_ids[-1])
        assert info["Requeue"] == "1", f"{job.rule}: slurm-requeue of profiles/slurm not applied: {info}"
        if job.gpus:
            assert info["TresPerJob"] == f"gres:gpu:fake:{job.gpus}", info


def test_requeued_finetune_resumes_and_matches_the_uninterrupted_run(requeued_run, uninterrupted_projections,
                                                                    workspace):
    run, record, _, _ = requeued_run
    assert record.slurm_id is not None and not record.error, f"the fine-tune was not requeued: {record}"
    (finetune,) = [j for j in run.jobs.values() if j.rule == "finetune"]
    # Snakemake submitted it once and waited for SLURM to run it again
    assert finetune.slurm_ids == [record.slurm_id] and finetune.finished, finetune.slurm_ids
    assert _scontrol(record.slurm_id).get("Restarts") == "1", _scontrol(record.slurm_id)
    log = (workspace.dir / FINETUNE_LOG).read_text(errors="replace")
    resumed = RESUMED.search(log)
    assert resumed, f"the requeued fine-tune did not resume from resume.pt; its log:\n{log[-3000:]}"
    epoch, step = int(resumed.group(1)), int(resumed.group(2))
    assert 1 <= epoch < EPOCHS, f"resumed at epoch {epoch} step {step}: not mid-training"
    assert not (workspace.dir / FINETUNE_DIR / "resume.pt").exists(), "resume.pt left behind"
    with np.load(workspace.dir / FINETUNE_DIR / "projections.npz") as z:
        assert sorted(z.files) == sorted(uninterrupted_projections)
        for key, ref in uninterrupted_projections.items():
            np.testing.assert_array_equal(z[key], ref, err_msg=f"{key} differs from the uninterrupted run")


def test_report_after_the_cluster_run_is_the_local_report(full_run, requeued_run, workspace):
    """`--report` reads only the outputs and .snakemake's records in the run directory: built with the
    cluster profile it is byte for byte the report built without it, and shows the SLURM jobs' results."""
    cluster_run = workspace.snakemake(TARGET, "--report", "report-cluster.html", timeout=300)
    assert cluster_run.rc == 0 and not cluster_run.jobs, cluster_run.output[-3000:]
    local = subprocess.run([sys.executable, "-m", "snakemake", TARGET, "--snakefile", str(workspace.snakefile),
                            "--configfile", "config.yaml", "--report", "report-local.html"],
                           cwd=workspace.dir, capture_output=True, text=True, timeout=300,
                           env=venv_env(OMP_NUM_THREADS="1"))
    assert local.returncode == 0, local.stderr[-3000:]
    html = (workspace.dir / "report-cluster.html").read_bytes()
    assert html == (workspace.dir / "report-local.html").read_bytes(), "the cluster profile changed the report"
    text = html.decode("utf-8", errors="replace")
    assert "training.png" in text and "pretrain" in text and "finetune" in text


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
