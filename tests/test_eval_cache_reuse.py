"""The evaluation features take the training pairs' features from the feature cache (when data.heldout_csv is
unset the diagnostics' pairs are the first training pairs, which the cache already holds), and only when the
cache was made from the same checkpoint with the same preprocessing in float32."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from realdata import build, example_config, write_checkpoints
from workflow_scripts.common.config import load_config

REPO = Path(__file__).resolve().parents[1]
PAIRS = "train_pairs::"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Real-format data (12 pairs), an fp-tiny-vit checkpoint, the example config pointed at them, and the
    model's feature cache made by the feature-extraction stage."""
    from workflow_scripts.finetune.features import extract

    tmp = tmp_path_factory.mktemp("reuse")
    data = build(tmp / "data", n_train=12, n_heldout=4, n_eval=2, checkpoints=False)
    checkpoints = write_checkpoints(tmp / "checkpoints")
    raw = example_config(data)
    raw["data"]["heldout_csv"] = None      # the diagnostics' pairs are training pairs: the cache holds them
    raw["models"] = {m: {**spec, "checkpoint": checkpoints[m]} for m, spec in raw["models"].items()}
    (tmp / "config.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp / "config.yaml")
    index = tmp / "features" / "train.npz"
    extract(config, "clip", checkpoints["clip"], str(index))
    return {"tmp": tmp, "data": data, "config": config, "raw": raw, "checkpoints": checkpoints, "index": index}


def _eval(setup, config=None, checkpoint=None, cache=True):
    from workflow_scripts.evaluate.run import extract_eval_features

    return extract_eval_features(config or setup["config"], "clip", checkpoint or setup["checkpoints"]["clip"],
                                 feature_cache=str(setup["index"]) if cache else None)


def _tampered_cache(setup, tmp_path) -> Path:
    """A copy of the cache whose image and text features are replaced by marks (proof of where values
    come from)."""
    from workflow_scripts.finetune.features import cache_array_paths
    from workflow_scripts.common.io import load_array, save_array

    index = tmp_path / "train.npz"
    shutil.copy(setup["index"], index)
    for key, path in cache_array_paths(setup["index"]).items():
        arr = np.array(load_array(path))
        save_array(cache_array_paths(index)[key], np.arange(arr.size, dtype=np.float32).reshape(arr.shape))
    return index


def test_cached_pair_features_equal_encoding_them(setup):
    """Reference: the evaluation's own encoding of the same pairs (no cache)."""
    reused, encoded = _eval(setup), _eval(setup, cache=False)
    for key in (PAIRS + "image", PAIRS + "text"):
        assert reused[key].shape == encoded[key].shape
        np.testing.assert_allclose(reused[key], encoded[key], rtol=1e-4, atol=1e-5)
    for key in encoded:      # the evaluation sets are untouched
        if not key.startswith(PAIRS) and encoded[key].dtype.kind == "f":
            np.testing.assert_array_equal(reused[key], encoded[key])


def test_the_pairs_come_from_the_cache(setup, tmp_path):
    from workflow_scripts.evaluate.run import extract_eval_features
    from workflow_scripts.finetune.features import load_feature_cache

    index = _tampered_cache(setup, tmp_path)
    cache = load_feature_cache(index)
    out = extract_eval_features(setup["config"], "clip", setup["checkpoints"]["clip"], feature_cache=str(index))
    paths = cache["image_paths"].tolist()
    rows = [paths.index(p) for p in paths[:len(out[PAIRS + "image"])]]
    np.testing.assert_array_equal(out[PAIRS + "image"], cache["image"][0, rows])
    captions = Path(setup["data"]["captions"]).read_text(encoding="utf-8").splitlines()
    texts = cache["texts"].tolist()
    np.testing.assert_array_equal(out[PAIRS + "text"], cache["text"][[texts.index(c) for c in captions]])


@pytest.mark.parametrize("change", ["preprocess", "checkpoint", "precision", "augment"])
def test_cache_not_reused_unless_same_checkpoint_preprocessing_and_precision(setup, tmp_path, change):
    from workflow_scripts.evaluate.run import cached_pair_features
    from workflow_scripts.common.io import load_npz, save_npz
    from workflow_scripts.models.clip import build_model, preprocess_config

    spec = setup["config"]["models"]["clip"]
    pre = preprocess_config(build_model(spec["arch"]), spec, "evaluate")
    index, checkpoint = _tampered_cache(setup, tmp_path), setup["checkpoints"]["clip"]
    paths = load_npz(index)["image_paths"].tolist()[:5]
    captions = Path(setup["data"]["captions"]).read_text(encoding="utf-8").splitlines()[:5]
    image, texts = cached_pair_features(str(index), checkpoint, pre, paths, captions)
    assert image is not None and len(texts) == len(set(captions))          # reusable as it is
    if change == "preprocess":
        pre = {**pre, "interpolation": "bilinear"}
    elif change == "checkpoint":
        checkpoint = setup["checkpoints"]["laclip"]
    else:
        arrays = load_npz(index)
        if change == "precision":
            arrays["precision"] = np.asarray("float16-autocast")
        else:
            arrays["augment"] = np.bool_(True)
        save_npz(index, **arrays)
    assert cached_pair_features(str(index), checkpoint, pre, paths, captions) == (None, {})


def test_rule_passes_the_cache_only_when_it_can_be_reused(setup):
    from local_env import local_env

    def dry(run, gpus=0, **data):
        raw = yaml.safe_load(yaml.safe_dump(setup["raw"]))
        raw["data"].update(data)
        raw.setdefault("finetune", {})["gpus"] = gpus
        raw["run"] = run           # a results tree per data set (config key run)
        path = setup["tmp"] / f"{run}.yaml"
        path.write_text(yaml.safe_dump(raw))
        out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                              "--configfile", str(path), "-n", "-p", "--cores", "1", "--forceall",
                              f"results/runs/{run}/eval/features/clip.npz",
                              f"results/runs/{run}/eval/features/laclip.npz"],
                             cwd=setup["tmp"], capture_output=True, text=True, env=local_env(), timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    plan = dry("pairs_from_training")
    assert "--feature-cache results/runs/pairs_from_training/features/clip/train.npz" in plan
    assert "features/laclip/train.npz" not in plan            # laclip is not fine-tuned: no cache
    assert "--feature-cache" not in dry("heldout_pairs", heldout_csv=setup["data"]["heldout_csv"])
    # fine-tunes on GPUs: their cache holds fp16 features, never reused, so eval_features does not wait for it
    on_gpus = dry("pairs_from_training_gpu", gpus=1)
    assert "--feature-cache" not in on_gpus and "rule extract_features" not in on_gpus
