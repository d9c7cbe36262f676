"""Projection-only fine-tuning on (mis)aligned pairs: the study's treatment (seed_spec.md section 2).

Only the image and text projections train (logit_scale frozen); AdamW with weight decay on both; lr
linear warmup from lr_start over warmup_epochs then cosine to lr_end, set per step as the original's
cosine_scheduler; CLIP loss of local rows against features gathered from all ranks. Unlike the original
the run always starts from the given pretrained checkpoint and trains exactly `epochs` epochs.

Two modes over the same loop: `cached` reads the frozen towers' features from the feature cache (a swap
only permutes captions, so one extraction serves every Cs, strategy and seed); `end2end` runs the frozen
towers on every batch like the original. A resumable state is written every `checkpoint_every` epochs
and on SIGTERM/SIGUSR1; rerunning continues from it and ends with the same projections.

    torchrun --standalone --nproc-per-node=1 -m workflow_scripts.finetune --config C --model clip \\
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
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .config import load_config
from .data import load_image_array, read_pairs_csv, to_model_input
from .errors import InputError
from .features import load_feature_cache
from .io import atomic_path, config_hash, derive_seed, progress, run_cli, save_npz, setup_logging, write_lines

log = logging.getLogger(__name__)

RESUME_NAME = "resume.pt"


# ----------------------------------------------------------------------------- schedule and batches


def lr_schedule(lr: float, lr_start: float, lr_end: float, warmup_epochs: float, epochs: int,
                iters_per_epoch: int) -> np.ndarray:
    """Per-step learning rates exactly as the original utils.cosine_scheduler (seed_spec.md 2.4)."""
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


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
              d: distributed.Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """The original CLIPLoss: local rows against all ranks' normalised features; returns (loss, acc %)."""
    image_emb = F.normalize(image_emb, dim=-1)
    text_emb = F.normalize(text_emb, dim=-1)
    image_all = distributed.all_gather_with_grad(image_emb, d)
    text_all = distributed.all_gather_with_grad(text_emb, d)
    n = image_emb.shape[0]
    labels = torch.arange(n, device=image_emb.device) + n * d.rank
    logits_per_image = logit_scale * image_emb @ text_all.t()
    logits_per_text = logit_scale * text_emb @ image_all.t()
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    acc = (logits_per_image.argmax(-1) == labels).float().mean() * 100
    return loss, acc.detach()


# ----------------------------------------------------------------------------- feature sources


class CachedFeatures:
    """Batches of pre-projection features from the cache, for one training CSV."""

    def __init__(self, cache_path: str, train_csv: str, device: torch.device):
        cache = load_feature_cache(cache_path)
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
        self.caption_ids = torch.as_tensor([index[c] for c in captions])
        self.image = torch.from_numpy(cache["image"]).to(device)
        self.text = torch.from_numpy(cache["text"]).to(device)
        self.n = len(rel_paths)

    def __call__(self, idx: np.ndarray, epoch: int, step: int):
        i = torch.as_tensor(idx)
        view = epoch % self.image.shape[0]
        return self.image[view, i], self.text[self.caption_ids[i]]


class EndToEndFeatures:
    """Batches computed by running the frozen towers on images and captions, like the original."""

    def __init__(self, model, spec: dict, train_csv: str, image_root: str, augment: bool, seed: int,
                 device: torch.device):
        from .models import get_tokenizer, preprocess_config

        self.rel_paths, self.captions = read_pairs_csv(train_csv)
        self.model, self.root, self.augment, self.seed, self.device = model, image_root, augment, seed, device
        self.pre = preprocess_config(model, spec)
        self.tokenizer = get_tokenizer(spec["arch"])
        self.n = len(self.rel_paths)

    @torch.no_grad()
    def __call__(self, idx: np.ndarray, epoch: int, step: int):
        from .models import image_features, text_features

        paths = [self.rel_paths[i] for i in idx]
        images = load_image_array(paths, self.root, self.pre["image_size"], desc="batch")
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, step))
        x = to_model_input(images, self.pre["mean"], self.pre["std"], augment=self.augment, generator=gen)
        tokens = self.tokenizer([self.captions[i] for i in idx])
        return (image_features(self.model, x.to(self.device)).float(),
                text_features(self.model, tokens.to(self.device)).float())


# ----------------------------------------------------------------------------- training


def build_optimizer(params: dict[str, torch.nn.Parameter], settings: dict) -> torch.optim.Optimizer:
    """AdamW over the two projections, both with weight decay (they are 2-D, as in the original)."""
    return torch.optim.AdamW(list(params.values()), lr=settings["lr"], betas=tuple(settings["betas"]),
                             eps=settings["eps"], weight_decay=settings["weight_decay"])


def train(model, features: Callable, n: int, settings: dict, seed: int, d: distributed.Dist,
          resume_path: Path | None = None, run_hash: str = "", stop: distributed.StopSignal | None = None,
          on_epoch: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run the fine-tune loop; returns the per-epoch log (also passed to on_epoch after every epoch).

    Resumes from resume_path when it exists and belongs to the same run (run_hash)."""
    from .models import project_image, project_text, projection_parameters

    for p in model.parameters():
        p.requires_grad_(False)
    params = projection_parameters(model)
    for p in params.values():
        p.requires_grad_(True)
    optimizer = build_optimizer(params, settings)
    epochs, batch = settings["epochs"], settings["batch_size"]
    global_batch = batch * d.world_size
    iters = n // global_batch
    lrs = lr_schedule(settings["lr"], settings["lr_start"], settings["lr_end"], settings["warmup_epochs"],
                      epochs, iters)
    use_amp = d.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    logit_scale = model.logit_scale.detach().exp()
    history: list[dict] = []
    start_epoch, start_step, sums = 0, 0, [0.0, 0.0]
    if resume_path is not None and resume_path.exists():
        state = torch.load(resume_path, map_location=d.device, weights_only=True)
        if state.get("run_hash") == run_hash:
            for name, p in params.items():
                p.data.copy_(state["params"][name])
            optimizer.load_state_dict(state["optimizer"])
            if use_amp and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, start_step, sums = state["epoch"], state["step"], list(state["sums"])
            history = list(state["history"])
            log.info("resumed from %s at epoch %d step %d", resume_path, start_epoch, start_step)
        else:
            log.warning("ignoring %s: it belongs to other settings", resume_path)

    def save_state(epoch: int, step: int) -> None:
        if resume_path is None or not d.is_main:
            return
        state = {"run_hash": run_hash, "epoch": epoch, "step": step, "sums": sums, "history": history,
                 "params": {k: p.detach().cpu() for k, p in params.items()},
                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if use_amp else {}}
        with atomic_path(resume_path) as tmp:
            torch.save(state, tmp)

    for epoch in range(start_epoch, epochs):
        order = epoch_batches(n, global_batch, seed, epoch)
        bar = progress(range(start_step, iters), desc=f"epoch {epoch + 1}/{epochs}", disable=not d.is_main,
                       total=iters, initial=start_step)
        for step in bar:
            it = epoch * iters + step
            for group in optimizer.param_groups:
                group["lr"] = float(lrs[it])
            idx = order[step, d.rank * batch:(d.rank + 1) * batch]
            img_f, txt_f = features(idx, epoch, step)
            with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
                loss, acc = clip_loss(project_image(model, img_f), project_text(model, txt_f), logit_scale, d)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch} step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            distributed.all_reduce_mean_([p.grad for p in params.values()], d)
            scaler.step(optimizer)
            scaler.update()
            sums[0] += float(loss.detach())
            sums[1] += float(acc)
            if _stop_requested(stop, d):
                save_state(epoch, step + 1)
                raise SystemExit(128 + (stop.requested or 15))
        start_step = 0
        record = {"epoch": epoch + 1, "loss": sums[0] / iters, "clip_acc": sums[1] / iters,
                  "lr": float(lrs[(epoch + 1) * iters - 1]), "logit_scale": float(logit_scale)}
        history.append(record)
        sums = [0.0, 0.0]
        if d.is_main:
            log.info("epoch %d: %s", epoch + 1, json.dumps(record))
            if on_epoch:
                on_epoch(history)
        if (epoch + 1) % settings["checkpoint_every"] == 0 and epoch + 1 < epochs:
            save_state(epoch + 1, 0)
    return history


def _stop_requested(stop: distributed.StopSignal | None, d: distributed.Dist) -> bool:
    flag = torch.tensor([0 if stop is None or stop.requested is None else 1], dtype=torch.int32)
    if d.enabled:
        import torch.distributed as dist

        flag = flag.to(d.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run(config: dict, model_name: str, strategy: str, cs: float, seed: int, pretrained: str, train_csv: str,
        features_path: str | None, out_dir: str, want_gpu: bool = False) -> list[dict]:
    """Fine-tune one (model, strategy, Cs, seed) and write checkpoint.pt, log.jsonl and projections.npz."""
    from .checkpoints import save_checkpoint
    from .models import load_model, projection_matrices

    ft = config["finetune"]
    spec = config["models"][model_name]
    d = distributed.init(config, want_gpu)
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(spec, pretrained).to(d.device).eval()
    if ft["mode"] == "cached":
        if not features_path:
            raise InputError("finetune.mode is 'cached' but no --features cache was given")
        source = CachedFeatures(features_path, train_csv, d.device)
    else:
        source = EndToEndFeatures(model, spec, train_csv, config["data"]["image_root"], ft["augment"],
                                  seed, d.device)
    settings = {k: ft[k] for k in ("mode", "epochs", "batch_size", "lr", "lr_start", "lr_end", "warmup_epochs",
                                   "weight_decay", "betas", "eps", "views", "augment")}
    run_hash = config_hash({"settings": settings, "model": model_name, "strategy": strategy, "cs": cs,
                            "seed": seed, "world_size": d.world_size, "checkpoint": _file_id(pretrained)})
    stop = distributed.StopSignal()
    log_path = out / "log.jsonl"

    def write_log(history: list[dict]) -> None:
        write_lines(log_path, [json.dumps(r, sort_keys=True) for r in history])

    try:
        history = train(model, source, source.n, {**settings, "checkpoint_every": ft["checkpoint_every"]}, seed, d,
                        resume_path=out / RESUME_NAME, run_hash=run_hash, stop=stop, on_epoch=write_log)
    finally:
        stop.restore()
    if d.is_main:
        write_log(history)
        meta = {"model": model_name, "arch": spec["arch"], "strategy": strategy, "cs": float(cs), "seed": seed,
                "mode": ft["mode"], "processes": d.world_size, "config_hash": run_hash,
                "pretrained": str(pretrained)}
        opt_state = None  # the optimizer state is in resume.pt while training; the final file stays small
        save_checkpoint(out / "checkpoint.pt", model.state_dict(), epoch=ft["epochs"], optimizer=opt_state,
                        meta=meta)
        image_p, text_p = projection_matrices(model)
        save_npz(out / "projections.npz", image=image_p.cpu().numpy(), text=text_p.cpu().numpy())
        (out / RESUME_NAME).unlink(missing_ok=True)
        log.info("wrote %s", out / "checkpoint.pt")
    distributed.shutdown()
    return history


def _file_id(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Projection-only fine-tune of one (model, strategy, Cs, seed).")
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--cs", required=True, type=float)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--pretrained", required=True, help="checkpoint to start from")
    parser.add_argument("--train-csv", required=True)
    parser.add_argument("--features", help="feature cache (.npz) for finetune.mode cached")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs requested for this job (0 = CPU)")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(args.log if rank == 0 else None)
    config = load_config(args.config)
    if args.model not in config["models"]:
        raise InputError(f"{args.config}: unknown model {args.model!r}; known: {sorted(config['models'])}")
    if not 0.0 <= args.cs <= 1.0:
        raise InputError(f"--cs {args.cs}: Cs must lie in [0, 1]")
    run(config, args.model, args.strategy, args.cs, args.seed, args.pretrained, args.train_csv, args.features,
        args.out_dir, want_gpu=args.gpus > 0)
    return 0


if __name__ == "__main__":
    run_cli(main)
