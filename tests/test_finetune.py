"""Projection-only fine-tuning: schedule and loss against references, cached == end-to-end,
2-process gloo == 1 process, and exact resume after SIGTERM."""

from __future__ import annotations

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

from workflow_scripts import distributed, finetune
from workflow_scripts.config import validate_config
from workflow_scripts.io import load_npz

REPO = Path(__file__).resolve().parents[1]
SINGLE = distributed.Dist(0, 1, 0, torch.device("cpu"))


def reference_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs, start_warmup_value):
    """The original utils.cosine_scheduler, transcribed from seed_spec.md section 2.4."""
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


# (dtype, logit scale): one shared exp (float64, or float32 at CLIP's usual scales), and the two-exp
# path that float32 needs at large scales (exp(-2 s) below the smallest normal float)
SCALES = [(torch.float64, 14.3), (torch.float32, 14.3), (torch.float64, 400.0), (torch.float32, 100.0)]


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("dtype, scale", SCALES)
def test_clip_loss_grads_match_open_clip_and_autograd(world_size, dtype, scale):
    """Loss, accuracy and gradients equal autograd through open_clip's ClipLoss and through the original's
    per-rank losses (local rows against the gathered batch, DDP-averaged), in float64."""
    from open_clip.loss import ClipLoss
    from torch.nn.functional import normalize

    g = torch.Generator().manual_seed(world_size)
    img = torch.randn(12, 8, generator=g, dtype=torch.float64) * 0.3
    txt = img + 0.8 * torch.randn(12, 8, generator=g, dtype=torch.float64)   # partly aligned pairs
    img[3] *= 1e-3                                   # a short row: the normalisation's gradient matters
    txt[7] = txt[5]                                  # tied logits: argmax takes the first
    loss, acc, grad_img, grad_txt = finetune.clip_loss_grads(img.to(dtype), txt.to(dtype), scale)
    assert grad_img.dtype == dtype
    ref = ClipLoss()(normalize(img, dim=-1), normalize(txt, dim=-1), scale)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 1e-6}
    assert float(loss) == pytest.approx(float(ref), rel=tol["rtol"])
    logits = normalize(img, dim=-1) @ normalize(txt, dim=-1).t()
    assert float(acc) == pytest.approx(100 * float((logits.argmax(1) == torch.arange(12)).double().mean()))
    a, b = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    original = _original_rank_losses(a, b, scale, world_size)
    original.backward()
    assert float(original.detach()) == pytest.approx(float(ref), rel=1e-12)
    if dtype == torch.float32:   # float32 rounding, relative to the largest gradient (the short row's)
        tol["atol"] = 2e-4 * float(a.grad.abs().max())
    torch.testing.assert_close(grad_img.double(), a.grad, **tol)
    torch.testing.assert_close(grad_txt.double(), b.grad, **tol)
    assert grad_img.abs().max() > 1e-3, "degenerate test: no gradient"


def test_adamw_equals_torch_optim_adamw():
    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]
    ref = [torch.nn.Parameter(t.clone()) for t in ours]
    opt_ref = torch.optim.AdamW(ref, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.5, foreach=False)
    opt = finetune.AdamW(ours, (0.9, 0.98), 1e-8, 0.5)
    for step in range(30):
        lr = 1e-3 * (1 + step) / 30
        grads = [torch.randn(t.shape, generator=g) for t in ours]
        for p, grad in zip(ref, grads):
            p.grad = grad.clone()
        for group in opt_ref.param_groups:
            group["lr"] = lr
        opt_ref.step()
        opt.step(grads, lr)
        if step == 14:                                   # a resume in the middle changes nothing
            state = opt.state_dict()
            opt = finetune.AdamW(ours, (0.9, 0.98), 1e-8, 0.5)
            opt.load_state_dict(state)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(ours[0], torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))


def test_clip_loss_grads_zero_row_follows_f_normalize():
    """A row shorter than eps: F.normalize divides by eps, so its gradient is the plain gradient / eps."""
    from open_clip.loss import ClipLoss
    from torch.nn.functional import normalize

    g = torch.Generator().manual_seed(7)
    img = torch.randn(6, 4, generator=g, dtype=torch.float64)
    img[2] = 1e-14
    txt = torch.randn(6, 4, generator=g, dtype=torch.float64)
    _, _, grad_img, _ = finetune.clip_loss_grads(img, txt, 10.0)
    a = img.clone().requires_grad_(True)
    ClipLoss()(normalize(a, dim=-1), normalize(txt, dim=-1), 10.0).backward()
    torch.testing.assert_close(grad_img, a.grad, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- end-to-end fixtures


@pytest.fixture(scope="module")
def setup(tiny_world, tmp_path_factory):
    """A config over the tiny world and a randomly initialised 'pretrained' checkpoint."""
    from workflow_scripts.checkpoints import save_checkpoint
    from workflow_scripts.models import build_model

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
    from workflow_scripts.features import extract

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
    from workflow_scripts.models import load_model, projection_matrices

    model = load_model(setup["cfg"]["models"]["m"], setup["ckpt"])
    image, text = projection_matrices(model)
    return {"image": image.numpy(), "text": text.numpy()}


def test_checkpoint_is_loadable_and_only_projections_changed(setup, cache):
    from workflow_scripts.checkpoints import load_checkpoint
    from workflow_scripts.models import projection_parameters, build_model

    out = setup["tmp"] / "ckpt"
    _run(setup, out, "cached", cache)
    before = load_checkpoint(setup["ckpt"])["state_dict"]
    after = load_checkpoint(out / "checkpoint.pt")
    assert after["meta"]["strategy"] == "similarity" and after["epoch"] == 3
    names = {n for n, p in build_model("fp-test-vit").named_parameters()
             if any(p is q for q in projection_parameters(build_model("fp-test-vit")).values())}
    changed = {k for k in before if not torch.equal(before[k], after["state_dict"][k])}
    assert changed and all(("proj" in k) for k in changed), changed
    assert "logit_scale" not in changed
    assert not (out / finetune.RESUME_NAME).exists()


def _torchrun(setup, cache, out_dir, nproc, batch):
    cfg = {**setup["cfg"], "finetune": {**setup["cfg"]["finetune"], "batch_size": batch}}
    cfg_path = Path(out_dir).parent / f"cfg_{nproc}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "workflow_scripts.finetune", "--config", str(cfg_path), "--model", "m", "--strategy", "random",
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
        return [sys.executable, "-m", "workflow_scripts.finetune", "--config", str(cfg_path), "--model", "m",
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
    from workflow_scripts.errors import InputError

    bad = tmp_path / "train.csv"
    lines = Path(setup["csv"]).read_text().splitlines()
    bad.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(InputError, match="differs from the feature cache"):
        finetune.CachedFeatures(cache, str(bad), torch.device("cpu"))
    bad.write_text("\n".join(lines[:-1] + [lines[-1].split(",")[0] + ",a caption nobody wrote"]) + "\n")
    with pytest.raises(InputError, match=r"train.csv:200: caption not in the feature cache"):
        finetune.CachedFeatures(cache, str(bad), torch.device("cpu"))
