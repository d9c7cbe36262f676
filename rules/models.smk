# Models: every configured model ends up at results/pretrain/{model}/checkpoint.pt in our checkpoint
# format, so later stages read one path with torch.load(weights_only=True):
#   source pretrain            -> rule pretrain (from scratch on data.train_csv, in the DAG)
#   source checkpoint / laclip -> rule import_checkpoint (LaCLIP keys converted, strict load, re-saved)
#   ... with url + sha256      -> rule fetch_<model> first downloads the file (resumable, verified)

if PRETRAIN_MODELS:

    rule pretrain:
        input:
            unpack(pretrain_inputs),
            code=code("models/pretrain", "models/clip", "models/checkpoints", "common/data", "common/evalsets", "evaluate/run"),
            # its zero-shot check at the end reads the evaluation sets: their validation too
            validated=TRAIN_IMAGES_CHECKED + ([VALIDATED["eval"]] if PRETRAIN_EVAL_SETS else []),
        output:
            checkpoint=PRETRAINED,
            train_log=f"{RESULTS}/pretrain/{{model}}/log.jsonl",
            initial=f"{RESULTS}/pretrain/{{model}}/initial_projections.npz",
            plot=report(
                f"{RESULTS}/pretrain/{{model}}/training.png",
                caption="report/pretrain.rst",
                category=category("Models"),
                labels={"model": "{model}", "figure": "pretraining curve"},
            ),
        log:
            f"{LOGS}/pretrain/{{model}}.log",
        benchmark:
            f"{BENCHMARKS}/pretrain/{{model}}.tsv"
        wildcard_constraints:
            model="|".join(PRETRAIN_MODELS),
        params:
            config=CONFIG,
            settings={
                k: v
                for k, v in config["pretrain"].items()
                if k not in ("checkpoint_every", "seeds")
            },
            spec=model_spec,
            sets=" ".join(PRETRAIN_EVAL_SETS),
        threads: 1  # the embedded default runs clip and laclip side by side on 2 cores
        # pretraining heads the longest chain of the DAG: start it before jobs that can fill gaps later
        priority: 50
        resources:
            gpu=min(1, gpus()),
            mem_mb=mem_mb(3000),
            runtime=30,
        # checkpoint.partial.pt next to the output survives a failed or killed job; the rerun resumes it
        conda:
            "../envs/workflow.yaml"
        shell:
            LOG_VISIBLE_GPUS
            + "python -m workflow_scripts.models.pretrain --config {params.config} --model {wildcards.model}"
            " --out {output.checkpoint} --train-log {output.train_log} --plot {output.plot}"
            " --initial-projections {output.initial}"
            " --eval-sets {params.sets} --threads {threads} --gpus {resources.gpu} >> {log} 2>&1"


if IMPORT_MODELS:

    rule import_checkpoint:
        input:
            code=code("models/clip", "models/checkpoints"),
            arch=lambda wildcards: model_config_file(config["models"][wildcards.model]["arch"]),
            checkpoint=lambda wildcards: source_checkpoint(wildcards.model),
        output:
            PRETRAINED,
        log:
            f"{LOGS}/import_checkpoint/{{model}}.log",
        benchmark:
            f"{BENCHMARKS}/import_checkpoint/{{model}}.tsv"
        wildcard_constraints:
            model="|".join(IMPORT_MODELS),
        params:
            config=CONFIG,
            spec=model_spec,
        threads: 1
        resources:
            mem_mb=mem_mb(4000),
            runtime=30,
        conda:
            "../envs/workflow.yaml"
        shell:
            "python -m workflow_scripts.models.clip --config {params.config} --model {wildcards.model}"
            " --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"


# One download rule per model with a url. Deliberately no code inputs: editing fetch.py must never make
# Snakemake delete and re-download a verified multi-GB file; a changed url/sha256 (params) does rerun it.
for _name in [m for m in IMPORT_MODELS if config["models"][m].get("url")]:

    rule:
        name:
            f"fetch_{_name}"
        output:
            source_checkpoint(_name),
        log:
            f"{LOGS}/fetch/{_name}.log",
        params:
            url=config["models"][_name]["url"],
            sha256=config["models"][_name]["sha256"],
        threads: 1
        resources:
            mem_mb=500,
            runtime=240,
        retries: 2  # a retry resumes the .part file
        conda:
            "../envs/workflow.yaml"
        shell:
            "python -m workflow_scripts.models.fetch --url '{params.url}' --sha256 {params.sha256}"
            " --out {output} > {log} 2>&1"
