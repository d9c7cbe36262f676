"""The workflow as a whole: lint, dry runs, config errors through Snakemake, and a full run of the
test config (every stage, then the report), followed by single-target reruns."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from checkout import copy_checkout
from local_env import local_env

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TEST_CONFIG = REPO / "tests" / "config" / "test.yaml"


def snakemake(*args, cwd, check=True, timeout=900):
    """Snakemake in `cwd`, with the checkout there when cwd is one (the full run), else this repository's."""
    snakefile = Path(cwd) / "Snakefile" if (Path(cwd) / "Snakefile").exists() else REPO / "Snakefile"
    proc = subprocess.run([*SNAKEMAKE, "--snakefile", str(snakefile), *args], cwd=cwd,
                          env=local_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def test_dry_run_default_config(tmp_path):
    out = snakemake("-n", "--cores", "2", "--configfile", str(REPO / "config.yaml"), cwd=tmp_path).stdout
    for rule in ("make_world", "caption_neighbours", "pretrain", "extract_features", "finetune",
                 "evaluate_finetune", "pruning_sweep", "all"):
        assert re.search(rf"^{rule}\s+\d+", out, re.M), f"rule {rule} missing from the job stats"
    n_finetunes = int(re.search(r"^finetune\s+(\d+)", out, re.M).group(1))
    assert n_finetunes == (1 + 4 * 2) * 3  # (the shared Cs = 0 control + 4 Cs > 0 x 2 strategies) x 3 replicates


@pytest.mark.parametrize("override,key", [
    ("finetune={'epochs': 0}", "epochs"),
    ("misalign={'cs_values': [0.2, 1.7]}", "cs_values"),
    ("finetune={'models': ['nonexistent']}", "nonexistent"),
    ("finetun={'epochs': 2}", "'finetun' was unexpected"),     # a misspelt key: one line, not the schema
])
def test_bad_config_stops_before_the_dag(tmp_path, override, key):
    proc = snakemake("-n", "--cores", "1", "--configfile", str(TEST_CONFIG), "--config", override, cwd=tmp_path,
                     check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert key in text and "Job stats" not in text
    # the key path as the README shows it (`finetune.epochs: ...`), without Snakemake's schema dump
    assert "On instance" not in text and len(text.splitlines()) < 15, text


def test_jobs_use_the_interpreter_that_runs_snakemake(tmp_path):
    """Started through this environment's interpreter with another `python` first on PATH (as
    `.venv/bin/snakemake` without activating the virtualenv), the jobs still run this environment's Python."""
    import os

    from local_env import local_env as env_of

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text("#!/bin/sh\necho 'not the workflow interpreter' >&2\nexit 3\n")
    (fake / "python").chmod(0o755)
    env = env_of(OMP_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([str(fake), *(p for p in env["PATH"].split(os.pathsep)
                                                 if Path(p) != Path(sys.executable).parent)])
    proc = subprocess.run([*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "results/world/world.json", "--cores", "1",
                           "--configfile", str(TEST_CONFIG)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "world" / "world.json").exists()


def test_lint_is_clean(tmp_path):
    proc = snakemake("--lint", "--configfile", str(TEST_CONFIG), cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text = []

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Run the whole DAG on the test config in a fresh copy of the checkout, then build the report."""
    work = copy_checkout(tmp_path_factory.mktemp("run") / "checkout")
    snakemake("--cores", "2", "--configfile", str(TEST_CONFIG), cwd=work, timeout=1200)
    snakemake("--cores", "2", "--configfile", str(TEST_CONFIG), "--report", "results/report.html", cwd=work)
    return work


def test_full_run_produces_every_stage(full_run):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    r = full_run / "results"
    for seed in cfg["finetune"]["seeds"]:
        for strategy in cfg["misalign"]["strategies"]:
            assert (r / f"misalign/{strategy}/Cs0.5/seed{seed}/train.csv").exists()
            assert (r / f"finetune/clip/{strategy}/Cs0.5/seed{seed}/checkpoint.pt").exists()
        # Cs = 0: one control per replicate, shared by both strategies (no per-strategy duplicate)
        assert (r / f"finetune/clip/none/Cs0.0/seed{seed}/checkpoint.pt").exists()
    assert not list(r.glob("finetune/clip/similarity/Cs0.0")) and not list(r.glob("finetune/clip/random/Cs0.0"))
    for model in cfg["models"]:
        assert (r / f"pretrain/{model}/checkpoint.pt").exists()
    assert (r / "report.html").stat().st_size > 100_000
    assert list((full_run / "logs").rglob("*.log"))


def test_tables_are_sane_with_one_control_per_replicate(full_run):
    """No NaN where a number is due, one Cs = 0 run per replicate in the tables, replicates draw their own
    swaps, and the swap summary measures what the swaps did."""
    import pandas as pd

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    tables = full_run / "results" / "tables"
    purity = pd.read_parquet(tables / "exp3_purity.parquet")
    control = purity[(purity.strategy == "none") & (purity.metric == "avg_abs_cos_sim")]
    assert len(control) == 2 and (control["n"] == len(cfg["finetune"]["seeds"])).all()
    assert set(purity["strategy"]) == {"none", *cfg["misalign"]["strategies"]}
    for col in ("mean", "diff", "pretrained", "random_mean", "random_sd", "text_changed", "contradicts_any"):
        assert purity[purity.metric == "avg_abs_cos_sim"][col].notna().all(), col
    metrics = pd.read_parquet(tables / "exp3_metrics.parquet")
    acc = metrics[metrics.metric == "acc1"]
    for col in ("mean", "sd", "boot_ci_low", "boot_diff_ci_high", "pretrained"):
        assert acc[col].notna().all(), col
    # 2 replicates: below intervals.MIN_REPLICATES no t interval (it would leave [0, 1]); the bootstrap is there
    assert (acc["n"] == 2).all() and acc["ci_low"].isna().all() and acc["diff_ci_high"].isna().all()
    assert ((acc["boot_ci_low"] >= 0) & (acc["boot_ci_high"] <= 1)).all()
    spearman = pd.read_parquet(tables / "exp3_spearman.parquet")
    runs = 1 + len(cfg["misalign"]["strategies"])          # per replicate: the control and Cs 0.5 of each strategy
    assert (spearman[spearman.strategy == "all"]["n_runs"] == runs * len(cfg["finetune"]["seeds"])).all()
    assert pd.read_parquet(tables / "exp1_differences.parquet")["ci_low"].notna().all()
    swaps = pd.read_parquet(full_run / "results" / "misalign" / "summary.parquet")
    none = swaps[swaps.strategy == "none"].iloc[0]
    assert none["text_changed"] == 0 and none["contradicts_any"] == 0
    rand = swaps[swaps.strategy == "random"].sort_values("seed")
    assert (rand["contradicts_any"] > 0.2).all() and rand["swap_seed"].tolist() == [42, 43]
    a = (full_run / "results/misalign/random/Cs0.5/seed0/captions.txt").read_text()
    assert a != (full_run / "results/misalign/random/Cs0.5/seed1/captions.txt").read_text()


def test_replicates_start_from_their_own_pretraining(full_run):
    """finetune.pretraining matched: replicate r fine-tunes from pretraining r (recorded in its checkpoint),
    and Exp 1 has per-seed rows, the projections' drift from initialisation and a combined interval."""
    import pandas as pd
    import torch

    r = full_run / "results"
    meta = {seed: torch.load(r / f"finetune/clip/random/Cs0.5/seed{seed}/checkpoint.pt", weights_only=True)["meta"]
            for seed in (0, 1)}
    assert meta[0]["pretraining"] == "clip" and meta[1]["pretraining"] == "clip-p1"
    assert meta[0]["pretrained_sha256"] != meta[1]["pretrained_sha256"]
    for seed in (0, 1):   # the control of a replicate starts from the same pretraining as its treatments
        control = torch.load(r / f"finetune/clip/none/Cs0.0/seed{seed}/checkpoint.pt", weights_only=True)["meta"]
        assert control["pretraining"] == meta[seed]["pretraining"]
    tables = r / "tables"
    by_seed = pd.read_parquet(tables / "exp1_by_seed.parquet")
    assert sorted(by_seed["pretrain_seed"].unique()) == [0, 1]
    drift = pd.read_parquet(tables / "exp1_projections.parquet")
    assert set(drift["pretraining"]) == {"clip", "clip-p1", "laclip", "laclip-p1"}
    assert ((drift["cos_to_init"] > 0) & (drift["cos_to_init"] < 1)).all() and drift["purity_init"].notna().all()
    reps = pd.read_parquet(tables / "exp3_replicates.parquet")
    assert set(zip(reps["seed"], reps["pretraining"])) == {(0, "clip"), (1, "clip-p1")}
    assert pd.read_parquet(tables / "exp3_within_groups.parquet")["n_runs"].gt(0).all()
    # the seed systems use the first pretraining: no CLIP4DM or sparse job for a replica
    assert not list(r.glob("clip4dm/clip-p1")) and not list(r.glob("sparse/clip-p1"))


def test_report_contains_every_figure_and_table(full_run):
    html = (full_run / "results" / "report.html").read_text()
    figures = sorted(p.name for p in (full_run / "results" / "figures").glob("*.svg"))
    assert figures, "no figures were made"
    for name in figures:
        assert name in html, f"{name} missing from the report"
    for name in sorted(p.name for p in (full_run / "results" / "tables").glob("*.csv")):
        assert name in html, f"{name} missing from the report"
        lines = (full_run / "results" / "tables" / name).read_text().splitlines()
        assert len(lines) >= 2, f"{name}: a table without rows (it must carry a note saying why)"
    real = (full_run / "results" / "tables" / "clip4dm_real.csv").read_text()   # no real benchmark configured
    assert real.startswith("note") and "clip4dm.real_data" in real


def test_rerun_is_a_no_op_and_forcerun_reruns_only_downstream_identically(full_run):
    """A second run has nothing to do; forcing one fine-tune for one target re-runs that fine-tune and its
    evaluation only, and gives identical tables (every random choice is seeded from the config)."""
    import pandas as pd

    out = snakemake("-n", "--cores", "2", "--configfile", str(TEST_CONFIG), cwd=full_run).stdout
    assert "Nothing to be done" in out
    target = "results/eval/finetune/clip/random/Cs0.5/seed1/metrics.parquet"
    before = pd.read_parquet(full_run / target)
    # the target goes before --configfile, which (like --forcerun) takes several values
    proc = snakemake(target, "--cores", "2", "--configfile", str(TEST_CONFIG), "--forcerun", "finetune",
                     cwd=full_run)
    out = proc.stdout + proc.stderr  # a real run logs its job stats to stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert jobs.get("finetune") == "1" and jobs.get("evaluate_finetune") == "1", out
    assert set(jobs) <= {"finetune", "evaluate_finetune", "total"}, out
    pd.testing.assert_frame_equal(before, pd.read_parquet(full_run / target))


def _job_counts(proc) -> dict[str, int]:
    out = proc.stdout + proc.stderr
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M) if rule != "total"}


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _variant(tmp_path: Path, name: str, **sections) -> Path:
    """The test config with some sections changed, written with its keys in another (sorted) order."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    for section, values in sections.items():
        cfg[section].update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_adding_a_cs_a_seed_or_a_strategy_plans_only_the_new_jobs(full_run, tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    more = _variant(tmp_path, "more", misalign={"cs_values": [0.0, 0.3, 0.5]}, finetune={"seeds": [0, 1, 2]})
    proc = snakemake("-n", "--cores", "2", "--configfile", str(more), cwd=full_run)
    jobs, why = _job_counts(proc), (proc.stdout + proc.stderr)[-3000:]
    n_strategies = len(cfg["misalign"]["strategies"])
    # Cs 0.3 for replicates 0, 1, 2, and replicate 2 for Cs 0.5 (+ its control); nothing that exists
    new_finetunes = n_strategies * 3 + (1 + n_strategies)
    assert jobs.get("finetune") == new_finetunes and jobs.get("evaluate_finetune") == new_finetunes, why
    assert jobs.get("misalign_swaps") == n_strategies * (3 + 1), why
    assert not {"make_world", "caption_neighbours", "pretrain", "extract_features", "eval_features",
                "evaluate_pretrained", "pruning_sweep"} & set(jobs), why
    # a run with one strategy is the same as the run of both with the other one removed: when the second
    # strategy is added, its jobs are the only new ones iff no job of the first depends on the list
    one = _variant(tmp_path, "one", misalign={"strategies": cfg["misalign"]["strategies"][:1]})
    jobs = _job_counts(snakemake("-n", "--cores", "2", "--configfile", str(one), cwd=full_run))
    assert not {"finetune", "evaluate_finetune", "misalign_swaps"} & set(jobs), jobs


def test_a_dry_run_with_another_config_does_not_change_a_running_job(full_run, tmp_path):
    """Issue: every Snakemake start rewrote one shared settings file that jobs read when they start, so a
    dry run with other settings during a run changed that run's later jobs. Two forced fine-tunes run one
    after the other; while the first runs, a dry run with finetune.epochs changed parses the workflow."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    targets = [f"results/finetune/clip/random/Cs0.5/seed{r}/checkpoint.pt" for r in (0, 1)]
    logs = [full_run / t.replace("checkpoint.pt", "log.jsonl") for t in targets]
    first_log = full_run / "logs/finetune/clip/random/Cs0.5/seed0.log"
    started = first_log.stat().st_mtime
    run = subprocess.Popen([*SNAKEMAKE, "--snakefile", str(full_run / "Snakefile"), *targets, "--cores", "1",
                            "--configfile", str(TEST_CONFIG), "--forcerun", "finetune"], cwd=full_run,
                           env=local_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        deadline = time.time() + 300
        # the job has started once Snakemake has removed or rewritten its log (polling may see either)
        while _mtime(first_log) == started and run.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        other = _variant(tmp_path, "other", finetune={"epochs": cfg["finetune"]["epochs"] + 3})
        dry = snakemake("-n", "--cores", "1", "--configfile", str(other), cwd=full_run)
        assert "finetune" in _job_counts(dry)             # the other config would retrain: its settings differ
        out, _ = run.communicate(timeout=600)
    finally:
        run.kill()
    assert run.returncode == 0, out[-3000:]
    epochs = [len([line for line in p.read_text().splitlines() if '"epoch"' in line]) for p in logs]
    assert epochs == [cfg["finetune"]["epochs"]] * 2, epochs   # both trained with the run's own settings


def test_a_moved_checkout_replans_nothing(full_run, tmp_path):
    """Issue: a moved or copied checkout replanned everything (code inputs were absolute paths). The move must
    add nothing to the plan (the forced fine-tunes of earlier tests leave later jobs to do in both places)."""
    here = _job_counts(snakemake("-n", "--cores", "2", "--configfile", str(TEST_CONFIG), cwd=full_run))
    moved = tmp_path / "moved-checkout"
    shutil.copytree(full_run, moved, symlinks=True)
    proc = snakemake("-n", "--cores", "2", "--configfile", str(TEST_CONFIG), cwd=moved)
    assert _job_counts(proc) == here, (proc.stdout + proc.stderr)[-3000:]
    assert not {"make_world", "pretrain", "extract_features", "finetune"} & set(here)


def _real_style_config(tmp_path: Path, world: Path, run: str | None, captions: str = "captions.txt") -> Path:
    """The test config turned into a real-data one: the tiny world's files as user data, imported models."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["world"] = {"enabled": False}
    cfg["data"] = {"train_csv": str(world / "train.csv"), "image_root": str(world),
                   "captions": str(world / captions), "heldout_csv": None,
                   "rewrites": [str(world / f"rewrites_k{k}.txt") for k in range(2)]}
    for name in ("clip", "laclip"):
        ckpt = tmp_path / f"{name}.pt"
        ckpt.write_bytes(b"not read by a dry run")
        cfg["models"][name] = {"source": "checkpoint", "arch": "fp-tiny-vit", "checkpoint": str(ckpt)}
    cfg["evaluate"]["sets"] = {s: {"kind": "imagefolder", "root": str(world / "eval" / s)} for s in ("shape", "colour")}
    cfg["multilingual"]["enabled"] = False          # its embedded captions need the synthetic world
    if run:
        cfg["run"] = run
    path = tmp_path / f"{run or 'unnamed'}-{captions}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _planned_paths(out: str) -> list[str]:
    paths = []
    for key in ("output", "log", "benchmark"):
        for line in re.findall(rf"^\s+{key}: (.*)$", out, re.M):
            paths += [p.strip() for p in line.split(",")]
    return paths


def test_each_study_has_its_own_results_tree(tiny_world, tmp_path):
    """Issue: one results tree for every config (a real-data run and the embedded default wrote the same
    results/pretrain/clip/checkpoint.pt). A study other than the embedded default must be named, writes only
    under results/runs/<run>/, and a second config cannot reuse the name for other data."""
    work = tmp_path / "work"
    work.mkdir()
    unnamed = snakemake("-n", "--cores", "1", "--configfile", str(_real_style_config(tmp_path, tiny_world, None)),
                        cwd=work, check=False)
    text = unnamed.stdout + unnamed.stderr
    assert unnamed.returncode != 0 and "key 'run'" in text and "Job stats" not in text, text[-2000:]

    out = snakemake("-n", "--cores", "1", "--configfile", str(_real_style_config(tmp_path, tiny_world, "study-a")),
                    cwd=work).stdout
    paths = _planned_paths(out)
    assert len(paths) > 50 and all(p.startswith("results/runs/study-a/") for p in paths), \
        [p for p in paths if not p.startswith("results/runs/study-a/")][:10]

    other = tiny_world / "other_captions.txt"
    other.write_text((tiny_world / "captions.txt").read_text())
    # a dry run made nothing: another config may take the name (and gives it back the same way)
    taken = snakemake("-n", "--cores", "1", "--configfile",
                      str(_real_style_config(tmp_path, tiny_world, "study-a", other.name)), cwd=work)
    assert "Job stats" in taken.stdout + taken.stderr
    snakemake("-n", "--cores", "1", "--configfile", str(_real_style_config(tmp_path, tiny_world, "study-a")),
              cwd=work)
    made = work / "results/runs/study-a/logs/made.log"                 # once a run has made something
    made.parent.mkdir(parents=True)
    made.write_text("x")
    clash = snakemake("-n", "--cores", "1", "--configfile",
                      str(_real_style_config(tmp_path, tiny_world, "study-a", other.name)), cwd=work, check=False)
    text = clash.stdout + clash.stderr
    assert clash.returncode != 0 and "results/runs/study-a/run.json" in text, text[-2000:]
    assert "data.captions" in text and "start that study afresh" in text, text[-2000:]
    out_b = snakemake("-n", "--cores", "1", "--configfile",
                      str(_real_style_config(tmp_path, tiny_world, "study-b", other.name)), cwd=work).stdout
    assert not set(_planned_paths(out_b)) & set(paths)
