"""Data validation (workflow_scripts/validation, rules/validation.smk) on the real-format data set
(tests/realdata.py): problems are found before any expensive job, named by the user's file and line, and a
replaced image makes the validation and what reads the images run again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifar_fixture import write_cifar10
from realdata import build, example_config
from workflow_scripts.common.errors import InputError
from workflow_scripts.validation.cli import validate_images, validate_text
from workflow_scripts.validation.images import check_eval_set, check_image
from workflow_scripts.validation.manifest import changed_files, mark_changes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def realdata(tmp_path_factory) -> dict:
    """A dozen real-format training pairs (JPEG, PNG, greyscale, progressive; commas, quotes, non-ASCII)."""
    return build(tmp_path_factory.mktemp("realdata"), n_train=12, n_heldout=4, n_eval=2, checkpoints=False)


@pytest.fixture
def data(realdata, tmp_path) -> dict:
    """A private copy that a test may damage."""
    root = Path(realdata["train_csv"]).parent
    shutil.copytree(root, tmp_path / "d")
    return {k: (v.replace(str(root), str(tmp_path / "d")) if isinstance(v, str) else v) for k, v in realdata.items()} \
        | {"rewrites": [r.replace(str(root), str(tmp_path / "d")) for r in realdata["rewrites"]],
           "eval_roots": {k: v.replace(str(root), str(tmp_path / "d")) for k, v in realdata["eval_roots"].items()}}


def _text(d):
    return validate_text(d["train_csv"], d["captions"], d["rewrites"], d["heldout_csv"])


def _images(d, workers=1):
    return validate_images(d["image_root"], [("train", d["train_csv"]), ("heldout", d["heldout_csv"])],
                           list(d["eval_roots"].items()), workers=workers)


def _lines(path):
    return Path(path).read_text(encoding="utf-8").splitlines(keepends=True)


def test_real_format_data_pass_and_the_manifest_lists_every_image(data):
    summary = _text(data)
    assert summary["train_csv"]["rows"] == 12
    for key in ("non_ascii_captions", "captions_with_commas", "captions_with_quotes"):
        assert summary["train_csv"][key] > 0, key
    assert summary["train_csv"]["distinct_captions"] < 12          # duplicates
    table = _images(data, workers=2)
    n_eval = sum(len(list(Path(r).glob("*/*.*g"))) for r in data["eval_roots"].values())
    assert len(table) == 12 + 4 + n_eval
    assert set(table["format"]) == {"JPEG", "PNG"} and set(table["mode"]) == {"RGB", "L"}
    first = table.iloc[0]
    assert first["file"] == str(Path(data["image_root"]) / first["path"])
    assert first["bytes"] == os.stat(first["file"]).st_size and first["mtime_ns"] == os.stat(first["file"]).st_mtime_ns


def test_caption_file_one_line_short_names_the_file_and_the_missing_line(data):
    lines = _lines(data["captions"])
    Path(data["captions"]).write_text("".join(lines[:4] + lines[5:]), encoding="utf-8")
    with pytest.raises(InputError) as err:
        _text(data)
    msg = str(err.value)
    assert f"{data['captions']}:12: 11 lines but {data['train_csv']} has 12 rows" in msg
    assert f"missing at {data['captions']}:5" in msg


def test_rewrite_file_with_an_extra_or_empty_line(data):
    lines = _lines(data["rewrites"][1])
    Path(data["rewrites"][1]).write_text("".join(lines[:3] + ["\n"] + lines[3:]), encoding="utf-8")
    with pytest.raises(InputError) as err:
        _text(data)
    assert f"{data['rewrites'][1]}:4: empty line" in str(err.value)
    assert f"{data['rewrites'][1]}:13: 13 lines" in str(err.value)


@pytest.mark.parametrize("bad,expect", [
    ('"x.jpg"y,caption\n', "malformed CSV quoting"),
    ("x.jpg,a caption, with an unquoted comma\n", "expected 2 fields (image_path,caption), got 3: a caption "
                                                 "with commas must be quoted"),
    ('x.jpg,"a caption\nover two lines"\n', "the record spans lines 3-4"),
    ("x.txt,caption\n", "is not an image path"),
    ("x.jpg,  \n", "empty caption"),
])
def test_csv_problems_name_the_line(data, bad, expect):
    lines = _lines(data["train_csv"])
    Path(data["train_csv"]).write_text("".join(lines[:2] + [bad] + lines[3:]), encoding="utf-8")
    with pytest.raises(InputError) as err:
        _text(data)
    assert f"{data['train_csv']}:3: " in str(err.value) and expect in str(err.value)


def test_all_problems_are_listed_at_once(data):
    Path(data["train_csv"]).write_bytes(Path(data["train_csv"]).read_bytes() + b"y.jpg,\xff\xfe\n")
    Path(data["captions"]).write_text("", encoding="utf-8")
    with pytest.raises(InputError) as err:
        _text(data)
    msg = str(err.value)
    assert f"{data['train_csv']}:13: not valid UTF-8" in msg and f"{data['captions']}:1: 0 lines" in msg


def _truncate(path: Path, keep: float) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def test_missing_and_damaged_images_name_the_csv_line(data):
    train = [line.split(",")[0] for line in _lines(data["train_csv"])]
    root = Path(data["image_root"])
    (root / train[2]).unlink()
    _truncate(root / train[4], 0.6)
    (root / train[5]).write_bytes(b"<html>not an image</html>")
    with pytest.raises(InputError) as err:
        _images(data)
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert f"{data['train_csv']}:3: {root / train[2]}: image not found" in msg
    assert f"{data['train_csv']}:5: {root / train[4]}: corrupt or unreadable image" in msg
    assert f"{data['train_csv']}:6: {root / train[5]}: corrupt or unreadable image" in msg


def test_image_checks_against_a_full_decode(data, tmp_path):
    """check_image agrees with decoding every pixel (PIL's load), on whole, truncated and padded files of
    every kind in the set: baseline and progressive JPEG, greyscale, PNG."""
    from PIL import Image

    def decodes(path):
        try:
            with Image.open(path) as img:
                img.load()
            return True
        except Exception:
            return False

    sources = sorted(Path(data["image_root"]).rglob("*.*g"))
    assert any(Image.open(p).info.get("progressive") for p in sources)
    cases = []
    for k, src in enumerate(sources):
        whole, cut, padded = (tmp_path / f"{k}_{kind}{src.suffix}" for kind in ("whole", "cut", "padded"))
        shutil.copy(src, whole)
        shutil.copy(src, cut)
        _truncate(cut, 0.7)
        padded.write_bytes(src.read_bytes() + b"\x00" * 3000)
        cases += [whole, cut, padded]
    for path in cases:
        assert (check_image(str(path)).problem == "") == decodes(path), path


def test_replaced_image_is_noticed_through_the_manifest(data, tmp_path):
    table = _images(data)
    manifest, stamp = tmp_path / "m.parquet", tmp_path / "m.changed"
    table.to_parquet(manifest)
    assert mark_changes(manifest, stamp) == [] and stamp.stat().st_mtime_ns == 0
    target = Path(table["file"].iloc[3])
    target.write_bytes(Path(table["file"].iloc[7]).read_bytes())      # replaced by another image
    assert changed_files(manifest) == [str(target)]
    assert mark_changes(manifest, stamp) == [str(target)]
    assert stamp.stat().st_mtime_ns > manifest.stat().st_mtime_ns     # so Snakemake reruns the manifest's job
    st = target.stat()
    assert stamp.read_text() == f"{target}\t{st.st_size} {st.st_mtime_ns}\n"
    first = stamp.read_text()
    # replaced a second time (the manifest not yet rewritten): the stamp's content changes again, so a
    # Snakemake that compares the stamp by checksum still sees a new input
    target.write_bytes(Path(table["file"].iloc[5]).read_bytes())
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert mark_changes(manifest, stamp) == [str(target)] and stamp.read_text() != first
    target.unlink()
    assert changed_files(manifest) == [str(target)]
    mark_changes(manifest, stamp)
    assert stamp.read_text() == f"{target}\tmissing\n"
    manifest.write_bytes(b"not parquet")
    assert changed_files(manifest)[0].startswith(f"{manifest} (unreadable")


# ----------------------------------------------------------------------------- torchvision sets

CIFAR_FILES = [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch", "batches.meta"]


@pytest.fixture
def cifar(tmp_path) -> dict:
    """A CIFAR-10 python-format set (tests/cifar_fixture.py) as an `evaluate.sets` entry."""
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(12)]
    root = write_cifar10(tmp_path / "cifar", images, [k % 10 for k in range(12)])
    return {"kind": "cifar10", "root": str(root), "split": "test", "verify_checksums": False}


def _damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if how == "truncated" else b"\x00garbled" + raw[9:])


def test_torchvision_set_passes_with_its_data_files_in_the_manifest(data, cifar, tmp_path):
    table = validate_images(data["image_root"], [("heldout", data["heldout_csv"])], list(data["eval_roots"].items()),
                            torchvision=[("little_cifar", cifar)])
    rows = table[table["set"] == "little_cifar"]
    assert sorted(rows["path"]) == sorted(f"cifar-10-batches-py/{f}" for f in CIFAR_FILES)
    for _, row in rows.iterrows():
        st = os.stat(row["file"])
        assert row["file"] == str(Path(cifar["root"]) / row["path"])
        assert (row["bytes"], row["mtime_ns"], row["format"]) == (st.st_size, st.st_mtime_ns, "cifar10")
    assert len(table) == 4 + sum(len(list(Path(r).glob("*/*.*g"))) for r in data["eval_roots"].values()) + 7
    # a replaced data file is noticed through the manifest, as a replaced image is
    manifest = tmp_path / "m.parquet"
    table.to_parquet(manifest)
    assert changed_files(manifest) == []
    test_batch = Path(cifar["root"]) / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes())
    assert changed_files(manifest) == [str(test_batch)]


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_damaged_torchvision_set_is_named_with_every_other_problem(data, cifar, how):
    test_batch = Path(cifar["root"]) / "cifar-10-batches-py" / "test_batch"
    _damage(test_batch, how)
    heldout = [line.split(",")[0] for line in _lines(data["heldout_csv"])]
    (Path(data["image_root"]) / heldout[1]).unlink()
    with pytest.raises(InputError) as err:
        validate_images(data["image_root"], [("heldout", data["heldout_csv"])], [],
                        torchvision=[("little_cifar", cifar)])
    msg = str(err.value)
    assert "2 problem(s)" in msg
    assert f"{data['heldout_csv']}:2: {Path(data['image_root']) / heldout[1]}: image not found" in msg
    assert f"evaluate.sets.little_cifar: cifar10 under {cifar['root']} cannot be read: {test_batch}: " \
           "not a CIFAR python-format file" in msg
    # checked against the archive's checksums, the set is refused whole (the first file that differs is named)
    found = check_eval_set("little_cifar", {**cifar, "verify_checksums": True})
    assert found.items == 0 and len(found.problems) == 1
    message = found.problems[0][1]
    assert "evaluate.sets.little_cifar" in message and "data_batch_1: its md5 differs" in message


def test_check_eval_set_decodes_every_item_and_names_the_bad_ones(data):
    """Items are decoded in full (not just their headers): a truncated JPEG of a set is named by its file."""
    root = Path(data["eval_roots"]["photos"])
    first, second = sorted(root.glob("*/*.jpg"))[:2]
    _truncate(first, 0.5)
    second.write_bytes(b"not an image")
    found = check_eval_set("photos", {"kind": "imagefolder", "root": str(root)})
    assert [file for file, _ in found.problems] == [str(first), str(second)]
    assert all(message.startswith("evaluation set photos: item ") and "cannot be decoded" in message
               for _, message in found.problems)
    assert found.items == len(list(root.glob("*/*.jpg")))


# ----------------------------------------------------------------------------- through Snakemake


def _config(data, tmp_path) -> Path:
    """config/real_format.example.yaml pointed at `data` (checkpoint files are placeholders: the tests run
    no job that reads them)."""
    cfg = example_config(data)
    for name, spec in cfg["models"].items():
        spec["checkpoint"] = str(tmp_path / f"{name}.pt")
        Path(spec["checkpoint"]).touch()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _snakemake(cfg, cwd, *args, check=True):
    from local_env import local_env

    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                           "--configfile", str(cfg), "--cores", "2", *args], cwd=cwd, capture_output=True,
                          text=True, env=local_env(OMP_NUM_THREADS="1"), timeout=600)
    if check and proc.returncode:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def test_workflow_stops_at_validation_and_reruns_when_an_image_is_replaced(data, tmp_path):
    cfg = _config(data, tmp_path)
    results = tmp_path / "results" / "runs" / "real_format"
    # targets relative to the working directory
    neighbours = "results/runs/real_format/misalign/tfidf_neighbours.npz"
    manifest = "results/runs/real_format/validate/train_images.parquet"
    cache = "results/runs/real_format/features/clip/train.npz"
    lines = _lines(data["captions"])
    Path(data["captions"]).write_text("".join(lines[:-1]), encoding="utf-8")
    proc = _snakemake(cfg, tmp_path, neighbours, manifest, check=False)
    assert proc.returncode != 0
    assert (results / "logs" / "validate" / "text.log").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (results / "logs" / "validate" / "text.log").read_text()
    assert f"{data['captions']}:12: 11 lines but {data['train_csv']} has 12 rows" in log
    assert not (results / "logs" / "caption_neighbours.log").exists()
    assert not (results / "logs" / "validate" / "train_images.log").exists()

    Path(data["captions"]).write_text("".join(lines), encoding="utf-8")
    _snakemake(cfg, tmp_path, manifest)
    dry = _snakemake(cfg, tmp_path, "-n", manifest, cache).stdout
    assert "rule validate_train_images" not in dry and "rule validate_text" not in dry
    extract = dry[dry.index("rule extract_features"):]
    assert manifest in extract[:extract.index("output:")]                   # extract_features reads the manifest
    first = Path(data["image_root"]) / _lines(data["train_csv"])[0].split(",")[0]
    first.write_bytes(first.read_bytes())                                 # rewritten in place: new mtime
    dry = _snakemake(cfg, tmp_path, "-n", manifest).stdout
    assert "rule validate_train_images" in dry and "rule validate_text" not in dry
    assert str(first) in (results / "validate" / "train_images.changed").read_text()


def test_workflow_checks_a_torchvision_set_before_any_model(data, cifar, tmp_path):
    """validate_eval_images opens the config's torchvision set as the evaluation will (the settings file) and
    stops the workflow on a damaged one, naming the set and the file; the set's root is an input of the
    rule, and a replaced data file makes the check run again."""
    import pandas as pd

    cfg = example_config(data)
    cfg["evaluate"]["sets"]["little_cifar"] = cifar
    rng = np.random.default_rng(3)
    for spec in cfg["evaluate"]["sets"].values():   # the example's own CIFAR set, where the data set lacks it
        if spec["kind"] == "cifar10" and not (Path(spec["root"]) / "cifar-10-batches-py").is_dir():
            write_cifar10(Path(spec["root"]), [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)],
                          [0, 1, 2, 3])
    for name, spec in cfg["models"].items():
        spec["checkpoint"] = str(tmp_path / f"{name}.pt")
        Path(spec["checkpoint"]).touch()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    results = tmp_path / "results" / "runs" / "real_format"
    manifest = "results/runs/real_format/validate/eval_images.parquet"
    _snakemake(path, tmp_path, manifest)
    rows = pd.read_parquet(tmp_path / manifest).query("set == 'little_cifar'")
    assert sorted(rows["path"]) == sorted(f"cifar-10-batches-py/{f}" for f in CIFAR_FILES)
    assert "little_cifar: cifar10 under" in (results / "logs" / "validate" / "eval_images.log").read_text()

    test_batch = Path(cifar["root"]) / "cifar-10-batches-py" / "test_batch"
    _damage(test_batch, "truncated")
    dry = _snakemake(path, tmp_path, "-n", manifest).stdout
    assert "rule validate_eval_images" in dry
    assert str(test_batch) in (results / "validate" / "eval_images.changed").read_text()
    proc = _snakemake(path, tmp_path, manifest, check=False)
    assert proc.returncode != 0
    log = (results / "logs" / "validate" / "eval_images.log").read_text()
    assert f"evaluate.sets.little_cifar: cifar10 under {cifar['root']} cannot be read: {test_batch}: " \
           "not a CIFAR python-format file" in log
