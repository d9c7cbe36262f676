"""The workflow as a whole: lint, dry runs, config errors through Snakemake, and a full run of the
test config (every stage, then the report), followed by single-target reruns."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from local_env import local_env

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TEST_CONFIG = REPO / "tests" / "config" / "test.yaml"


def snakemake(*args, cwd, check=True, timeout=900):
    proc = subprocess.run([*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *args], cwd=cwd,
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
])
def test_bad_config_stops_before_the_dag(tmp_path, override, key):
    proc = snakemake("-n", "--cores", "1", "--configfile", str(TEST_CONFIG), "--config", override, cwd=tmp_path,
                     check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert key in text and "Job stats" not in text


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
    """Run the whole DAG on the test config in a fresh directory, then build the report."""
    work = tmp_path_factory.mktemp("run")
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
    for col in ("mean", "ci_low", "diff_ci_low", "boot_ci_low", "boot_diff_ci_high", "pretrained"):
        assert acc[col].notna().all(), col
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


def test_report_contains_every_figure_and_table(full_run):
    html = (full_run / "results" / "report.html").read_text()
    figures = sorted(p.name for p in (full_run / "results" / "figures").glob("*.svg"))
    assert figures, "no figures were made"
    for name in figures:
        assert name in html, f"{name} missing from the report"
    for name in sorted(p.name for p in (full_run / "results" / "tables").glob("*.csv")):
        assert name in html, f"{name} missing from the report"


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
