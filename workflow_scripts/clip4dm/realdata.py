"""A real dense-misalignment benchmark (FOIL, nocaps-FOIL or HAT) from local files, scored with one model.

Images come from the set's image root (never downloaded) through the model's evaluation preprocessing; the
model is built with open_clip (models.load_model). Metrics as the original reports them:
- foil / nocaps_foil: LA over the foil captions (the most-negative word equals the foil word, lower-case),
  AP and AUROC with the original captions as the positive class for F-CLIPScore, CLIPScore and RefCLIPScore;
  nocaps also per domain. F-CLIPScore by clip4dm.fclipscore.<format>, default most_negative (the original's
  --sorted_by most_negative for these sets).
- hat: flagged words (threshold mode) merged into spans, the most negative span is correct when it is a
  substring of the ground-truth hallucinated words; LA = correct / misaligned captions; AP with the
  misaligned captions as the positive class, scored by -F-CLIPScore (default span_mean: the most negative
  span's mean, as the original), -CLIPScore and -RefCLIPScore.
RefCLIPScore (scores.ref_clip_score, clip4dm.refclipscore): over the captions that have references (FOIL:
the other original captions of the image, or a COCO captions file given as the set's `references`;
nocaps-FOIL / HAT: the records' "references"); n_refclipscore counts them.

    python -m workflow_scripts.clip4dm.realdata --config CONFIG --set foil_coco --model clip \\
        --checkpoint results/pretrain/clip/checkpoint.pt --pack results/clip4dm/clip/pack.npz \\
        --out-metrics M.json --out-samples S.parquet
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd

from ..common.errors import InputError

log = logging.getLogger(__name__)
# the original's F-CLIPScore rule per format (the schema's clip4dm.fclipscore defaults)
DEFAULT_MODES = {"foil": "most_negative", "nocaps_foil": "most_negative", "hat": "span_mean"}


def benchmark_metrics(fmt: str, samples: pd.DataFrame) -> dict:
    """LA and AP as the original computes them for the format (see the module docstring)."""
    from .metrics import ap_auroc, localisation_accuracy

    foil = samples["is_foil"].to_numpy(bool)
    out = {"n": int(len(samples)), "n_foil": int(foil.sum())}
    if fmt == "hat":
        out["la"] = float(samples.loc[foil, "span_correct"].mean()) if foil.any() else float("nan")
        sign, positive = -1.0, foil
    else:
        f = samples[foil]
        out["la"] = localisation_accuracy(list(f["worst_word"]), list(f["truth"]))
        sign, positive = 1.0, ~foil
    for score in ("fclipscore", "clipscore"):
        out[f"ap_{score}"], out[f"auroc_{score}"] = ap_auroc(positive, sign * samples[score].to_numpy())
    ref = samples["refclipscore"].to_numpy(np.float64) if "refclipscore" in samples else np.full(len(foil), np.nan)
    has = np.isfinite(ref)
    out["n_refclipscore"] = int(has.sum())
    out["ap_refclipscore"], out["auroc_refclipscore"] = ap_auroc(positive[has], sign * ref[has])
    return out


def text_embeddings(tower, tokens: np.ndarray, batch: int = 512) -> np.ndarray:
    """Projected text embeddings [N, E] of token rows (no gradient)."""
    import torch

    device = tower.params["positional_embedding"].device
    out = []
    with torch.no_grad():
        for s in range(0, len(tokens), batch):
            rows = torch.as_tensor(np.asarray(tokens[s:s + batch]), device=device)
            out.append(tower.encode(rows).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def refclipscores(tower, tokenizer, template: str, items, caption_tokens: np.ndarray, clipscore: np.ndarray,
                  settings: dict) -> np.ndarray:
    """RefCLIPScore of every item (NaN without references): the caption's prompted text embedding against its
    references' (template + reference, tokenized as open_clip does, cut to the context)."""
    from .scores import ref_clip_score

    spec = settings.get("refclipscore", {})
    texts = sorted({r for it in items for r in it.references})
    if not texts:
        return np.full(len(items), np.nan)
    row = {t: i for i, t in enumerate(texts)}
    ref_emb = text_embeddings(tower, tokenizer([template + t for t in texts],
                                               context_length=tower.context_length).numpy())
    emb = text_embeddings(tower, caption_tokens)
    return ref_clip_score(clipscore, emb, [ref_emb[[row[r] for r in it.references]] for it in items],
                          spec.get("references", "all"), spec.get("weight", 2.5))


def score_benchmark(config: dict, set_name: str, model_name: str, checkpoint: str, pack_path: str):
    import torch

    from ..common.data import load_preprocessed, to_model_input
    from ..common.distributed import config_device
    from ..models.clip import Head, image_features, load_model, preprocess_config
    from .metrics import span_correct
    from .pipeline import Pack, embed_images, score_pairs
    from .token_table import TokenTable
    from .readers import read_items
    from .scores import score_table
    from .tower import TextTower

    spec_set = config["clip4dm"]["real_data"][set_name]
    items = read_items(spec_set["format"], spec_set["json"], spec_set.get("references"))
    if spec_set.get("limit"):
        items = items[:spec_set["limit"]]
    settings = config["clip4dm"]
    device = config_device(config, want_gpu=False)
    model = load_model(config["models"][model_name], checkpoint, name=model_name).to(device).eval()
    pre = preprocess_config(model, config["models"][model_name], "evaluate")
    paths = sorted({it.image for it in items})
    feats = []
    with torch.no_grad():
        for s in range(0, len(paths), 256):
            x = load_preprocessed(paths[s:s + 256], spec_set["image_root"], pre, desc="images")
            feats.append(image_features(model, to_model_input(x, pre["mean"], pre["std"]).to(device)).float().cpu().numpy())
    feats = np.concatenate(feats)
    row_of = {p: i for i, p in enumerate(paths)}
    tower, head = TextTower.from_model(model).to(device), Head.from_model(model)
    table = TokenTable.for_model(settings, tower.context_length, config["models"][model_name]["arch"])
    emb = embed_images(head, feats)[[row_of[it.image] for it in items]]
    tok, cos, attr = score_pairs(tower, table, [it.caption for it in items], emb, settings,
                                 [it.record for it in items], "pairs")
    epsilon = float(Pack.load(pack_path).arrays["epsilon"])
    words = [t.words for t in tok]
    mode = settings.get("fclipscore", {}).get(spec_set["format"], DEFAULT_MODES[spec_set["format"]])
    scored = score_table(words, attr, cos, epsilon, mode, settings.get("punctuation", "original"))
    ref = refclipscores(tower, table.tokenizer(), table.template, items, np.stack([t.tokens for t in tok]),
                        scored["clipscore"], settings)
    samples = pd.DataFrame({"image": [it.image for it in items], "caption": [it.caption for it in items],
                            "is_foil": [it.is_foil for it in items], "truth": [it.truth for it in items],
                            "group": [it.group for it in items],
                            **{k: scored[k] for k in ("cos", "clipscore", "fclipscore", "negative", "worst_word",
                                                      "worst_score", "span")},
                            "refclipscore": ref, "n_references": [len(it.references) for it in items],
                            "truncated": [t.truncated for t in tok]})
    samples["worst_word"] = samples["worst_word"].astype(str)
    samples["span"] = samples["span"].astype(str)
    samples["span_correct"] = [span_correct(s, t) for s, t in zip(samples["span"], samples["truth"])]
    metrics = {"set": set_name, "format": spec_set["format"], "model": model_name, "epsilon": epsilon,
               "fclipscore_mode": mode,
               **benchmark_metrics(spec_set["format"], samples),
               "n_truncated": int(samples["truncated"].sum()),
               "truncated_captions": sorted(set(samples.loc[samples["truncated"], "caption"]))}
    groups = sorted(g for g in samples["group"].unique() if g)
    if groups:
        metrics["by_group"] = {g: benchmark_metrics(spec_set["format"], samples[samples["group"] == g]) for g in groups}
    return metrics, samples


def main(argv: list[str] | None = None) -> int:
    from ..common.config import check_model, load_config
    from ..common.io import setup_logging, write_json, write_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", required=True, help="a key of clip4dm.real_data")
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--pack", required=True, help="the model's pack (its epsilon)")
    ap.add_argument("--out-metrics", required=True)
    ap.add_argument("--out-samples", required=True)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    config = load_config(args.config)
    if args.set not in config["clip4dm"]["real_data"]:
        raise InputError(f"{args.config}: unknown clip4dm.real_data set {args.set!r}; known: "
                         f"{sorted(config['clip4dm']['real_data'])}")
    check_model(config, args.model, args.config)
    metrics, samples = score_benchmark(config, args.set, args.model, args.checkpoint, args.pack)
    write_table(samples, args.out_samples)
    write_json(args.out_metrics, metrics)
    log.info("%s", metrics)
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
