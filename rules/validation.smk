# Data validation at the head of the DAG: cheap checks of the files the config points at (on the embedded
# default, what make_world wrote), so that no expensive job starts on data that would fail it later.
#   validate_text          pair CSVs (fields, strict quoting, one record per line), caption and rewrite files
#                          (UTF-8, no empty lines, line count = CSV rows), naming the file and line; captions
#                          longer than each model's text context counted, every line listed in its log
#   validate_train_images  every training image present and decodable (header level, parallel) + manifest
#   validate_eval_images   the same for the held-out pairs and the ImageFolder evaluation sets; each torchvision
#                          set (CIFAR, Food-101, ...) opened as the evaluation opens it and every item decoded;
#                          the images of CLIP4DM's real benchmarks (clip4dm.real_data)
# The expensive rules take these outputs as inputs. The manifests record each image's size and mtime;
# every time Snakemake starts, the files they list are stat-ed again (workflow_scripts/validation/manifest.py,
# mark_changes): a replaced or missing image makes its validation job, and what reads those images, run
# again. A torchvision set's manifest rows are its data files (CIFAR's batch files, the files under the set's
# own directory for the others), stat-ed the same way.

from workflow_scripts.validation.manifest import mark_changes

VALIDATE = f"{RESULTS}/validate"
VALIDATED = {
    "text": f"{VALIDATE}/text.json",
    "train": f"{VALIDATE}/train_images.parquet",
    "eval": f"{VALIDATE}/eval_images.parquet",
}
# the modules every validation job runs (cli imports these at its top); each job adds those it alone imports
# (listed by hand, follow_imports=False: cli imports every subcommand's modules lazily, and following them
# would make validate_text, hence the whole DAG, rerun on an edit of e.g. the CLIP4DM readers)
VALIDATE_MODULES = (
    "validation/cli", "validation/text", "validation/images",
    "validation/manifest", "validation/problems", "common/data",
)
# ImageFolder evaluation sets, checked image by image; torchvision sets, opened and decoded item by item
VALIDATE_FOLDERS = [
    s for s, spec in config["evaluate"]["sets"].items() if spec["kind"] == "imagefolder"
]
VALIDATE_TORCHVISION = [
    s for s, spec in config["evaluate"]["sets"].items() if spec["kind"] != "imagefolder"
]
# the settings that decide what a torchvision set reads (a change re-runs the check)
VALIDATE_TORCHVISION_SETTINGS = {
    s: {
        k: config["evaluate"]["sets"][s].get(k)
        for k in ("kind", "root", "split", "download", "verify_checksums")
    }
    for s in VALIDATE_TORCHVISION
}
# CLIP4DM's real benchmarks (clip4dm.real_data), when CLIP4DM is on: the images their records name
VALIDATE_BENCHMARKS = list(config["clip4dm"]["real_data"]) if config["clip4dm"]["enabled"] else []
# what the long-caption count of validate_text depends on (validation/long_captions.py)
LONG_CAPTION_SETTINGS = {
    "archs": sorted({spec["arch"] for spec in config["models"].values()}),
    **{k: config["clip4dm"][k] for k in ("enabled", "template", "long_captions")},
}
VALIDATE_THREADS = max(2, int(config["compute"]["num_workers"]))
# the held-out pair CSV as an input list (empty when data.heldout_csv is not set)
HELDOUT_CSV = [config["data"]["heldout_csv"]] if config["data"]["heldout_csv"] else []
# What the jobs reading images take as input: the training images' manifest; for the evaluation features
# the evaluation images' (and the training images' when the diagnostics' pairs are training pairs).
TRAIN_IMAGES_CHECKED = [VALIDATED["train"]]
EVAL_IMAGES_CHECKED = [VALIDATED["eval"]] + ([] if HELDOUT_CSV else TRAIN_IMAGES_CHECKED)
# A stamp per manifest, an input of its job: updated now (at every start of Snakemake, dry runs too) when
# images changed since that manifest, so that the job runs again. Only the main process does this: the
# per-job processes that parse the workflow again (e.g. every job under the slurm profile) would otherwise
# stat every image of both manifests once per job, and could touch the stamps while the run is going.
CHANGED_IMAGES = {kind: f"{VALIDATE}/{kind}_images.changed" for kind in ("train", "eval")}
if workflow.is_main_process:
    for _kind, _stamp in CHANGED_IMAGES.items():
        mark_changes(VALIDATED[_kind], _stamp)


rule validate_text:
    input:
        code=code(*VALIDATE_MODULES, "validation/long_captions", follow_imports=False),
        csv=config["data"]["train_csv"],
        captions=config["data"]["captions"],
        rewrites=config["data"]["rewrites"],
        heldout=HELDOUT_CSV,
    output:
        VALIDATED["text"],
    log:
        f"{LOGS}/validate/text.log",
    benchmark:
        f"{BENCHMARKS}/validate/text.tsv"
    params:
        heldout=lambda wildcards, input: (
            f"--heldout-csv {input.heldout}" if input.heldout else ""
        ),
        config=CONFIG,
        long_captions=LONG_CAPTION_SETTINGS,
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
        runtime=30,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.validation.cli text --train-csv {input.csv}"
        " --captions {input.captions} --rewrites {input.rewrites} {params.heldout}"
        " --config {params.config} --out {output} > {log} 2>&1"


rule validate_train_images:
    input:
        code=code(*VALIDATE_MODULES, follow_imports=False),
        text=VALIDATED["text"],
        csv=config["data"]["train_csv"],
        changed=CHANGED_IMAGES["train"],
    output:
        VALIDATED["train"],
    log:
        f"{LOGS}/validate/train_images.log",
    benchmark:
        f"{BENCHMARKS}/validate/train_images.tsv"
    params:
        root=lambda wildcards: config["data"]["image_root"],
    threads: VALIDATE_THREADS
    resources:
        mem_mb=mem_mb(2000),
        runtime=120,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.validation.cli images --image-root {params.root} --csv train={input.csv}"
        " --workers {threads} --changed {input.changed} --out {output} > {log} 2>&1"


rule validate_eval_images:
    input:
        code=code(*VALIDATE_MODULES, "common/evalsets", "clip4dm/readers", follow_imports=False),
        text=VALIDATED["text"],
        heldout=HELDOUT_CSV,
        sets=[eval_set_input(s) for s in EVAL_SETS],
        benchmarks=[config["clip4dm"]["real_data"][b]["json"] for b in VALIDATE_BENCHMARKS],
        changed=CHANGED_IMAGES["eval"],
    output:
        VALIDATED["eval"],
    log:
        f"{LOGS}/validate/eval_images.log",
    benchmark:
        f"{BENCHMARKS}/validate/eval_images.tsv"
    params:
        root=lambda wildcards: config["data"]["image_root"],
        heldout=lambda wildcards, input: (
            f"--csv heldout={input.heldout}" if input.heldout else ""
        ),
        folders=" ".join(
            f"--imagefolder {s}={config['evaluate']['sets'][s]['root']}" for s in VALIDATE_FOLDERS
        ),
        torchvision=" ".join(
            [f"--torchvision {s}" for s in VALIDATE_TORCHVISION]
            + [f"--benchmark {b}" for b in VALIDATE_BENCHMARKS]
            + ([f"--config {CONFIG}"] if VALIDATE_TORCHVISION or VALIDATE_BENCHMARKS else [])
        ),
        settings=VALIDATE_TORCHVISION_SETTINGS,
        benchmarks={b: config["clip4dm"]["real_data"][b] for b in VALIDATE_BENCHMARKS},
    threads: VALIDATE_THREADS
    resources:
        mem_mb=mem_mb(2000),
        runtime=60,
    conda:
        "../envs/workflow.yaml"
    shell:
        "python -m workflow_scripts.validation.cli images --image-root {params.root} {params.heldout}"
        " {params.folders} {params.torchvision} --workers {threads} --changed {input.changed}"
        " --out {output} > {log} 2>&1"
