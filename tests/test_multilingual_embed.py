"""Bad input to the multilingual embedding files: a language with no captions, ids that are not images,
files without ids; npz and parquet files read alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.errors import InputError
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
