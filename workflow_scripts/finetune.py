"""Projection-only fine-tuning on (mis)aligned pairs: the study's treatment (seed_spec.md section 2).

Only the image and text projections train (logit_scale frozen); AdamW with weight decay on both; lr
linear warmup from lr_start over warmup_epochs then cosine to lr_end, set per step as the original's
cosine_scheduler; the CLIP loss of the global batch (gathered from all ranks). Unlike the original the run
always starts from the given pretrained checkpoint and trains exactly `epochs` epochs.

The step takes its gradients in closed form (`clip_loss_grads`, `models.Projection.grads`) and applies
torch's AdamW update itself (`AdamW`): with cached features a step is a few small matrix products, and
autograd plus torch.optim cost more than the arithmetic (tests check both against autograd and
torch.optim.AdamW). The projections compute in float32 everywhere; on a GPU the frozen towers run under
fp16 autocast (`models.tower_autocast`), which is where the original's AMP saved time.

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
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import distributed
from .config import load_config
from .data import load_image_array, read_pairs_csv, to_model_input
from .errors import InputError
from .features import load_feature_cache
from .io import atomic_path, config_hash, derive_seed, progress, run_cli, save_npz, setup_logging, write_lines

log = logging.getLogger(__name__)

RESUME_NAME = "resume.pt"
RESUME_FORMAT = 2          # what resume.pt holds (2: our AdamW state); part of the run hash


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


def clip_loss_grads(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float,
                    eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The original CLIPLoss of one (global) batch and its gradient w.r.t. the raw embeddings, in closed form.

    loss = (CE(s A B^T, I) + CE(s B A^T, I)) / 2 with A, B the rows of image_emb, text_emb normalised as
    F.normalize(x, eps) does, s = logit_scale (already exp'ed) and I the diagonal labels. With
    P_r / P_c the row / column softmax of L = s A B^T and m rows, dloss/dL = (P_r + P_c - 2 I) / (2 m);
    the chain rule through the product and the normalisation gives the gradients. One logit matrix and
    about 30 tensor operations instead of autograd over two logit matrices: with cached tower features
    this step is the whole cost of a fine-tune. Returns (loss, clip_acc %, d loss / d image_emb,
    d loss / d text_emb), computed in float32 or wider; clip_acc is image->text top-1 over the batch
    (argmax: the first of tied logits counts, as in the original).
    """
    wide = torch.promote_types(image_emb.dtype, torch.float32)
    a, b = image_emb.to(wide), text_emb.to(wide)
    m = a.shape[0]
    norm_a = torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp_min_(eps)
    norm_b = torch.linalg.vector_norm(b, dim=1, keepdim=True).clamp_min_(eps)
    a_hat, b_hat = a / norm_a, b / norm_b
    logits = torch.mm(a_hat * logit_scale, b_hat.t())
    acc = (logits.argmax(1) == torch.arange(m, device=logits.device)).sum() * (100.0 / m)
    diagonal_sum = logits.diagonal().sum()
    k = logit_scale / (2 * m)
    grad, lse_sum = _softmax_sums(logits, logit_scale, k)     # k (P_r + P_c), in place of logits
    grad.diagonal().sub_(2 * k)                                # = d loss / d (A B^T)
    loss = (lse_sum - 2 * diagonal_sum) / (2 * m)
    grad_a = _normalize_backward(torch.mm(grad, b_hat), a_hat, norm_a, eps)
    grad_b = _normalize_backward(torch.mm(grad.t(), a_hat), b_hat, norm_b, eps)
    return loss, acc, grad_a, grad_b


def _softmax_sums(logits: torch.Tensor, bound: float, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """k * (row softmax + column softmax) of logits with entries in [-bound, bound], written over logits,
    and the sum of all row and column log-sum-exps.

    When exp(-2 bound) is a normal float (bound <= ~39 in float32, the usual CLIP temperatures up to
    1/0.026) one exp(logits - bound) serves both softmaxes exactly; otherwise each is shifted by its own
    maxima (two exps).
    """
    m = logits.shape[0]
    if 2 * bound <= -math.log(torch.finfo(logits.dtype).tiny) - 8:
        e = logits.sub_(bound).exp_()
        rows, cols = e.sum(1, keepdim=True), e.sum(0, keepdim=True)
        lse_sum = rows.log().sum() + cols.log().sum() + 2 * m * bound
        return e.mul_(rows.reciprocal().mul_(k) + cols.reciprocal().mul_(k)), lse_sum
    top_rows, top_cols = logits.amax(1, keepdim=True), logits.amax(0, keepdim=True)
    e_rows = (logits - top_rows).exp_()
    e_cols = logits.sub_(top_cols).exp_()
    rows, cols = e_rows.sum(1, keepdim=True), e_cols.sum(0, keepdim=True)
    lse_sum = rows.log().sum() + top_rows.sum() + cols.log().sum() + top_cols.sum()
    return e_cols.mul_(cols.reciprocal().mul_(k)).add_(e_rows.mul_(rows.reciprocal().mul_(k))), lse_sum


def _normalize_backward(grad_unit: torch.Tensor, unit: torch.Tensor, norm: torch.Tensor, eps: float) -> torch.Tensor:
    """Gradient w.r.t. x of x / max(|x|, eps) (F.normalize), given the gradient w.r.t. the result."""
    along = (grad_unit * unit).sum(1, keepdim=True).masked_fill_(norm <= eps, 0.0)
    return torch.addcmul(grad_unit, unit, along, value=-1.0).div_(norm)


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
        from .models import image_features, text_features, tower_autocast

        paths = [self.rel_paths[i] for i in idx]
        images = load_image_array(paths, self.root, self.pre["image_size"], desc="batch")
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, step))
        x = to_model_input(images, self.pre["mean"], self.pre["std"], augment=self.augment, generator=gen)
        tokens = self.tokenizer([self.captions[i] for i in idx])
        with tower_autocast(self.device):
            return (image_features(self.model, x.to(self.device)).float(),
                    text_features(self.model, tokens.to(self.device)).float())


# ----------------------------------------------------------------------------- training


class AdamW:
    """torch.optim.AdamW's update (decoupled weight decay, no amsgrad; its single-tensor algorithm line
    for line) over the projection tensors, with gradients passed in. The Optimizer machinery costs more
    per step than the whole update of two small projections; tests/test_finetune.py checks equality."""

    def __init__(self, params: list[torch.Tensor], betas: Sequence[float], eps: float, weight_decay: float):
        self.params = params
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], lr: float) -> None:
        self.steps += 1
        step_size = lr / (1 - self.beta1 ** self.steps)
        bias_correction2_sqrt = (1 - self.beta2 ** self.steps) ** 0.5
        for p, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            p.mul_(1 - lr * self.weight_decay)
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            p.addcdiv_(m, (v.sqrt() / bias_correction2_sqrt).add_(self.eps), value=-step_size)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "exp_avg": [t.detach().cpu() for t in self.exp_avg],
                "exp_avg_sq": [t.detach().cpu() for t in self.exp_avg_sq]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        for mine, saved in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            mine.copy_(saved)


def train(model, features: Callable, n: int, settings: dict, seed: int, d: distributed.Dist,
          resume_path: Path | None = None, run_hash: str = "", stop: distributed.StopSignal | None = None,
          on_epoch: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run the fine-tune loop; returns the per-epoch log (also passed to on_epoch after every epoch).

    Only the two projections change (they are updated in place); logit_scale and the towers stay frozen.
    Resumes from resume_path when it exists and belongs to the same run (run_hash)."""
    from .models import linear_projections

    for p in model.parameters():
        p.requires_grad_(False)        # no autograd: the step computes its gradients itself
    projections = linear_projections(model)
    params = [p for proj in projections for p in proj.parameters]
    name_of = {id(p): k for k, p in model.named_parameters()}
    names = [name_of[id(p)] for p in params]                  # state-dict names, as saved in resume.pt
    optimizer = AdamW(params, settings["betas"], settings["eps"], settings["weight_decay"])
    epochs, batch = settings["epochs"], settings["batch_size"]
    global_batch = batch * d.world_size
    iters = n // global_batch
    lrs = lr_schedule(settings["lr"], settings["lr_start"], settings["lr_end"], settings["warmup_epochs"],
                      epochs, iters)
    logit_scale = float(model.logit_scale.detach().exp())
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
        with atomic_path(resume_path) as tmp:
            torch.save(state, tmp)

    for epoch in range(start_epoch, epochs):
        order = epoch_batches(n, global_batch, seed, epoch)
        bar = progress(range(start_step, iters), desc=f"epoch {epoch + 1}/{epochs}", disable=not d.is_main,
                       total=iters, initial=start_step)
        for step in bar:
            img_f, txt_f = features(order[step, d.rank * batch:(d.rank + 1) * batch], epoch, step)
            lr = float(lrs[epoch * iters + step])
            loss, acc = _step(projections, optimizer, img_f, txt_f, logit_scale, lr, d)
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


@torch.no_grad()
def _step(projections, optimizer: AdamW, img_f: torch.Tensor, txt_f: torch.Tensor, logit_scale: float,
          lr: float, d: distributed.Dist) -> tuple[float, float]:
    """One optimizer step on one global batch, given this rank's features; returns its (loss, clip_acc %).

    Every rank projects its own rows, gathers all ranks' embeddings and takes the closed-form gradient of
    the global-batch CLIP loss (`clip_loss_grads`); the projection gradients of its own rows, summed over
    ranks, are exactly the original's (all_gather with gradient, each rank's local-row loss, gradients
    averaged by DDP), and its mean loss is the global-batch loss.
    """
    image, text = projections
    img_e, txt_e = image(img_f), text(txt_f)
    img_all, txt_all = distributed.all_gather(img_e, d), distributed.all_gather(txt_e, d)
    loss, acc, grad_img, grad_txt = clip_loss_grads(img_all, txt_all, logit_scale)
    rows = slice(d.rank * img_e.shape[0], (d.rank + 1) * img_e.shape[0])
    grads = image.grads(img_f, grad_img[rows]) + text.grads(txt_f, grad_txt[rows])
    distributed.all_reduce_sum_(grads, d)
    optimizer.step(grads, lr)
    return float(loss), float(acc)


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
    run_hash = config_hash({"settings": settings, "resume_format": RESUME_FORMAT, "model": model_name,
                            "strategy": strategy, "cs": cs, "seed": seed, "world_size": d.world_size,
                            "checkpoint": _file_id(pretrained)})
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
