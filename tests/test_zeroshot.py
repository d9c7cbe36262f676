"""Zero-shot classifier against open_clip, metrics against hand-written references, silhouette against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workflow_scripts.common.errors import InputError
from workflow_scripts.evaluate.zeroshot import (
    mean_per_class_recall, silhouette, topk_accuracy, zero_shot_classifier, zero_shot_metrics,
)


@pytest.fixture(scope="module")
def tiny_clip():
    import open_clip

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=1, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval()
    return model, open_clip.SimpleTokenizer(context_length=16)


def test_classifier_matches_open_clip(tiny_clip):
    import open_clip

    model, tokenizer = tiny_clip
    classnames = ["red square", "blue circle", "green triangle", "cat"]
    templates = ["a photo of a {c}", "a drawing of the {c}.", "{c}"]

    @torch.no_grad()
    def encode_text(texts):  # unnormalised on purpose: the builder normalises each prompt
        return model.encode_text(tokenizer(texts)).numpy()

    ours = zero_shot_classifier(encode_text, classnames, templates)
    with torch.no_grad():
        ref = open_clip.build_zero_shot_classifier(
            model, tokenizer, classnames, [lambda c, t=t: t.replace("{c}", c) for t in templates],
            num_classes_per_batch=3, device="cpu").numpy()
    assert ours.shape == (32, 4) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=0), 1.0, atol=1e-6)
    # one template: the class vector is that prompt's normalised embedding (the original's classifier)
    single = zero_shot_classifier(encode_text, classnames, ["a photo of a {c}"])
    e = encode_text([f"a photo of a {c}" for c in classnames])
    np.testing.assert_allclose(single, (e / np.linalg.norm(e, axis=1, keepdims=True)).T, atol=1e-6)


def test_classifier_rejects_templates_without_placeholder():
    with pytest.raises(InputError, match="placeholder"):
        zero_shot_classifier(lambda t: np.ones((len(t), 2)), ["a"], ["a photo of a {}"])


def reference_metrics(img, W, labels):
    """CLIP_benchmark's definitions written out per sample."""
    logits = 100 * img @ W
    n, c = logits.shape
    pred = [int(np.argmax(row)) for row in logits]
    acc1 = np.mean([p == y for p, y in zip(pred, labels)])
    acc5 = np.mean([y in np.argsort(-row, kind="stable")[:5] for row, y in zip(logits, labels)]) if c >= 5 else np.nan
    recalls = [np.mean([pred[i] == k for i in range(n) if labels[i] == k]) for k in sorted(set(labels))]
    return acc1, acc5, np.mean(recalls)


@pytest.mark.parametrize("n_classes", [3, 7])
def test_zero_shot_metrics_match_reference(n_classes):
    rng = np.random.default_rng(n_classes)
    labels = np.repeat(np.arange(n_classes), [5 + 3 * k for k in range(n_classes)])  # unbalanced classes
    W = rng.normal(size=(6, n_classes))
    W /= np.linalg.norm(W, axis=0)
    img = W.T[labels] + 0.9 * rng.normal(size=(len(labels), 6))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    got = zero_shot_metrics(img, W, labels)
    acc1, acc5, recall = reference_metrics(img.astype(np.float32), W.astype(np.float32), labels)
    assert got["acc1"] == pytest.approx(acc1)
    assert got["mean_per_class_recall"] == pytest.approx(recall)
    assert 0 < got["acc1"] < 1
    if n_classes < 5:
        assert np.isnan(got["acc5"])
    else:
        assert got["acc5"] == pytest.approx(acc5) and got["acc5"] >= got["acc1"]


def test_mean_per_class_recall_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(6)
    labels = rng.integers(0, 6, size=300)
    labels[labels == 4] = 5                                      # class 4 absent from the labels...
    pred = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 8, size=300))  # ...but predicted, as 6, 7
    with pytest.warns(UserWarning):
        ref = balanced_accuracy_score(labels, pred)
    assert mean_per_class_recall(labels, pred) == pytest.approx(ref)


def test_topk_accuracy_counts_hits_and_breaks_ties_by_class_index():
    logits = np.array([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3], [0.2, 0.3, 0.1]])
    assert topk_accuracy(logits, np.array([1, 2, 2]), 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, np.array([1, 2, 2]), 2) == pytest.approx(2 / 3)
    ties = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 2.0]])
    assert topk_accuracy(ties, np.array([2, 2]), 2) == pytest.approx(1 / 2)   # row 0: rank 2; row 1: rank 1
    rng = np.random.default_rng(5)
    logits = rng.integers(0, 4, size=(200, 9)).astype(np.float32)           # many ties
    labels = rng.integers(0, 9, size=200)
    for k in (1, 3, 5):
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        assert topk_accuracy(logits, labels, k) == pytest.approx(np.mean([y in t for y, t in zip(labels, top)]))


def test_metrics_reject_mismatched_inputs():
    with pytest.raises(InputError, match="labels"):
        zero_shot_metrics(np.ones((4, 3)), np.ones((3, 2)), np.zeros(3, dtype=int))
    with pytest.raises(InputError, match="classifier"):
        zero_shot_metrics(np.ones((4, 3)), np.ones((2, 2)), np.zeros(4, dtype=int))
    with pytest.raises(InputError, match="label 5"):
        zero_shot_metrics(np.ones((4, 3)), np.ones((3, 2)), np.array([0, 1, 5, 0]))


@pytest.mark.parametrize("seed, n, n_classes, d", [(0, 120, 4, 8), (1, 60, 12, 5), (2, 25, 24, 3)])
def test_silhouette_matches_sklearn(seed, n, n_classes, d):
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    centres = rng.normal(size=(n_classes, d))
    X = (centres[labels] + rng.normal(size=(n, d))) * rng.uniform(0.1, 5, size=(n, 1))  # unnormalised rows
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    ref = silhouette_score(Xn, labels, metric="cosine")
    assert silhouette(X, labels) == pytest.approx(ref, abs=1e-9)
    assert silhouette(X, labels, block=7) == pytest.approx(ref, abs=1e-9)
    X32 = X.astype(np.float32)                                   # cached embeddings are float32
    ref32 = silhouette_score(X32 / np.linalg.norm(X32, axis=1, keepdims=True), labels, metric="cosine")
    assert silhouette(X32, labels) == pytest.approx(ref32, abs=1e-5)


def test_silhouette_singletons_and_undefined_cases():
    from sklearn.metrics import silhouette_score

    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.2]])
    labels = np.array([0, 0, 1, 1, 2])  # class 2 is a singleton: scores 0 in sklearn
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert silhouette(X, labels) == pytest.approx(silhouette_score(Xn, labels, metric="cosine"), abs=1e-12)
    assert np.isnan(silhouette(X, np.zeros(5, dtype=int)))
    assert np.isnan(silhouette(X, np.arange(5)))
