# The embedded synthetic world (only when world.enabled; real-data runs point data.* at their files).

if config["world"]["enabled"]:

    rule make_world:
        input:
            code=code("world/synthetic", "common/data"),
        output:
            csv=f"{WORLD}/train.csv",
            captions=f"{WORLD}/captions.txt",
            rewrites=expand(
                f"{WORLD}/rewrites_k{{k}}.txt", k=range(config["world"]["n_rewrites"])
            ),
            attributes=f"{WORLD}/train_attributes.csv",
            heldout=(
                [f"{WORLD}/heldout.csv"] if config["world"]["n_heldout"] else []
            ),
            info=report(
                f"{WORLD}/world.json",
                caption="report/world.rst",
                category=category("Data"),
            ),
            classnames=expand(f"{WORLD}/eval/{{name}}/classnames.txt", name=WORLD_SETS),
        log:
            f"{LOGS}/make_world.log",
        benchmark:
            f"{BENCHMARKS}/make_world.tsv"
        params:
            settings=config["world"],
            out=lambda wildcards, output: os.path.dirname(output.csv),
            config=CONFIG,
        threads: 2  # the second writes the PNGs while the first draws (the same world for any count)
        resources:
            mem_mb=mem_mb(2000),
            runtime=30,
        conda:
            "../envs/workflow.yaml"
        shell:
            "python -m workflow_scripts.world.synthetic --config {params.config}"
            " --out {params.out} --threads {threads} > {log} 2>&1"
