"""Input paths of the multilingual rules (rules/multilingual.smk), as plain functions of the config."""

from __future__ import annotations

import shlex
from pathlib import Path


def base_inputs(config: dict, name: str, results: str, feature_cache: dict, eval_features: str) -> dict:
    """The base model's caches that give multilingual model `name` its image embeddings."""
    base = config["multilingual"]["models"][name]["base"]
    return {
        "features": [path.format(model=base) for path in feature_cache.values()],
        "eval_features": eval_features.format(model=base),
        "projections": f"{results}/eval/pretrained/{base}/projections.npz",
    }


def model_files(directory: str) -> list[str]:
    """The files of a model directory (hidden ones left out), or the directory itself while it is missing
    (so that Snakemake names it as a missing input)."""
    root = Path(directory)
    if not root.is_dir():
        return [directory]
    return sorted(str(p) for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def embed_inputs(config: dict, name: str, results: str, feature_cache: dict, eval_features: str) -> dict:
    """The embedding job's inputs: the base caches plus the caption tables and encoder (embedded), the
    text embedding files (files), or the caption CSVs and the model directory's files (sentence_transformers)."""
    ml = config["multilingual"]
    spec = ml["models"][name]
    inputs = base_inputs(config, name, results, feature_cache, eval_features)
    if spec["source"] == "embedded":
        inputs["captions"] = [f"{results}/multilingual/captions/train.parquet",
                              f"{results}/multilingual/captions/heldout.parquet"]
        inputs["checkpoint"] = f"{results}/multilingual/encoder/{name}/checkpoint.pt"
    elif spec["source"] == "sentence_transformers":
        inputs["captions"] = [ml["captions"]["train"], ml["captions"]["heldout"]]
        inputs["sentence_model"] = model_files(spec["path"])
    else:
        inputs["files"] = [p for split in spec.get("files", {}).values() for p in split.values()]
    return inputs


def embed_args(config: dict, name: str, inputs) -> str:
    """The embedding job's source-specific flags."""
    source = config["multilingual"]["models"][name]["source"]
    if source == "files":
        return ""
    args = f"--train-captions {shlex.quote(inputs.captions[0])} --heldout-captions {shlex.quote(inputs.captions[1])}"
    return args + (f" --checkpoint {shlex.quote(inputs.checkpoint)}" if source == "embedded" else "")
