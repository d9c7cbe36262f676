"""Evaluating a checkpoint from cached pre-projection features equals running the whole model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workflow_scripts.evaluate import run as evaluate
from workflow_scripts.models.encode import embed_images, text_encoder
from workflow_scripts.common.config import validate_config
from workflow_scripts.common.errors import InputError


@pytest.fixture(scope="module")
def setup(tiny_world, tmp_path_factory):
    from workflow_scripts.models.checkpoints import save_checkpoint
    from workflow_scripts.models.clip import build_model

    tmp = tmp_path_factory.mktemp("eval")
    cfg = validate_config({
        "world": {"enabled": False},
        "data": {"train_csv": str(tiny_world / "train.csv"), "image_root": str(tiny_world),
                 "captions": str(tiny_world / "captions.txt")},
        "models": {"m": {"source": "pretrain", "arch": "fp-test-vit"}},
        "finetune": {"models": ["m"]},
        "evaluate": {"sets": {s: {"kind": "imagefolder", "root": str(tiny_world / "eval" / s)}
                              for s in ("shape", "colour")},
                     "templates": ["a photo of a {c}", "a {c} thing"], "batch_size": 16,
                     "pruning": {"models": ["m"]}},
        "compute": {"device": "cpu"},
    })
    torch.manual_seed(1)
    model = build_model("fp-test-vit")
    # Perturb the projections the way a fine-tune would, so the cached path must use the given ones.
    with torch.no_grad():
        model.text_projection.add_(0.05 * torch.randn_like(model.text_projection))
    ckpt = tmp / "model.pt"
    save_checkpoint(ckpt, model.state_dict(), epoch=0, meta={"arch": "fp-test-vit"})
    features = evaluate.extract_eval_features(cfg, "m", str(ckpt), n_pairs=64)
    evaluate.write_projections(cfg["models"]["m"], str(ckpt), str(tmp / "proj.npz"))
    return cfg, model.eval(), features, tmp


def test_cached_evaluation_equals_full_model(setup):
    from workflow_scripts.common.evalsets import open_set
    from workflow_scripts.models.clip import get_tokenizer, preprocess_config
    from workflow_scripts.evaluate.zeroshot import silhouette, zero_shot_classifier, zero_shot_metrics

    cfg, model, features, tmp = setup
    image_p, text_p = evaluate.load_projections(str(tmp / "proj.npz"))
    metrics, purity = evaluate.evaluate_projections(features, image_p, text_p, {"model": "m"}, str(tmp / "out"),
                                                    save_embeddings=True)
    pre = preprocess_config(model, cfg["models"]["m"])
    encode = text_encoder(model, get_tokenizer("fp-test-vit"), torch.device("cpu"))
    for name in ("shape", "colour"):
        es = open_set(name, cfg["evaluate"]["sets"][name], cfg["evaluate"]["templates"])
        image = embed_images(model, es.batches(16, pre["image_size"]), pre, torch.device("cpu"))
        classifier = zero_shot_classifier(encode, es.classnames, es.templates)
        cached = np.load(tmp / "out" / "embeddings" / f"{name}.npz")
        np.testing.assert_allclose(cached["image"], image, atol=1e-5)
        np.testing.assert_allclose(cached["classifier"], classifier, atol=1e-5)
        direct = zero_shot_metrics(image, classifier, es.labels)
        got = metrics[metrics.set == name].set_index("metric")["value"]
        assert got["acc1"] == pytest.approx(direct["acc1"])
        assert got["silhouette"] == pytest.approx(silhouette(image, es.labels), abs=1e-5)
    assert set(purity.projection) == {"text", "image"} and (purity.model == "m").all()
    assert "rsa" in set(metrics.metric)


def test_projection_file_errors(setup, tmp_path):
    bad = tmp_path / "p.npz"
    np.savez(bad, image=np.zeros((2, 2)))
    with pytest.raises(InputError, match="p.npz: expected arrays 'image' and 'text'"):
        evaluate.load_projections(str(bad))
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="p.npz: not a readable .npz"):
        evaluate.load_projections(str(bad))
