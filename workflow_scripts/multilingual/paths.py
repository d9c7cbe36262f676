"""Input paths of the multilingual rules (rules/multilingual.smk), as plain functions of the config."""

from __future__ import annotations


def base_inputs(config: dict, name: str, results: str, feature_cache: dict, eval_features: str) -> dict:
    """The base model's caches that give multilingual model `name` its image embeddings."""
    base = config["multilingual"]["models"][name]["base"]
    return {
        "features": [path.format(model=base) for path in feature_cache.values()],
        "eval_features": eval_features.format(model=base),
        "projections": f"{results}/eval/pretrained/{base}/projections.npz",
    }


def embed_inputs(config: dict, name: str, results: str, feature_cache: dict, eval_features: str) -> dict:
    """The embedding job's inputs: the base caches plus the caption tables and encoder (embedded) or the
    text embedding files (files)."""
    spec = config["multilingual"]["models"][name]
    inputs = base_inputs(config, name, results, feature_cache, eval_features)
    if spec["source"] == "embedded":
        inputs["captions"] = [f"{results}/multilingual/captions/train.parquet",
                              f"{results}/multilingual/captions/heldout.parquet"]
        inputs["checkpoint"] = f"{results}/multilingual/encoder/{name}/checkpoint.pt"
    else:
        inputs["files"] = [p for split in spec.get("files", {}).values() for p in split.values()]
    return inputs


def embed_args(config: dict, name: str, inputs) -> str:
    """The embedding job's source-specific flags."""
    if config["multilingual"]["models"][name]["source"] != "embedded":
        return ""
    return (f"--train-captions {inputs.captions[0]} --heldout-captions {inputs.captions[1]}"
            f" --checkpoint {inputs.checkpoint}")
