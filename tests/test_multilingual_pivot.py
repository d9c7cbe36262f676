"""Fidelity of the image-pivot alignment to the original (crosslingual-contrastive): the frozen baseline is
the head at initialisation (byte-identical to scoring the text rows directly when the widths match, and
defined when they do not), the residual MLP's rectangular identity, batches drawn with replacement (or per
epoch permutation), every training image trains or validates, the epoch and configuration tie rules, both
epoch-selection rules kept, evaluated and reported, end to end with text width ≠ image width."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from workflow_scripts.common.io import derive_seed, load_npz
from workflow_scripts.multilingual import align, evaluate, report
from workflow_scripts.multilingual import head as H
from workflow_scripts.multilingual.metrics import recall_at_1

LANGS = ["en", "it", "de"]
SETTINGS = {"validation_fraction": 0.2, "validation_max": 1000, "batch_per_lang": 16, "mlp_hidden": 8,
            "lr": 3e-2, "weight_decay": 0.0, "epochs": 4, "steps_per_epoch": 5, "warmup_steps": 2,
            "lr_floor": 0.1, "temperature": 0.1, "max_grad_norm": 1.0, "patience": 0,
            "sampling": "with_replacement"}


def toy(n=160, n_held=60, d_text=8, d_img=8, seed=0):
    """Unit image rows and per-language unit caption rows: the image through a fixed map plus noise (more
    for the later languages); training and held-out splits, every image captioned in every language."""
    rng = np.random.default_rng(seed)
    lift = rng.normal(size=(d_img, d_text))
    data = {}
    for split, m in (("train", n), ("heldout", n_held)):
        image = rng.normal(size=(m, d_img))
        data[f"{split}::image"] = (image / np.linalg.norm(image, axis=1, keepdims=True)).astype(np.float32)
        data[f"{split}::ids"] = np.arange(m)
        for i, lang in enumerate(LANGS):
            text = image @ lift + (0.3 + 0.5 * i) * rng.normal(size=(m, d_text))
            data[f"{split}::{lang}::text"] = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)
            data[f"{split}::{lang}::ids"] = np.arange(m)
    return data


# ----------------------------------------------------------------------------- Task 0: widths


def old_macro_r1_frozen(image, texts):
    """The frozen validation score as it was computed before: text rows against image rows directly."""
    return float(np.mean([recall_at_1((F.normalize(t, dim=-1) @ image.T).numpy(), np.arange(len(image)))
                          for t in texts]))


def test_the_frozen_baseline_is_byte_identical_at_equal_widths():
    V, T = align.paired_tensors(toy(n=300), LANGS)
    for seed in range(3):
        split = align.seed_split(V, T, SETTINGS, seed, 0)
        assert split.frozen == old_macro_r1_frozen(split.val_img, split.val_txt)
    x = torch.randn(50, 8)
    assert torch.equal(H.frozen_head(8, 8)(x), x)


def test_the_frozen_evaluation_is_byte_identical_at_equal_widths():
    """evaluate_key(head=None) (the head at initialisation) against the former frozen path, which scored
    the unit text rows themselves (an identity module reproduces it: apply() normalises head(x))."""
    data = toy()
    held = evaluate.heldout(data, LANGS)
    new_rows, new_hits, new_gram = evaluate.evaluate_key(data, held, LANGS, None, [])
    old_rows, old_hits, old_gram = evaluate.evaluate_key(data, held, LANGS, torch.nn.Identity(), [])
    assert pd.DataFrame(new_rows).equals(pd.DataFrame(old_rows))
    assert all(np.array_equal(new_hits[lang], old_hits[lang]) for lang in LANGS)
    assert new_gram.equals(old_gram)


def test_the_mlp_residual_is_the_former_one_at_equal_widths_and_rectangular_otherwise():
    torch.manual_seed(0)
    mlp = H.MLPHead(6, 6, 5)
    with torch.no_grad():
        mlp.fc2.weight.normal_()
    x = torch.randn(9, 6)
    assert torch.equal(mlp(x), x + mlp.fc2(F.gelu(mlp.fc1(x))))        # the former forward, bit for bit
    assert set(mlp.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    for d_text, d_img in ((10, 6), (4, 6)):
        torch.manual_seed(1)
        mlp = H.MLPHead(d_text, d_img, 5)
        x = torch.randn(9, d_text)
        assert torch.equal(mlp(x), H.LinearHead(d_text, d_img)(x))    # both start at t·I_rect
        with torch.no_grad():
            mlp.fc2.weight.normal_()
        eye = torch.zeros(d_text, d_img)
        eye[range(min(d_text, d_img)), range(min(d_text, d_img))] = 1
        torch.testing.assert_close(mlp(x), x @ eye + mlp.fc2(F.gelu(mlp.fc1(x))))


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_unequal_widths_train_and_score_a_frozen_baseline(head):
    V, T = align.paired_tensors(toy(d_text=12, d_img=8), LANGS)
    split = align.seed_split(V, T, SETTINGS, 0, 0)
    want = float(np.mean([recall_at_1((F.normalize(t[:, :8], dim=-1) @ split.val_img.T).numpy(),
                                      np.arange(len(split.val))) for t in split.val_txt]))
    assert split.frozen == pytest.approx(want)                       # I_rect truncates 12 → 8
    summary, _, states = align.fit_rules(V, T, split, {"head": head, "prox_id": 1e-3, "ortho": 0.0}, SETTINGS, 0, 0)
    assert summary["val_macro_r1"] >= summary["val_macro_r1_frozen"]
    assert set(states) == set(align.RULES)


# ----------------------------------------------------------------------------- Task 1: sampling, split, rules


def test_batches_are_drawn_with_replacement_as_the_original():
    train = np.arange(100, 130)
    settings = {**SETTINGS, "epochs": 3, "steps_per_epoch": 4, "batch_per_lang": 16}
    got = [b for epoch in align.batches(train, settings, seed=2, base_seed=5) for b in epoch]
    rng = np.random.default_rng(derive_seed(5, align.SAMPLE_STREAM, 2))
    want = [train[rng.integers(0, 30, size=16)] for _ in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(got, want)) and len(got) == 12
    flat = np.concatenate(got)
    assert set(flat) <= set(train) and any(len(set(b)) < 16 for b in got)   # 16 of 30: repeats within a batch


def test_epoch_permutation_is_the_former_order():
    train = np.arange(200, 250)
    settings = {**SETTINGS, "sampling": "epoch_permutation", "epochs": 2, "steps_per_epoch": 4, "batch_per_lang": 16}
    got = list(align.batches(train, settings, seed=1, base_seed=3))
    for epoch, steps in enumerate(got):
        order = np.random.default_rng(derive_seed(3, align.ORDER_STREAM, 1, epoch)).permutation(50)
        for step, idx in enumerate(steps):
            assert np.array_equal(idx, train[np.resize(order, (step + 1) * 16)[step * 16:(step + 1) * 16]])
        assert len(set(np.concatenate(steps[:3]))) == 48                  # no repeat within 48 ≤ 50 rows
    with pytest.raises(Exception, match="multilingual.align.sampling"):
        list(align.batches(train, {**settings, "sampling": "shuffled"}, 0, 0))


@pytest.mark.parametrize("n,cap,n_val", [(300, 1000, 60), (300, 25, 25), (16384, 1024, 1024)])
def test_every_training_image_trains_or_validates(n, cap, n_val):
    V = torch.zeros(n, 2)
    split = align.seed_split(V, [V, V], {**SETTINGS, "validation_max": cap}, 0, 0) if n < 1000 else None
    assert align.validation_size(n, {**SETTINGS, "validation_max": cap}) == n_val
    if split is not None:
        assert len(split.val) == n_val and len(split.train) == n - n_val
        assert sorted(np.concatenate([split.train, split.val]).tolist()) == list(range(n))


def test_tied_epochs_keep_the_earlier_one_and_the_last_head_is_kept():
    """lr = 0: the head never moves, every epoch ties with the frozen score, the first epoch is selected."""
    V, T = align.paired_tensors(toy(), LANGS)
    split = align.seed_split(V, T, SETTINGS, 0, 0)
    summary, history, states = align.fit_rules(V, T, split, {"head": "linear", "prox_id": 0.0, "ortho": 0.0},
                                               {**SETTINGS, "lr": 0.0}, 0, 0)
    assert summary["best_epoch"] == 1 and summary["val_macro_r1"] == summary["val_macro_r1_frozen"]
    assert len({h["val_macro_r1"] for h in history}) == 1
    summary, history, states = align.fit_rules(V, T, split, {"head": "linear", "prox_id": 0.0, "ortho": 0.0},
                                               SETTINGS, 0, 0)
    assert summary["epochs_run"] == 4 and summary["val_macro_r1_last"] == history[-1]["val_macro_r1"]
    head = H.LinearHead(8, 8)
    head.load_state_dict({k: torch.from_numpy(v) for k, v in states["last"].items()})
    assert align.macro_r1(head, split.val_img, split.val_txt) == history[-1]["val_macro_r1"]
    head.load_state_dict({k: torch.from_numpy(v) for k, v in states["selected"].items()})
    assert align.macro_r1(head, split.val_img, split.val_txt) == summary["val_macro_r1"]


def test_configuration_ties_go_to_the_simpler_head_then_the_smaller_penalties():
    def sweeps(rows):
        return pd.DataFrame([{"model": "m", "head": h, "prox_id": p, "ortho": o, "seed": s, "val_macro_r1": v}
                             for h, p, o, vs in rows for s, v in enumerate(vs)])

    # listed in an order that sort order alone would get wrong
    tied = sweeps([("mlp", 1e-3, 0.0, [0.3, 0.1]), ("mlp", 0.0, 0.0, [0.1, 0.3]), ("linear", 1e-3, 1e-4, [0.2, 0.2])])
    assert report.validation_best(tied) == {"model": "m", "head": "linear", "prox_id": 1e-3, "ortho": 1e-4}
    mlps = sweeps([("mlp", 1e-3, 0.0, [0.2, 0.2]), ("mlp", 0.0, 0.0, [0.1, 0.3])])
    assert report.validation_best(mlps)["prox_id"] == 0.0
    lin = sweeps([("linear", 0.0, 1e-4, [0.2]), ("linear", 0.0, 0.0, [0.2 + 1e-15])])    # float noise: a tie
    assert report.validation_best(lin)["ortho"] == 0.0
    better = sweeps([("linear", 0.0, 0.0, [0.2]), ("mlp", 1e-3, 0.0, [0.2001])])
    assert report.validation_best(better)["head"] == "mlp"


def test_the_pipeline_reports_both_rules_with_unequal_widths(tmp_path):
    """sweep → evaluate → report tables on a toy model whose text (12) is wider than its images (8)."""
    from workflow_scripts.common.io import save_npz

    save_npz(tmp_path / "toy.npz", **toy(d_text=12, d_img=8))
    align_settings = {**SETTINGS, "heads": ["linear", "mlp"], "prox_id": [0.0, 1e-3], "ortho": [0.0], "seeds": [0, 1, 2]}
    config = {"multilingual": {"languages": LANGS, "seed": 0, "align": align_settings,
                               "models": {"toy": {"source": "files", "base": "b"}},
                               "evaluate": {"zero_shot_sets": [], "diagnostics": {"hub_k": 5, "neighbour_k": 5},
                                            "headline": {"head": "linear", "prox_id": 1e-3, "ortho": 0.0}}}}
    sweep = align.sweep(config, "toy", str(tmp_path / "toy.npz"), str(tmp_path / "align" / "toy"))
    assert (sweep["n_train"] + sweep["n_val"] == sweep["n_images"]).all() and (sweep["n_images"] == 160).all()
    heads = load_npz(tmp_path / "align" / "toy" / "heads.npz")
    assert {k.split("::")[0] for k in heads} == {align.rule_key(k, r) for k in sweep["key"] for r in align.RULES}
    metrics = evaluate.evaluate(config, "toy", str(tmp_path / "toy.npz"), str(tmp_path / "align" / "toy" / "sweep.parquet"),
                                str(tmp_path / "align" / "toy" / "heads.npz"), str(tmp_path / "eval" / "toy"))
    assert set(metrics["rule"]) == {"frozen", "selected", "last"}
    per_query = {"toy": load_npz(tmp_path / "eval" / "toy" / "per_query.npz")}
    summary = report.summarise(metrics, ["t2i", "diagnostics"])
    runs = report.chosen_runs(sweep, config["multilingual"]["evaluate"]["headline"])
    headline = report.headline_table(summary, per_query, sweep, runs, LANGS)
    assert {(r, u) for r, u in zip(headline["run"], headline["rule"])} == {
        (run, rule) for run in ("headline", "validation-best") for rule in ("selected", "last")}
    last = headline[(headline["run"] == "headline") & (headline["rule"] == "last")]
    assert last["epochs"].iloc[0] == "4 4 4"
    diag = report.run_table(summary, runs, "diagnostics")
    for language, metric in (("en", "hub_skew"), ("all", "neighbour_overlap"), ("all", "langid_acc1"),
                             ("de", "t2i_hub_skew")):
        r = diag[(diag["language"] == language) & (diag["metric"] == metric)]
        assert len(r) == 4 and r["frozen"].notna().all() and r["mean"].notna().all()
    grams = pd.read_parquet(tmp_path / "eval" / "toy" / "gram.parquet")
    assert set(report.gram_table(grams, runs)["rule"]) == {"frozen", "selected", "last"}
    figures = [str(tmp_path / "retrieval.svg"), str(tmp_path / "gram.svg")]
    report.figures(summary, grams, runs, LANGS, figures)
    assert all((tmp_path / name).stat().st_size > 0 for name in ("retrieval.svg", "gram.png"))
