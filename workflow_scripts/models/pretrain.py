"""From-scratch pretraining of the embedded CLIP and LaCLIP models (models with `source: pretrain`).

`captions: human` trains on the CSV captions (CLIP); `captions: augmented` picks, for every sample of
every step, uniformly among the human caption and its rewrites (LaCLIP's CsvDatasetAugCap, falling
back to the CSV caption when the pick has fewer than 2 words). Everything else is shared: open_clip's
ClipLoss, AdamW without decay on gains/biases/logit_scale, linear warmup + cosine ending exactly at
`pretrain.steps`, logit_scale clamped to [0, ln 100] after each step. The run length is a fixed number
of steps, never a wall-clock budget, so results do not depend on the machine.

All randomness is stateless per (seed, stream, epoch/step): initialisation from `pretrain.seed`, the
batch order of epoch e and the caption choice of step s from their own derived seeds. Drawing captions
therefore never shifts another stream, and a run resumed from `checkpoint.partial.pt` equals an
uninterrupted one.

    python -m workflow_scripts.models.pretrain --config config.yaml --model laclip \\
        --out results/pretrain/laclip/checkpoint.pt --train-log results/pretrain/laclip/log.jsonl \\
        --eval-sets shape colour --threads 1 --log logs/pretrain/laclip.log
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..common.distributed import config_device
from ..common.config import check_model
from ..common.errors import InputError
from ..common.io import derive_seed
from .clip import projection_parameters

log = logging.getLogger(__name__)

LOGIT_SCALE_MAX = math.log(100.0)
PARTIAL_NAME = "checkpoint.partial.pt"
ORDER_STREAM, CAPTION_STREAM = 0, 1


# ----------------------------------------------------------------------------- data


@dataclass
class PairData:
    """Training pairs in memory: decoded images and every caption choice pre-tokenized.

    images: uint8 (N, H, W, 3); tokens: int64 (1 + K, N, context), choice 0 = the CSV caption;
    valid: bool (1 + K, N), whether choice k may be drawn (rewrites with < 2 words may not).
    """

    images: torch.Tensor
    tokens: torch.Tensor
    valid: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def tokenize_unique(tokenizer, texts: Sequence[str], batch_size: int = 4096) -> torch.Tensor:
    """Tokenize each distinct text once (captions repeat a lot), returning one row per input text."""
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    uniq = list(index)
    rows = torch.cat([tokenizer(uniq[i:i + batch_size]) for i in range(0, len(uniq), batch_size)])
    return rows[torch.from_numpy(ids)]


def caption_choices(captions: Sequence[str], rewrites: Sequence[Sequence[str]]) -> tuple[list[list[str]], np.ndarray]:
    """Per choice k (0 = the CSV caption, then one per rewrite file) the texts, and which are drawable.

    Rewrites with fewer than 2 space-separated words are replaced by the CSV caption, LaCLIP's rule.
    """
    texts = [list(captions)]
    valid = [np.ones(len(captions), dtype=bool)]
    for lines in rewrites:
        ok = np.fromiter((len(t.split(" ")) >= 2 for t in lines), dtype=bool, count=len(lines))
        texts.append([t if good else c for t, good, c in zip(lines, ok, captions)])
        valid.append(ok)
    return texts, np.stack(valid)


def load_pairs(config: dict, tokenizer, image_size: int, augmented: bool, pre: dict | None = None) -> PairData:
    """Read data.train_csv (+ data.rewrites when augmented), decode the images (resized as `pre`, the
    model's `finetune` preprocessing, says), tokenize all captions."""
    from ..common.data import load_image_array, read_pairs_csv, read_text_lines

    data = config["data"]
    rel_paths, captions = read_pairs_csv(data["train_csv"])
    rewrites = []
    if augmented:
        if not data["rewrites"]:
            raise InputError("captions: augmented needs data.rewrites (LaCLIP rewrite files)")
        for path in data["rewrites"]:
            lines = read_text_lines(path, allow_empty=True)
            if len(lines) != len(captions):
                raise InputError(f"{path}: {len(lines)} lines but {data['train_csv']} has {len(captions)} rows "
                                 "(line i rewrites row i)")
            rewrites.append(lines)
    texts, valid = caption_choices(captions, rewrites)
    resize = {"interpolation": pre["interpolation"], "resize": pre["resize"]} if pre else {}
    images = load_image_array(rel_paths, data["image_root"], image_size, desc="decode training images", **resize)
    tokens = torch.stack([tokenize_unique(tokenizer, t) for t in texts])
    log.info("%d pairs, %d caption choices each, images %s", len(captions), len(texts), images.shape[1:])
    return PairData(torch.from_numpy(images), tokens, torch.from_numpy(valid))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, ORDER_STREAM, epoch)))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Sample ids of optimizer step `step`: consecutive slices of per-epoch permutations, drop_last."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise InputError(f"pretrain.batch_size {batch_size} exceeds the {n} training pairs")
    epoch, pos = divmod(step, per_epoch)
    return epoch_order(n, seed, epoch)[pos * batch_size:(pos + 1) * batch_size]


def batch_tokens(data: PairData, idx: torch.Tensor, augmented: bool, seed: int, step: int) -> torch.Tensor:
    """Token rows of a batch: the CSV caption, or (augmented) a uniform pick among it and its rewrites."""
    if not augmented or data.tokens.shape[0] == 1:
        return data.tokens[0, idx]
    gen = torch.Generator().manual_seed(derive_seed(seed, CAPTION_STREAM, step))
    choice = torch.randint(0, data.tokens.shape[0], (len(idx),), generator=gen)
    choice = torch.where(data.valid[choice, idx], choice, torch.zeros_like(choice))
    return data.tokens[choice, idx]


# ----------------------------------------------------------------------------- optimisation


def lr_at(step: int, steps: int, warmup: int, base_lr: float) -> float:
    """open_clip's schedule: linear warmup to base_lr, then cosine to 0 at `steps`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * e / es)) * base_lr


def no_weight_decay(name: str, p: torch.nn.Parameter) -> bool:
    """open_clip's exclusion rule: gains, biases, norms and logit_scale are not decayed."""
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                    fused: bool | None = None, projection_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW with open_clip's ViT settings (betas 0.9/0.98, eps 1e-6) and two decay groups, over the
    parameters that require gradients; with projection_lr_scale != 1 the two projection matrices form a
    third group whose learning rate is lr x projection_lr_scale (each group's `lr_scale`; `train` sets
    every group's lr to the schedule's value times it).

    fused None: the fused kernel whenever every parameter is a float on CPU or CUDA (~2x faster than
    foreach here, where the 49,408-row token embedding is most of the parameters); True/False are passed
    to torch as given (False: no fused kernel, torch's per-tensor loop on CPU; the multilingual encoder's).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # the projection matrices (not their biases, if any: those stay undecayed at the base rate)
    projections = ({n for n, p in projection_parameters(model).items() if not no_weight_decay(n, p)}
                   if projection_lr_scale != 1.0 else set())
    rest = [(n, p) for n, p in named if n not in projections]
    groups = [{"params": [p for n, p in rest if no_weight_decay(n, p)], "weight_decay": 0.0, "lr_scale": 1.0},
              {"params": [p for n, p in rest if not no_weight_decay(n, p)], "weight_decay": weight_decay,
               "lr_scale": 1.0}]
    if projections:
        groups.append({"params": [p for n, p in named if n in projections], "weight_decay": weight_decay,
                       "lr_scale": float(projection_lr_scale)})
    if fused is None:
        fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for _, p in named)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=fused)


def train(model: torch.nn.Module, data: PairData, settings: dict, mean: Sequence[float], std: Sequence[float],
          augmented: bool, partial: Path | None = None, run_hash: str = "", device: torch.device | None = None,
          on_step: Callable[[int], None] | None = None) -> list[dict]:
    """Train for settings['steps'] steps; returns the JSON-lines records (every log_every steps).

    Every settings['checkpoint_every'] steps the model, optimizer and log are saved to `partial`; a
    partial file of the same run (run_hash) is resumed from. `on_step(step)` runs after each step.
    """
    from open_clip.loss import ClipLoss

    from .checkpoints import load_checkpoint, save_checkpoint
    from ..common.data import to_model_input
    from ..common.io import progress

    device = device or torch.device("cpu")
    steps, bs, seed = settings["steps"], settings["batch_size"], settings["seed"]
    optimizer = build_optimizer(model, settings["lr"], settings["weight_decay"],
                                projection_lr_scale=settings.get("projection_lr_scale", 1.0))
    loss_fn = ClipLoss()
    history: list[dict] = []
    window: list[tuple[float, float]] = []  # (loss, accuracy) of the steps since the last record
    start = 0
    if partial is not None and partial.exists():
        state = load_checkpoint(partial)
        if state.get("meta", {}).get("run_hash") == run_hash:
            model.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            start, history = int(state["meta"]["step"]), list(state["history"])
            window = [tuple(w) for w in state["window"]]
            log.info("resumed from %s at step %d", partial, start)
        else:
            log.warning("ignoring %s: written by other settings", partial)
    model.train()
    bar = progress(range(start, steps), desc="pretrain", unit="step", total=steps, initial=start)
    for step in bar:
        lr = lr_at(step, steps, settings["warmup_steps"], settings["lr"])
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        idx = batch_indices(len(data), bs, seed, step)
        images = to_model_input(data.images[idx], mean, std).to(device)
        tokens = batch_tokens(data, idx, augmented, seed, step).to(device)
        image_emb, text_emb, scale = model(images, tokens)
        loss = loss_fn(image_emb, text_emb, scale)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
            acc = (image_emb @ text_emb.T).argmax(1).eq(torch.arange(len(idx), device=device)).float().mean()
        window.append((float(loss.detach()), float(acc)))
        done = step + 1
        if done % settings["log_every"] == 0 or done == steps:
            history.append({"step": done, "loss": float(np.mean([w[0] for w in window])),
                            "clip_acc": float(np.mean([w[1] for w in window])), "lr": lr,
                            "logit_scale": float(model.logit_scale.detach().exp())})
            window = []
            log.info("step %d: %s", done, json.dumps({k: round(v, 5) for k, v in history[-1].items()}))
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", refresh=False)
        if partial is not None and done % settings["checkpoint_every"] == 0 and done < steps:
            save_checkpoint(partial, model.state_dict(), epoch=0, optimizer=optimizer.state_dict(),
                            meta={"run_hash": run_hash, "step": done}, history=history,
                            window=[list(w) for w in window])
        if on_step is not None:
            on_step(done)
    bar.close()
    return history


# ----------------------------------------------------------------------------- zero-shot check


@torch.no_grad()
def zero_shot_accuracy(model: torch.nn.Module, tokenizer, evalset, pre: dict, device: torch.device,
                       batch_size: int = 500) -> float:
    """Top-1 zero-shot accuracy on an evalsets.EvalSet (class vector = normalised template mean)."""
    from open_clip import build_zero_shot_classifier

    from .encode import embed_images

    model.eval()
    templates = [lambda c, t=t: t.format(c=c) for t in evalset.templates]
    classifier = build_zero_shot_classifier(model, tokenizer, evalset.classnames, templates,
                                            num_classes_per_batch=len(evalset.classnames), device=device)
    images = embed_images(model, evalset.batches(batch_size, pre["image_size"], pre.get("interpolation", "bicubic"),
                                                 pre.get("resize", "shorter_side_center_crop")),
                          pre, device, total=len(evalset))
    pred = (torch.from_numpy(images).to(device) @ classifier).argmax(1).cpu().numpy()
    return float((pred == evalset.labels).mean())


# ----------------------------------------------------------------------------- run / CLI


def run(config: dict, model_name: str, out: str | os.PathLike, train_log: str | os.PathLike,
        eval_sets: Sequence[str] = (), plot: str | os.PathLike | None = None,
        on_step: Callable[[int], None] | None = None, want_gpu: bool = False,
        initial_projections: str | os.PathLike | None = None) -> list[dict]:
    """Pretrain one model and write its checkpoint, JSON-lines log and (optionally) a plot and the
    projection matrices at initialisation (rows = output neurons, as evaluate writes the trained ones):
    the reference for how far pretraining moved them."""
    from .checkpoints import save_checkpoint
    from ..common.evalsets import open_set
    from ..common.io import config_hash, save_npz, sha256_file, write_lines
    from .clip import (
        build_model, get_tokenizer, model_config, num_parameters, preprocess_config, projection_matrices,
    )

    spec = check_model(config, model_name)
    if spec["source"] != "pretrain":
        raise InputError(f"models.{model_name}.source is {spec['source']!r}; only 'pretrain' models are trained here")
    for name in eval_sets:
        if name not in config["evaluate"]["sets"]:
            raise InputError(f"unknown evaluation set {name!r}; known: {sorted(config['evaluate']['sets'])}")
    settings = dict(config["pretrain"])
    settings["seed"] = spec.get("pretrain_seed", settings["seed"])   # a pretrain.seeds replica's own seed
    settings.pop("seeds", None)                                       # the replicas' list: not this run's
    augmented = spec.get("captions", "human") == "augmented"
    device = config_device(config, want_gpu)
    data_files = [config["data"]["train_csv"]] + (list(config["data"]["rewrites"]) if augmented else [])
    # Everything that determines the result (checkpoint_every does not): a partial file of another run
    # (other settings, architecture or data files) is never resumed from.
    run_hash = config_hash({"pretrain": {k: v for k, v in settings.items() if k != "checkpoint_every"},
                           "arch": model_config(spec["arch"]), "captions": spec.get("captions", "human"),
                           **_preprocess_hash(spec),
                           "device": device.type, "data": [sha256_file(f) for f in data_files if os.path.isfile(f)]})
    torch.manual_seed(settings["seed"])
    model = build_model(spec["arch"]).to(device)
    if initial_projections:
        image_p, text_p = projection_matrices(model)
        save_npz(initial_projections, image=image_p.cpu().numpy(), text=text_p.cpu().numpy())
    # training images as the model's finetune stage (LaCLIP pretrained and fine-tuned with one train.py);
    # the final zero-shot check as its evaluate stage
    pre = preprocess_config(model, spec, "finetune")
    eval_pre = preprocess_config(model, spec, "evaluate")
    tokenizer = get_tokenizer(spec["arch"])
    log.info("%s: %s, %d parameters, captions %s, %d steps of %d on %s (%d threads)", model_name, spec["arch"],
             num_parameters(model), spec.get("captions", "human"), settings["steps"], settings["batch_size"],
             device, torch.get_num_threads())
    data = load_pairs(config, tokenizer, pre["image_size"], augmented, pre)
    out = Path(out)
    partial = out.with_name(PARTIAL_NAME)
    history = train(model, data, settings, pre["mean"], pre["std"], augmented, partial=partial, run_hash=run_hash,
                    device=device, on_step=on_step)
    model.eval()
    zero_shot = {}
    for name in eval_sets:
        evalset = open_set(name, config["evaluate"]["sets"][name], config["evaluate"]["templates"])
        zero_shot[name] = zero_shot_accuracy(model, tokenizer, evalset, eval_pre, device)
        log.info("zero-shot %s: %.4f (chance %.4f)", name, zero_shot[name], 1 / len(evalset.classnames))
    records = history + ([{"step": settings["steps"], "zero_shot": zero_shot}] if zero_shot else [])
    meta = {"model": model_name, "arch": spec["arch"], "source": "pretrain", "captions": spec.get("captions", "human"),
            "steps": settings["steps"], "seed": settings["seed"], "config_hash": run_hash, "zero_shot": zero_shot,
            "final_loss": history[-1]["loss"] if history else None}
    epochs = settings["steps"] * settings["batch_size"] // len(data)  # completed passes over the pairs
    save_checkpoint(out, model.cpu().state_dict(), epoch=epochs, optimizer=None, meta=meta)
    write_lines(train_log, [json.dumps(r, sort_keys=True) for r in records])
    if plot:
        plot_history(history, zero_shot, model_name, plot)
    partial.unlink(missing_ok=True)
    log.info("wrote %s and %s", out, train_log)
    return records


def _preprocess_hash(spec: dict) -> dict:
    """The training-image preprocessing for the run hash, left out when it is the default (OpenAI mean/std,
    bicubic, shorter side + centre crop), so that default runs keep the hash (and checkpoint) they had."""
    from .clip import OPENAI_MEAN, OPENAI_STD

    given = (spec.get("preprocess") or {}).get("finetune") or {}
    default = {"mean": [float(v) for v in OPENAI_MEAN], "std": [float(v) for v in OPENAI_STD],
               "interpolation": "bicubic", "resize": "shorter_side_center_crop"}
    used = {"mean": [float(v) for v in given.get("mean") or spec.get("image_mean") or OPENAI_MEAN],
            "std": [float(v) for v in given.get("std") or spec.get("image_std") or OPENAI_STD],
            "interpolation": given.get("interpolation", "bicubic"),
            "resize": given.get("resize", "shorter_side_center_crop")}
    return {} if used == default else {"preprocess": used}


def plot_history(history: list[dict], zero_shot: dict, title: str, path: str | os.PathLike) -> None:
    """Loss and logit scale against step (zero-shot accuracies in the title), PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..common.io import atomic_path

    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    ax.plot(steps, [r["loss"] for r in history], label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["logit_scale"] for r in history], color="tab:orange", label="logit scale")
    ax2.set_ylabel("logit scale")
    acc = ", ".join(f"{k} {v:.2f}" for k, v in zero_shot.items())
    ax.set_title(title + ("\n" + textwrap.fill(f"zero-shot: {acc}", 70) if acc else ""), fontsize=8)
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.8), fontsize=8, frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config
    from ..common.io import setup_logging

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="workflow config (YAML)")
    ap.add_argument("--model", required=True, help="model name (a key of models with source: pretrain)")
    ap.add_argument("--out", required=True, help="output checkpoint")
    ap.add_argument("--train-log", required=True, help="JSON-lines training log")
    ap.add_argument("--plot", help="training curve image (PNG/SVG)")
    ap.add_argument("--initial-projections", help="write the projection matrices at initialisation (.npz)")
    ap.add_argument("--eval-sets", nargs="*", default=[], help="evaluate.sets names for a final zero-shot check")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--gpus", type=int, default=0, help="GPUs this job was given (0 = CPU); a job given a GPU that "
                    "finds none fails unless compute.allow_cpu_fallback")
    ap.add_argument("--log", help="log file")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    run(config, args.model, args.out, args.train_log, args.eval_sets, args.plot, want_gpu=args.gpus > 0,
        initial_projections=args.initial_projections)
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
