"""Path helpers of rules/sparse.smk (kept out of the rules file, which holds rules only)."""

from __future__ import annotations


def checkpoint_runs(model: str, results: str, finetune_dir: str, finetune_models, finetune_runs,
                    seeds, towers: str | None = None) -> list[tuple[str, str]]:
    """(tags, projections.npz) of every checkpoint of `model`: the pretrained one (that of `towers`, the
    model whose checkpoint it uses: an orthogonality arm's base), then its fine-tunes (`finetune_dir` a
    template with {model}, {strategy}, {cs}, {seed}); tags as sparse.evaluate --run."""
    runs = [("kind=pretrained", f"{results}/eval/pretrained/{towers or model}/projections.npz")]
    if model in finetune_models:
        runs += [(f"kind=finetune,strategy={s},cs={c},seed={r}",
                  f"{finetune_dir.format(model=model, strategy=s, cs=c, seed=r)}/projections.npz")
                 for s, c in finetune_runs for r in seeds]
    return runs


def run_arguments(runs: list[tuple[str, str]]) -> str:
    """The --run/--projections pairs of a sparse.evaluate command line."""
    return " ".join(f"--run {tags} --projections {path}" for tags, path in runs)


def decomposed_sets(config: dict) -> list[str]:
    """The evaluation sets the stage decomposes: sparse.sets, or every set of evaluate.sets when it is empty."""
    return list(config["sparse"]["sets"]) or list(config["evaluate"]["sets"])
