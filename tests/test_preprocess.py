"""Image preprocessing per model and stage, the original's augmentation, class names and templates per set.

The references are torchvision.transforms (what the original code ran) and, for the default config, a
frozen copy of the pipeline as it was before preprocessing became configurable.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from workflow_scripts.common import data as D
from workflow_scripts.common.config import validate_config
from workflow_scripts.common.evalsets import open_set
from workflow_scripts.common.io import derive_seed
from workflow_scripts.models.clip import (
    IMAGENET_MEAN, IMAGENET_STD, OPENAI_MEAN, OPENAI_STD, preprocess_config,
)

TV_INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
# non-square sizes with odd and even margins, portrait and landscape, one already square, one extreme
SIZES = [(57, 41), (41, 70), (45, 45), (32, 32), (33, 80), (200, 24)]


def _write_images(root, sizes=SIZES, seed=0, class_dir=None):
    rng = np.random.default_rng(seed)
    rel = []
    for k, (w, h) in enumerate(sizes):
        name = f"{class_dir}/{k:03d}.png" if class_dir else f"{k:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        # smooth structure + noise, so that interpolation filters give visibly different results
        yy, xx = np.mgrid[0:h, 0:w]
        base = (127 + 100 * np.sin(xx / 3.0 + k)[..., None] * np.cos(yy / 5.0)[..., None]).astype(np.float64)
        pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / name)
        rel.append(name)
    return rel


def _tv_eval_transform(size, interpolation, resize, mean, std):
    first = (T.Resize(size, interpolation=TV_INTERP[interpolation]), T.CenterCrop(size)) \
        if resize == "shorter_side_center_crop" else (T.Resize((size, size), interpolation=TV_INTERP[interpolation]),)
    return T.Compose([*first, T.ToTensor(), T.Normalize(mean, std)])


def _tv_batch(root, rel, transform):
    return torch.stack([transform(Image.open(root / p).convert("RGB")) for p in rel])


def _spec(**stages):
    """A validated model spec with the given per-stage preprocessing."""
    cfg = validate_config({"world": {"enabled": False}, "data": {"rewrites": []},
                           "models": {"m": {"source": "pretrain", "arch": "fp-test-vit", "preprocess": stages}},
                           "finetune": {"models": ["m"]}, "evaluate": {"pruning": {"models": ["m"]}}})
    return cfg["models"]["m"]


class _Model:  # preprocess_config reads only the image size
    class visual:  # noqa: N801
        image_size = (32, 32)


IMAGENET = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "interpolation": "bilinear"}


# ----------------------------------------------------------------------------- config -> stage


def test_each_stage_gets_its_own_preprocessing_and_defaults_are_openai_bicubic():
    spec = _spec(finetune=IMAGENET)
    ft, ev = preprocess_config(_Model, spec, "finetune"), preprocess_config(_Model, spec, "evaluate")
    assert ft == {"image_size": 32, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "interpolation": "bilinear",
                  "resize": "shorter_side_center_crop"}
    assert ev == {"image_size": 32, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic",
                  "resize": "shorter_side_center_crop"}
    spec = _spec(evaluate={"resize": "squash"})
    assert preprocess_config(_Model, spec, "evaluate")["resize"] == "squash"
    assert preprocess_config(_Model, spec, "finetune")["resize"] == "shorter_side_center_crop"
    with pytest.raises(Exception, match="stage"):
        preprocess_config(_Model, spec, "train")
    with pytest.raises(Exception, match="interpolation"):
        _spec(finetune={"interpolation": "nearest"})


@pytest.mark.parametrize("resize", ["shorter_side_center_crop", "squash"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("stats", ["openai", "imagenet"])
def test_stage_pipeline_equals_torchvision_transforms(tmp_path, resize, interpolation, stats):
    """Decode + resize policy + interpolation + normalisation of a stage, bit for bit torchvision's
    Resize/CenterCrop/ToTensor/Normalize; the other interpolation or statistics give other tensors."""
    mean, std = (OPENAI_MEAN, OPENAI_STD) if stats == "openai" else (IMAGENET_MEAN, IMAGENET_STD)
    rel = _write_images(tmp_path)
    spec = _spec(evaluate={"mean": list(mean), "std": list(std), "interpolation": interpolation, "resize": resize})
    pre = preprocess_config(_Model, spec, "evaluate")
    ours = D.to_model_input(D.load_preprocessed(rel, tmp_path, pre), pre["mean"], pre["std"])
    ref = _tv_batch(tmp_path, rel, _tv_eval_transform(32, interpolation, resize, mean, std))
    assert torch.equal(ours, ref)
    other = "bicubic" if interpolation == "bilinear" else "bilinear"
    assert not torch.equal(ours, _tv_batch(tmp_path, rel, _tv_eval_transform(32, other, resize, mean, std)))
    other_stats = (IMAGENET_MEAN, IMAGENET_STD) if stats == "openai" else (OPENAI_MEAN, OPENAI_STD)
    assert not torch.allclose(ours, _tv_batch(tmp_path, rel, _tv_eval_transform(32, interpolation, resize, *other_stats)))


# ----------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("width,height", [(57, 41), (41, 70), (32, 32), (200, 24), (24, 200), (300, 299)])
def test_crop_box_equals_torchvision_get_params(width, height):
    img = Image.new("RGB", (width, height))
    for seed in range(40):
        torch.manual_seed(seed)
        ref = T.RandomResizedCrop.get_params(img, [0.5, 1.0], [3 / 4, 4 / 3])
        assert D.random_resized_crop_box(width, height, torch.Generator().manual_seed(seed)) == ref


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_random_resized_crops_of_the_full_image_equal_torchvision(tmp_path, interpolation):
    """The same generator state gives torchvision's RandomResizedCrop(32, scale=(0.5, 1.0)) of the full
    image, image after image, pixel for pixel."""
    rel = _write_images(tmp_path)
    images = D.load_full_images(rel, tmp_path)
    assert [im.size for im in images] == SIZES  # full size: no resize or centre crop before the crop
    tv = T.RandomResizedCrop(32, scale=(0.5, 1.0), interpolation=TV_INTERP[interpolation])
    for seed in (0, 1, 7):
        ours = D.random_resized_crops(images, 32, torch.Generator().manual_seed(seed), interpolation)
        torch.manual_seed(seed)
        ref = np.stack([np.asarray(tv(im)) for im in images])
        np.testing.assert_array_equal(ours, ref)


@pytest.fixture(scope="module")
def odd_setup(tiny_world, tmp_path_factory):
    """Training pairs with non-square images of several sizes, a non-square imagefolder set and a
    randomly initialised fp-test-vit checkpoint."""
    from workflow_scripts.models.checkpoints import save_checkpoint
    from workflow_scripts.common.data import write_pairs_csv
    from workflow_scripts.models.clip import build_model

    tmp = tmp_path_factory.mktemp("odd")
    rel = _write_images(tmp, SIZES * 2, seed=1, class_dir="train")
    write_pairs_csv(tmp / "train.csv", rel, [f"caption {i}" for i in range(len(rel))])
    for k, cls in enumerate(["aquarium_fish", "sweet_pepper"]):
        _write_images(tmp / "eval", SIZES[:3], seed=10 + k, class_dir=cls)
    torch.manual_seed(0)
    model = build_model("fp-test-vit").eval()
    save_checkpoint(tmp / "m.pt", model.state_dict(), epoch=0, meta={"arch": "fp-test-vit"})
    return {"tmp": tmp, "rel": rel, "model": model, "ckpt": str(tmp / "m.pt")}


def _features(model, x):
    from workflow_scripts.models.clip import image_features

    with torch.no_grad():
        return image_features(model, x).float().numpy()


def test_feature_cache_views_and_end2end_use_the_full_image_crop(odd_setup):
    """Cache view v of the batch at b = torchvision's RandomResizedCrop of the full images under
    torch.manual_seed(derive_seed(seed, v, b)), with the finetune stage's interpolation and statistics;
    end2end's batch at (epoch, step) likewise under derive_seed(seed, epoch, step)."""
    from workflow_scripts.finetune.features import extract_image_features
    from workflow_scripts.finetune.train import EndToEndFeatures

    tmp, rel, model = odd_setup["tmp"], odd_setup["rel"], odd_setup["model"]
    spec = _spec(finetune=IMAGENET)
    pre = preprocess_config(model, spec, "finetune")
    tv = T.Compose([T.RandomResizedCrop(32, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BILINEAR),
                    T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    bs = 5
    cache = extract_image_features(model, rel, tmp, pre, views=2, augment=True, seed=11, batch_size=bs,
                                   device=torch.device("cpu"))
    assert cache.shape[:2] == (2, len(rel))
    for v in range(2):
        for b in range(0, len(rel), bs):
            torch.manual_seed(derive_seed(11, v, b))
            ref = torch.stack([tv(Image.open(tmp / p).convert("RGB")) for p in rel[b:b + bs]])
            np.testing.assert_allclose(cache[v, b:b + bs], _features(model, ref), rtol=0, atol=1e-6)
    assert not np.allclose(cache[0], cache[1], atol=1e-3), "views must differ"

    e2e = EndToEndFeatures(model, {**spec, "arch": "fp-test-vit"}, str(tmp / "train.csv"), str(tmp), augment=True,
                           seed=5, device=torch.device("cpu"))
    idx = np.array([3, 0, 7, 11])
    img_f, _ = e2e(idx, epoch=2, step=1)
    torch.manual_seed(derive_seed(5, 2, 1))
    ref = torch.stack([tv(Image.open(tmp / rel[i]).convert("RGB")) for i in idx])
    np.testing.assert_allclose(img_f.numpy(), _features(model, ref), rtol=0, atol=1e-6)


def test_without_augment_cache_and_end2end_resize_as_the_finetune_stage(odd_setup):
    from workflow_scripts.finetune.features import extract_image_features
    from workflow_scripts.finetune.train import EndToEndFeatures

    tmp, rel, model = odd_setup["tmp"], odd_setup["rel"], odd_setup["model"]
    spec = _spec(finetune=IMAGENET)
    pre = preprocess_config(model, spec, "finetune")
    ref = _features(model, _tv_batch(tmp, rel, _tv_eval_transform(32, "bilinear", "shorter_side_center_crop",
                                                                   IMAGENET_MEAN, IMAGENET_STD)))
    cache = extract_image_features(model, rel, tmp, pre, views=2, augment=False, seed=0, batch_size=len(rel),
                                   device=torch.device("cpu"))
    np.testing.assert_array_equal(cache[0], cache[1])
    np.testing.assert_allclose(cache[0], ref, rtol=0, atol=1e-6)
    e2e = EndToEndFeatures(model, {**spec, "arch": "fp-test-vit"}, str(tmp / "train.csv"), str(tmp), augment=False,
                           seed=0, device=torch.device("cpu"))
    np.testing.assert_allclose(e2e(np.arange(len(rel)), 0, 0)[0].numpy(), ref, rtol=0, atol=1e-6)


def test_evaluate_stage_and_set_override_reach_the_evaluation_features(odd_setup, tiny_world):
    """The evaluate stage's preprocessing (not the finetune stage's) reaches the set features, a set's own
    `preprocess` overrides it, and the file records what was used."""
    from workflow_scripts.evaluate.run import SEP, eval_settings_table, extract_eval_features

    tmp, model = odd_setup["tmp"], odd_setup["model"]
    base = {"world": {"enabled": False},
            "data": {"train_csv": str(tiny_world / "train.csv"), "image_root": str(tiny_world),
                     "captions": str(tiny_world / "captions.txt"), "rewrites": []},
            "models": {"m": {"source": "pretrain", "arch": "fp-test-vit",
                             "preprocess": {"finetune": {"interpolation": "bicubic"}, "evaluate": IMAGENET}}},
            "finetune": {"models": ["m"]},
            "evaluate": {"sets": {"odd": {"kind": "imagefolder", "root": str(tmp / "eval")},
                                  "odd_bicubic": {"kind": "imagefolder", "root": str(tmp / "eval"),
                                                  "raw_classnames": True, "preprocess": {"interpolation": "bicubic"}}},
                         "batch_size": 64, "pruning": {"models": ["m"]}},
            "compute": {"device": "cpu"}}
    feats = extract_eval_features(validate_config(base), "m", odd_setup["ckpt"], n_pairs=8)
    paths, _, _, _ = D.read_imagefolder(tmp / "eval")
    for name, interpolation in (("odd", "bilinear"), ("odd_bicubic", "bicubic")):
        ref = _features(model, _tv_batch(tmp / "eval", paths, _tv_eval_transform(
            32, interpolation, "shorter_side_center_crop", IMAGENET_MEAN, IMAGENET_STD)))
        np.testing.assert_allclose(feats[f"{name}{SEP}image"], ref, rtol=0, atol=1e-6)
    assert feats[f"odd{SEP}classnames"].tolist() == ["aquarium fish", "sweet pepper"]
    assert feats[f"odd_bicubic{SEP}classnames"].tolist() == ["aquarium_fish", "sweet_pepper"]
    table = eval_settings_table(feats).set_index("set")
    assert table.loc["odd", "interpolation"] == "bilinear" and table.loc["odd_bicubic", "interpolation"] == "bicubic"
    assert table.loc["odd", "class_names"] == "cleaned" and table.loc["odd_bicubic", "class_names"] == "raw"
    assert table.loc["odd", "templates_source"] == "evaluate.templates"
    assert table.loc["odd", "mean"] == list(IMAGENET_MEAN)


# ----------------------------------------------------------------------------- class names and templates


def test_raw_and_cleaned_class_names_imagefolder(tmp_path):
    _write_images(tmp_path, SIZES[:1], class_dir="aquarium_fish")
    _write_images(tmp_path, SIZES[:1], class_dir="maple_tree")
    spec = {"kind": "imagefolder", "root": str(tmp_path)}
    assert open_set("s", spec, ["{c}"]).classnames == ["aquarium fish", "maple tree"]
    raw = open_set("s", {**spec, "raw_classnames": True}, ["{c}"])
    assert raw.classnames == ["aquarium_fish", "maple_tree"] and raw.raw_classnames
    (tmp_path / "classnames.txt").write_text("aquarium_fish\nmaple/tree\n")
    assert open_set("s", spec, ["{c}"]).classnames == ["aquarium fish", "maple tree"]
    assert open_set("s", {**spec, "raw_classnames": True}, ["{c}"]).classnames == ["aquarium_fish", "maple/tree"]


class _FakeCIFAR100:
    """Stands in for torchvision.datasets.CIFAR100 (raw class names as torchvision spells them)."""

    classes = ["aquarium_fish", "maple_tree", "sweet_pepper"]

    def __init__(self, root, train=False, download=False):
        rng = np.random.default_rng(0)
        self.targets = [0, 1, 2, 1]
        self.images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES[:4]]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def test_raw_and_cleaned_class_names_torchvision_set_and_its_resize(monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "CIFAR100", _FakeCIFAR100)
    spec = {"kind": "cifar100", "root": "/nonexistent"}
    cleaned = open_set("c", spec, ["a photo of a {c}"])
    assert cleaned.classnames == ["aquarium fish", "maple tree", "sweet pepper"]
    assert open_set("c", {**spec, "raw_classnames": True}, ["x {c}"]).classnames == _FakeCIFAR100.classes
    assert cleaned.templates == ["a photo of a {c}"] and cleaned.templates_source == "evaluate.templates"
    batch = np.concatenate(list(cleaned.batches(3, 32, "bilinear", "shorter_side_center_crop")))
    tv = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(32)])
    np.testing.assert_array_equal(batch, np.stack([np.asarray(tv(im)) for im in _FakeCIFAR100("").images]))


def test_cifar_format_set_not_the_archive_opens_with_verify_checksums_false(tmp_path):
    """A CIFAR-10 python-format set written here (tests/cifar_fixture.py) is read by torchvision's own loader
    without its md5 checks: exactly the written pixels, labels and class names; with the checks (the
    default) torchvision refuses it, and the error names the set and the file."""
    from pathlib import Path

    import yaml

    from cifar_fixture import write_cifar10
    from workflow_scripts.common.errors import InputError

    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(9)]
    labels = [2, 0, 1, 2, 2, 1, 0, 0, 1]
    classes = ["aquarium_fish", "maple tree", "sweet_pepper"]
    root = write_cifar10(tmp_path / "cifar", images, labels, classes)
    spec = {"kind": "cifar10", "root": str(root), "verify_checksums": False}
    s = open_set("little_cifar", spec, ["a photo of a {c}"])
    assert s.classnames == ["aquarium fish", "maple tree", "sweet pepper"]
    np.testing.assert_array_equal(s.labels, labels)
    assert s.labels.dtype == np.int64
    for interpolation in ("bicubic", "bilinear"):
        pixels = np.concatenate(list(s.batches(4, 32, interpolation, "shorter_side_center_crop")))
        np.testing.assert_array_equal(pixels, np.stack(images))
    assert open_set("little_cifar", {**spec, "raw_classnames": True}, ["{c}"]).classnames == classes

    with pytest.raises(InputError) as err:
        open_set("little_cifar", {"kind": "cifar10", "root": str(root)}, ["{c}"])
    msg = str(err.value)
    assert msg.startswith("evaluate.sets.little_cifar: cifar10 under")
    assert f"{root / 'cifar-10-batches-py' / 'data_batch_1'}: its md5 differs" in msg
    assert "verify_checksums: false" in msg
    with pytest.raises(InputError, match="evaluate.sets.little_cifar: "):
        open_set("little_cifar", {**spec, "verify_checksums": True}, ["{c}"])

    # the key is in the schema: default true, a boolean
    raw = yaml.safe_load((Path(__file__).parent / "config" / "test.yaml").read_text())
    raw["evaluate"]["sets"]["little_cifar"] = {"kind": "cifar10", "root": str(root)}
    assert validate_config(raw)["evaluate"]["sets"]["little_cifar"]["verify_checksums"] is True
    raw["evaluate"]["sets"]["little_cifar"]["verify_checksums"] = "no"
    with pytest.raises(InputError, match="verify_checksums"):
        validate_config(raw)


def test_templates_config_then_templates_txt_then_default(tmp_path, caplog):
    _write_images(tmp_path, SIZES[:1], class_dir="a")
    spec = {"kind": "imagefolder", "root": str(tmp_path)}
    s = open_set("s", spec, ["default {c}"])
    assert (s.templates, s.templates_source) == (["default {c}"], "evaluate.templates")
    (tmp_path / "templates.txt").write_text("file {c}\n")
    s = open_set("s", spec, ["default {c}"])
    assert (s.templates, s.templates_source) == (["file {c}"], "templates.txt")
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.common.evalsets"):
        s = open_set("s", {**spec, "templates": ["config {c}"]}, ["default {c}"])
    assert (s.templates, s.templates_source) == (["config {c}"], "config")
    assert "overrides the set's templates.txt" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.common.evalsets"):
        open_set("s", {**spec, "templates": ["file {c}"]}, ["default {c}"])
    assert "overrides" not in caplog.text


def test_schema_default_sets_declare_the_templates_the_world_writes():
    from workflow_scripts.common.config import load_schema
    from workflow_scripts.world.synthetic import EVAL_SETS

    default = load_schema()["properties"]["evaluate"]["properties"]["sets"]["default"]
    assert {name: spec["templates"] for name, spec in default.items()} == \
        {name: [template] for name, (_, template) in EVAL_SETS.items()}


# ----------------------------------------------------------------------------- the default is unchanged


def _old_load_image(path, size):
    """The pipeline before preprocessing was configurable (frozen copy): PIL decode, bicubic resize of the
    shorter side with round(), floor centre crop, only when the size differs."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            w, h = img.size
            scale = size / min(w, h)
            img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            w, h = img.size
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).copy()


def _old_features(model, root, rel, size, batch_size):
    out = []
    for start in range(0, len(rel), batch_size):
        batch = np.stack([_old_load_image(root / p, size) for p in rel[start:start + batch_size]])
        x = torch.as_tensor(batch).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
        out.append(_features(model, x))
    return np.concatenate(out)


@pytest.mark.parametrize("world_size", [32, 40])
def test_default_config_leaves_the_embedded_features_byte_identical(tiny_world, tmp_path, world_size):
    """With the schema's default preprocessing, the feature cache (every view) and the evaluation set
    features of a tiny world equal the old pipeline's bit for bit (40-pixel images exercise the resize)."""
    from workflow_scripts.evaluate.run import SEP, extract_eval_features
    from workflow_scripts.finetune.features import extract_image_features
    from workflow_scripts.models.checkpoints import save_checkpoint
    from workflow_scripts.models.clip import build_model
    from workflow_scripts.world.synthetic import generate_world

    if world_size == 32:
        world = tiny_world
    else:
        world = tmp_path / "world"
        generate_world(world, seed=1, n_train=40, n_eval=12, image_size=world_size, n_rewrites=0,
                       max_caption_words=20)
    cfg = validate_config({"world": {"enabled": False},
                           "data": {"train_csv": str(world / "train.csv"), "image_root": str(world),
                                    "captions": str(world / "captions.txt"), "rewrites": []},
                           "models": {"m": {"source": "pretrain", "arch": "fp-test-vit"}},
                           "finetune": {"models": ["m"]},
                           "evaluate": {"sets": {"shape": {"kind": "imagefolder", "root": str(world / "eval/shape")}},
                                        "batch_size": 16, "pruning": {"models": ["m"]}},
                           "compute": {"device": "cpu"}})
    torch.manual_seed(0)
    model = build_model("fp-test-vit").eval()
    rel, _ = D.read_pairs_csv(world / "train.csv")
    rel = rel[:48]
    pre = preprocess_config(model, cfg["models"]["m"], "finetune")
    new = extract_image_features(model, rel, world, pre, views=2, augment=False, seed=0, batch_size=16,
                                 device=torch.device("cpu"))
    old = _old_features(model, world, rel, 32, 16)
    assert np.array_equal(new[0], old) and np.array_equal(new[1], old)

    save_checkpoint(tmp_path / "m.pt", model.state_dict(), epoch=0, meta={"arch": "fp-test-vit"})
    feats = extract_eval_features(cfg, "m", str(tmp_path / "m.pt"), n_pairs=16)
    paths, _, _, _ = D.read_imagefolder(world / "eval/shape")
    assert np.array_equal(feats[f"shape{SEP}image"], _old_features(model, world / "eval/shape", paths, 32, 16))
    assert np.array_equal(feats[f"train_pairs{SEP}image"], _old_features(model, world, rel[:16], 32, 16))
    assert feats[f"shape{SEP}templates"].tolist() == D.read_text_lines(world / "eval/shape/templates.txt")
