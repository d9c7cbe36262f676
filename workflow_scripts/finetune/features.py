"""Frozen-tower feature cache: pre-projection features of every training image and distinct caption.

A misalignment swap only permutes captions and the towers never change during projection-only
fine-tuning, so one extraction per (model, training set) serves every Cs, strategy and seed. With
`views` > 1 each image is cached under several seeded augmentations (views = epochs reproduces the
end-to-end augmentation distribution). Extraction shards across torchrun ranks.

The cache is an index `<stem>.npz` (image paths, distinct captions, settings, and the model's projection
head as plain arrays: `models.Head`) with the features beside it as uncompressed `<stem>.image.npy` and
`<stem>.text.npy`, which readers memory-map instead of copying (a CC3M-size cache is ~10 GB).

    python -m workflow_scripts.finetune.features --config C --model clip \\
        --checkpoint results/pretrain/clip/checkpoint.pt --out results/features/clip/train.npz
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..common import distributed
from ..common.config import check_model, load_config
from ..common.data import (
    load_full_images, load_preprocessed, random_resized_crops, read_pairs_csv, read_text_lines,
    to_model_input,
)
from ..common.errors import InputError
from ..common.io import (
    derive_seed, load_array, load_npz, progress, run_cli, save_array, save_npz, setup_logging, sha256_file,
    torch_threads_from_env,
)

log = logging.getLogger(__name__)


def image_batches(rel_paths: Sequence[str], root: str | os.PathLike, pre: dict, batch_size: int, augment: bool):
    """Yield (start, images) chunks, decoding lazily (real sets do not fit in memory): full-size PIL images
    when augmenting (the crop is drawn from the whole image), else uint8 NHWC arrays preprocessed as `pre`."""
    for start in range(0, len(rel_paths), batch_size):
        chunk = rel_paths[start:start + batch_size]
        yield start, (load_full_images(chunk, root, desc="decode") if augment
                      else load_preprocessed(chunk, root, pre, desc="decode"))


def training_images(images, pre: dict, augment: bool, generator) -> np.ndarray:
    """uint8 NHWC training images of one batch: with augment, the original's RandomResizedCrop(image size,
    scale=(0.5, 1.0)) of each full image with the stage's interpolation, drawn from `generator`; else the
    already preprocessed batch."""
    if not augment:
        return images
    return random_resized_crops(images, pre["image_size"], generator, pre["interpolation"])


@torch.no_grad()
def extract_image_features(model, rel_paths: Sequence[str], root, pre: dict, views: int, augment: bool,
                           seed: int, batch_size: int, device: torch.device, offset: int = 0) -> np.ndarray:
    """(views, N, width) float32 pre-projection image features.

    `pre` is the model's `finetune` preprocessing (models.preprocess_config). The batch starting at global
    index b (offset + local start) draws view v's augmentation from a generator seeded with (seed, v, b), so
    the result does not depend on how images are sharded over ranks as long as shards start at batch
    boundaries. Without augment every view is the same, computed once.
    """
    from ..models.clip import image_features, tower_autocast

    out = None
    n = len(rel_paths)
    bar = progress(total=n * views, desc="image features", unit="img")
    for start, images in image_batches(rel_paths, root, pre, batch_size, augment):
        for v in range(views if augment else 1):
            gen = torch.Generator().manual_seed(derive_seed(seed, v, offset + start))
            batch = training_images(images, pre, augment, gen)
            x = to_model_input(batch, pre["mean"], pre["std"]).to(device)
            with tower_autocast(device):
                f = image_features(model, x).float().cpu().numpy()
            if out is None:
                out = np.empty((views, n, f.shape[1]), dtype=np.float32)
            targets = [v] if augment else range(views)
            for t in targets:
                out[t, start:start + len(batch)] = f
            bar.update(len(batch) * len(targets))
    bar.close()
    return out


@torch.no_grad()
def extract_text_features(model, tokenizer, texts: Sequence[str], batch_size: int,
                          device: torch.device) -> np.ndarray:
    """(len(texts), width) float32 pre-projection text features."""
    from ..models.clip import text_features, tower_autocast

    chunks = []
    for start in progress(range(0, len(texts), batch_size), desc="text features", unit="batch"):
        tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
        with tower_autocast(device):
            chunks.append(text_features(model, tokens).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def shard_bounds(n: int, world_size: int, rank: int, align: int) -> tuple[int, int]:
    """Contiguous shard [lo, hi) of n items for `rank`, starting on multiples of `align`."""
    blocks = -(-n // align)
    per = -(-blocks // world_size)
    lo = min(n, rank * per * align)
    hi = min(n, (rank + 1) * per * align)
    return lo, hi


def unique_captions(captions: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct captions in first-seen order and, per caption, its index in that list."""
    index: dict[str, int] = {}
    ids = np.empty(len(captions), dtype=np.int64)
    for i, c in enumerate(captions):
        ids[i] = index.setdefault(c, len(index))
    return list(index), ids


def cache_array_paths(index: str | os.PathLike) -> dict[str, Path]:
    """The feature arrays beside a cache's index file `<stem>.npz`: `<stem>.image.npy`, `<stem>.text.npy`."""
    index = Path(index)
    return {key: index.with_name(f"{index.stem}.{key}.npy") for key in ("image", "text")}


def load_feature_cache(path: str | os.PathLike) -> dict:
    """Read a cache written by extract(): the index (image paths, distinct texts, views, projection head)
    with `image` (views, N, width) and `text` (T, width) memory-mapped; names the file if it is unusable."""
    data = load_npz(path)
    for key in ("image_paths", "texts"):
        if key not in data:
            raise InputError(f"{path}: feature cache lacks '{key}'; delete it to re-extract")
    for key, array_path in cache_array_paths(path).items():
        data[key] = load_array(array_path)
    if data["image"].ndim != 3 or data["image"].shape[1] != len(data["image_paths"]) \
            or data["text"].ndim != 2 or data["text"].shape[0] != len(data["texts"]):
        raise InputError(f"{path}: feature arrays {data['image'].shape} / {data['text'].shape} do not match its "
                         f"{len(data['image_paths'])} images / {len(data['texts'])} texts; delete them to re-extract")
    return data


def extract(config: dict, model_name: str, checkpoint: str, out: str, want_gpu: bool = False) -> None:
    """Extract the cache for one model over data.train_csv and data.captions (all ranks call this)."""
    # the device check comes first: a GPU job without a GPU fails before the slow model imports
    d = distributed.init(config, want_gpu)
    from ..models.clip import Head, get_tokenizer, load_model, preprocess_config, tower_precision

    spec = config["models"][model_name]
    ft = config["finetune"]
    rel_paths, csv_captions = read_pairs_csv(config["data"]["train_csv"])
    captions = read_text_lines(config["data"]["captions"])
    if len(captions) != len(rel_paths):
        raise InputError(f"{config['data']['captions']}: {len(captions)} captions but "
                         f"{config['data']['train_csv']} has {len(rel_paths)} rows")
    texts, _ = unique_captions(captions)
    model = load_model(spec, checkpoint).to(d.device).eval()
    pre = preprocess_config(model, spec, "finetune")
    log.info("training images: %s%s", pre, ", RandomResizedCrop(scale=(0.5, 1.0)) of the full image per view"
             if ft["augment"] else "")
    tokenizer = get_tokenizer(spec["arch"])
    bs = config["evaluate"]["batch_size"]
    lo, hi = shard_bounds(len(rel_paths), d.world_size, d.rank, bs)
    tlo, thi = shard_bounds(len(texts), d.world_size, d.rank, bs)
    log.info("rank %d: images [%d, %d), captions [%d, %d) of %d / %d", d.rank, lo, hi, tlo, thi,
             len(rel_paths), len(texts))
    img = extract_image_features(model, rel_paths[lo:hi], config["data"]["image_root"], pre, ft["views"],
                                 ft["augment"], config["seed"], bs, d.device, offset=lo) if hi > lo else None
    txt = extract_text_features(model, tokenizer, texts[tlo:thi], bs, d.device)
    if d.enabled:
        shard = Path(f"{out}.rank{d.rank}.npz")
        save_npz(shard, image=img if img is not None else np.zeros((ft["views"], 0, 0), np.float32), text=txt)
        distributed.barrier(d)
        if d.is_main:
            parts = [load_npz(f"{out}.rank{r}.npz") for r in range(d.world_size)]
            img = np.concatenate([p["image"] for p in parts if p["image"].shape[1]], axis=1)
            txt = np.concatenate([p["text"] for p in parts if p["text"].shape[0]], axis=0)
        distributed.barrier(d)
        shard.unlink()
    if d.is_main:
        arrays = cache_array_paths(out)
        save_array(arrays["image"], img)
        save_array(arrays["text"], txt)
        # the index last: the projection head rides along, so that cached fine-tunes never build the model
        save_npz(out, image_paths=np.asarray(rel_paths), texts=np.asarray(texts), views=np.int64(ft["views"]),
                 augment=np.bool_(ft["augment"]), preprocess=np.asarray(json.dumps(pre, sort_keys=True)),
                 checkpoint_sha256=np.asarray(sha256_file(checkpoint)),
                 precision=np.asarray(tower_precision(d.device)),
                 **Head.from_model(model).to_arrays())
        log.info("feature cache %s: image %s, text %s", out, img.shape, txt.shape)
    distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Extract the frozen-tower feature cache.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True, help="a key of models in the config")
    parser.add_argument("--checkpoint", required=True, help="the model's checkpoint (results/pretrain/<model>/checkpoint.pt)")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs requested for this job (0 = CPU)")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    config = load_config(args.config)
    check_model(config, args.model, args.config)
    torch_threads_from_env()
    extract(config, args.model, args.checkpoint, args.out, want_gpu=args.gpus > 0)
    return 0


if __name__ == "__main__":
    run_cli(main)
