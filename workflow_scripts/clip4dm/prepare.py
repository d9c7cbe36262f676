"""Per model: the pack every later CLIP4DM job reads (see pipeline.py), the epsilon calibration and the
held-out aligned scores. The only CLIP4DM job on the embedded world that builds the open_clip model.

    python -m workflow_scripts.clip4dm.prepare --config CONFIG --model clip \\
        --checkpoint results/pretrain/clip/checkpoint.pt --cache results/features/clip/train.npz \\
        --eval-features results/eval/features/clip.npz --out results/clip4dm/clip/pack.npz \\
        --calibration results/clip4dm/clip/calibration.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np

from ..common.errors import InputError

log = logging.getLogger(__name__)


def calibrate(settings: dict, words: list[list[str]], scores: list[np.ndarray]) -> float:
    """epsilon of the config: absolute, or the quantile of held-out aligned word attributions."""
    from .scores import calibrate_epsilon

    eps = settings["epsilon"]
    if eps["mode"] == "absolute":
        return float(eps["absolute"])
    return calibrate_epsilon(words, scores, eps["quantile"], settings.get("punctuation", "original"))


def epsilon_for(tower, table, settings: dict, image_emb: np.ndarray, captions: list[str], where: list[str]) -> float:
    """epsilon of the config for one checkpoint: the absolute value (nothing scored), or the quantile of the
    word attributions of the held-out aligned pairs (image_emb[i], captions[i])."""
    from .pipeline import score_pairs

    if settings["epsilon"]["mode"] == "absolute":
        return float(settings["epsilon"]["absolute"])
    items, _, attr = score_pairs(tower, table, captions, image_emb, settings, where)
    return calibrate(settings, [t.words for t in items], attr)


def heldout_block(tower, head, table, settings: dict, features: np.ndarray, captions: list[str],
                  where: list[str], prefix: str = "heldout") -> tuple[dict[str, np.ndarray], dict]:
    """Calibrate epsilon on held-out aligned pairs and score them: arrays for a pack and a summary."""
    from .pipeline import embed_images, ragged_arrays, score_pairs
    from .scores import score_table

    items, cos, attr = score_pairs(tower, table, captions, embed_images(head, features), settings, where)
    words = [t.words for t in items]
    epsilon = calibrate(settings, words, attr)
    # the null of the rate estimate: F-CLIPScore by the detection's mode (clip4dm.fclipscore.detect)
    scored = score_table(words, attr, cos, epsilon, settings.get("fclipscore", {}).get("detect", "threshold"),
                         settings.get("punctuation", "original"))
    arrays = {"epsilon": np.float64(epsilon), f"{prefix}.cos": cos, f"{prefix}.fclipscore": scored["fclipscore"],
              f"{prefix}.clipscore": scored["clipscore"], **ragged_arrays(f"{prefix}.attr", attr)}
    summary = {"epsilon": epsilon, "epsilon_mode": settings["epsilon"]["mode"], "n_pairs": len(captions),
               "n_words": int(sum(len(w) for w in words)),
               "fraction_pairs_flagged": float(np.mean(scored["n_flagged"] > 0)),
               "mean_cos": float(np.mean(cos)), "attribution_quantiles": {
                   str(q): float(np.nanquantile(np.concatenate(attr), q)) for q in (0.01, 0.05, 0.5, 0.95)}}
    return arrays, summary


def training_block(config: dict, tower, head, table, settings: dict, cache_path: str,
                   attributes: str | None) -> dict[str, np.ndarray]:
    """The training pairs' image embeddings, cosines and word attributions (and which of the original
    captions contradict their images, where the truth is known)."""
    from ..misalign.captions import read_captions
    from ..finetune.features import load_feature_cache
    from .pipeline import embed_images, ragged_arrays, score_pairs

    cache = load_feature_cache(cache_path)
    captions_file = config["data"]["captions"]
    captions = read_captions(captions_file)
    if len(captions) != len(cache["image_paths"]):
        raise InputError(f"{captions_file}: {len(captions)} captions but the feature cache {cache_path} has "
                         f"{len(cache['image_paths'])} images")
    image_emb = embed_images(head, cache["image"][0])
    _, cos, attr = score_pairs(tower, table, captions, image_emb, settings,
                               [f"{captions_file}:{i + 1}" for i in range(len(captions))], "training pairs")
    arrays = {"train.image_emb": image_emb.astype(np.float32), "train.cos": cos, **ragged_arrays("train.attr", attr)}
    if attributes:
        from ..misalign.effective import contradicts_any, read_truth

        arrays["train.contradicts"] = contradicts_any(captions, read_truth(attributes))
    return arrays


def prepare(config: dict, model_name: str, checkpoint: str, cache_path: str | None, eval_features: str,
            out: str, calibration: str, attributes: str | None = None) -> None:
    """The pack and calibration of one model; with `cache_path` (a detector model) also the training pairs'
    attributions."""
    from ..common.data import read_pairs_csv
    from ..evaluate.run import PAIR_SETS, SEP
    from ..common.io import load_npz, save_npz, write_json
    from ..models.clip import Head, load_model
    from .foils import foil_table, heldout_scenes
    from .token_table import TokenTable
    from .tower import TextTower

    settings = config["clip4dm"]
    spec = config["models"][model_name]
    t0 = time.time()
    model = load_model(spec, checkpoint, name=model_name)
    tower, head = TextTower.from_model(model), Head.from_model(model)
    del model
    table = TokenTable.for_model(settings, tower.context_length, spec["arch"])
    arrays: dict[str, np.ndarray] = {}
    if cache_path is not None:    # a detector: training pairs: the swapped sets permute these captions; their own attributions are reused
        arrays.update(training_block(config, tower, head, table, settings, cache_path, attributes))
        log.info("training pairs: %d attributions (%d distinct captions) in %.1f s", len(arrays["train.cos"]),
                 len(table.rows), time.time() - t0)
    # held-out aligned pairs: epsilon and the null distribution of the scores
    heldout_csv = config["data"]["heldout_csv"]
    feats = load_npz(eval_features)
    key = f"{PAIR_SETS[0]}{SEP}image"
    summary = {"model": model_name, "template": settings["template"], "layers": min(settings["layers"], tower.layers),
               "text_layers": tower.layers}
    if heldout_csv and key in feats:
        _, held_captions = read_pairs_csv(heldout_csv)
        held_captions = held_captions[:len(feats[key])]
        block, calib = heldout_block(tower, head, table, settings, feats[key], held_captions,
                                     [f"{heldout_csv}:{i + 1}" for i in range(len(held_captions))])
        arrays.update(block)
        arrays["heldout.features"] = feats[key].astype(np.float32)
        arrays["heldout.captions"] = np.asarray(held_captions, dtype=str)
        summary.update(calib)
        if config["world"]["enabled"]:
            scenes = heldout_scenes(config["world"], len(held_captions), held_captions, heldout_csv)
            foils = foil_table(scenes, settings["foils"]["attributes"], settings["foils"]["seed"])
            table.items(list(foils["caption"]))
            for col in foils.columns:
                values = foils[col].to_numpy()
                arrays[f"foils.{col}"] = values.astype(str) if values.dtype == object else values
            summary["n_foils"] = int((foils["kind"] == "foil").sum())
    else:   # no held-out aligned pairs: no calibration, no null distribution (rate estimates are NaN)
        mode = "absolute"
        if settings["epsilon"]["mode"] == "quantile":
            log.warning("clip4dm.epsilon.mode quantile needs held-out aligned pairs (data.heldout_csv and their "
                        "features in %s); using clip4dm.epsilon.absolute = %g", eval_features,
                        settings["epsilon"]["absolute"])
            mode = "absolute (no held-out pairs)"
        arrays["epsilon"] = np.float64(settings["epsilon"]["absolute"])
        summary.update({"epsilon": float(settings["epsilon"]["absolute"]), "epsilon_mode": mode})
    summary["n_truncated"] = len(table.truncated())
    summary["truncated_captions"] = table.truncated()
    run = {k: settings[k] for k in ("template", "layers", "batch_size", "long_captions")}
    arrays.update(tower.to_arrays())
    arrays.update(head.to_arrays())
    arrays.update(table.to_arrays())
    arrays["settings"] = np.asarray(json.dumps({**run, "model": model_name, "arch": spec["arch"]}))
    save_npz(out, **arrays)
    write_json(calibration, summary)
    log.info("pack %s: epsilon %.3g (%s), %.1f s", out, summary["epsilon"], summary["epsilon_mode"], time.time() - t0)


def main(argv: list[str] | None = None) -> int:
    from ..common.config import check_model, load_config
    from ..common.io import setup_logging

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True, help="a key of models")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--cache", help="the model's feature cache index (train.npz); given for detector models "
                    "only, whose training pairs are also scored")
    ap.add_argument("--attributes", help="true attributes per training line (embedded world)")
    ap.add_argument("--eval-features", required=True, help="results/eval/features/<model>.npz")
    ap.add_argument("--out", required=True, help="pack .npz")
    ap.add_argument("--calibration", required=True, help="calibration summary .json")
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    config = load_config(args.config)
    check_model(config, args.model, args.config)
    prepare(config, args.model, args.checkpoint, args.cache, args.eval_features, args.out, args.calibration,
            args.attributes)
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
