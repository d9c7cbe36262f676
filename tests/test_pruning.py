"""Exp 2 pruning against a transcription of run_eval_sam_sweep.py, and masking == zeroing projection neurons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import silhouette_score

from workflow_scripts.evaluate import pruning
from workflow_scripts.common.errors import InputError


def original_sweep(image_projection, text_projection, img_feats, txt_feats, labels, sam):
    """run_eval_sam_sweep.py lines 85-152 in torch: projections stored as x @ P (columns = neurons)."""
    F = torch.nn.functional
    I = F.normalize(torch.as_tensor(image_projection).T, dim=1)
    T = F.normalize(torch.as_tensor(text_projection).T, dim=1)
    CI, CT = I @ I.T, T @ T.T
    CI.fill_diagonal_(0)
    CT.fill_diagonal_(0)
    score = CI.abs().sum(1) + CT.abs().sum(1)
    out = {}
    for name, largest in (("Min Sparse Features", False), ("Max Sparse Features", True)):
        idx = torch.topk(score, sam, largest=largest).indices.numpy()
        new = np.zeros_like(img_feats)
        new[:, idx] = img_feats[:, idx]
        pred = (100.0 * new @ txt_feats.T).argmax(1)
        out[name] = (np.sort(idx), pred, np.mean(pred == labels), silhouette_score(new, labels, metric="cosine"))
    return out


@pytest.fixture(scope="module")
def world():
    """Random projections (x @ P layout) and features of a 6-class problem, embeddings as the original caches."""
    rng = np.random.default_rng(0)
    n, in_img, in_txt, n_classes = 24, 16, 12, 6
    image_projection = rng.normal(size=(in_img, n))
    image_projection[:, :6] += 0.8 * rng.normal(size=(in_img, 1))   # some neurons share a direction: impure
    text_projection = rng.normal(size=(in_txt, n))
    labels = np.repeat(np.arange(n_classes), 20)
    feats = rng.normal(size=(n_classes, in_img))[labels] + 1.2 * rng.normal(size=(len(labels), in_img))
    img = feats @ image_projection
    img = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32)
    txt = rng.normal(size=(n_classes, n))
    txt = (txt / np.linalg.norm(txt, axis=1, keepdims=True)).astype(np.float32)
    return dict(image_projection=image_projection, text_projection=text_projection, feats=feats, img=img,
                txt=txt, labels=labels, n=n)


def test_neuron_scores_match_original(world):
    scores = pruning.neuron_scores(world["image_projection"].T, world["text_projection"].T)
    I = world["image_projection"].T / np.linalg.norm(world["image_projection"].T, axis=1, keepdims=True)
    T = world["text_projection"].T / np.linalg.norm(world["text_projection"].T, axis=1, keepdims=True)
    ref = [sum(abs(I[j] @ I[i]) + abs(T[j] @ T[i]) for i in range(world["n"]) if i != j) for j in range(world["n"])]
    np.testing.assert_allclose(scores, ref, rtol=1e-12)
    with pytest.raises(InputError, match="neurons"):
        pruning.neuron_scores(world["image_projection"].T, world["text_projection"].T[:-1])


@pytest.mark.parametrize("sam", [9, 15, 20])
def test_sweep_matches_original(world, sam):
    ref = original_sweep(world["image_projection"], world["text_projection"], world["img"], world["txt"],
                         world["labels"], sam)
    scores = pruning.neuron_scores(world["image_projection"].T, world["text_projection"].T)
    variants = pruning.kept_sets(scores, [sam], ("high_purity", "low_purity"))
    sets = {"toy": {"image": world["img"], "classifier": world["txt"].T, "labels": world["labels"]}}
    table = pruning.pruning_sweep(sets, variants, world["n"]).set_index(["strategy", "metric"])["value"]
    for strategy, name in (("high_purity", "Min Sparse Features"), ("low_purity", "Max Sparse Features")):
        idx, pred, acc, sil = ref[name]
        kept = next(v.kept for v in variants if v.strategy == strategy)
        np.testing.assert_array_equal(kept, idx)
        masked = pruning.prune_embeddings(world["img"], kept)
        np.testing.assert_array_equal((masked @ world["txt"].T).argmax(1), pred)
        assert table[(strategy, "acc1")] == pytest.approx(acc)
        assert table[(strategy, "silhouette")] == pytest.approx(sil, abs=1e-6)


def test_masking_cached_embeddings_equals_zeroing_projection_neurons(world):
    """The original masks normalised embeddings; zeroing the kept-out projection columns and re-extracting
    gives a rescaled copy of each row, hence the same predictions and cosine silhouette."""
    kept = np.array([0, 3, 4, 8, 9, 13, 17, 21, 22, 23])
    P = world["image_projection"].copy()
    P[:, np.setdiff1d(np.arange(world["n"]), kept)] = 0.0
    reextracted = world["feats"] @ P
    reextracted /= np.linalg.norm(reextracted, axis=1, keepdims=True)
    masked = pruning.prune_embeddings(world["img"], kept)
    assert np.all(masked[:, np.setdiff1d(np.arange(world["n"]), kept)] == 0)
    np.testing.assert_array_equal(masked[:, kept], world["img"][:, kept])          # no renormalisation
    assert not np.allclose(np.linalg.norm(masked, axis=1), 1.0)
    np.testing.assert_array_equal((reextracted @ world["txt"].T).argmax(1), (masked @ world["txt"].T).argmax(1))
    ours = pruning.evaluate_kept(world["img"], world["txt"].T, world["labels"], kept)
    assert ours["silhouette"] == pytest.approx(silhouette_score(reextracted, world["labels"], metric="cosine"), abs=1e-6)
    assert ours["acc1"] == pytest.approx(np.mean((reextracted @ world["txt"].T).argmax(1) == world["labels"]))


def test_kept_sets_rules():
    scores = np.array([3.0, 1.0, 2.0, 1.0, 5.0, 0.5, 4.0, 2.0])
    v = pruning.kept_sets(scores, [2, 3, 5], random_draws=5, seed=7)
    get = {(k.strategy, k.size, k.draw): k.kept for k in v}
    np.testing.assert_array_equal(get[("high_purity", 2, 0)], [1, 5])        # lowest; tie 1 vs 3 -> lower index
    np.testing.assert_array_equal(get[("high_purity", 3, 0)], [1, 3, 5])
    np.testing.assert_array_equal(get[("low_purity", 3, 0)], [0, 4, 6])     # highest
    np.testing.assert_array_equal(get[("low_purity", 5, 0)], [0, 2, 4, 6, 7])  # tie 2 vs 7 -> lower index first
    np.testing.assert_array_equal(get[("full", 8, 0)], np.arange(8))
    assert sum(k.strategy == "random" for k in v) == 15
    for d in range(5):                                                   # nested within a draw
        assert set(get[("random", 2, d)]) <= set(get[("random", 3, d)]) <= set(get[("random", 5, d)])
    assert len({tuple(get[("random", 3, d)]) for d in range(5)}) > 1     # draws differ
    again = pruning.kept_sets(scores, [2, 3, 5], random_draws=7, seed=7)  # reproducible; more draws keep old ones
    for k in again:
        if k.draw < 5:
            np.testing.assert_array_equal(k.kept, get[(k.strategy, k.size, k.draw)])
    other = pruning.kept_sets(scores, [3], ("random",), random_draws=5, seed=8)
    assert any(not np.array_equal(k.kept, get[("random", 3, k.draw)]) for k in other)
    with pytest.raises(InputError, match="outside"):
        pruning.kept_sets(scores, [9])
    with pytest.raises(InputError, match="unknown"):
        pruning.kept_sets(scores, [2], ("best",))


def test_sizes_from_fractions_reproduce_the_original_grid():
    fractions = [0.390625, 0.48828125, 0.5859375, 0.68359375, 0.78125, 0.87890625, 0.9765625]
    assert pruning.sizes_from_fractions(fractions, 512) == list(range(200, 501, 50))
    assert pruning.sizes_from_fractions(fractions, 32) == [12, 16, 19, 22, 25, 28, 31]
    assert pruning.sizes_from_fractions([0.001, 1.0], 10) == [1, 10]


def test_summary_is_mean_and_sd_over_random_draws(world):
    scores = pruning.neuron_scores(world["image_projection"].T, world["text_projection"].T)
    variants = pruning.kept_sets(scores, [10, 20], random_draws=5, seed=0)
    sets = {"toy": {"image": world["img"], "classifier": world["txt"].T, "labels": world["labels"]}}
    table = pruning.pruning_sweep(sets, variants, world["n"])
    assert list(table.columns) == pruning.SWEEP_COLUMNS
    assert len(table) == (2 + 2 + 10 + 1) * 4
    summary = pruning.summarise_sweep(table)
    rnd = table[(table.strategy == "random") & (table["size"] == 10) & (table.metric == "acc1")]["value"]
    row = summary[(summary.strategy == "random") & (summary["size"] == 10) & (summary.metric == "acc1")]
    assert row["mean"].item() == pytest.approx(rnd.mean()) and row["sd"].item() == pytest.approx(rnd.std(ddof=1))
    assert row["n_draws"].item() == 5
    full = summary[(summary.strategy == "full") & (summary.metric == "acc1")]
    assert full["fraction"].item() == 1.0 and np.isnan(full["sd"].item())


def test_cli_end_to_end(tmp_path):
    """The CLI ranks neurons from a checkpoint's projections and sweeps cached embeddings of two sets."""
    from workflow_scripts.common.config import validate_config
    from workflow_scripts.common.io import save_npz
    from workflow_scripts.models.clip import build_model, projection_matrices

    torch.manual_seed(0)
    model = build_model("fp-test-vit")
    ckpt = tmp_path / "projections.npz"
    save_npz(ckpt, **dict(zip(("image", "text"), (m.numpy() for m in projection_matrices(model)))))
    cfg = validate_config({"world": {"enabled": False}, "finetune": {"models": ["m"]},
                           "models": {"m": {"source": "pretrain", "arch": "fp-test-vit"}},
                           "evaluate": {"pruning": {"models": ["m"], "kept_fractions": [0.25, 0.5],
                                                    "random_draws": 3, "seed": 1}}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(0)
    paths = []
    for name, n_classes in (("a", 4), ("b", 6)):
        img = rng.normal(size=(30, 32)).astype(np.float32)
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        W = rng.normal(size=(32, n_classes)).astype(np.float32)
        save_npz(tmp_path / f"{name}.npz", image=img, labels=np.arange(30) % n_classes, classifier=W)
        paths.append(str(tmp_path / f"{name}.npz"))
    out = tmp_path / "pruning.parquet"
    assert pruning.main(["--config", str(tmp_path / "config.yaml"), "--model", "m", "--projections", str(ckpt),
                         "--embeddings", *paths, "--out", str(out), str(tmp_path / "pruning.csv"),
                         "--summary", str(tmp_path / "summary.parquet")]) == 0
    table = pd.read_parquet(out)
    assert set(table["set"]) == {"a", "b"} and set(table["model"]) == {"m"}
    assert sorted(table["size"].unique()) == [8, 16, 32]
    assert (tmp_path / "pruning.csv").exists() and (tmp_path / "summary.parquet").exists()
    image_P, text_P = (m.double().numpy() for m in projection_matrices(model))
    high8 = pruning.kept_sets(pruning.neuron_scores(image_P, text_P), [8], ("high_purity",))[0].kept
    data = np.load(paths[0])
    expect = pruning.evaluate_kept(data["image"], data["classifier"], data["labels"], high8)["acc1"]
    got = table[(table["set"] == "a") & (table.strategy == "high_purity") & (table["size"] == 8)
                & (table.metric == "acc1")]["value"].item()
    assert got == pytest.approx(expect)
    save_npz(tmp_path / "bad.npz", image=img)
    with pytest.raises(InputError, match="missing arrays"):
        pruning.main(["--config", str(tmp_path / "config.yaml"), "--model", "m", "--projections", str(ckpt),
                      "--embeddings", str(tmp_path / "bad.npz"), "--out", str(out)])
