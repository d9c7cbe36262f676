"""Evaluation: purity of the projections, zero-shot accuracy and silhouette per downstream set, and
representation diagnostics, for every checkpoint.

The fine-tunes change only the two projections, so each model's frozen towers run once over the
evaluation data (`features`: pre-projection image features per set, text features of every class
prompt, and a sample of aligned training pairs). Evaluating any checkpoint of that model is then
matrix algebra over its projection matrices (`projections`), with no network in the loop:

    python -m workflow_scripts.evaluate.run features --config C --model clip \\
        --checkpoint results/pretrain/clip/checkpoint.pt --out results/eval/features/clip.npz \\
        --projections results/eval/pretrained/clip/projections.npz
    python -m workflow_scripts.evaluate.run projections --features results/eval/features/clip.npz \\
        --projections results/finetune/clip/similarity/Cs0.3/seed0/projections.npz \\
        --out-dir results/eval/finetune/clip/similarity/Cs0.3/seed0 --tag model=clip --tag kind=finetune

Tables are tidy (one row per metric): metrics.parquet (tags..., set, metric, value), purity.parquet
(tags..., projection, metric, value), histograms.parquet (tags..., projection, bin_left, bin_right, count);
predictions.npz holds each set's per-image top-1 correctness (and the tags as JSON), for paired bootstrap
intervals over the evaluation images.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..common.config import check_model, load_config
from ..common.data import read_pairs_csv
from ..common.errors import InputError
from ..common.evalsets import open_set
from ..common.io import (
    load_npz, progress, run_cli, save_npz, setup_logging, torch_threads_from_env, write_table,
)

log = logging.getLogger(__name__)
SEP = "::"  # key separator in the features file: "<set>::image", "<set>::labels", ...
CORRECT = f"correct{SEP}"   # predictions.npz: "correct::<set>" = per-image top-1 correctness
PAIR_SETS = ("heldout_pairs", "train_pairs")   # diagnostics' image-caption pairs: held-out, else training


# ----------------------------------------------------------------------------- features (torch)


def set_preprocess(pre: dict, set_spec: dict) -> dict:
    """The model's `evaluate` preprocessing with the set's own `preprocess` keys on top."""
    out = dict(pre)
    for key, value in (set_spec.get("preprocess") or {}).items():
        out[key] = tuple(float(v) for v in value) if key in ("mean", "std") else value
    return out


def cache_reuse_problem(cache: dict, checkpoint: str, pre: dict) -> str | None:
    """Why a feature cache (features.load_feature_cache) cannot stand in for encoding training pairs here,
    or None when it can: its features must come from the same checkpoint (sha256), the same preprocessing
    (the cache's `finetune` stage against this `evaluate` stage: mean, std, interpolation, resize, size),
    no augmentation (augmented views are random crops), and float32 towers (evaluation encodes images in
    float32; a GPU-made cache is float16 autocast)."""
    from ..common.io import sha256_file

    precision = str(cache.get("precision", "unrecorded"))
    if precision != "float32":
        return f"its towers ran in {precision} precision (evaluation: float32)"
    if bool(cache.get("augment", True)):
        return "it holds augmented crops (finetune.augment)"
    cached_pre = json.loads(str(cache.get("preprocess", "{}")))
    if cached_pre != json.loads(json.dumps(pre, sort_keys=True)):
        return f"its preprocessing {cached_pre} is not the evaluation's {dict(pre)}"
    if str(cache.get("checkpoint_sha256", "")) != sha256_file(checkpoint):
        return f"it was made from another checkpoint than {checkpoint}"
    return None


def cached_pair_features(feature_cache: str | None, checkpoint: str, pre: dict, rel_paths: Sequence[str],
                         captions: Sequence[str]) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Training pairs' features the feature cache already holds: (image features (n, width), or None unless
    the cache has every image; {caption: text features} of the captions it has), empty when it cannot be
    reused (cache_reuse_problem, logged)."""
    from ..finetune.features import load_feature_cache

    if not feature_cache:
        return None, {}
    cache = load_feature_cache(feature_cache)
    problem = cache_reuse_problem(cache, checkpoint, pre)
    if problem:
        log.info("feature cache %s not reused for the training pairs: %s", feature_cache, problem)
        return None, {}
    rows = {p: i for i, p in reversed(list(enumerate(cache["image_paths"].tolist())))}
    image = None
    if all(p in rows for p in rel_paths):
        image = np.asarray(cache["image"][0, [rows[p] for p in rel_paths]], dtype=np.float32)
    text_rows = {t: i for i, t in enumerate(cache["texts"].tolist())}
    texts = {c: np.asarray(cache["text"][text_rows[c]], dtype=np.float32) for c in set(captions) if c in text_rows}
    log.info("feature cache %s reused for the training pairs: %s images, %d of %d distinct captions",
             feature_cache, len(rel_paths) if image is not None else 0, len(texts), len(set(captions)))
    return image, texts


def extract_eval_features(config: dict, model_name: str, checkpoint: str, n_pairs: int = 512,
                          want_gpu: bool = False, feature_cache: str | None = None) -> dict[str, np.ndarray]:
    """Pre-projection features of every evaluation set, class prompt and the first n_pairs held-out pairs
    (data.heldout_csv; the training pairs when it is not set). The training pairs' features are taken from
    the model's feature cache when one is given and reusable (cached_pair_features), else encoded.

    Images are preprocessed as `models.<model>.preprocess.evaluate` says (a set's `preprocess` overrides it
    key by key). Per set the file also records what was used: `<set>::classnames`, `<set>::templates`,
    `<set>::templates_source` (config, templates.txt or evaluate.templates), `<set>::raw_classnames` and
    `<set>::preprocess` (JSON); `eval_settings_table` turns them into the report's table."""
    import json

    import torch

    from ..common.distributed import config_device

    # the device check comes first: a GPU job without a GPU fails before the slow model imports
    device = config_device(config, want_gpu)
    from ..common.data import load_preprocessed, to_model_input
    from ..finetune.features import extract_text_features
    from ..models.clip import get_tokenizer, image_features, load_model, preprocess_config
    from .zeroshot import format_prompts

    spec, ev = config["models"][model_name], config["evaluate"]
    model = load_model(spec, checkpoint).to(device).eval()
    pre = preprocess_config(model, spec, "evaluate")
    tokenizer = get_tokenizer(spec["arch"])

    @torch.no_grad()
    def image_feats(batches, total, desc, pre):
        out = []
        bar = progress(total=total, desc=desc, unit="img")
        for batch in batches:
            x = to_model_input(batch, pre["mean"], pre["std"]).to(device)
            out.append(image_features(model, x).float().cpu().numpy())
            bar.update(len(batch))
        bar.close()
        return np.concatenate(out)

    data: dict[str, np.ndarray] = {}
    for name, set_spec in ev["sets"].items():
        evalset = open_set(name, set_spec, ev["templates"])
        set_pre = set_preprocess(pre, set_spec)
        log.info("%s: %d images, %d classes (%s names), templates from %s: %s; preprocessing %s", name,
                 len(evalset), len(evalset.classnames), "raw" if evalset.raw_classnames else "cleaned",
                 evalset.templates_source, evalset.templates, set_pre)
        prompts = [p for c in evalset.classnames for p in format_prompts(c, evalset.templates)]
        batches = evalset.batches(ev["batch_size"], set_pre["image_size"], set_pre["interpolation"], set_pre["resize"])
        data[f"{name}{SEP}image"] = image_feats(batches, len(evalset), f"{name} images", set_pre)
        data[f"{name}{SEP}labels"] = evalset.labels
        data[f"{name}{SEP}classnames"] = np.asarray(evalset.classnames)
        data[f"{name}{SEP}templates"] = np.asarray(evalset.templates)
        data[f"{name}{SEP}templates_source"] = np.asarray(evalset.templates_source)
        data[f"{name}{SEP}raw_classnames"] = np.bool_(evalset.raw_classnames)
        data[f"{name}{SEP}preprocess"] = np.asarray(json.dumps(set_pre, sort_keys=True))
        data[f"{name}{SEP}prompt_text"] = extract_text_features(model, tokenizer, prompts, ev["batch_size"], device)
    heldout = config["data"].get("heldout_csv")
    pairs_name = PAIR_SETS[0] if heldout else PAIR_SETS[1]
    if not heldout:
        log.warning("data.heldout_csv is not set: the representation diagnostics use the first %d TRAINING "
                    "pairs (reported as set %s)", n_pairs, pairs_name)
    rel_paths, captions = read_pairs_csv(heldout or config["data"]["train_csv"])
    n = min(n_pairs, len(rel_paths))
    rel_paths, captions = rel_paths[:n], captions[:n]
    image, texts = cached_pair_features(None if heldout else feature_cache, checkpoint, pre, rel_paths, captions)
    if image is None:
        images = load_preprocessed(rel_paths, config["data"]["image_root"], pre, desc="pairs")
        image = image_feats([images], n, "pair images", pre)
    data[f"{pairs_name}{SEP}image"] = image
    if texts:   # the cache's captions, and only the others encoded
        missing = list(dict.fromkeys(c for c in captions if c not in texts))
        if missing:
            texts.update(zip(missing, extract_text_features(model, tokenizer, missing, ev["batch_size"], device)))
        data[f"{pairs_name}{SEP}text"] = np.stack([texts[c] for c in captions])
    else:
        data[f"{pairs_name}{SEP}text"] = extract_text_features(model, tokenizer, captions, ev["batch_size"], device)
    return data


def eval_settings_table(features: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per evaluation set of a features file: images, classes, class-name form, the templates used
    and where they came from, and the image preprocessing (the report's per-set settings table)."""
    import json

    rows = []
    for name in set_names(features):
        key = f"{name}{SEP}"
        pre = json.loads(str(features[key + "preprocess"])) if key + "preprocess" in features else {}
        rows.append({"set": name, "images": int(len(features[key + "labels"])),
                     "classes": int(len(features[key + "classnames"])),
                     "class_names": "raw" if bool(features.get(key + "raw_classnames", False)) else "cleaned",
                     "templates": " | ".join(features[key + "templates"].tolist()),
                     "templates_source": str(features.get(key + "templates_source", "unrecorded")),
                     "interpolation": pre.get("interpolation"), "resize": pre.get("resize"),
                     "mean": pre.get("mean"), "std": pre.get("std"), "image_size": pre.get("image_size")})
    return pd.DataFrame(rows)


def write_projections(model_spec: dict, checkpoint: str, out: str) -> None:
    """The checkpoint's image and text projections, rows = output neurons (what fine-tunes write too)."""
    from ..models.clip import load_model, projection_matrices

    image_p, text_p = projection_matrices(load_model(model_spec, checkpoint))
    save_npz(out, image=image_p.cpu().numpy(), text=text_p.cpu().numpy())


# ----------------------------------------------------------------------------- projections (numpy)


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def set_names(features: dict[str, np.ndarray]) -> list[str]:
    return [k.split(SEP)[0] for k in features if k.endswith(f"{SEP}image") and k.split(SEP)[0] not in PAIR_SETS]


def set_embeddings(features: dict[str, np.ndarray], name: str, image_p: np.ndarray, text_p: np.ndarray) -> dict:
    """Normalised image embeddings, labels and zero-shot classifier of one set under given projections."""
    from .zeroshot import format_prompts, zero_shot_classifier

    classnames = features[f"{name}{SEP}classnames"].tolist()
    templates = features[f"{name}{SEP}templates"].tolist()
    prompts = [p for c in classnames for p in format_prompts(c, templates)]  # the order features were cached in
    lookup = dict(zip(prompts, features[f"{name}{SEP}prompt_text"] @ text_p.T))

    def encode(texts):
        return np.stack([lookup[t] for t in texts])

    return {"image": normalize(features[f"{name}{SEP}image"] @ image_p.T).astype(np.float32),
            "labels": features[f"{name}{SEP}labels"],
            "classifier": zero_shot_classifier(encode, classnames, templates),
            "classnames": np.asarray(classnames)}


def evaluate_projections(features: dict[str, np.ndarray], image_p: np.ndarray, text_p: np.ndarray,
                         tags: dict, out_dir: str, save_embeddings: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write metrics, purity and histogram tables (and optionally embeddings/<set>.npz) under out_dir."""
    from . import purity as pm
    from .zeroshot import logit_metrics, silhouette, zero_shot_logits

    out = Path(out_dir)
    rows = []
    correct = {}
    for name in set_names(features):
        data = set_embeddings(features, name, image_p, text_p)
        logits = zero_shot_logits(data["image"], data["classifier"])
        metrics = logit_metrics(logits, data["labels"])
        correct[name] = logits.argmax(axis=1) == data["labels"]
        metrics["silhouette"] = silhouette(data["image"], data["labels"])
        metrics.update({f"diag_{k}": v for k, v in pm.representation_diagnostics(data["image"]).items()})
        log.info("%s: %s", name, {k: round(float(v), 4) for k, v in metrics.items()})
        rows += [{"set": name, "metric": k, "value": float(v)} for k, v in metrics.items()]
        if save_embeddings:
            save_npz(out / "embeddings" / f"{name}.npz", **data)
    pairs_name = next(p for p in PAIR_SETS if f"{p}{SEP}image" in features)
    img = normalize(features[f"{pairs_name}{SEP}image"] @ image_p.T)
    txt = normalize(features[f"{pairs_name}{SEP}text"] @ text_p.T)
    pairs = {"rsa": pm.rsa_correlation(img, txt)}
    pairs.update({f"text_{k}": v for k, v in pm.representation_diagnostics(txt).items()})
    pairs.update({f"image_{k}": v for k, v in pm.representation_diagnostics(img).items()})
    rows += [{"set": pairs_name, "metric": k, "value": float(v)} for k, v in pairs.items()]
    metrics_df = _tag(pd.DataFrame(rows), tags)

    matrices = {"text": text_p, "image": image_p}
    purity_df = _tag(pm.purity_table(matrices), tags)
    write_table(metrics_df, out / "metrics.parquet")
    write_table(purity_df, out / "purity.parquet")
    write_table(_tag(pm.histogram_table(matrices), tags), out / "histograms.parquet")
    save_npz(out / "neurons.npz", **{f"{p}_per_neuron": pm.purity_metrics(P)["per_neuron"] for p, P in matrices.items()})
    # per-image top-1 correctness: paired bootstrap intervals over evaluation images (workflow_scripts.report.aggregate)
    save_npz(out / "predictions.npz", tags=np.asarray(json.dumps({k: parse_tag(v) for k, v in tags.items()})),
             **{f"{CORRECT}{name}": c for name, c in correct.items()})
    return metrics_df, purity_df


def load_projections(path: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_npz(path)
    if "image" not in data or "text" not in data:
        raise InputError(f"{path}: expected arrays 'image' and 'text' (projection rows = output neurons)")
    return data["image"].astype(np.float64), data["text"].astype(np.float64)


def _tag(df: pd.DataFrame, tags: dict) -> pd.DataFrame:
    for i, (k, v) in enumerate(tags.items()):
        df.insert(i, k, parse_tag(v))
    return df


def parse_tag(value):
    """A tag's value as an int, else a float, else as given."""
    for cast in (int, float):
        try:
            return cast(value)
        except (TypeError, ValueError):
            pass
    return value


def parse_tags(items: Sequence[str], option: str = "--tag") -> dict[str, str]:
    """KEY=VALUE items (of command-line `option`) as {key: value string}."""
    tags = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"{option} {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        tags[k] = v
    return tags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate checkpoints (purity, zero-shot, diagnostics).")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("features", help="run a model's frozen towers once over the evaluation data")
    f.add_argument("--config", required=True)
    f.add_argument("--model", required=True)
    f.add_argument("--checkpoint", required=True)
    f.add_argument("--out", required=True, help="features .npz")
    f.add_argument("--projections", help="also write this checkpoint's projections (.npz)")
    f.add_argument("--gpus", type=int, default=0, help="GPUs this job was given (0 = CPU)")
    f.add_argument("--feature-cache", help="the model's feature cache index (features.py): training pairs' "
                                           "features are taken from it when reusable")
    p = sub.add_parser("projections", help="evaluate one checkpoint's projections over cached features")
    p.add_argument("--features", required=True)
    p.add_argument("--projections", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--save-embeddings", action="store_true", help="write embeddings/<set>.npz (for pruning)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="columns added to every row (model, kind, strategy, cs, seed)")
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "features":
        config = load_config(args.config)
        check_model(config, args.model, args.config)
        torch_threads_from_env()
        save_npz(args.out, **extract_eval_features(config, args.model, args.checkpoint, want_gpu=args.gpus > 0,
                                                   feature_cache=args.feature_cache))
        if args.projections:
            write_projections(config["models"][args.model], args.checkpoint, args.projections)
        return 0
    image_p, text_p = load_projections(args.projections)
    evaluate_projections(load_npz(args.features), image_p, text_p, parse_tags(args.tag), args.out_dir,
                         args.save_embeddings)
    return 0


if __name__ == "__main__":
    run_cli(main)
