"""From-scratch pretraining: caption sampling, schedule, optimizer groups, determinism, resume."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from workflow_scripts.models import pretrain as P
from workflow_scripts.common.config import validate_config
from workflow_scripts.common.data import read_pairs_csv, read_text_lines
from workflow_scripts.common.errors import InputError

torch.set_num_threads(1)
ARCH = "fp-test-vit"


def make_config(world, steps=6, **pretrain):
    return validate_config({
        "world": {"enabled": False},
        "data": {"train_csv": str(world / "train.csv"), "image_root": str(world),
                 "captions": str(world / "captions.txt"),
                 "rewrites": [str(world / "rewrites_k0.txt"), str(world / "rewrites_k1.txt")]},
        "models": {"clip": {"source": "pretrain", "arch": ARCH, "captions": "human"},
                   "laclip": {"source": "pretrain", "arch": ARCH, "captions": "augmented"}},
        "pretrain": {"steps": steps, "batch_size": 32, "lr": 2e-3, "warmup_steps": 2, "seed": 0,
                     "log_every": 2, "checkpoint_every": 2, **pretrain},
        "finetune": {"models": ["clip"]},
        "evaluate": {"sets": {"shape": {"kind": "imagefolder", "root": str(world / "eval" / "shape")}},
                     "pruning": {"models": ["laclip"]}},
        "compute": {"device": "cpu"},
    })


def state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def same_weights(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- caption sampling


def test_caption_choices_follow_laclip_rule():
    """Reference: LaCLIP's CsvDatasetAugCap picks random.choice([csv caption] + rewrites) and falls back
    to the csv caption when the pick has fewer than 2 space-separated words."""
    captions = ["a red circle", "two blue squares", "stock photo"]
    rewrites = [["A big red circle.", "squares", "A photo."], ["Red disc here.", "", "Stock image here."]]
    texts, valid = P.caption_choices(captions, rewrites)
    rng = random.Random(0)
    for i, caption in enumerate(captions):
        options = [caption] + [r[i] for r in rewrites]
        for _ in range(20):
            k = rng.randrange(len(options))
            expected = options[k] if len(options[k].split(" ")) >= 2 else caption
            assert texts[k][i] == expected
    assert valid.tolist() == [[True] * 3, [True, False, True], [True, False, True]]


def test_augmented_sampling_is_uniform_and_respects_fallback():
    n, k = 6, 3
    tokens = torch.arange(k * n).view(k, n, 1).repeat(1, 1, 4)  # token value identifies (choice, sample)
    valid = torch.ones(k, n, dtype=torch.bool)
    valid[2, 0] = False  # sample 0's second rewrite is too short
    data = P.PairData(torch.zeros(n, 2, 2, 3, dtype=torch.uint8), tokens, valid)
    idx = torch.arange(n)
    counts = torch.zeros(k, n)
    for step in range(3000):
        picked = P.batch_tokens(data, idx, True, seed=0, step=step)[:, 0]
        counts[picked // n, picked % n] += 1
    assert torch.equal(P.batch_tokens(data, idx, False, 0, 0), tokens[0])  # human: always the csv caption
    freq = counts / 3000
    assert torch.allclose(freq[:, 1:], torch.full((k, n - 1), 1 / 3), atol=0.04)
    assert freq[2, 0] == 0 and freq[0, 0] == pytest.approx(2 / 3, abs=0.04)  # fallback to the csv caption
    again = P.batch_tokens(data, idx, True, seed=0, step=7)
    assert torch.equal(again, P.batch_tokens(data, idx, True, seed=0, step=7))


def test_batches_cover_each_epoch_once():
    n, bs = 50, 8
    per_epoch = n // bs
    for epoch in range(2):
        ids = torch.cat([P.batch_indices(n, bs, 0, epoch * per_epoch + s) for s in range(per_epoch)])
        assert len(set(ids.tolist())) == per_epoch * bs  # drop_last, no repeats within an epoch
    assert not torch.equal(P.batch_indices(n, bs, 0, 0), P.batch_indices(n, bs, 0, per_epoch))
    with pytest.raises(InputError, match="exceeds"):
        P.batch_indices(4, 8, 0, 0)


# ----------------------------------------------------------------------------- schedule and optimizer


def test_lr_schedule_matches_open_clip():
    from open_clip_train.scheduler import cosine_lr

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = cosine_lr(opt, 3e-3, warmup_length=7, steps=50)
    for step in range(50):
        assert P.lr_at(step, 50, 7, 3e-3) == pytest.approx(reference(step), rel=1e-12, abs=1e-15)
    assert P.lr_at(6, 50, 7, 3e-3) == pytest.approx(3e-3)
    assert P.lr_at(49, 50, 7, 3e-3) < 1e-5  # the cosine ends at the configured step count


def test_weight_decay_groups():
    from workflow_scripts.models.clip import build_model

    model = build_model(ARCH)
    opt = P.build_optimizer(model, 1e-3, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in opt.param_groups[0]["params"]}
    decay = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.0 and opt.param_groups[1]["weight_decay"] == 0.1
    assert "logit_scale" in no_decay and "visual.class_embedding" in no_decay
    assert all(n.endswith("bias") or "ln" in n or model.get_parameter(n).ndim < 2 for n in no_decay)
    assert {"visual.proj", "text_projection", "token_embedding.weight", "visual.conv1.weight"} <= decay
    assert no_decay | decay == set(names.values()) and not no_decay & decay


def test_projection_learning_rate_group():
    """projection_lr_scale puts exactly the two projection matrices in a third, decayed group whose lr the
    schedule scales; at 1 the groups are open_clip's two."""
    from workflow_scripts.models.clip import build_model

    model = build_model(ARCH)
    names = {id(p): n for n, p in model.named_parameters()}
    opt = P.build_optimizer(model, 1e-3, 0.1, projection_lr_scale=5.0)
    assert len(opt.param_groups) == 3
    proj = opt.param_groups[2]
    assert {names[id(p)] for p in proj["params"]} == {"visual.proj", "text_projection"}
    assert proj["weight_decay"] == 0.1 and proj["lr"] == pytest.approx(5e-3) and opt.param_groups[1]["lr"] == 1e-3
    decay = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert "visual.proj" not in decay and "token_embedding.weight" in decay
    assert len(P.build_optimizer(model, 1e-3, 0.1).param_groups) == 2


# ----------------------------------------------------------------------------- training runs


def test_few_steps_lower_the_loss_and_clamp_logit_scale(tiny_world):
    from open_clip.loss import ClipLoss

    from workflow_scripts.common.data import to_model_input
    from workflow_scripts.models.clip import build_model, get_tokenizer, preprocess_config

    config = make_config(tiny_world, steps=25)
    torch.manual_seed(0)
    model = build_model(ARCH)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0) + 0.5)  # above the cap: the first step must clamp it
    pre = preprocess_config(model, {})
    data = P.load_pairs(config, get_tokenizer(ARCH), pre["image_size"], augmented=False)
    images = to_model_input(data.images[:64], pre["mean"], pre["std"])

    def loss():
        model.eval()
        with torch.no_grad():
            return float(ClipLoss()(*model(images, data.tokens[0, :64])))

    scales = []
    before = loss()
    P.train(model, data, config["pretrain"], pre["mean"], pre["std"], augmented=False,
            on_step=lambda step: scales.append(model.logit_scale.item()))
    assert before - loss() > 0.2
    assert max(scales) <= math.log(100.0) + 1e-6


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory):
    """clip and laclip on the tiny world, run once and shared by the comparisons below."""
    out = tmp_path_factory.mktemp("pretrain")
    config = make_config(tiny_world)
    records = {}
    for name in ("clip", "laclip"):
        records[name] = P.run(config, name, out / name / "checkpoint.pt", out / name / "log.jsonl",
                              eval_sets=["shape"], plot=out / name / "training.png")
    return config, out, records


def test_run_outputs(runs):
    from workflow_scripts.models.clip import load_model

    config, out, records = runs
    raw = torch.load(out / "laclip" / "checkpoint.pt", weights_only=True)
    assert raw["epoch"] == 6 * 32 // 200 and raw["optimizer"] is None
    assert raw["meta"]["arch"] == ARCH and raw["meta"]["captions"] == "augmented" and raw["meta"]["steps"] == 6
    lines = [json.loads(x) for x in (out / "laclip" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines[:-1]] == [2, 4, 6]
    assert {"loss", "lr", "logit_scale", "clip_acc"} <= set(lines[0])
    assert 0.0 <= lines[-1]["zero_shot"]["shape"] <= 1.0
    assert (out / "laclip" / "training.png").stat().st_size > 1000
    assert not (out / "laclip" / P.PARTIAL_NAME).exists()
    model = load_model(config["models"]["laclip"], str(out / "laclip" / "checkpoint.pt"))
    assert same_weights(model.state_dict(), raw["state_dict"])


def test_clip_and_laclip_differ_only_in_caption_sampling(runs, tmp_path):
    """With rewrite files equal to the human captions, augmented sampling draws the same texts, so the
    weights equal the clip run bit for bit; with the real rewrites they differ."""
    config, out, _ = runs
    world = tmp_path / "world"
    shutil.copytree(config["data"]["image_root"], world, ignore=shutil.ignore_patterns("eval"))
    _, captions = read_pairs_csv(world / "train.csv")
    for k in range(2):
        assert read_text_lines(world / f"rewrites_k{k}.txt") != captions
        (world / f"rewrites_k{k}.txt").write_text("\n".join(captions) + "\n")
    same = make_config(world)
    P.run(same, "laclip", tmp_path / "laclip" / "checkpoint.pt", tmp_path / "laclip" / "log.jsonl")
    clip = state(out / "clip" / "checkpoint.pt")
    assert same_weights(state(tmp_path / "laclip" / "checkpoint.pt"), clip)
    assert not same_weights(state(out / "laclip" / "checkpoint.pt"), clip)


def test_seeded_rerun_identical_other_seed_differs(runs, tmp_path):
    """The same pretraining seed reproduces the run bit for bit, initial projections included; another
    seed starts from other initial projections (their hashes differ) and ends elsewhere; a replica
    <name>-p<seed> (pretrain_seed) is the run with that seed."""
    import hashlib

    from workflow_scripts.common.io import load_npz

    def digest(path):
        arrays = load_npz(path)
        return hashlib.sha256(b"".join(arrays[k].tobytes() for k in ("image", "text"))).hexdigest()

    config, out, records = runs
    P.run(config, "clip", tmp_path / "a" / "checkpoint.pt", tmp_path / "a" / "log.jsonl", eval_sets=["shape"],
          initial_projections=tmp_path / "a" / "initial.npz")
    P.run(config, "clip", tmp_path / "a2" / "checkpoint.pt", tmp_path / "a2" / "log.jsonl",
          initial_projections=tmp_path / "a2" / "initial.npz")
    assert same_weights(state(tmp_path / "a" / "checkpoint.pt"), state(out / "clip" / "checkpoint.pt"))
    assert (tmp_path / "a" / "log.jsonl").read_text() == (out / "clip" / "log.jsonl").read_text()
    assert digest(tmp_path / "a" / "initial.npz") == digest(tmp_path / "a2" / "initial.npz")
    other = make_config(Path(config["data"]["image_root"]), seed=1)
    P.run(other, "clip", tmp_path / "b" / "checkpoint.pt", tmp_path / "b" / "log.jsonl",
          initial_projections=tmp_path / "b" / "initial.npz")
    assert not same_weights(state(tmp_path / "b" / "checkpoint.pt"), state(out / "clip" / "checkpoint.pt"))
    assert digest(tmp_path / "b" / "initial.npz") != digest(tmp_path / "a" / "initial.npz")
    replica = {**config, "models": {**config["models"], "clip-p1": {**config["models"]["clip"], "pretrain_seed": 1}}}
    P.run(replica, "clip-p1", tmp_path / "c" / "checkpoint.pt", tmp_path / "c" / "log.jsonl",
          initial_projections=tmp_path / "c" / "initial.npz")
    assert digest(tmp_path / "c" / "initial.npz") == digest(tmp_path / "b" / "initial.npz")
    assert same_weights(state(tmp_path / "c" / "checkpoint.pt"), state(tmp_path / "b" / "checkpoint.pt"))
    init = load_npz(tmp_path / "a" / "initial.npz")
    trained = state(tmp_path / "a" / "checkpoint.pt")
    assert init["text"].shape == tuple(trained["text_projection"].T.shape)   # rows = output neurons
    assert not np.array_equal(init["text"], trained["text_projection"].T.numpy())


def test_interrupted_run_resumes_to_the_same_result(runs, tmp_path):
    config, out, _ = runs
    target = tmp_path / "checkpoint.pt"
    config = {**config, "pretrain": {**config["pretrain"], "checkpoint_every": 3}}  # mid log window

    def interrupt(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        P.run(config, "laclip", target, tmp_path / "log.jsonl", on_step=interrupt)
    partial = torch.load(tmp_path / P.PARTIAL_NAME, weights_only=True)
    assert partial["meta"]["step"] == 3 and len(partial["window"]) == 1 and not target.exists()
    resumed_at = []
    P.run(config, "laclip", target, tmp_path / "log.jsonl", eval_sets=["shape"], on_step=resumed_at.append)
    assert resumed_at == [4, 5, 6]  # continued from the partial checkpoint, not from scratch
    assert same_weights(state(target), state(out / "laclip" / "checkpoint.pt"))
    assert (tmp_path / "log.jsonl").read_text() == (out / "laclip" / "log.jsonl").read_text()
    assert not (tmp_path / P.PARTIAL_NAME).exists()


def test_partial_of_other_settings_is_ignored(runs, tmp_path):
    config, out, _ = runs
    other = make_config(Path(config["data"]["image_root"]), lr=1e-3)
    with pytest.raises(KeyboardInterrupt):
        P.run(other, "laclip", tmp_path / "checkpoint.pt", tmp_path / "log.jsonl",
              on_step=lambda s: (_ for _ in ()).throw(KeyboardInterrupt) if s == 3 else None)
    steps = []
    P.run(config, "laclip", tmp_path / "checkpoint.pt", tmp_path / "log.jsonl", on_step=steps.append)
    assert steps == list(range(1, 7))
    assert same_weights(state(tmp_path / "checkpoint.pt"), state(out / "laclip" / "checkpoint.pt"))


def test_cli_and_input_errors(tiny_world, tmp_path):
    import yaml

    config = make_config(tiny_world, steps=2)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "clip" / "checkpoint.pt"
    assert P.main(["--config", str(path), "--model", "clip", "--out", str(out), "--train-log",
                   str(tmp_path / "clip" / "log.jsonl"), "--threads", "1", "--eval-sets", "shape"]) == 0
    assert out.exists()
    with pytest.raises(InputError, match="unknown evaluation set 'nope'"):
        P.run(config, "clip", out, tmp_path / "l.jsonl", eval_sets=["nope"])
    bad = dict(config, data={**config["data"], "rewrites": [str(tiny_world / "captions.txt"), str(path)]})
    with pytest.raises(InputError, match="line i rewrites row i"):
        P.run(bad, "laclip", out, tmp_path / "l.jsonl")
