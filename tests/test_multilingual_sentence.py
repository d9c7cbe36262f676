"""The sentence_transformers multilingual source: a tiny SentenceTransformer built offline (sentence_fixture)
encodes as a plain transformers reference does, loads without the network, caption CSVs are read with
errors naming file and line, embed() writes the same keys as the other sources, the config refuses the
source without captions, and a rectangular head (text width ≠ image width) trains."""

from __future__ import annotations

import copy
import csv
import os
import time

import numpy as np
import pytest
import torch
import yaml
from sentence_fixture import write_tiny_sentence_model
from test_multilingual_embed import write_base_caches

from workflow_scripts.common.errors import InputError
from workflow_scripts.multilingual import align, embed, paths
from workflow_scripts.multilingual import head as H
from workflow_scripts.multilingual import sentence_tower as st

TEXTS = ["a red circle, left of a blue square", "un cerchio rosso", "ein roter Kreis über dem Quadrat",
         "a red circle, left of a blue square", 'il "quadrato" è blu', "grün", "x"]


@pytest.fixture(scope="module", autouse=True)
def _restore_hf_environment():
    """load_sentence_model switches offline mode on for the whole process: undo it after this module."""
    saved = {name: os.environ.pop(name, None) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    yield
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_sentence_model(tmp_path_factory.mktemp("sentence") / "model", seed=0)


@pytest.fixture(scope="module")
def model(model_dir):
    return st.load_sentence_model(model_dir)


def reference_encode(directory, texts) -> np.ndarray:
    """Plain transformers: the BERT's last hidden states, mean-pooled over the attention mask, L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, bert = AutoTokenizer.from_pretrained(directory), AutoModel.from_pretrained(directory).eval()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
    assert not (batch["input_ids"] == tokenizer.unk_token_id).any()          # the vocabulary covers the texts
    with torch.no_grad():
        hidden = bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_encoding_matches_a_plain_transformers_reference(model, model_dir):
    got = st.encode(model, TEXTS, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, reference_encode(model_dir, TEXTS), atol=1e-5)
    np.testing.assert_array_equal(got[0], got[3])                    # a repeated text: one row, encoded once
    np.testing.assert_allclose(st.encode(model, TEXTS[::-1], batch_size=64), got[::-1], atol=1e-6)


def test_the_tiny_model_is_fast_and_deterministic(model, tmp_path):
    start = time.perf_counter()
    again = st.load_sentence_model(write_tiny_sentence_model(tmp_path / "again", seed=0))
    assert time.perf_counter() - start < 5
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    np.testing.assert_array_equal(st.encode(again, TEXTS, 8), st.encode(model, TEXTS, 8))
    other = st.load_sentence_model(write_tiny_sentence_model(tmp_path / "other", seed=1, dim=16))
    assert st.encode(other, TEXTS, 8).shape == (len(TEXTS), 16)


NO_NETWORK = """
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("network access while loading a local SentenceTransformer")
socket.socket.connect = socket.create_connection = refuse
from workflow_scripts.multilingual import sentence_tower as st
print(st.encode(st.load_sentence_model(sys.argv[1]), ["ein Kreis", "un cerchio"], 4).shape)
"""


def test_loading_never_touches_the_network(model_dir, tmp_path, repo):
    """A fresh interpreter (offline, HF_HOME in tmp_path, sockets refused) loads and encodes; no cache is made."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK, str(model_dir)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("(2, 32)")
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*"))


def test_a_missing_or_foreign_directory_names_key_and_path(tmp_path):
    key = "multilingual.models.st.path"
    with pytest.raises(InputError, match=rf"'{key}'.*nowhere.*not a directory"):
        st.load_sentence_model(tmp_path / "nowhere", key)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=rf"'{key}'.*plain.*not a saved SentenceTransformer"):
        st.load_sentence_model(tmp_path / "plain", key)
    (tmp_path / "plain" / "modules.json").write_text("not json")
    with pytest.raises(InputError, match=rf"'{key}'.*plain.*not a loadable SentenceTransformer"):
        st.load_sentence_model(tmp_path / "plain", key)


# ----------------------------------------------------------------------------- caption CSVs


def write_captions(path, rows) -> str:
    """A caption CSV written with the csv module's standard quoting."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "language", "caption"])
        writer.writerows(rows)
    return str(path)


def test_captions_with_commas_quotes_and_non_ascii_are_read(tmp_path):
    rows = [(2, "it", 'il "quadrato", a destra'), (0, "en", "a circle, red"), (1, "en", "über\nzwei Zeilen"),
            (0, "it", "città")]
    table = st.read_caption_table(write_captions(tmp_path / "c.csv", rows), "train", ["en", "it"], n_images=3)
    assert list(table) == ["en", "it"]
    np.testing.assert_array_equal(table["en"][0], [0, 1])
    assert table["en"][1] == ["a circle, red", "über\nzwei Zeilen"]
    np.testing.assert_array_equal(table["it"][0], [2, 0])
    assert table["it"][1] == ['il "quadrato", a destra', "città"]


BAD_ROWS = [
    ("1,en\n", r"line 3: 2 fields, expected 3"),
    ("1,en,a,b\n", r"line 3: 4 fields, expected 3"),
    ("x,en,hello\n", r"line 3: id 'x' is not an integer"),
    ("1,fr,bonjour\n", r"line 3: unknown language 'fr'"),
    ("3,en,hello\n", r"line 3: id 3 is not a row of data\.train_csv \(rows 0\.\.2\)"),
    ("-1,en,hello\n", r"line 3: id -1 is not a row"),
    ("0,en,again\n", r"line 3: a second caption for id 0 in language 'en' \(the first on line 2\)"),
    ('1,en,"  "\n', r"line 3: empty caption"),
    ('1,it,"two\nlines"\n2,en,\n', r"line 5: empty caption"),      # a quoted line break counts
]


@pytest.mark.parametrize("bad,pattern", BAD_ROWS)
def test_a_malformed_row_names_file_and_line(tmp_path, bad, pattern):
    path = tmp_path / "bad.csv"
    path.write_text("id,language,caption\n0,en,a circle\n" + bad + "1,it,un cerchio\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.csv, " + pattern):
        st.read_caption_table(path, "train", ["en", "it"], n_images=3)


def test_bad_files_are_named(tmp_path):
    read = lambda path: st.read_caption_table(path, "heldout", ["en", "it"], n_images=3)     # noqa: E731
    with pytest.raises(InputError, match=r"gone\.csv: caption file not found \(multilingual\.captions\.heldout\)"):
        read(tmp_path / "gone.csv")
    (tmp_path / "latin1.csv").write_bytes("id,language,caption\n0,en,a\n1,it,città\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.csv, line 3: not UTF-8"):
        read(tmp_path / "latin1.csv")
    (tmp_path / "header.csv").write_text("image,lang,text\n0,en,a\n")
    with pytest.raises(InputError, match=r"header\.csv, line 1: header must be id,language,caption"):
        read(tmp_path / "header.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match=r"empty\.csv: empty file"):
        read(tmp_path / "empty.csv")
    with pytest.raises(InputError, match=r"en_only\.csv: language 'it' has no captions"):
        read(write_captions(tmp_path / "en_only.csv", [(0, "en", "a")]))


# ----------------------------------------------------------------------------- embed, rule inputs, config


def test_sentence_transformers_source_end_to_end(tmp_path, model, model_dir):
    """Images from the base model's caches (width 6), text from the SentenceTransformer (width 32): the keys of
    the files source, unit rows, and each text row the model's encoding of that id's caption."""
    from workflow_scripts.common.io import load_npz

    base = write_base_caches(tmp_path, np.random.default_rng(0), n_train=5, n_heldout=3, d_out=6)
    captions = {"train": {"en": [f"a red circle {w}" for w in ["one", "two", "three", "four", "five"]],
                          "it": ["un cerchio", "un quadrato, rosso", None, "città", "un cerchio"],
                          "de": ["ein Kreis", "über", "ein Kreis", "grün", "ein Quadrat"]},
               "heldout": {"en": ["a star", "a square", "a circle"], "it": ["una stella", None, "un cerchio"],
                           "de": [None, "ein Quadrat", "ein Kreis"]}}
    rng = np.random.default_rng(1)                      # rows in no particular order
    rows = {split: [(i, lang, text) for lang, texts in per.items() for i, text in enumerate(texts) if text]
            for split, per in captions.items()}
    rows = {split: [r[k] for k in rng.permutation(len(r))] for split, r in rows.items()}
    csvs = {split: write_captions(tmp_path / f"captions_{split}.csv", rows[split]) for split in captions}
    config = {"data": {"train_csv": base["train_csv"]},
              "multilingual": {"languages": ["en", "it", "de"], "captions": csvs,
                               "models": {"st": {"source": "sentence_transformers", "base": "b",
                                                 "path": str(model_dir), "batch_size": 3}}}}
    embed.embed(config, "st", str(tmp_path / "out.npz"), csvs, *base["args"], None)
    out = load_npz(tmp_path / "out.npz")
    want = {f"{split}::{k}" for split in captions for k in ("image", "ids")}
    want |= {f"{split}::{lang}::{k}" for split, per in captions.items() for lang in per for k in ("text", "ids")}
    assert set(out) == want
    for split, per in captions.items():
        np.testing.assert_allclose(out[f"{split}::image"], base["image"][split], rtol=1e-5)
        for lang, texts in per.items():
            ids = out[f"{split}::{lang}::ids"]
            text = out[f"{split}::{lang}::text"]
            assert sorted(ids) == [i for i, caption in enumerate(texts) if caption]
            assert text.dtype == np.float32 and text.shape == (len(ids), 32)
            np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-6)
            np.testing.assert_allclose(text, model.encode([texts[i] for i in ids]), atol=1e-6)   # row ↔ its id
    bad = write_captions(tmp_path / "bad.csv", [(0, "en", "a"), (0, "it", "b"), (7, "de", "c")])
    with pytest.raises(InputError, match=r"bad\.csv, line 4: id 7 is not a row of data\.heldout_csv"):
        embed.embed(config, "st", str(tmp_path / "out2.npz"), {**csvs, "heldout": bad}, *base["args"], None)
    with pytest.raises(InputError, match=r"needs the caption CSVs"):
        embed.embed(config, "st", str(tmp_path / "out3.npz"), {}, *base["args"], None)


def test_the_rule_gets_the_model_files_and_the_caption_csvs(model_dir):
    from types import SimpleNamespace

    config = {"multilingual": {"captions": {"train": "data/tr ain.csv", "heldout": "data/held.csv"},
                               "models": {"st": {"source": "sentence_transformers", "base": "clip",
                                                 "path": str(model_dir)}}}}
    inputs = paths.embed_inputs(config, "st", "results", {"index": "cache/{model}.npz"}, "eval/{model}.npz")
    assert inputs["captions"] == ["data/tr ain.csv", "data/held.csv"]
    assert str(model_dir / "modules.json") in inputs["sentence_model"]
    assert str(model_dir / "1_Pooling" / "config.json") in inputs["sentence_model"]
    assert paths.embed_args(config, "st", SimpleNamespace(**inputs)) == \
        "--train-captions 'data/tr ain.csv' --heldout-captions data/held.csv"
    config["multilingual"]["models"]["st"]["path"] = "models/not-yet"
    assert paths.embed_inputs(config, "st", "results", {}, "e")["sentence_model"] == ["models/not-yet"]


@pytest.fixture(scope="module")
def shipped_config(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def test_the_config_needs_captions_and_a_path(shipped_config):
    from workflow_scripts.common.config import validate_config

    config = copy.deepcopy(shipped_config)
    config["multilingual"]["models"]["st"] = {"source": "sentence_transformers", "base": "clip", "path": "m"}
    with pytest.raises(InputError, match=r"key 'multilingual\.captions': model 'st' \(source sentence_transformers\)"):
        validate_config(config)
    config["multilingual"]["captions"] = {"train": "tr.csv", "heldout": "he.csv"}
    models = validate_config(config)["multilingual"]["models"]
    assert models["st"]["batch_size"] == 256 and models["mclip"]["batch_size"] == 128
    del config["multilingual"]["models"]["st"]["path"]
    with pytest.raises(InputError, match=r"multilingual\.models\.st: 'path' is a required property"):
        validate_config(config)


# ----------------------------------------------------------------------------- text width ≠ image width

SETTINGS = {"validation_fraction": 0.2, "validation_max": 1000, "batch_per_lang": 16, "mlp_hidden": 8, "lr": 3e-2,
            "weight_decay": 0.0, "epochs": 6, "steps_per_epoch": 5, "warmup_steps": 2, "lr_floor": 0.1,
            "temperature": 0.1, "max_grad_norm": 1.0, "patience": 0}


def rectangular_toy(n=200, d_text=12, d_img=8):
    """Text = image through a fixed d_img × d_text map plus noise, in two languages."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(n, d_img)).astype(np.float32)
    lift = rng.normal(size=(d_img, d_text))
    data = {"train::image": image}
    for lang in ("en", "it"):
        data[f"train::{lang}::text"] = (image @ lift + 0.1 * rng.normal(size=(n, d_text))).astype(np.float32)
        data[f"train::{lang}::ids"] = np.arange(n)
    return data


def test_a_rectangular_linear_head_trains_and_reloads(tmp_path):
    from workflow_scripts.common.io import save_npz
    from workflow_scripts.multilingual.evaluate import apply

    V, T = align.paired_tensors(rectangular_toy(), ["en", "it"])
    order = np.random.default_rng(1).permutation(len(V))
    val = order[:40]
    split = align.SeedSplit(order[40:], val, V[val], [t[val] for t in T], frozen=float("nan"))
    run = {"head": "linear", "prox_id": 1e-3, "ortho": 1e-4}
    summary, _, state = align.fit(V, T, split, run, SETTINGS, seed=0, base_seed=0)
    at_init = align.macro_r1(H.LinearHead(12, 8), split.val_img, split.val_txt)     # the rectangular identity
    assert state["delta"].shape == (12, 8) and summary["val_macro_r1"] > at_init + 0.15
    key = align.run_key(run, 0)
    save_npz(tmp_path / "heads.npz", **{f"{key}::{k}": v for k, v in state.items()})
    head = align.load_heads(str(tmp_path / "heads.npz"), [key], 12, 8, 8)[key]
    assert apply(head, T[0].numpy()).shape == (200, 8)


def test_the_frozen_baseline_with_unequal_widths():
    align.train_run(rectangular_toy(), ["en", "it"], {"head": "linear", "prox_id": 0.0, "ortho": 0.0}, SETTINGS,
                    seed=0, base_seed=0)
