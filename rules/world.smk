# The embedded synthetic world (only when world.enabled; real-data runs point data.* at their files).

WORLD = "results/world"
WORLD_SETS = [
    s
    for s, spec in config["evaluate"]["sets"].items()
    if spec["kind"] == "imagefolder" and spec["root"].startswith(WORLD + "/eval/")
]


if config["world"]["enabled"]:

    rule make_world:
        input:
            code=code("world", "data"),
        output:
            csv=f"{WORLD}/train.csv",
            captions=f"{WORLD}/captions.txt",
            rewrites=expand(
                WORLD + "/rewrites_k{k}.txt", k=range(config["world"]["n_rewrites"])
            ),
            attributes=f"{WORLD}/train_attributes.csv",
            info=report(
                f"{WORLD}/world.json",
                caption="report/world.rst",
                category="1. Data",
            ),
            classnames=expand(WORLD + "/eval/{name}/classnames.txt", name=WORLD_SETS),
        log:
            "logs/make_world.log",
        benchmark:
            "benchmarks/make_world.tsv"
        params:
            settings=config["world"],
            out=WORLD,
            config=CONFIG,
        threads: 1
        resources:
            mem_mb=mem_mb(2000),
            runtime=30,
        shell:
            "python -m workflow_scripts.world --config {params.config}"
            " --out {params.out} --log {log} 2> /dev/null"


def eval_set_input(name):
    """What a rule reading downstream set `name` depends on: the world's class list, or the root."""
    spec = config["evaluate"]["sets"][name]
    if config["world"]["enabled"] and name in WORLD_SETS:
        return f"{WORLD}/eval/{name}/classnames.txt"
    return spec["root"]
