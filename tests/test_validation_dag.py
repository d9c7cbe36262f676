"""Every job that reads images waits, in the DAG, for the validation of those images (rules/validation.smk), so
that a new rule reading images cannot slip past it.

The job graphs are Snakemake's own (this file run as a script: the public API's `printd3dag`, with the DAG's
d3 export swapped for one that also writes each job's input and output files; snakemake 9.27.1), for two
configs with every system on: the real-format example (tests/realdata.py; CLIP4DM, sparse concepts on, and
a CIFAR-10 set in torchvision's format) and the embedded default at test size (tests/config/test.yaml).

A job reads images when one of its inputs is an image listing or an image location: data.train_csv (the
training images: it must descend from validate/train_images.parquet), data.heldout_csv, an evaluation set's
root or the world's eval/<set>/classnames.txt, a CLIP4DM real benchmark's JSON file or image root (held-out
and evaluation images: validate/eval_images.parquet),
data.image_root or an image file under it or under a set's root. The validation jobs and the rules in
TEXT_ONLY (which read such a listing's text and open no image) are exempt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VALIDATION_RULES = {"validate_text", "validate_train_images", "validate_eval_images"}
MANIFESTS = {"train": "validate/train_images.parquet", "eval": "validate/eval_images.parquet"}
# Rules whose inputs include an image listing but that read only its text; each checked in its module.
TEXT_ONLY = {
    "misalign_swaps": "workflow_scripts/misalign/swap.py (swap): data.train_csv's image-path column is copied as "
                      "text into each swapped set's train.csv (training_paths, write_pairs_csv); no image is opened",
    "multilingual_captions": "workflow_scripts/multilingual/world.py (heldout_scenes): heldout.csv's captions are "
                             "checked against the regenerated held-out scenes (read_pairs_csv); no image is opened",
}
# Rules that are in neither DAG below, with the reason (every other rule of the workflow is in one of them).
NOT_IN_THE_DAGS = {
    "multilingual": "a target rule (make multilingual): its inputs are the multilingual outputs, already in the "
                    "DAGs; it has no command",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Job:
    id: int
    rule: str
    input: tuple[str, ...]
    output: tuple[str, ...]
    deps: tuple[int, ...]


# ----------------------------------------------------------------------------- the check


def image_sources(config: dict, cwd: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(absolute path -> manifest kind) of the image listings and locations of a config, and (absolute
    directory, kind) of the image roots, under which an image file is an image source too."""
    def a(p) -> str:
        return os.path.normpath(os.path.join(cwd, p))

    data = config["data"]
    sources = {a(data["train_csv"]): "train", a(data["image_root"]): "train"}
    if data.get("heldout_csv"):
        sources[a(data["heldout_csv"])] = "eval"
    roots = [(a(data["image_root"]), "train")]
    for name, spec in config["evaluate"]["sets"].items():
        sources[a(spec["root"])] = "eval"
        sources[a(Path(spec["root"]) / "classnames.txt")] = "eval"  # the world's sets: a make_world output
        roots.append((a(spec["root"]), "eval"))
    for spec in config.get("clip4dm", {}).get("real_data", {}).values():   # CLIP4DM's real benchmarks
        sources[a(spec["json"])] = "eval"
        sources[a(spec["image_root"])] = "eval"
        roots.append((a(spec["image_root"]), "eval"))
    return sources, roots


def reads(job: Job, sources: dict[str, str], roots: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The manifest kinds job's inputs call for, with the inputs that call for each."""
    out: dict[str, list[str]] = {}
    for f in job.input:
        kinds = {sources[f]} if f in sources else set()
        if f.lower().endswith(IMAGE_SUFFIXES):
            kinds |= {kind for root, kind in roots if f.startswith(root + os.sep)}
        for kind in kinds:
            out.setdefault(kind, []).append(f)
    return out


def ancestors(jobs: dict[int, Job], job: Job) -> set[int]:
    seen: set[int] = set()
    stack = list(job.deps)
    while stack:
        j = stack.pop()
        if j not in seen:
            seen.add(j)
            stack += jobs[j].deps
    return seen


def unvalidated(jobs: list[Job], sources: dict[str, str], roots: list[tuple[str, str]],
                text_only=TEXT_ONLY) -> tuple[list[str], set[str]]:
    """(problems, rules of the image readers): a problem per image reader and manifest it calls for that no
    ancestor of it writes."""
    by_id = {j.id: j for j in jobs}
    problems, readers = [], set()
    for job in jobs:
        if job.rule in VALIDATION_RULES or job.rule in text_only:
            continue
        wanted = reads(job, sources, roots)
        if not wanted:
            continue
        readers.add(job.rule)
        made = {o for a in ancestors(by_id, job) for o in by_id[a].output}
        for kind, inputs in sorted(wanted.items()):
            if not any(o.endswith(os.sep + MANIFESTS[kind]) for o in made):
                problems.append(f"rule {job.rule} (job {job.id}, output {job.output[:1]}) reads {inputs} but "
                                f"does not wait for {MANIFESTS[kind]}")
    return problems, readers


# ----------------------------------------------------------------------------- Snakemake's DAG


def dump_dag(snakefile: str, configfile: str, out: str) -> None:
    """Write the DAG of `snakefile` with `configfile` (working directory: the current one) as JSON: every job
    (rule, absolute input and output files, the jobs it depends on) and every rule of the workflow."""
    from snakemake.api import SnakemakeApi    # first: snakemake.dag alone is a circular import
    from snakemake.dag import DAG
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    found: dict = {}

    def export(dag, max_jobs=None):  # replaces DAG.d3dag: what printd3dag prints, with the files
        ids = {job: i for i, job in enumerate(dag.jobs)}
        found["jobs"] = [{"id": ids[job], "rule": job.rule.name,
                          "input": [os.path.abspath(str(f)) for f in job.input],
                          "output": [os.path.abspath(str(f)) for f in job.output],
                          "deps": sorted(ids[d] for d in dag.dependencies[job])} for job in dag.jobs]
        found["rules"] = sorted(rule.name for rule in dag.workflow.rules)

    DAG.d3dag = export
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                config_settings=ConfigSettings(configfiles=[Path(configfile)]),
                                snakefile=Path(snakefile), workdir=Path.cwd())
        workflow.dag(DAGSettings()).printd3dag()
    if "jobs" not in found:
        raise RuntimeError("Snakemake built no DAG")
    Path(out).write_text(json.dumps(found))


def dag(configfile: Path, cwd: Path) -> tuple[list[Job], list[str]]:
    from local_env import local_env

    out = cwd / "dag.json"
    proc = subprocess.run([sys.executable, __file__, str(REPO / "Snakefile"), str(configfile), str(out)], cwd=cwd,
                          capture_output=True, text=True, env=local_env(OMP_NUM_THREADS="1"), timeout=600)
    if proc.returncode:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-5000:])
    found = json.loads(out.read_text())
    return [Job(j["id"], j["rule"], tuple(j["input"]), tuple(j["output"]), tuple(j["deps"]))
            for j in found["jobs"]], found["rules"]


# ----------------------------------------------------------------------------- the configs


def real_format_config(tmp: Path) -> Path:
    """config/real_format.example.yaml on a dozen-image data set, every system on, with a CIFAR-10 set."""
    import numpy as np
    import yaml

    from cifar_fixture import write_cifar10
    from realdata import build, example_config

    data = build(tmp / "real_format_data", n_train=12, n_heldout=4, n_eval=2, checkpoints=False)
    cfg = example_config(data)
    # placeholders where the DAG needs a file to exist and no job of it is run: checkpoints, a local
    # SentenceTransformer directory the data set does not hold
    for name, spec in cfg["models"].items():
        if spec.get("checkpoint"):
            spec["checkpoint"] = str(tmp / f"{name}.pt")
            Path(spec["checkpoint"]).touch()
    for spec in (cfg.get("multilingual", {}).get("models") or {}).values():
        if spec.get("path") and not Path(spec["path"]).exists():
            Path(spec["path"]).mkdir(parents=True)
    sets = cfg["evaluate"]["sets"]
    cifar = [n for n, s in sets.items() if s["kind"] == "cifar10"]
    if not cifar:
        sets["cifar10"] = {"kind": "cifar10", "root": str(tmp / "cifar10"), "verify_checksums": False}
        cifar = ["cifar10"]
    rng = np.random.default_rng(0)
    for name in cifar:
        sets[name]["verify_checksums"] = False
        if not (Path(sets[name]["root"]) / "cifar-10-batches-py").is_dir():
            write_cifar10(Path(sets[name]["root"]), [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                                                     for _ in range(10)], list(range(10)))
    cfg["clip4dm"]["enabled"] = True
    cfg["sparse"]["enabled"] = True
    cfg["sparse"]["sets"] = list(dict.fromkeys(["photos", *cfg["sparse"].get("sets", [])]))
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def dags(tmp_path_factory) -> dict:
    """Both DAGs: {name: (config path, working directory, jobs, rules)}."""
    out = {}
    real = tmp_path_factory.mktemp("real_format")
    cfg = real_format_config(real)
    out["real_format"] = (cfg, real, *dag(cfg, real))
    embedded = tmp_path_factory.mktemp("embedded")
    out["embedded"] = (REPO / "tests" / "config" / "test.yaml", embedded,
                       *dag(REPO / "tests" / "config" / "test.yaml", embedded))
    return out


def _validated_config(path: Path) -> dict:
    from workflow_scripts.common.config import load_config

    return load_config(path)


@pytest.mark.parametrize("name", ["real_format", "embedded"])
def test_every_image_reader_waits_for_its_validation(dags, name):
    cfg_path, cwd, jobs, _ = dags[name]
    config = _validated_config(cfg_path)
    if name == "real_format":
        assert any(s["kind"] == "cifar10" for s in config["evaluate"]["sets"].values())
        assert config["clip4dm"]["enabled"] and config["sparse"]["enabled"]
    sources, roots = image_sources(config, cwd)
    problems, readers = unvalidated(jobs, sources, roots)
    # the classification finds the readers every study has (a path mismatch would find none and pass)
    assert {"extract_features", "eval_features", "finetune", "sparse_encode"} <= readers, readers
    assert not problems, "\n".join(problems)


def test_every_rule_is_in_one_of_the_dags(dags):
    in_dags = {j.rule for _, _, jobs, _ in dags.values() for j in jobs}
    rules = {r for _, _, _, rules in dags.values() for r in rules}
    assert rules - in_dags == set(NOT_IN_THE_DAGS), "rules in neither DAG (add a config that has them)"
    assert set(TEXT_ONLY) <= in_dags                # the allow-list names no rule that is gone


# ----------------------------------------------------------------------------- the check on a made-up graph


def _graph() -> tuple[list[Job], dict[str, str], list[tuple[str, str]]]:
    """validate_text <- validate_train_images <- extract_features <- finetune; validate_eval_images <-
    eval_features <- evaluate (transitively validated); a text-only swap; paths under /w."""
    csv, heldout, root, images = "/w/train.csv", "/w/heldout.csv", "/w/eval/shape", "/w/images"
    jobs = [
        Job(0, "validate_text", (csv, heldout), ("/w/r/validate/text.json",), ()),
        Job(1, "validate_train_images", (csv,), ("/w/r/validate/train_images.parquet",), (0,)),
        Job(2, "validate_eval_images", (heldout, root), ("/w/r/validate/eval_images.parquet",), (0,)),
        Job(3, "extract_features", (csv, "/w/r/validate/train_images.parquet"), ("/w/r/features/c.npz",), (1,)),
        Job(4, "eval_features", (heldout, root), ("/w/r/eval/c.npz",), (2,)),
        Job(5, "finetune", (csv, "/w/r/features/c.npz"), ("/w/r/ft/p.npz",), (3,)),   # through extract_features
        Job(6, "misalign_swaps", (csv,), ("/w/r/swap/train.csv",), (0,)),
        Job(7, "evaluate", ("/w/r/eval/c.npz",), ("/w/r/m.parquet",), (4,)),
    ]
    sources = {csv: "train", images: "train", heldout: "eval", root: "eval", root + "/classnames.txt": "eval"}
    return jobs, sources, [(images, "train"), (root, "eval")]


def test_the_check_reports_a_reader_without_its_validation():
    jobs, sources, roots = _graph()
    problems, readers = unvalidated(jobs, sources, roots)
    assert problems == [] and readers == {"extract_features", "eval_features", "finetune"}
    # extract_features no longer waits for the training images' manifest: it and finetune (through it) are named
    cut = [j if j.rule != "extract_features" else Job(3, j.rule, (j.input[0],), j.output, ()) for j in jobs]
    problems, _ = unvalidated(cut, sources, roots)
    assert len(problems) == 2 and all("validate/train_images.parquet" in p for p in problems)
    assert problems[0].startswith("rule extract_features") and problems[1].startswith("rule finetune")
    # a new rule reading held-out images, one reading an image file under the root, one reading training
    # images but waiting only for the evaluation images
    new = [Job(8, "new_heldout_reader", ("/w/heldout.csv",), ("/w/r/x",), (0,)),
           Job(9, "new_image_reader", ("/w/eval/shape/circle/0001.png",), ("/w/r/y",), ()),
           Job(10, "new_train_reader", ("/w/train.csv",), ("/w/r/z",), (4,))]
    problems, _ = unvalidated(jobs + new, sources, roots)
    assert [p.split(" (")[0] for p in problems] == ["rule new_heldout_reader", "rule new_image_reader",
                                                   "rule new_train_reader"]
    assert "validate/eval_images.parquet" in problems[0] and "validate/eval_images.parquet" in problems[1]
    assert "validate/train_images.parquet" in problems[2]
    # the text-only allow-list is what exempts misalign_swaps
    problems, _ = unvalidated(jobs, sources, roots, text_only={})
    assert [p.split(" (")[0] for p in problems] == ["rule misalign_swaps"]


if __name__ == "__main__":
    dump_dag(*sys.argv[1:4])
