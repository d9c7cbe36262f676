"""Projection-only fine-tuning on (mis)aligned pairs: the study's treatment (docs/original_code.md, "Exp 3, stage 2").

Only the image and text projections train (logit_scale frozen); AdamW with weight decay on both; lr
linear warmup from lr_start over warmup_epochs then cosine to lr_end, set per step as the original's
cosine_scheduler; the CLIP loss of the global batch (gathered from all ranks). Unlike the original the run
always starts from the given pretrained checkpoint and trains exactly `epochs` epochs.

The step is plain autograd through the CLIP loss and torch's AdamW update (`adamw.AdamW`: the function
torch.optim.AdamW.step calls, without torch.optim.Optimizer's import of torch._dynamo, 1.1-1.5 s per job;
bit-identical parameters). (A closed-form gradient and a hand-written AdamW were measured against the
library path once job start-up was cut: 1.7 s against 2.6 s for the 640 steps of an embedded fine-tune,
under 5 % of `make run`, so the library path stays.) The projections
compute in float32 everywhere; on a GPU the frozen towers run under fp16 autocast
(`models.tower_autocast`), which is where the original's AMP saved time.

Two modes over the same loop: `cached` reads the frozen towers' features from the feature cache (a swap
only permutes captions, so one extraction serves every Cs, strategy and seed) and the projection head
stored with it, so it imports neither open_clip nor timm and builds no model; `end2end` runs the frozen towers on every
batch like the original. A resumable state is written every `checkpoint_every` epochs and on
SIGTERM/SIGUSR1; rerunning continues from it and ends with the same projections. The checkpoint holds the
projections only (`checkpoints.materialize` rebuilds the full model). One process runs as plain
`python -m`; torchrun starts several (one per GPU, or gloo ranks on CPU).

    python -m workflow_scripts.finetune.train --config C --model clip \\
        --strategy similarity --cs 0.3 --seed 0 --pretrained results/pretrain/clip/checkpoint.pt \\
        --train-csv results/misalign/similarity/Cs0.3/train.csv --features results/features/clip/train.npz \\
        --out-dir results/finetune/clip/similarity/Cs0.3/seed0
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..common import distributed
from .adamw import AdamW
from ..common.config import check_model, load_config
from ..common.data import read_pairs_csv, to_model_input
from ..common.errors import InputError
from .features import load_feature_cache
from ..models.checkpoints import save_torch
from ..common.io import (
    config_hash, derive_seed, progress, run_cli, save_npz, setup_logging, write_lines,
)

log = logging.getLogger(__name__)

RESUME_NAME = "resume.pt"
RESUME_FORMAT = 4          # what resume.pt holds (4: adamw.AdamW state); part of the run hash


# ----------------------------------------------------------------------------- schedule and batches


def lr_schedule(lr: float, lr_start: float, lr_end: float, warmup_epochs: float, epochs: int,
                iters_per_epoch: int) -> np.ndarray:
    """Per-step learning rates exactly as the original utils.cosine_scheduler (docs/original_code.md, "Exp 3, stage 2")."""
    warmup_iters = int(warmup_epochs * iters_per_epoch)
    warmup = np.linspace(lr_start, lr, warmup_iters) if warmup_iters > 0 else np.array([])
    m = epochs * iters_per_epoch - warmup_iters
    i = np.arange(m)
    cosine = lr_end + 0.5 * (lr - lr_end) * (1 + np.cos(np.pi * i / max(m, 1)))
    return np.concatenate([warmup, cosine])[: epochs * iters_per_epoch]


def epoch_batches(n: int, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """(iters, global_batch) sample indices of one epoch: a seeded permutation, last partial batch dropped."""
    iters = n // global_batch
    if iters == 0:
        raise InputError(f"{n} training pairs are fewer than one global batch of {global_batch}")
    perm = np.random.default_rng(derive_seed(seed, epoch)).permutation(n)
    return perm[: iters * global_batch].reshape(iters, global_batch)


# ----------------------------------------------------------------------------- loss


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The original CLIPLoss of one (global) batch: mean of the image->text and text->image cross-entropies
    of logit_scale * cos, labels on the diagonal; and clip_acc, image->text top-1 in % (argmax: the first
    of tied logits counts, as in the original). Gradients come from autograd."""
    a, b = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    logits = logit_scale * a @ b.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    acc = (logits.detach().argmax(1) == labels).sum() * (100.0 / logits.shape[0])
    return symmetric_cross_entropy(logits), acc


def symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(CE(logits) + CE(logitsᵀ)) / 2 with the diagonal as targets: the symmetric CLIP (InfoNCE) loss of a
    square matrix of paired rows' logits (the fine-tune's clip_loss, the multilingual encoder and heads)."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def orthogonality_penalty(rows: torch.Tensor) -> torch.Tensor:
    """‖PPᵀ − I‖²_F / n² of a projection P given as rows = its n output neurons (the Exp 3 orthogonality
    arm's penalty, seed 003's soft orthogonality in the neurons' orientation); gradients from autograd."""
    n = rows.shape[0]
    gram = rows @ rows.t() - torch.eye(n, dtype=rows.dtype, device=rows.device)
    return gram.pow(2).sum() / n ** 2


def _neuron_rows(projection) -> torch.Tensor:
    """A `models.Projection`'s weight as [out, in] (row = output neuron), differentiable."""
    return projection.weight if projection.transposed else projection.weight.t()


# ----------------------------------------------------------------------------- feature sources


class CachedFeatures:
    """Batches of pre-projection features from the cache (memory-mapped), for one training CSV; `head` is
    the model's projection head stored with the cache."""

    def __init__(self, cache_path: str, train_csv: str, device: torch.device):
        from ..models.clip import Head

        cache = load_feature_cache(cache_path)
        self.head = Head.from_arrays(cache, cache_path, device)
        self.checkpoint_sha256 = str(cache["checkpoint_sha256"]) if "checkpoint_sha256" in cache else None
        rel_paths, captions = read_pairs_csv(train_csv)
        cached_paths = cache["image_paths"].tolist()
        if rel_paths != cached_paths:
            first = next((i for i, (a, b) in enumerate(zip(rel_paths, cached_paths)) if a != b), None)
            raise InputError(f"{train_csv}: image column differs from the feature cache {cache_path} "
                             f"({len(rel_paths)} vs {len(cached_paths)} rows, first difference at row {first}); "
                             "rebuild the cache for this training set")
        index = {t: i for i, t in enumerate(cache["texts"].tolist())}
        missing = [i for i, c in enumerate(captions) if c not in index]
        if missing:
            raise InputError(f"{train_csv}:{missing[0] + 1}: caption not in the feature cache {cache_path} "
                             f"({len(missing)} such rows); the CSV was not built from the cached caption file")
        self.caption_ids = torch.as_tensor([index[c] for c in captions]).to(device)
        self.image = torch.from_numpy(cache["image"]).to(device)
        self.text = torch.from_numpy(cache["text"]).to(device)
        self.n = len(rel_paths)

    def __call__(self, idx: np.ndarray, epoch: int, step: int):
        i = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(self.image.device)
        view = epoch % self.image.shape[0]
        return (torch.index_select(self.image[view], 0, i),
                torch.index_select(self.text, 0, torch.index_select(self.caption_ids, 0, i)))


class EndToEndFeatures:
    """Batches computed by running the frozen towers on images and captions, like the original.

    Images are preprocessed as the model's `finetune` stage says (models.preprocess_config); with augment,
    each step's batch gets the original's RandomResizedCrop of the full images, drawn from a generator
    seeded with (seed, epoch, step)."""

    def __init__(self, model, spec: dict, train_csv: str, image_root: str, augment: bool, seed: int,
                 device: torch.device):
        from ..models.clip import get_tokenizer, preprocess_config

        self.rel_paths, self.captions = read_pairs_csv(train_csv)
        self.model, self.root, self.augment, self.seed, self.device = model, image_root, augment, seed, device
        self.pre = preprocess_config(model, spec, "finetune")
        self.tokenizer = get_tokenizer(spec["arch"])
        self.n = len(self.rel_paths)

    @torch.no_grad()
    def __call__(self, idx: np.ndarray, epoch: int, step: int):
        from ..common.data import load_full_images, load_preprocessed
        from .features import training_images
        from ..models.clip import image_features, text_features, tower_autocast

        paths = [self.rel_paths[i] for i in idx]
        images = (load_full_images(paths, self.root, desc="batch") if self.augment
                  else load_preprocessed(paths, self.root, self.pre, desc="batch"))
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, step))
        x = to_model_input(training_images(images, self.pre, self.augment, gen), self.pre["mean"], self.pre["std"])
        tokens = self.tokenizer([self.captions[i] for i in idx])
        with tower_autocast(self.device):
            return (image_features(self.model, x.to(self.device)).float(),
                    text_features(self.model, tokens.to(self.device)).float())


# ----------------------------------------------------------------------------- training


def train(head, features: Callable, n: int, settings: dict, seed: int, d: distributed.Dist,
          resume_path: Path | None = None, run_hash: str = "", stop: distributed.StopSignal | None = None,
          on_epoch: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run the fine-tune loop; returns the per-epoch log (also passed to on_epoch after every epoch).

    Only the two projections of `head` (a `models.Head`) change, in place; logit_scale and the towers stay
    frozen. Resumes from resume_path when it exists and belongs to the same run (run_hash)."""
    projections = (head.image, head.text)
    params = [p.requires_grad_(True) for p in head.parameters]
    name_of = {id(t): k for k, t in head.names.items()}
    names = [name_of[id(p)] for p in params]                  # state-dict names, as saved in resume.pt
    optimizer = AdamW(params, lr=settings["lr"], betas=tuple(settings["betas"]), eps=settings["eps"],
                      weight_decay=settings["weight_decay"])
    epochs, batch = settings["epochs"], settings["batch_size"]
    global_batch = batch * d.world_size
    iters = n // global_batch
    lrs = lr_schedule(settings["lr"], settings["lr_start"], settings["lr_end"], settings["warmup_epochs"],
                      epochs, iters)
    logit_scale = head.logit_scale
    history: list[dict] = []
    start_epoch, start_step, sums = 0, 0, [0.0, 0.0]
    if resume_path is not None and resume_path.exists():
        state = torch.load(resume_path, map_location=d.device, weights_only=True)
        if state.get("run_hash") == run_hash:
            with torch.no_grad():
                for name, p in zip(names, params):
                    p.copy_(state["params"][name])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, start_step, sums = state["epoch"], state["step"], list(state["sums"])
            history = list(state["history"])
            log.info("resumed from %s at epoch %d step %d", resume_path, start_epoch, start_step)
        else:
            log.warning("ignoring %s: it belongs to other settings", resume_path)

    def save_state(epoch: int, step: int) -> None:
        if resume_path is None or not d.is_main:
            return
        state = {"run_hash": run_hash, "epoch": epoch, "step": step, "sums": sums, "history": history,
                 "params": {k: p.detach().cpu() for k, p in zip(names, params)},
                 "optimizer": optimizer.state_dict()}
        save_torch(state, resume_path)

    for epoch in range(start_epoch, epochs):
        order = epoch_batches(n, global_batch, seed, epoch)
        bar = progress(range(start_step, iters), desc=f"epoch {epoch + 1}/{epochs}", disable=not d.is_main,
                       total=iters, initial=start_step)
        for step in bar:
            img_f, txt_f = features(order[step, d.rank * batch:(d.rank + 1) * batch], epoch, step)
            lr = float(lrs[epoch * iters + step])
            loss, acc = _step(projections, optimizer, img_f, txt_f, logit_scale, lr, d,
                              settings.get("ortho_lambda", 0.0))
            if not math.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss} at epoch {epoch} step {step}")
            sums[0] += loss
            sums[1] += acc
            if _stop_requested(stop, d):
                save_state(epoch, step + 1)
                raise SystemExit(128 + (stop.requested or 15))
        start_step = 0
        record = {"epoch": epoch + 1, "loss": sums[0] / iters, "clip_acc": sums[1] / iters,
                  "lr": float(lrs[(epoch + 1) * iters - 1]), "logit_scale": logit_scale}
        history.append(record)
        sums = [0.0, 0.0]
        if d.is_main:
            log.info("epoch %d: %s", epoch + 1, json.dumps(record))
            if on_epoch:
                on_epoch(history)
        if (epoch + 1) % settings["checkpoint_every"] == 0 and epoch + 1 < epochs:
            save_state(epoch + 1, 0)
    return history


def _step(projections, optimizer: AdamW, img_f: torch.Tensor, txt_f: torch.Tensor,
          logit_scale: float, lr: float, d: distributed.Dist, orthogonality: float = 0.0) -> tuple[float, float]:
    """One optimizer step on one global batch, given this rank's features; returns its (loss, clip_acc %).

    Every rank projects its own rows and computes the CLIP loss of the whole global batch, with the other
    ranks' embeddings gathered without gradient: its gradients are those of its own rows, and their sum
    over ranks (all-reduced) is exactly the gradient of the global-batch loss, as the original's all_gather
    with gradient + DDP mean gives. With `orthogonality` = λo > 0 (the Exp 3 arm) the objective adds
    λo·orthogonality_penalty of each projection, each rank adding 1/world_size of it so that the summed
    gradient is the penalty's once; λo = 0 adds nothing (the original recipe, bit for bit). The returned
    loss is the CLIP loss alone.
    """
    image, text = projections
    img_e, txt_e = image(img_f), text(txt_f)
    loss, acc = clip_loss(distributed.gather_rows(img_e, d), distributed.gather_rows(txt_e, d), logit_scale)
    objective = loss
    if orthogonality:
        penalty = orthogonality_penalty(_neuron_rows(image)) + orthogonality_penalty(_neuron_rows(text))
        objective = loss + (orthogonality / d.world_size) * penalty
    optimizer.zero_grad()
    objective.backward()
    distributed.all_reduce_sum_([p.grad for p in optimizer.params], d)
    optimizer.lr = lr
    optimizer.step()
    return float(loss.detach()), float(acc)


def _stop_requested(stop: distributed.StopSignal | None, d: distributed.Dist) -> bool:
    """Whether any rank got SIGTERM/SIGUSR1 (all ranks must stop at the same step)."""
    local = stop is not None and stop.requested is not None
    if not d.enabled:
        return local
    import torch.distributed as dist

    flag = torch.tensor([int(local)], dtype=torch.int32, device=d.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run(config: dict, model_name: str, strategy: str, cs: float, seed: int, pretrained: str, train_csv: str,
        features_path: str | None, out_dir: str, want_gpu: bool = False, pretraining: str | None = None) -> list[dict]:
    """Fine-tune one (model, strategy, Cs, seed) and write checkpoint.pt, log.jsonl and projections.npz.

    checkpoint.pt holds the projections only, with the pretrained checkpoint's path and SHA-256 and the
    name of the pretraining it is (`pretraining`: the model whose checkpoint replicate `seed` starts from)
    (`checkpoints.materialize` rebuilds the full model). In cached mode no model is built: the projection
    head comes with the feature cache."""
    from ..models.checkpoints import save_checkpoint
    from ..common.io import sha256_file

    ft = config["finetune"]
    spec = config["models"][model_name]
    d = distributed.init(config, want_gpu)
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ft["mode"] == "cached":
        if not features_path:
            raise InputError("finetune.mode is 'cached' but no --features cache was given")
        source = CachedFeatures(features_path, train_csv, d.device)
        head, pretrained_sha256 = source.head, source.checkpoint_sha256 or sha256_file(pretrained)
    else:
        from ..models.clip import Head, load_model

        model = load_model(spec, pretrained).to(d.device).eval()
        source = EndToEndFeatures(model, spec, train_csv, config["data"]["image_root"], ft["augment"],
                                  seed, d.device)
        head, pretrained_sha256 = Head.from_model(model), sha256_file(pretrained)
    settings = {k: ft[k] for k in ("mode", "epochs", "batch_size", "lr", "lr_start", "lr_end", "warmup_epochs",
                                   "weight_decay", "betas", "eps", "views", "augment")}
    if spec.get("finetune_orthogonality"):      # the Exp 3 orthogonality arm (absent: the run hash is unchanged)
        settings["ortho_lambda"] = float(spec["finetune_orthogonality"])
    run_hash = config_hash({"settings": settings, "resume_format": RESUME_FORMAT, "model": model_name,
                            "strategy": strategy, "cs": cs, "seed": seed, "world_size": d.world_size,
                            "checkpoint": pretrained_sha256})
    stop = distributed.StopSignal()
    log_path = out / "log.jsonl"

    def write_log(history: list[dict]) -> None:
        write_lines(log_path, [json.dumps(r, sort_keys=True) for r in history])

    try:
        history = train(head, source, source.n, {**settings, "checkpoint_every": ft["checkpoint_every"]}, seed, d,
                        resume_path=out / RESUME_NAME, run_hash=run_hash, stop=stop, on_epoch=write_log)
    finally:
        stop.restore()
    if d.is_main:
        write_log(history)
        meta = {"model": model_name, "arch": spec["arch"], "strategy": strategy, "cs": float(cs), "seed": seed,
                "mode": ft["mode"], "processes": d.world_size, "config_hash": run_hash,
                "contents": "projections", "pretrained": str(pretrained), "pretrained_sha256": pretrained_sha256,
                "pretraining": pretraining or model_name}
        # the optimizer state is in resume.pt while training; the final file holds the projections only
        save_checkpoint(out / "checkpoint.pt", head.names, epoch=ft["epochs"], meta=meta)
        image_p, text_p = head.matrices()
        save_npz(out / "projections.npz", image=image_p.cpu().numpy(), text=text_p.cpu().numpy())
        (out / RESUME_NAME).unlink(missing_ok=True)
        log.info("wrote %s", out / "checkpoint.pt")
    distributed.shutdown()
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Projection-only fine-tune of one (model, strategy, Cs, seed).")
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--cs", required=True, type=float)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--pretrained", required=True, help="checkpoint to start from")
    parser.add_argument("--pretraining", help="name of the model whose checkpoint --pretrained is (recorded in "
                                              "checkpoint.pt's meta; default --model)")
    parser.add_argument("--train-csv", required=True)
    parser.add_argument("--features", help="feature cache (.npz) for finetune.mode cached")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs requested for this job (0 = CPU)")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(args.log if rank == 0 else None)
    config = load_config(args.config)
    check_model(config, args.model, args.config)
    if args.pretraining:
        check_model(config, args.pretraining, args.config)
    if not 0.0 <= args.cs <= 1.0:
        raise InputError(f"--cs {args.cs}: Cs must lie in [0, 1]")
    run(config, args.model, args.strategy, args.cs, args.seed, args.pretrained, args.train_csv, args.features,
        args.out_dir, want_gpu=args.gpus > 0, pretraining=args.pretraining)
    return 0


if __name__ == "__main__":
    run_cli(main)
