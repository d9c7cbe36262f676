"""Inputs and options of the CLIP4DM rules (rules/clip4dm.smk), as plain functions of the config so that
the rules file holds rules only."""

from __future__ import annotations

import os

from ..common.config import finetune_source, replicates_from

ATTRIBUTION_KEYS = ("template", "layers", "batch_size", "long_captions", "epsilon", "words", "punctuation",
                    "fclipscore")


def settings(config: dict, *extra: str) -> dict:
    """The clip4dm settings a job's results depend on (rule params: a change re-runs exactly those jobs)."""
    section = config["clip4dm"]
    return {k: section[k] for k in ATTRIBUTION_KEYS + extra if k in section}


def detector_models(config: dict) -> list[str]:
    """clip4dm.detect.models, or the pretrained models the fine-tunes start from."""
    models = config["clip4dm"]["detect"]["models"]
    if models:
        return list(models)
    return list(dict.fromkeys(finetune_source(config, m) for m in config["finetune"]["models"]))


def prepare_inputs(config: dict, model: str, pretrained: str, eval_features: str, cache: dict,
                   true_attributes: list[str]) -> dict:
    """clip4dm_prepare's inputs: checkpoint, evaluation features, held-out pairs and, for a detector, its
    feature cache, the caption file and the true attributes."""
    inputs = {"checkpoint": pretrained.format(model=model), "features": eval_features.format(model=model)}
    if config["data"]["heldout_csv"]:
        inputs["heldout"] = config["data"]["heldout_csv"]
    if model in detector_models(config):
        inputs["cache"] = cache["index"].format(model=model)
        inputs["cache_arrays"] = [cache[k].format(model=model) for k in ("image", "text")]
        inputs["captions"] = config["data"]["captions"]
        inputs["attributes"] = true_attributes
    return inputs


def prepare_options(cache: str | None, attributes: list[str]) -> str:
    """clip4dm_prepare's options: a detector model (prepare_inputs gave it a cache) gets its cache and the
    true attributes; the others none."""
    if cache is None:
        return ""
    return f"--cache {cache}" + (f" --attributes {attributes[0]}" if attributes else "")


def finetunes(config: dict, model: str, runs: list[tuple[str, str]], seeds: list[str],
              finetune_dir: str) -> list[tuple[str, str, str, str]]:
    """(label, Cs, replicate, checkpoint) of every fine-tune whose pretrained model is `model` (none unless
    clip4dm.foils.finetuned): the replicates that start from `model`'s checkpoint (replicates_from; with
    finetune.pretraining matched, those of its first pretraining); the label is the strategy, prefixed by
    the fine-tuned model for an arm."""
    if not config["clip4dm"]["foils"]["finetuned"]:
        return []
    out = []
    for ft in config["finetune"]["models"]:
        if finetune_source(config, ft) != model:
            continue
        for strategy, cs in runs:
            label = strategy if ft == model else f"{ft}.{strategy}"
            for seed in replicates_from(config, ft, seeds, model):
                path = os.path.join(finetune_dir.format(model=ft, strategy=strategy, cs=cs, seed=seed), "checkpoint.pt")
                out.append((label, cs, seed, path))
    return out


def real_inputs(config: dict, name: str) -> dict:
    """clip4dm_realdata's benchmark files: its JSON and, when given, its COCO references file."""
    spec = config["clip4dm"]["real_data"][name]
    return {"json": spec["json"], **({"references": spec["references"]} if spec.get("references") else {})}


def real_runs(config: dict) -> list[tuple[str, str]]:
    """(benchmark name, model) of every configured real benchmark."""
    return [(name, model) for name, spec in config["clip4dm"]["real_data"].items()
            for model in (spec.get("models") or detector_models(config))]
