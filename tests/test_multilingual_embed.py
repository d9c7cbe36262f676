"""Bad input to the multilingual embedding files: a language with no captions, ids that are not images,
files without ids; npz and parquet files read alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.common.errors import InputError
from workflow_scripts.multilingual import embed


def _write(tmp_path, name, ids, emb, kind):
    path = tmp_path / f"{name}.{kind}"
    if kind == "npz":
        np.savez(path, id=np.asarray(ids), embedding=np.asarray(emb, dtype=np.float32))
    else:
        pd.DataFrame({"id": ids, "embedding": list(np.asarray(emb, dtype=np.float32))}).to_parquet(path)
    return str(path)


@pytest.mark.parametrize("kind", ["npz", "parquet"])
def test_files_are_read_and_normalised(tmp_path, kind):
    files = {"en": _write(tmp_path, "en", [0, 1, 2], np.eye(3) * 2, kind),
             "it": _write(tmp_path, "it", [2, 0], np.ones((2, 3)), kind)}
    out = embed.text_from_files(files, ["en", "it"], n_images=3, split="train")
    np.testing.assert_array_equal(out["train::it::ids"], [2, 0])
    np.testing.assert_allclose(np.linalg.norm(out["train::it::text"], axis=1), 1.0, rtol=1e-6)


def test_language_without_captions_names_file_and_language(tmp_path):
    files = {"en": _write(tmp_path, "en", [0, 1], np.eye(2), "npz"),
             "de": _write(tmp_path, "de", np.zeros(0, dtype=np.int64), np.zeros((0, 2)), "npz")}
    with pytest.raises(InputError, match=r"de\.npz: language 'de' has no captions"):
        embed.text_from_files(files, ["en", "de"], n_images=2, split="train")


def test_mismatched_ids_name_file_and_id(tmp_path):
    files = {"en": _write(tmp_path, "en", [0, 1, 7], np.eye(3), "parquet")}
    with pytest.raises(InputError, match=r"en\.parquet: id 7 .*not an image id"):
        embed.text_from_files(files, ["en"], n_images=3, split="heldout")


def test_missing_language_file_and_id_column(tmp_path):
    with pytest.raises(InputError, match=r"files\.train\.it"):
        embed.text_from_files({}, ["it"], n_images=3, split="train")
    path = tmp_path / "x.parquet"
    pd.DataFrame({"key": [0], "a": [1.0]}).to_parquet(path)
    with pytest.raises(InputError, match=r"x\.parquet: no 'id' column"):
        embed.read_embedding_file(path)


def write_base_caches(tmp_path, rng, n_train=5, n_heldout=3, d_feat=4, d_out=2) -> dict:
    """The base model's caches of a real-data model: data.train_csv, a feature cache (one view), evaluation
    features with the held-out pairs and the projections (d_out output neurons). Returns the embed()
    arguments (features, eval_features, projections), the train_csv and the expected unit image rows."""
    from workflow_scripts.common.data import write_pairs_csv
    from workflow_scripts.common.io import save_array, save_npz

    paths = [f"img/{i}.png" for i in range(n_train)]
    write_pairs_csv(tmp_path / "train.csv", paths, [f"caption {i}" for i in range(n_train)])
    save_npz(tmp_path / "cache.npz", image_paths=np.asarray(paths), texts=np.asarray(["t"]), views=np.int64(1))
    train = rng.normal(size=(1, n_train, d_feat)).astype(np.float32)
    save_array(tmp_path / "cache.image.npy", train)
    save_array(tmp_path / "cache.text.npy", rng.normal(size=(1, d_feat)).astype(np.float32))
    held = rng.normal(size=(n_heldout, d_feat)).astype(np.float32)
    save_npz(tmp_path / "eval.npz", **{"heldout_pairs::image": held})
    image_p = rng.normal(size=(d_out, d_feat))                  # rows = output neurons
    save_npz(tmp_path / "proj.npz", image=image_p, text=rng.normal(size=(d_out, d_feat)))

    def unit(x):
        y = x @ image_p.T
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    return {"args": (str(tmp_path / "cache.npz"), str(tmp_path / "eval.npz"), str(tmp_path / "proj.npz")),
            "train_csv": str(tmp_path / "train.csv"), "image": {"train": unit(train[0]), "heldout": unit(held)}}


def test_files_source_end_to_end(tmp_path):
    """A real-data model: images through the base model's caches (feature cache for the training rows,
    evaluation features for the held-out pairs, the projection), text from per-language files."""
    from workflow_scripts.common.io import load_npz

    rng = np.random.default_rng(0)
    base = write_base_caches(tmp_path, rng)
    files = {split: {lang: _write(tmp_path, f"{split}_{lang}", np.arange(n), rng.normal(size=(n, 2)), "npz")
                     for lang in ("en", "it")} for split, n in (("train", 5), ("heldout", 3))}
    config = {"data": {"train_csv": base["train_csv"]},
              "multilingual": {"languages": ["en", "it"],
                               "models": {"real": {"source": "files", "base": "b", "files": files}}}}
    embed.embed(config, "real", str(tmp_path / "out.npz"), {}, *base["args"], None)
    out = load_npz(tmp_path / "out.npz")
    np.testing.assert_allclose(out["heldout::image"], base["image"]["heldout"], rtol=1e-5)
    np.testing.assert_allclose(out["train::image"], base["image"]["train"], rtol=1e-5)
    assert out["train::image"].shape == (5, 2) and out["train::it::text"].shape == (5, 2)
    np.testing.assert_array_equal(out["heldout::ids"], np.arange(3))
    files["heldout"]["it"] = _write(tmp_path, "bad_it", [0, 1, 3], rng.normal(size=(3, 2)), "npz")
    with pytest.raises(InputError, match=r"bad_it\.npz: id 3"):
        embed.embed(config, "real", str(tmp_path / "out2.npz"), {}, *base["args"], None)
