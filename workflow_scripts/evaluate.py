"""Evaluate one checkpoint: purity of its projections, zero-shot accuracy and silhouette per downstream
set, and representation diagnostics; image embeddings are cached per (checkpoint, set) for pruning.

    python -m workflow_scripts.evaluate --config C --model clip --checkpoint results/pretrain/clip/checkpoint.pt \\
        --out-dir results/eval/pretrained/clip --tag kind=pretrained

Tables are tidy (one row per metric) so that aggregation never depends on column layouts:
metrics.parquet: tags..., set, metric, value;  purity.parquet: tags..., projection, metric, value.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .config import load_config
from .data import read_pairs_csv, to_model_input
from .errors import InputError
from .evalsets import EvalSet, open_set
from .io import load_npz, progress, run_cli, save_npz, setup_logging, write_table

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_images(model, batches, pre: dict, device: torch.device, total: int | None = None) -> np.ndarray:
    """L2-normalised image embeddings (N, D) float32 of uint8 image batches."""
    out = []
    bar = progress(total=total, desc="image embeddings", unit="img")
    for batch in batches:
        x = to_model_input(batch, pre["mean"], pre["std"]).to(device)
        e = model.encode_image(x).float()
        out.append(torch.nn.functional.normalize(e, dim=-1).cpu().numpy())
        bar.update(len(batch))
    bar.close()
    return np.concatenate(out)


def text_encoder(model, tokenizer, device: torch.device, batch_size: int = 256) -> Callable[[Sequence[str]], np.ndarray]:
    """A function mapping texts to L2-normalised text embeddings (n, D) float32."""

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
            e = model.encode_text(tokens).float()
            out.append(torch.nn.functional.normalize(e, dim=-1).cpu().numpy())
        return np.concatenate(out)

    return encode


def set_embeddings(model, evalset: EvalSet, encode_text, pre: dict, batch_size: int, device, cache: Path) -> dict:
    """Image embeddings, labels and the zero-shot classifier of one set (cached in `cache`)."""
    from .zeroshot import zero_shot_classifier

    if cache.exists():
        data = load_npz(cache)
        if data["labels"].shape[0] == len(evalset):
            return data
    images = embed_images(model, evalset.batches(batch_size, pre["image_size"]), pre, device, total=len(evalset))
    classifier = zero_shot_classifier(encode_text, evalset.classnames, evalset.templates)
    data = {"image": images.astype(np.float32), "labels": evalset.labels, "classifier": classifier.astype(np.float32),
            "classnames": np.asarray(evalset.classnames)}
    save_npz(cache, **data)
    return data


def evaluate(config: dict, model_name: str, checkpoint: str, out_dir: str, tags: dict[str, str],
             sets: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write metrics.parquet, purity.parquet, neurons.npz and embeddings/<set>.npz under out_dir."""
    from . import purity as pm
    from .models import get_tokenizer, load_model, preprocess_config, projection_matrices
    from .zeroshot import silhouette, zero_shot_metrics

    spec = config["models"][model_name]
    ev = config["evaluate"]
    device = torch.device("cuda" if config["compute"]["device"] != "cpu" and torch.cuda.is_available() else "cpu")
    model = load_model(spec, checkpoint).to(device).eval()
    pre = preprocess_config(model, spec)
    encode_text = text_encoder(model, get_tokenizer(spec["arch"]), device)
    out = Path(out_dir)
    rows = []
    for name in sets or list(ev["sets"]):
        evalset = open_set(name, ev["sets"][name], ev["templates"])
        data = set_embeddings(model, evalset, encode_text, pre, ev["batch_size"], device,
                              out / "embeddings" / f"{name}.npz")
        metrics = zero_shot_metrics(data["image"], data["classifier"], data["labels"])
        metrics["silhouette"] = silhouette(data["image"], data["labels"])
        metrics.update({f"diag_{k}": v for k, v in pm.representation_diagnostics(data["image"]).items()})
        log.info("%s %s: %s", model_name, name, {k: round(float(v), 4) for k, v in metrics.items()})
        rows += [{"set": name, "metric": k, "value": float(v)} for k, v in metrics.items()]
    rows += [{"set": "train_pairs", "metric": k, "value": float(v)}
             for k, v in pair_diagnostics(config, model, pre, encode_text, device).items()]
    metrics_df = _tag(pd.DataFrame(rows), tags)

    image_p, text_p = (m.cpu().numpy() for m in projection_matrices(model))
    purity_rows, neurons = [], {}
    for proj, P in (("text", text_p), ("image", image_p)):
        result = pm.purity_metrics(P)
        for k, v in result.items():
            if np.ndim(v) == 0:
                purity_rows.append({"projection": proj, "metric": k, "value": float(v)})
            else:
                neurons[f"{proj}_{k}"] = np.asarray(v)
    purity_df = _tag(pd.DataFrame(purity_rows), tags)
    write_table(metrics_df, out / "metrics.parquet")
    write_table(purity_df, out / "purity.parquet")
    save_npz(out / "neurons.npz", **neurons)
    return metrics_df, purity_df


@torch.no_grad()
def pair_diagnostics(config: dict, model, pre: dict, encode_text, device, n_pairs: int = 512) -> dict:
    """Diagnostics on embeddings of the first n_pairs (aligned) training pairs: image-text RSA and more."""
    from . import purity as pm
    from .data import load_image_array

    rel_paths, captions = read_pairs_csv(config["data"]["train_csv"])
    n = min(n_pairs, len(rel_paths))
    images = load_image_array(rel_paths[:n], config["data"]["image_root"], pre["image_size"], desc="pairs")
    img = embed_images(model, [images], pre, device, total=n)
    txt = encode_text(captions[:n])
    out = {"rsa": pm.rsa_correlation(img, txt)}
    out.update({f"text_{k}": v for k, v in pm.representation_diagnostics(txt).items()})
    out.update({f"image_{k}": v for k, v in pm.representation_diagnostics(img).items()})
    return out


def _tag(df: pd.DataFrame, tags: dict[str, str]) -> pd.DataFrame:
    for i, (k, v) in enumerate(tags.items()):
        df.insert(i, k, _parse_tag(v))
    return df


def _parse_tag(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate one checkpoint (purity, zero-shot, diagnostics).")
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--sets", nargs="*", help="evaluation sets (default: all in the config)")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="columns added to every row (model, kind, strategy, cs, seed)")
    args = parser.parse_args(argv)
    setup_logging()
    config = load_config(args.config)
    if args.model not in config["models"]:
        raise InputError(f"{args.config}: unknown model {args.model!r}; known: {sorted(config['models'])}")
    unknown = [s for s in args.sets or [] if s not in config["evaluate"]["sets"]]
    if unknown:
        raise InputError(f"--sets: unknown evaluation set(s) {unknown}; known: {sorted(config['evaluate']['sets'])}")
    tags = {"model": args.model}
    for item in args.tag:
        if "=" not in item:
            raise InputError(f"--tag {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        tags[k] = v
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
    evaluate(config, args.model, args.checkpoint, args.out_dir, tags, args.sets)
    return 0


if __name__ == "__main__":
    run_cli(main)
