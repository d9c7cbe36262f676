# Shared helpers: config validation, wildcard constraints, path builders and resource functions.
# Kept as plain Python so rules stay declarative.

import os
import sys
from pathlib import Path

from snakemake_interface_executor_plugins.settings import DeploymentMethod

# Rules run `python -m workflow_scripts.<stage>`: the package is installed into the environment
# (`pip install -e .`, done by `make install`); the workflow's own imports below use its source tree.
sys.path.insert(0, workflow.basedir)

from workflow_scripts.common.code_inputs import code_files
from workflow_scripts.common.config import (
    CONTROL_STRATEGY as CONTROL,
    base_model,
    canonical,
    claim_run,
    finetune_source,
    is_replica,
    pretrain_replicas,
    replicate_towers,
    replicates_from,
    format_cs,
    run_paths,
    validate_config,
    write_settings,
)

# JSON Schema (2020-12) validation with defaults, then cross-key checks (unknown model names...); errors
# name the key (`finetune.epochs: ...`). The same function validates the config the stage CLIs read.
_CONFIG_SOURCE = " + ".join(map(str, workflow.overwrite_configfiles or workflow.configfiles)) or "config"
# Keys in sorted order: a config file listing the same settings in another order re-runs nothing.
_validated = canonical(validate_config(config, source=_CONFIG_SOURCE))
config.clear()
config.update(_validated)
# pretrain.seeds: each pretrained model again per extra seed, as <name>-p<seed> (Exp 1 replicates)
config["models"].update(pretrain_replicas(config))

# Where this run writes (config key `run`): results/, logs/, benchmarks/ for the embedded default,
# results/runs/<run>/ for any other study. run.json there records the data and models the name stands for.
_PATHS = run_paths(config)
RESULTS = _PATHS["results"]
LOGS = _PATHS["logs"]
BENCHMARKS = _PATHS["benchmarks"]
RESOURCES = _PATHS["resources"]
claim_run(config, RESULTS, source=_CONFIG_SOURCE)

# The stage CLIs read their settings (`--config {params.config}`) from a file named by the hash of this
# process's validated config (files + command-line overrides): written once, never changed, so a job
# keeps the settings of the Snakemake process that started it even while another process (a dry run with
# another config, a report) parses the workflow. Its path reaches the jobs through the environment rather
# than a param: a param holding the hash would re-run every job whenever any setting changed, whereas each
# rule passes the config sections it depends on as params, so a changed setting re-runs exactly its jobs.
SETTINGS = str(write_settings(config, f"{RESULTS}/settings"))
CONFIG = '"$WORKFLOW_SETTINGS"'
# Jobs import this checkout's code (`python -m workflow_scripts.<stage>`, whatever the working directory
# and whatever checkout the environment's editable install points at) and read SETTINGS.
# Without a conda environment (--sdm conda), jobs run the Python of the environment that runs Snakemake: its
# bin directory goes first on PATH, so `.venv/bin/snakemake ...` works without activating the virtualenv
# (`python` and `torchrun` in the rules are that environment's). With conda, the job's environment decides.
_USES_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_INTERPRETER_PATH = "" if _USES_CONDA else f'PATH="{os.path.dirname(sys.executable)}:$PATH" '
shell.prefix(
    f'export {_INTERPRETER_PATH}PYTHONPATH="{workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"'
    f' WORKFLOW_SETTINGS="{SETTINGS}"; '
)

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
    if k not in ("models", "seeds", "gpus", "processes", "checkpoint_every", "pretraining")
}


def source_file(*parts):
    """A file of this checkout, as an input path: relative to the working directory when the checkout is
    the working directory (the normal case), so that a moved or copied checkout, with its results/ and
    .snakemake/, replans nothing; absolute otherwise (snakemake -s elsewhere/Snakefile)."""
    path = os.path.join(workflow.basedir, *parts)
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def code(*modules, follow_imports=True):
    """The Python files a job runs, listed as its inputs so that editing them re-runs it. They are the modules
    named ("package/module"), the shared plumbing (common/io, config, errors) and, with follow_imports,
    every module they import, lazily or not (workflow_scripts/common/code_inputs.py)."""
    shared = ("common/io", "common/config", "common/errors")
    files = code_files(Path(workflow.basedir) / "workflow_scripts", modules + shared, follow_imports)
    return [source_file("workflow_scripts", f) for f in files]


def model_spec(wildcards):
    return config["models"][wildcards.model]


def gpus(kind="finetune"):
    """GPUs a GPU-capable rule requests (0 on CPU-only runs)."""
    return int(config["finetune"]["gpus"])


# GPU rules start their log with the devices SLURM (or the user) gave the job; the SLURM test reads it.
LOG_VISIBLE_GPUS = "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} > {log}; "


def mem_mb(base):
    """Memory request that doubles with each retry (OOM-killed jobs come back bigger)."""

    def _mem(wildcards, attempt):
        return int(base * 2 ** (attempt - 1))

    return _mem




# --------------------------------------------------------------------------- paths

WORLD = f"{RESULTS}/world"
MISALIGN = f"{RESULTS}/misalign"
MISALIGN_CODE = code("misalign/swap", "misalign/similarity", "misalign/tfidf", "misalign/captions", "common/data")
# The neighbour search asks for a GPU only when the config says it must run on CuPy.
MISALIGN_GPU = 1 if config["misalign"]["backend"] == "cupy" else 0
# Snakemake silently lowers a job's `gpu` request to a global cap (--resources gpu=N), and the GPU rules
# start {resources.gpu} processes: a cap below the requests would shrink them, so it is an error.
_GPU_CAP = workflow.global_resources.get("gpu").value
if _GPU_CAP is not None and max(gpus(), MISALIGN_GPU) > _GPU_CAP:
    raise ValueError(
        f"--resources gpu={_GPU_CAP} is below the {max(gpus(), MISALIGN_GPU)} GPUs a job asks for "
        "(finetune.gpus, or 1 for misalign.backend: cupy): raise the cap or lower finetune.gpus"
    )
# Evaluation sets that the synthetic world writes (their class lists are make_world outputs).
WORLD_SETS = [
    s
    for s, spec in config["evaluate"]["sets"].items()
    if spec["kind"] == "imagefolder" and spec["root"].startswith(f"{WORLD}/eval/")
]
# Replicate r (a `finetune.seeds` entry, `seed{r}` in paths) draws its own swaps (misalign.seed + r) and its
# own fine-tune batch order. Cs = 0 is one control run per (model, replicate) on the original captions,
# shared by every strategy: strategy CONTROL in paths, no swap job.
SWAP_CS = [c for c in CS_LABELS if float(c) > 0]
SWAPS_DIR = f"{MISALIGN}/{{strategy}}/Cs{{cs}}/seed{{seed}}"
SWAPPED_KEYS = [(s, c, r) for s in STRATEGIES for c in SWAP_CS for r in SEEDS]
FINETUNE_RUNS = ([(CONTROL, c) for c in CS_LABELS if float(c) == 0]
                 + [(s, c) for s in STRATEGIES for c in SWAP_CS])
TRUE_ATTRIBUTES = [f"{WORLD}/train_attributes.csv"] if config["world"]["enabled"] else []


def swapped_sets(name="captions.txt"):
    """A file of every swapped caption set (strategy, Cs > 0, replicate), in SWAPPED_KEYS order."""
    return [f"{MISALIGN}/{s}/Cs{c}/seed{r}/{name}" for s, c, r in SWAPPED_KEYS]


def training_csv(wildcards):
    """The fine-tune's training CSV: the swapped set's, or the original one for the Cs = 0 control."""
    if wildcards.strategy == CONTROL:
        return config["data"]["train_csv"]
    return f"{MISALIGN}/{wildcards.strategy}/Cs{wildcards.cs}/seed{wildcards.seed}/train.csv"


def finetune_dirs(template, models=None):
    """`template` (with {model}, {strategy}, {cs}, {seed}) for every fine-tune of the study."""
    return [
        template.format(model=m, strategy=s, cs=c, seed=r)
        for m in (models or FT_MODELS)
        for s, c in FINETUNE_RUNS
        for r in SEEDS
    ]


FINETUNE_SUBDIR = "finetune/{model}/{strategy}/Cs{cs}/seed{seed}"
FINETUNE_DIR = f"{RESULTS}/{FINETUNE_SUBDIR}"
EVAL_OUTPUTS = ("metrics.parquet", "purity.parquet", "histograms.parquet", "neurons.npz", "predictions.npz")
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
# A model's pretrained (or imported) checkpoint, in our checkpoint format.
PRETRAINED = f"{RESULTS}/pretrain/{{model}}/checkpoint.pt"
# The frozen towers' features of every evaluation set, class prompt and held-out pair (once per model).
EVAL_FEATURES = f"{RESULTS}/eval/features/{{model}}.npz"


# --------------------------------------------------------------------------- models

# The models with a checkpoint of their own. An Exp 3 orthogonality arm <model>-ortho has its base model's
# checkpoint, frozen towers, feature cache and evaluation features (towers_of): only its fine-tunes are its own.
TOWER_MODELS = [m for m in MODELS if finetune_source(config, m) == m]
# The models of the seed systems and Exp 2: every model but the pretraining replicas <name>-p<seed> (the
# seed systems use each model's first pretraining, and the fine-tunes that start from it).
FIRST_PRETRAINING_MODELS = [m for m in MODELS if not is_replica(config["models"][m])]


def towers_of(model, seed=None):
    """The model whose checkpoint and frozen towers `model` uses: itself, or an arm's base model; for
    fine-tune replicate `seed`, the pretraining that replicate starts from (finetune.pretraining)."""
    if seed is None:
        return finetune_source(config, model)
    return replicate_towers(config, model, seed)


def first_pretraining_seeds(model):
    """The replicates of `model`'s fine-tunes that start from its first pretraining (the seed systems'
    fine-tunes: with finetune.pretraining matched and 3 pretrainings, replicate 0 only)."""
    return replicates_from(config, model, SEEDS, towers_of(model))


MODEL_SOURCE = {name: config["models"][name]["source"] for name in TOWER_MODELS}
PRETRAIN_MODELS = [m for m, s in MODEL_SOURCE.items() if s == "pretrain"]
IMPORT_MODELS = [m for m, s in MODEL_SOURCE.items() if s != "pretrain"]
# Zero-shot check at the end of pretraining: the world's downstream sets (shape, colour, ...).
PRETRAIN_EVAL_SETS = WORLD_SETS if config["world"]["enabled"] else []


def model_config_file(arch):
    """The embedded JSON config of an architecture (an input, so editing it retrains), or nothing."""
    path = source_file("workflow_scripts", "models", "model_configs", f"{arch}.json")
    return [path] if os.path.exists(path) else []


def source_checkpoint(name):
    """Where a checkpoint/laclip model's file is: the configured path, else resources/checkpoints/<name>.pt."""
    spec = config["models"][name]
    return spec.get("checkpoint") or f"{RESOURCES}/checkpoints/{name}.pt"


def pretrain_inputs(wildcards):
    spec = config["models"][wildcards.model]
    inputs = {
        "csv": config["data"]["train_csv"],
        "arch": model_config_file(spec["arch"]),
        "sets": [eval_set_input(s) for s in PRETRAIN_EVAL_SETS],
    }
    if spec.get("captions") == "augmented":
        inputs["rewrites"] = config["data"]["rewrites"]
    return inputs


def eval_set_input(name):
    """Input of a job reading downstream set `name`: the world's class list (a make_world output) or the root."""
    spec = config["evaluate"]["sets"][name]
    if config["world"]["enabled"] and name in WORLD_SETS:
        return f"{WORLD}/eval/{name}/classnames.txt"
    return spec["root"]


def eval_inputs(wildcards):
    return [eval_set_input(s) for s in EVAL_SETS]


# The feature cache of a model: an index (image paths, captions, projection head) and two memory-mapped arrays.
FEATURE_CACHE = {
    "index": f"{RESULTS}/features/{{model}}/train.npz",
    "image": f"{RESULTS}/features/{{model}}/train.image.npy",
    "text": f"{RESULTS}/features/{{model}}/train.text.npy",
}


def feature_cache(model, seed=None):
    """The feature cache of `model`'s towers (replicate `seed`'s pretraining), which cached mode reads
    (end2end reads images itself: [])."""
    if config["finetune"]["mode"] == "cached":
        return expand(list(FEATURE_CACHE.values()), model=towers_of(model, seed))
    return []


def feature_cache_input(wildcards):
    return feature_cache(wildcards.model, wildcards.get("seed"))


def eval_features_input(wildcards):
    """The evaluation features of the model's towers (an orthogonality arm's are its base model's; a
    fine-tune replicate's those of the pretraining it started from)."""
    return EVAL_FEATURES.format(model=towers_of(wildcards.model, wildcards.get("seed")))


def nproc(wildcards, resources):
    """Processes of a job: one per GPU, or finetune.processes CPU (gloo) processes."""
    return resources.gpu if resources.gpu > 0 else config["finetune"]["processes"]


def launcher(wildcards, resources):
    """How a job starts its Python module: plain `python` for one process (torchrun's own start-up costs
    as much as a cached fine-tune's work), torchrun only for several processes (GPUs or gloo ranks)."""
    n = nproc(wildcards, resources)
    return "python" if n == 1 else f"torchrun --standalone --nproc-per-node={n}"


def eval_tables(kind):
    """Per-checkpoint outputs of one kind (metrics.parquet, predictions.npz...): pretrained models +
    fine-tunes."""
    pretrained = expand(f"{RESULTS}/eval/pretrained/{{model}}/{kind}", model=MODELS)
    return pretrained + finetune_dirs(f"{RESULTS}/eval/{FINETUNE_SUBDIR}/{kind}")


# Report sections in order; each is numbered among the sections this config's report has (no Exp 2 section
# without evaluate.pruning.models, none for a seed system that is switched off), so the numbers have no gaps.
REPORT_SECTIONS = {}


def report_section(name, present=True):
    """Declare a report section (in report order) and whether this config's report has it."""
    REPORT_SECTIONS.setdefault(name, bool(present))


def category(name):
    """The numbered report category of a declared section: "<k>. <name>", k counting present sections
    (a section this config's report leaves out keeps its bare name: its outputs are built on request only)."""
    if name not in REPORT_SECTIONS:
        raise ValueError(f"report section {name!r} is not declared: {list(REPORT_SECTIONS)}")
    present = [s for s, on in REPORT_SECTIONS.items() if on]
    return f"{present.index(name) + 1}. {name}" if name in present else name


report_section("Data")
report_section("Models")  # pretraining curves, and the evaluation settings of every run
report_section("Exp 1: CLIP vs LaCLIP")
report_section("Exp 2: pruning by purity", bool(PRUNING_MODELS))
report_section("Exp 3: misalignment")
# the seed systems (rules/clip4dm.smk, rules/sparse.smk, rules/multilingual.smk), each behind its switch
report_section("Dense misalignment (CLIP4DM)", config["clip4dm"]["enabled"])
report_section("Sparse concepts (SpLiCE)", config["sparse"]["enabled"])
report_section("Multilingual alignment (image pivot)", config["multilingual"]["enabled"])


def report_table(name, caption, category, label):
    return report(
        f"{TABLES}/{name}.csv",
        caption=f"report/{caption}.rst",
        category=category,
        labels={"table": label},
    )


FIGURE_SPECS = {
    # name: (figures.py sub-command, table, extra options, caption, category)
    "exp3_purity_vs_cs": (
        "purity-vs-cs",
        f"{TABLES}/exp3_purity.parquet",
        "--projection text",
        "fig_purity_vs_cs",
        category("Exp 3: misalignment"),
    ),
    "exp3_image_purity_vs_cs": (
        "purity-vs-cs",
        f"{TABLES}/exp3_purity.parquet",
        "--projection image",
        "fig_purity_vs_cs",
        category("Exp 3: misalignment"),
    ),
    "exp3_accuracy_vs_cs": (
        "accuracy-vs-cs",
        f"{TABLES}/exp3_metrics.parquet",
        "--metric acc1",
        "fig_accuracy_vs_cs",
        category("Exp 3: misalignment"),
    ),
    "exp3_vs_effective_misalignment": (
        "effective",
        f"{TABLES}/exp3_effective.parquet",
        "",
        "fig_effective",
        category("Exp 3: misalignment"),
    ),
    "exp3_cosine_histograms": (
        "cosine-hist",
        f"{TABLES}/exp3_histograms.parquet",
        "--projection text",
        "fig_cosine_histograms",
        category("Exp 3: misalignment"),
    ),
    "exp1_clip_vs_laclip": (
        "exp1",
        f"{TABLES}/exp1.parquet",
        "",
        "fig_exp1",
        category("Exp 1: CLIP vs LaCLIP"),
    ),
}
FIGURE_SPECS.update(
    {
        f"exp2_pruning_{model}": (
            "pruning",
            f"{RESULTS}/eval/pruning/{model}.parquet",
            "--metric acc1",
            "fig_pruning",
            category("Exp 2: pruning by purity"),
        )
        for model in PRUNING_MODELS
    }
)


def all_targets():
    """Everything the study produces (the inputs of `rule all`, hence of report.html)."""
    targets = expand(f"{FIGURES}/{{figure}}.svg", figure=FIGURE_SPECS)
    targets += expand(f"{TABLES}/exp2_pruning_{{model}}.csv", model=PRUNING_MODELS)
    targets += [f"{TABLES}/exp1.csv", f"{TABLES}/exp3_spearman.csv"]
    if config["world"]["enabled"]:
        targets.append(f"{WORLD}/world.json")
    targets += expand(PRETRAINED, model=TOWER_MODELS)
    return targets + SYSTEM_TARGETS


# The seed systems (rules/<system>.smk) append their final outputs here; `rule all` and the report take them.
SYSTEM_TARGETS = []
