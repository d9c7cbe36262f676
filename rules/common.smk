# Shared helpers: config validation, wildcard constraints, path builders and resource functions.
# Kept as plain Python so rules stay declarative.

import os
import sys
from pathlib import Path

from snakemake.utils import validate

# Shell rules run `python -m workflow_scripts.<stage>`; make the package importable from any
# working directory, locally and inside cluster jobs (the SLURM executor exports the environment).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH", "")) if p
)
sys.path.insert(0, workflow.basedir)

from workflow_scripts.config import check_config, format_cs, write_effective_config

# JSON Schema (2020-12) validation with defaults, then cross-key checks (unknown model names...).
validate(config, "../workflow_scripts/config.schema.yaml")
check_config(config, source="config")

# The stage CLIs read this file (`--config {CONFIG}`): config files plus command-line overrides,
# validated, defaults filled. Rules also pass their config section as params, so that a changed
# setting re-runs exactly the jobs that depend on it.
CONFIG = str(write_effective_config(config, "results/config.effective.yaml"))

CS_LABELS = [format_cs(c) for c in config["misalign"]["cs_values"]]
STRATEGIES = list(config["misalign"]["strategies"])
MODELS = list(config["models"])
FT_MODELS = list(config["finetune"]["models"])
SEEDS = [str(s) for s in config["finetune"]["seeds"]]
EVAL_SETS = list(config["evaluate"]["sets"])
PRUNING_SETS = config["evaluate"]["pruning"]["sets"] or EVAL_SETS
PRUNING_MODELS = list(config["evaluate"]["pruning"]["models"])
# Fine-tune settings that change a fine-tune's result (adding a seed or a model re-runs nothing else).
FINETUNE_SETTINGS = {
    k: v
    for k, v in config["finetune"].items()
    if k not in ("models", "seeds", "gpus", "processes", "checkpoint_every")
}


wildcard_constraints:
    model="|".join(MODELS),
    strategy="|".join(STRATEGIES),
    cs="[0-9.]+",
    seed="[0-9]+",
    evalset="|".join(EVAL_SETS),


def code(*modules):
    """The Python files a rule runs (listed as inputs so that editing them triggers reruns)."""
    shared = ("__init__", "io", "config", "errors")
    names = dict.fromkeys(list(modules) + list(shared))
    return [os.path.join(workflow.basedir, "workflow_scripts", f"{m}.py") for m in names]


def model_spec(wildcards):
    return config["models"][wildcards.model]


def gpus(kind="finetune"):
    """GPUs a GPU-capable rule requests (0 on CPU-only runs)."""
    return int(config["finetune"]["gpus"])


def mem_mb(base):
    """Memory request that doubles with each retry (OOM-killed jobs come back bigger)."""

    def _mem(wildcards, attempt):
        return int(base * 2 ** (attempt - 1))

    return _mem


def finetune_dir(model="{model}", strategy="{strategy}", cs="{cs}", seed="{seed}"):
    return f"results/finetune/{model}/{strategy}/Cs{cs}/seed{seed}"


def all_finetune_checkpoints():
    return expand(
        finetune_dir() + "/checkpoint.pt",
        model=FT_MODELS,
        strategy=STRATEGIES,
        cs=CS_LABELS,
        seed=SEEDS,
    )
