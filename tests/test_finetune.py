"""Projection-only fine-tuning: schedule and loss against references, cached == end-to-end,
2-process gloo == 1 process, and exact resume after SIGTERM."""

from __future__ import annotations

import copy
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from workflow_scripts.common import distributed
from workflow_scripts.finetune import train as finetune
from workflow_scripts.common.config import validate_config
from workflow_scripts.common.io import load_npz

REPO = Path(__file__).resolve().parents[1]
SINGLE = distributed.Dist(0, 1, 0, torch.device("cpu"))


def reference_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs, start_warmup_value):
    """The original utils.cosine_scheduler, transcribed from docs/original_code.md"""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = np.array([final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / len(iters))) for i in iters])
    return np.concatenate((warmup, schedule))


def test_lr_schedule_matches_original():
    got = finetune.lr_schedule(1e-3, 1e-6, 1e-5, 1, 10, 13)
    want = reference_cosine_scheduler(1e-3, 1e-5, 10, 13, 1, 1e-6)
    assert got.shape == (130,)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == 1e-6 and got[12] == pytest.approx(1e-3) and got[-1] > 1e-5


def test_epoch_batches_seeded_drop_last():
    a = finetune.epoch_batches(103, 10, seed=1, epoch=0)
    assert a.shape == (10, 10) and len(set(a.ravel())) == 100
    np.testing.assert_array_equal(a, finetune.epoch_batches(103, 10, seed=1, epoch=0))
    assert not np.array_equal(a, finetune.epoch_batches(103, 10, seed=1, epoch=1))
    assert not np.array_equal(a, finetune.epoch_batches(103, 10, seed=2, epoch=0))


def _original_rank_losses(img, txt, scale, world_size):
    """The original CLIPLoss as each of `world_size` ranks computes it (local rows against the gathered
    batch, labels offset by the rank), averaged over ranks as DDP averages their gradients."""
    from torch.nn.functional import cross_entropy, normalize

    img, txt = normalize(img, dim=-1), normalize(txt, dim=-1)
    n = img.shape[0] // world_size
    total = 0.0
    for rank in range(world_size):
        rows = slice(rank * n, (rank + 1) * n)
        labels = torch.arange(n) + n * rank
        total = total + (cross_entropy(scale * img[rows] @ txt.t(), labels)
                         + cross_entropy(scale * txt[rows] @ img.t(), labels)) / 2
    return total / world_size


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("dtype, scale", [(torch.float64, 14.3), (torch.float32, 14.3), (torch.float32, 100.0)])
def test_clip_loss_matches_open_clip_and_the_original_ranks(world_size, dtype, scale):
    """Loss, accuracy and autograd gradients equal open_clip's ClipLoss and the original's per-rank losses
    (local rows against the gathered batch, DDP-averaged); a short and a near-zero row exercise F.normalize."""
    from open_clip.loss import ClipLoss
    from torch.nn.functional import normalize

    g = torch.Generator().manual_seed(world_size)
    img = torch.randn(12, 8, generator=g, dtype=torch.float64) * 0.3
    txt = img + 0.8 * torch.randn(12, 8, generator=g, dtype=torch.float64)   # partly aligned pairs
    img[3] *= 1e-3                                   # a short row: the normalisation's gradient matters
    img[9] = 1e-14                                   # shorter than F.normalize's eps
    txt[7] = txt[5]                                  # tied logits: argmax takes the first
    a = img.to(dtype).clone().requires_grad_(True)
    b = txt.to(dtype).clone().requires_grad_(True)
    loss, acc = finetune.clip_loss(a, b, scale)
    loss.backward()
    ra, rb = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    ref = ClipLoss()(normalize(ra, dim=-1), normalize(rb, dim=-1), scale)
    original = _original_rank_losses(img.clone().requires_grad_(True), txt, scale, world_size)
    ref.backward()
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 1e-6}
    assert float(loss) == pytest.approx(float(ref), rel=tol["rtol"])
    assert float(original) == pytest.approx(float(ref), rel=1e-12)
    logits = normalize(img, dim=-1) @ normalize(txt, dim=-1).t()
    assert float(acc) == pytest.approx(100 * float((logits.argmax(1) == torch.arange(12)).double().mean()))
    if dtype == torch.float32:   # float32 rounding, relative to the largest gradient (the short rows')
        tol["atol"] = 2e-4 * float(ra.grad.abs().max())
    torch.testing.assert_close(a.grad.double(), ra.grad, **tol)
    torch.testing.assert_close(b.grad.double(), rb.grad, **tol)
    assert a.grad.abs().max() > 1e-3, "degenerate test: no gradient"


def test_gathered_rows_carry_the_global_batch_gradient():
    """Summed over ranks, each rank's gradient of the global-batch loss with only its own rows attached (what
    _step all-reduces) equals the gradient of the whole batch's loss."""
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(12, 8, generator=g, dtype=torch.float64), torch.randn(12, 8, generator=g, dtype=torch.float64)
    whole = img.clone().requires_grad_(True)
    finetune.clip_loss(whole, txt, 14.3)[0].backward()
    total = torch.zeros_like(img)
    for rank in range(3):
        rows = slice(4 * rank, 4 * rank + 4)
        own = img[rows].clone().requires_grad_(True)
        parts = list(img.split(4))
        parts[rank] = own
        finetune.clip_loss(torch.cat(parts), txt, 14.3)[0].backward()
        total[rows] += own.grad
    torch.testing.assert_close(total, whole.grad, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- end-to-end fixtures


@pytest.fixture(scope="module")
def setup(tiny_world, tmp_path_factory):
    """A config over the tiny world and a randomly initialised 'pretrained' checkpoint."""
    from workflow_scripts.models.checkpoints import save_checkpoint
    from workflow_scripts.models.clip import build_model

    tmp = tmp_path_factory.mktemp("ft")
    cfg = validate_config({
        "world": {"enabled": False},
        "data": {"train_csv": str(tiny_world / "train.csv"), "image_root": str(tiny_world),
                 "captions": str(tiny_world / "captions.txt"), "rewrites": []},
        "models": {"m": {"source": "pretrain", "arch": "fp-test-vit"}},
        "finetune": {"models": ["m"], "epochs": 3, "batch_size": 32, "lr": 5e-3, "views": 1, "augment": False,
                     "checkpoint_every": 1},
        "evaluate": {"sets": {"shape": {"kind": "imagefolder", "root": str(tiny_world / "eval/shape")}},
                     "batch_size": 64, "pruning": {"models": ["m"]}},
        "compute": {"device": "cpu"},
    })
    torch.manual_seed(0)
    model = build_model("fp-test-vit")
    ckpt = tmp / "pretrained.pt"
    save_checkpoint(ckpt, model.state_dict(), epoch=0, meta={"arch": "fp-test-vit"})
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    return {"cfg": cfg, "cfg_path": cfg_path, "ckpt": str(ckpt), "tmp": tmp, "csv": str(tiny_world / "train.csv")}


@pytest.fixture(scope="module")
def cache(setup):
    from workflow_scripts.finetune.features import extract

    out = setup["tmp"] / "features.npz"
    extract(setup["cfg"], "m", setup["ckpt"], str(out))
    return str(out)


def _run(setup, out_dir, mode="cached", cache=None, **overrides):
    cfg = {**setup["cfg"], "finetune": {**setup["cfg"]["finetune"], "mode": mode, **overrides}}
    finetune.run(cfg, "m", "similarity", 0.0, 0, setup["ckpt"], setup["csv"], cache, str(out_dir))
    return load_npz(Path(out_dir) / "projections.npz")


def test_cached_equals_end_to_end(setup, cache):
    cached = _run(setup, setup["tmp"] / "cached", "cached", cache)
    e2e = _run(setup, setup["tmp"] / "e2e", "end2end")
    initial = load_npz_initial(setup)
    assert not np.allclose(cached["text"], initial["text"], atol=1e-4), "fine-tune did not move the projections"
    np.testing.assert_allclose(cached["image"], e2e["image"], atol=2e-5)
    np.testing.assert_allclose(cached["text"], e2e["text"], atol=2e-5)
    lines = (setup["tmp"] / "cached" / "log.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"clip_acc"' in lines[0]


def load_npz_initial(setup):
    from workflow_scripts.models.clip import load_model, projection_matrices

    model = load_model(setup["cfg"]["models"]["m"], setup["ckpt"])
    image, text = projection_matrices(model)
    return {"image": image.numpy(), "text": text.numpy()}


def test_checkpoint_holds_the_projections_and_materializes_bit_identical_towers(setup, cache, tmp_path):
    """checkpoint.pt holds exactly the projection parameters (named as in the state dict) and the pretrained
    file's identity; materialised, every other tensor is bit-identical to the pretrained one and every
    projection equals projections.npz. Projection keys are the model's own projection parameters, not a
    substring match ('proj' also matches tower keys such as attn.in_proj_weight)."""
    from workflow_scripts.models.checkpoints import load_checkpoint, main as checkpoints_main
    from workflow_scripts.common.errors import InputError
    from workflow_scripts.models.clip import build_model, projection_parameters

    out = setup["tmp"] / "ckpt"
    _run(setup, out, "cached", cache)
    before = load_checkpoint(setup["ckpt"])["state_dict"]
    after = load_checkpoint(out / "checkpoint.pt")
    assert after["meta"]["strategy"] == "similarity" and after["epoch"] == 3
    projection_keys = set(projection_parameters(build_model("fp-test-vit")))
    assert any("in_proj" in k for k in before)            # the substring trap exists in this model
    assert set(after["state_dict"]) == projection_keys
    assert not (out / finetune.RESUME_NAME).exists()
    full_path = tmp_path / "full.pt"
    assert checkpoints_main([str(out / "checkpoint.pt"), "--out", str(full_path)]) == 0
    full = load_checkpoint(full_path)["state_dict"]
    assert set(full) == set(before)
    unchanged = [k for k in before if k not in projection_keys]
    assert unchanged and all(torch.equal(before[k], full[k]) for k in unchanged)
    assert all(not torch.equal(before[k], full[k]) for k in projection_keys)
    projections = load_npz(out / "projections.npz")
    np.testing.assert_array_equal(full["visual.proj"].t().numpy(), projections["image"])
    np.testing.assert_array_equal(full["text_projection"].t().numpy(), projections["text"])
    # a different pretrained file is refused, naming both
    other = tmp_path / "other.pt"
    from workflow_scripts.models.checkpoints import save_checkpoint
    save_checkpoint(other, {k: v + 1 for k, v in before.items()}, epoch=0)
    with pytest.raises(InputError, match="SHA-256"):
        checkpoints_main([str(out / "checkpoint.pt"), "--out", str(tmp_path / "x.pt"), "--pretrained", str(other)])
    assert not (tmp_path / "x.pt").exists()


# ----------------------------------------------------------------------------- the loop against a plain reference

# The original train.py trains exactly the parameters whose name contains "image_projection" or
# "text_projection" (docs/original_code.md, "Exp 3, stage 2"); these are the open_clip names of those two LaCLIP parameters.
LACLIP_NAME = {"visual.proj": "image_projection", "visual.head.proj.weight": "image_projection",
               "text_projection": "text_projection"}


def reference_finetune(model, batches: list[np.ndarray], image_f: torch.Tensor, text_f: torch.Tensor,
                       settings: dict, iters_per_epoch: int) -> list[float]:
    """A plain projection-only fine-tune written as the original train.py runs it, independent of finetune.py:
    parameters frozen by name, torch.optim.AdamW over the original's decay / no-decay groups, the lr set per
    step from the original cosine_scheduler, autograd through open_clip's ClipLoss, logit_scale clamped
    after each step. The projections apply to tower features as open_clip's ViT applies them (x @ P).
    Trains `model` in place over the given index batches; returns the per-step losses."""
    from open_clip.loss import ClipLoss
    from torch.nn.functional import normalize

    for name, p in model.named_parameters():
        original_name = LACLIP_NAME.get(name, name)
        p.requires_grad_("image_projection" in original_name or "text_projection" in original_name)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in trainable if p.ndim < 2 or "bias" in n or "ln" in n or "bn" in n]
    decay = [p for n, p in trainable if all(p is not q for q in no_decay)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=settings["lr"], betas=tuple(settings["betas"]), eps=settings["eps"])
    lrs = reference_cosine_scheduler(settings["lr"], settings["lr_end"], settings["epochs"], iters_per_epoch,
                                     settings["warmup_epochs"], settings["lr_start"])
    criterion, losses = ClipLoss(), []
    for it, idx in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = lrs[it]
        i = torch.as_tensor(idx)
        image_embed, text_embed = image_f[i] @ model.visual.proj, text_f[i] @ model.text_projection
        loss = criterion(normalize(image_embed, dim=-1), normalize(text_embed, dim=-1), model.logit_scale.exp())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.logit_scale.data.clamp_(0, 4.6052)
        losses.append(float(loss))
    return losses


def _aligned_features(model, n: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Tower features of n aligned pairs: text = image @ R + noise, in the model's tower widths."""
    g = torch.Generator().manual_seed(seed)
    image_f = torch.randn(n, model.visual.proj.shape[0], generator=g, dtype=dtype)
    width = model.text_projection.shape[0]
    text_f = image_f @ torch.randn(image_f.shape[1], width, generator=g, dtype=dtype) \
        + 0.5 * torch.randn(n, width, generator=g, dtype=dtype)
    return image_f, text_f


class RecordingFeatures:
    """A cached-feature source over in-memory tensors that records the batches the loop asks for."""

    def __init__(self, image_f: torch.Tensor, text_f: torch.Tensor):
        self.image_f, self.text_f, self.batches = image_f, text_f, []

    def __call__(self, idx: np.ndarray, epoch: int, step: int):
        self.batches.append(np.array(idx))
        i = torch.as_tensor(self.batches[-1])
        return self.image_f[i], self.text_f[i]


def _finetune(model, features, n: int, settings: dict, seed: int = 0):
    """finetune.train on (copies of) the model's projections; returns them as [out, in] matrices
    (image, text) and the per-epoch log."""
    from workflow_scripts.models.clip import Head

    head = Head.from_model(model)
    history = finetune.train(head, features, n, settings, seed, SINGLE)
    return head.matrices(), history


def test_train_equals_plain_autograd_adamw_reference(setup):
    """Four epochs (warmup, cosine, weight decay, partial last batch dropped) of finetune.train against the
    reference loop on the same batches: the projections agree to 1e-6 and the per-epoch mean losses to
    1e-9 relative. Float64, so that the comparison measures the algorithm rather than float32 rounding."""
    from workflow_scripts.models.clip import build_model

    settings = {**setup["cfg"]["finetune"], "epochs": 4, "batch_size": 16, "lr": 5e-3, "lr_start": 1e-5,
                "lr_end": 1e-4, "warmup_epochs": 1, "weight_decay": 0.5, "checkpoint_every": 100}
    torch.manual_seed(0)
    model = build_model("fp-test-vit").double()
    reference = copy.deepcopy(model)
    initial = (model.visual.proj.detach().t().clone(), model.text_projection.detach().t().clone())
    n = 100
    image_f, text_f = _aligned_features(model, n, seed=1, dtype=torch.float64)
    source = RecordingFeatures(image_f, text_f)
    (image, text), history = _finetune(model, source, n, settings)
    iters = n // settings["batch_size"]
    assert len(source.batches) == 4 * iters and all(len(b) == 16 for b in source.batches)
    losses = reference_finetune(reference, source.batches, image_f, text_f, settings, iters)
    want = (reference.visual.proj.detach().t(), reference.text_projection.detach().t())
    assert (image - initial[0]).abs().max() > 1e-2 and (text - initial[1]).abs().max() > 1e-2, "nothing trained"
    torch.testing.assert_close(image, want[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(text, want[1], rtol=0, atol=1e-6)
    per_epoch = np.asarray(losses).reshape(4, iters).mean(1)
    np.testing.assert_allclose([r["loss"] for r in history], per_epoch, rtol=1e-9)


def test_loss_decreases_on_aligned_pairs(setup):
    """On aligned pairs the logged loss falls every epoch, to well below chance (log of the batch size: what
    merely shrinking the logits reaches), and the batch retrieval accuracy rises far above chance."""
    from workflow_scripts.models.clip import build_model

    settings = {**setup["cfg"]["finetune"], "epochs": 4, "batch_size": 64, "lr": 5e-3, "warmup_epochs": 1,
                "checkpoint_every": 100}
    torch.manual_seed(0)
    model = build_model("fp-test-vit")
    n = 512
    _, history = _finetune(model, RecordingFeatures(*_aligned_features(model, n, seed=2)), n, settings)
    losses = [r["loss"] for r in history]
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * math.log(64), losses
    assert history[0]["clip_acc"] < 10 < 50 < history[-1]["clip_acc"], history


def _torchrun(setup, cache, out_dir, nproc, batch):
    cfg = {**setup["cfg"], "finetune": {**setup["cfg"]["finetune"], "batch_size": batch}}
    cfg_path = Path(out_dir).parent / f"cfg_{nproc}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "workflow_scripts.finetune.train", "--config", str(cfg_path), "--model", "m", "--strategy", "random",
           "--cs", "0.5", "--seed", "1", "--pretrained", setup["ckpt"], "--train-csv", setup["csv"],
           "--features", cache, "--out-dir", str(out_dir)]
    subprocess.run(cmd, check=True, env=env, cwd=REPO, capture_output=True, timeout=300)
    return load_npz(Path(out_dir) / "projections.npz")


def test_two_process_gloo_equals_one_process(setup, cache):
    one = _torchrun(setup, cache, setup["tmp"] / "ddp1" / "out", 1, 32)
    two = _torchrun(setup, cache, setup["tmp"] / "ddp2" / "out", 2, 16)
    np.testing.assert_allclose(one["image"], two["image"], atol=2e-5)
    np.testing.assert_allclose(one["text"], two["text"], atol=2e-5)


def test_resume_after_sigterm_gives_same_projections(setup, cache):
    cfg = {**setup["cfg"], "finetune": {**setup["cfg"]["finetune"], "epochs": 40, "batch_size": 8}}
    cfg_path = setup["tmp"] / "cfg_resume.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def cmd(out):
        return [sys.executable, "-m", "workflow_scripts.finetune.train", "--config", str(cfg_path), "--model", "m",
                "--strategy", "similarity", "--cs", "0.0", "--seed", "3", "--pretrained", setup["ckpt"],
                "--train-csv", setup["csv"], "--features", cache, "--out-dir", str(out)]

    full = setup["tmp"] / "full"
    subprocess.run(cmd(full), check=True, env=env, cwd=REPO, capture_output=True, timeout=300)
    part = setup["tmp"] / "part"
    proc = subprocess.Popen(cmd(part), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = part / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, "the run ended before the signal: make it longer"
    assert (part / finetune.RESUME_NAME).exists() and not (part / "checkpoint.pt").exists()
    subprocess.run(cmd(part), check=True, env=env, cwd=REPO, capture_output=True, timeout=300)
    a, b = load_npz(full / "projections.npz"), load_npz(part / "projections.npz")
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["text"], b["text"])
    assert (full / "log.jsonl").read_text() == (part / "log.jsonl").read_text()


def test_mismatched_csv_is_refused(setup, cache, tmp_path):
    from workflow_scripts.common.errors import InputError

    bad = tmp_path / "train.csv"
    lines = Path(setup["csv"]).read_text().splitlines()
    bad.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(InputError, match="differs from the feature cache"):
        finetune.CachedFeatures(cache, str(bad), torch.device("cpu"))
    bad.write_text("\n".join(lines[:-1] + [lines[-1].split(",")[0] + ",a caption nobody wrote"]) + "\n")
    with pytest.raises(InputError, match=r"train.csv:200: caption not in the feature cache"):
        finetune.CachedFeatures(cache, str(bad), torch.device("cpu"))
