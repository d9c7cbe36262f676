"""The embedded multilingual text encoder: the base model's text tower, trained on briefly more on
mixed-language captions against the base model's FROZEN image embeddings.

This stands in for the seed's multilingual student encoder (clip-ViT-B-32-multilingual-v1): aligned with
the image space for English (it starts from the English-pretrained `clip` text tower and keeps seeing
mostly English), weakly for the other languages (each training caption is English with probability
1 − other_share, else one of the other languages, uniformly). The image tower and its projection never
change, so the encoder's image space is exactly the base model's. Everything is seeded from the config:
batch order and language choice per step from their own derived streams.

    python -m workflow_scripts.multilingual.encoder --config C --model mclip \\
        --base-checkpoint results/pretrain/clip/checkpoint.pt --features results/features/clip/train.npz \\
        --projections results/eval/pretrained/clip/projections.npz \\
        --captions results/multilingual/captions/train.parquet --out results/multilingual/encoder/mclip/checkpoint.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..common.errors import InputError
from ..common.io import derive_seed, progress, run_cli, setup_logging, write_lines

log = logging.getLogger(__name__)

ORDER_STREAM, LANGUAGE_STREAM = 0, 1
TEXT_PREFIXES = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


def freeze_all_but_text_tower(model: torch.nn.Module) -> None:
    """Only the text tower's parameters (CLIP keeps them on the model itself) keep requires_grad."""
    trainable = 0
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(TEXT_PREFIXES))
        trainable += p.requires_grad
    if not trainable:
        raise InputError("the base model has no CLIP text tower to train (token_embedding, transformer, ...)")


def language_choice(n: int, n_languages: int, other_share: float, seed: int, step: int) -> np.ndarray:
    """Per sample the language index: 0 (English) with probability 1 − other_share, else 1..L−1 uniformly."""
    rng = np.random.default_rng(derive_seed(seed, LANGUAGE_STREAM, step))
    other = rng.random(n) < other_share
    pick = rng.integers(1, max(n_languages, 2), size=n)
    return np.where(other & (n_languages > 1), pick, 0)


def batch_ids(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Sample ids of step `step`: consecutive slices of per-epoch seeded permutations, last partial dropped."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise InputError(f"multilingual encoder batch_size {batch_size} exceeds the {n} training images")
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng(derive_seed(seed, ORDER_STREAM, epoch)).permutation(n)
    return perm[pos * batch_size:(pos + 1) * batch_size]


def train_text_tower(model: torch.nn.Module, tokens: torch.Tensor, image_emb: torch.Tensor, settings: dict,
                     seed: int) -> list[dict]:
    """Train the text tower for settings['steps'] steps; tokens (L, N, context), image_emb (N, d) unit rows.

    Loss: open_clip's symmetric CLIP loss with the model's own (fixed) logit scale; AdamW (no decay on
    gains/biases), linear warm-up over 10 % of the steps then cosine to 0."""
    from ..finetune.train import symmetric_cross_entropy
    from ..models.pretrain import build_optimizer, lr_at

    full_embedding = model.token_embedding
    used, tokens = compact_vocabulary(model, tokens)
    freeze_all_but_text_tower(model)
    optimizer = build_optimizer(model, settings["lr"], settings["weight_decay"], fused=False)
    scale = float(model.logit_scale.detach().exp())
    steps, bs = settings["steps"], settings["batch_size"]
    n_lang, n = tokens.shape[0], tokens.shape[1]
    history, window = [], []
    model.train()
    for step in progress(range(steps), desc="multilingual text tower", unit="step"):
        lr = lr_at(step, steps, max(1, steps // 10), settings["lr"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = torch.from_numpy(batch_ids(n, bs, seed, step))
        lang = torch.from_numpy(language_choice(bs, n_lang, settings["other_share"], seed, step))
        text = F.normalize(model.encode_text(tokens[lang, ids]), dim=-1)
        loss = symmetric_cross_entropy(scale * text @ image_emb[ids].T)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"non-finite loss at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(float(loss.detach()))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": float(np.mean(window)), "lr": lr})
            window = []
    with torch.no_grad():                      # the trained rows back into the full vocabulary
        full_embedding.weight[used] = model.token_embedding.weight
    model.token_embedding = full_embedding
    model.eval()
    return history


def compact_vocabulary(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap the token embedding for one holding only the token ids the captions use (sorted, so the
    end-of-text token keeps the largest id and CLIP's argmax pooling still finds it); returns the used ids
    and the tokens renumbered. The optimizer then updates a few hundred rows instead of the whole
    49,408-row table (rows no caption uses get no gradient either way, and AdamW's decay of them is the
    only difference; they are never read by this study)."""
    if getattr(model, "text_pool_type", "argmax") != "argmax":
        raise InputError(f"multilingual encoder: text pooling {model.text_pool_type!r} is not supported (argmax only)")
    used = torch.unique(tokens)
    lookup = torch.full((model.token_embedding.num_embeddings,), -1, dtype=torch.long)
    lookup[used] = torch.arange(len(used))
    model.token_embedding = torch.nn.Embedding.from_pretrained(model.token_embedding.weight[used].clone(), freeze=False)
    return used, lookup[tokens]


def tokenize_languages(tokenizer, table, languages: Sequence[str]) -> torch.Tensor:
    """(L, N, context) token ids of every image's caption in each language (each distinct text once)."""
    from ..models.pretrain import tokenize_unique

    return torch.stack([tokenize_unique(tokenizer, table[code].tolist()) for code in languages])


def build(config: dict, name: str, base_checkpoint: str, features: str, projections: str, captions: str,
          out: str, train_log: str) -> list[dict]:
    """Train model `name`'s text tower and save the whole model (image tower untouched) as a checkpoint."""
    import pandas as pd

    from ..models.checkpoints import save_checkpoint
    from ..common.io import sha256_file
    from ..models.clip import get_tokenizer, load_model
    from .images import train_image_embeddings

    ml = config["multilingual"]
    spec_ml = ml["models"][name]
    base = spec_ml["base"]
    spec = config["models"][base]
    settings = {k: spec_ml[k] for k in ("steps", "batch_size", "lr", "weight_decay", "other_share")}
    table = pd.read_parquet(captions)
    image_emb = torch.from_numpy(train_image_embeddings(features, projections, table["image"].tolist()))
    torch.manual_seed(ml["seed"])
    model = load_model(spec, base_checkpoint, base)
    tokens = tokenize_languages(get_tokenizer(spec["arch"]), table, ml["languages"])
    log.info("%s: text tower of %s on %d images x %d languages, %s", name, base, len(table), len(ml["languages"]),
             json.dumps(settings))
    history = train_text_tower(model, tokens, image_emb, settings, ml["seed"])
    meta = {"model": name, "arch": spec["arch"], "source": "multilingual", "base": base,
            "base_sha256": sha256_file(base_checkpoint), "languages": list(ml["languages"]), **settings}
    save_checkpoint(out, model.state_dict(), epoch=0, meta=meta)
    write_lines(train_log, [json.dumps(r, sort_keys=True) for r in history])
    return history


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config

    ap = argparse.ArgumentParser(description="Embedded multilingual text encoder (text tower only).")
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True, help="a multilingual.models key with source embedded")
    ap.add_argument("--base-checkpoint", required=True)
    ap.add_argument("--features", required=True, help="the base model's feature cache index (train.npz)")
    ap.add_argument("--projections", required=True, help="the base model's projections.npz")
    ap.add_argument("--captions", required=True, help="multilingual training captions (parquet)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-log", required=True)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    models = config["multilingual"]["models"]
    if models.get(args.model, {}).get("source") != "embedded":
        raise InputError(f"{args.config}: key 'multilingual.models.{args.model}': not a model with source embedded")
    build(config, args.model, args.base_checkpoint, args.features, args.projections, args.captions, args.out,
          args.train_log)
    return 0


if __name__ == "__main__":
    run_cli(main)
