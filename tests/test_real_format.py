"""The real-format example with every system on (config/real_format.example.yaml), run whole on the test's
real-format data set (tests/realdata.py: real photos and text, CIFAR-10's python format, FOIL / nocaps-FOIL /
HAT files, a SpLiCE vocabulary, multilingual caption files, a local SentenceTransformer): every system's
outputs are made from files alone and the report has every section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from local_env import local_env
from realdata import build, example_config

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("Data", "Models", "Exp 1: CLIP vs LaCLIP", "Exp 2: pruning by purity", "Exp 3: misalignment",
            "Dense misalignment (CLIP4DM)", "Sparse concepts (SpLiCE)", "Multilingual alignment (image pivot)")


def _snakemake(cfg: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args,
                           "--configfile", str(cfg), "--cores", "2"], cwd=cwd, capture_output=True, text=True,
                          env=local_env(OMP_NUM_THREADS="1"), timeout=1200)
    if proc.returncode:
        raise AssertionError(proc.stdout[-4000:] + proc.stderr[-6000:])
    return proc


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """The example config at test size (fewer steps and replicates: the plumbing is under test, not the
    numbers), run whole and reported; returns its results directory."""
    tmp = tmp_path_factory.mktemp("real_format")
    data = build(tmp / "real_format_data", n_train=48, n_heldout=16, n_eval=3, sentence_model=True)
    raw = example_config(data)
    # one model (the example's laclip adds only more of the same jobs): Exp 1 then has one row, and notes
    raw["models"] = {"clip": raw["models"]["clip"]}
    raw["misalign"]["cs_values"] = [0.0, 0.5]
    raw["misalign"]["strategies"] = ["random"]
    raw["finetune"].update({"epochs": 1, "batch_size": 16})
    raw["evaluate"]["pruning"].update({"kept_fractions": [0.5], "random_draws": 2})
    raw["sparse"].update({"lambdas": [0.1, 0.3], "example_lambda": 0.3, "top_k": 200, "mean_images": 48})
    raw["multilingual"]["align"] = {"seeds": [0], "epochs": 2, "steps_per_epoch": 2, "batch_per_lang": 8,
                                    "warmup_steps": 1, "mlp_hidden": 32, "heads": ["linear"],
                                    "prox_id": [1.0e-3], "ortho": [1.0e-4]}
    raw["multilingual"]["evaluate"]["headline"] = {"head": "linear", "prox_id": 1.0e-3, "ortho": 1.0e-4}
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True))
    _snakemake(cfg, tmp)
    _snakemake(cfg, tmp, "--report", "report.html")
    return tmp / "results" / "runs" / raw["run"]


def test_the_report_has_every_section_and_every_table_has_rows(real_run):
    html = (real_run.parents[2] / "report.html").read_text()
    for number, section in enumerate(SECTIONS, start=1):
        assert f"{number}. {section}" in html, f"report section {section!r} missing"
    tables = sorted((real_run / "tables").glob("*.csv"))
    assert any(t.name.startswith("clip4dm_") for t in tables) and any(t.name.startswith("sparse_") for t in tables)
    assert any(t.name.startswith("multilingual_") for t in tables)
    for table in tables:
        assert table.name in html, f"{table.name} missing from the report"
        assert len(table.read_text().splitlines()) >= 2, f"{table.name}: no rows and no note"


def test_clip4dm_scores_every_real_benchmark_and_lists_the_cut_captions(real_run):
    real = pd.read_csv(real_run / "tables" / "clip4dm_real.csv")
    assert sorted(real["set"]) == ["foil", "hat", "nocaps_foil"]
    assert real["n"].gt(0).all() and real["n_foil"].gt(0).all()
    assert real["ap_fclipscore"].between(0, 1).all() and real["ap_clipscore"].between(0, 1).all()
    truncated = pd.read_csv(real_run / "tables" / "clip4dm_truncated.csv")
    # the fixture's real sentences are longer than fp-tiny-vit's 24-token context with the template
    assert "caption" in truncated and len(truncated) >= int(real["n_truncated"].sum()) > 0
    validated = yaml.safe_load((real_run / "validate" / "text.json").read_text())
    counted = validated["long_captions"]["fp-tiny-vit"]     # per architecture, with the models that use it
    assert counted["models"] == ["clip"] and counted["context"] == 24
    assert counted["files"][str(real_run.parents[2] / "real_format_data" / "captions.txt")][
        "longer_with_clip4dm_template"] > 0


def test_sparse_decomposes_cifar10_with_the_vocabulary_file(real_run):
    sweep = pd.read_csv(real_run / "tables" / "sparse_sweep.csv")
    assert {"photos", "cifar10"} <= set(sweep["set"])
    cifar = sweep[sweep["set"] == "cifar10"]
    assert cifar["acc1_sparse"].between(0, 1).all() and cifar["acc1_dense"].between(0, 1).all()
    assert (cifar["l0_mean"] > 0).all() and (cifar["l0_mean"] <= 200).all()    # top_k concepts at most


def test_multilingual_uses_the_sentence_transformer_for_every_language(real_run):
    headline = pd.read_csv(real_run / "tables" / "multilingual_retrieval.csv")
    assert {"en", "it", "de"} <= set(headline["language"])
