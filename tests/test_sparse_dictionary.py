"""Concept vocabulary, centring/recomposition against plain NumPy, storage bytes against scipy's CSR, the
sweep read-offs and the stage's bad-input errors."""

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from workflow_scripts.common.errors import InputError
from workflow_scripts.sparse import aggregate, centring, dictionary, evaluate, paths


# ----------------------------------------------------------------------------- vocabulary

def test_phrases_count_words_and_adjacent_pairs():
    captions = ["A red star", "red star, red!", "the star"]
    got = dictionary.caption_phrases(captions, dictionary.stop_word_set("english"))
    # by hand: "a"/"the" are stop words, so no phrase contains them
    assert got == {"red": 3, "star": 3, "red star": 2, "star red": 1}
    everything = dictionary.caption_phrases(captions, dictionary.stop_word_set("none"))
    assert everything["a red"] == 1 and everything["the star"] == 1 and everything["a"] == 1


def test_top_phrases_by_frequency_then_alphabet_and_splice_file_order(tmp_path):
    counts = {"b": 2, "a": 2, "c": 5, "d": 1}
    top = dictionary.top_phrases(counts, 3)
    assert top == ["c", "a", "b"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(dictionary.to_vocabulary_lines(top)) + "\n")
    assert path.read_text().splitlines() == ["b", "a", "c"]          # least frequent first (SpLiCE)
    assert dictionary.read_vocabulary(str(path), 2) == ["c", "a"]     # the last k lines, most frequent first
    assert dictionary.read_vocabulary(str(path)) == ["c", "a", "b"]


def test_vocabulary_duplicates_are_removed_with_a_log_line(tmp_path, caplog):
    path = tmp_path / "vocab.txt"
    path.write_text("rare\nstar\ncommon\nstar\n")
    with caplog.at_level(logging.WARNING):
        assert dictionary.read_vocabulary(str(path)) == ["star", "common", "rare"]
    assert "repeated concept" in caplog.text and "star" in caplog.text


@pytest.mark.parametrize("content, match", [(b"", "empty vocabulary"), (b"star\n\nring\n", ":2: empty line"),
                                            (b"star\nr\xffng\n", ":2: not valid UTF-8")])
def test_bad_vocabulary_files_name_file_and_line(tmp_path, content, match):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as err:
        dictionary.read_vocabulary(str(path))
    assert str(path) in str(err.value)


def test_bad_settings_are_errors():
    with pytest.raises(InputError, match="stop_words"):
        dictionary.stop_word_set("french")
    with pytest.raises(InputError, match="top_k"):
        dictionary.top_phrases({"a": 1}, 0)
    with pytest.raises(InputError, match="empty"):
        dictionary.dedupe(["a", " "], "where")


def test_vocabulary_cli(tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red star\na blue star\nred ring\n")
    out = tmp_path / "vocab.txt"
    dictionary.main(["--captions", str(captions), "--top-k", "3", "--out", str(out)])
    assert out.read_text().splitlines() == ["blue", "star", "red"]   # red 2, star 2, then ties alphabetical


# ----------------------------------------------------------------------------- centring

def test_centring_and_recomposition_against_plain_numpy():
    rng = np.random.default_rng(0)
    T, X, Z = rng.normal(size=(6, 4)), rng.normal(size=(10, 4)), rng.normal(size=(3, 4))
    W = np.abs(rng.normal(size=(3, 6))) * (rng.random((3, 6)) < 0.5)

    def unit(v):
        return v / np.sqrt(np.sum(v * v))

    Tn = np.array([unit(t) for t in T])
    mean_t = sum(Tn) / len(Tn)
    C_ref = np.array([unit(t - mean_t) for t in Tn])
    mu_ref = sum(unit(x) for x in X) / len(X)
    Zc_ref = np.array([unit(unit(z) - mu_ref) for z in Z])
    rec_ref = np.array([unit(unit(sum(w[k] * C_ref[k] for k in range(6))) + mu_ref) if w.any() else unit(mu_ref)
                        for w in W])
    C, mu = centring.center_concepts(T), centring.image_mean(X)
    assert np.allclose(C, C_ref) and np.allclose(mu, mu_ref)
    assert np.allclose(centring.center_images(Z, mu), Zc_ref)
    assert np.allclose(centring.recompose(W, C, mu), rec_ref)


def test_storage_bytes_against_scipy_csr():
    rng = np.random.default_rng(1)
    W = np.abs(rng.normal(size=(7, 300))) * (rng.random((7, 300)) < 0.02)
    csr = scipy.sparse.csr_matrix(W.astype(np.float32))
    stored = csr.data.nbytes + csr.indices.astype(np.uint16).nbytes + csr.indptr.astype(np.int32).nbytes
    dense, sparse = evaluate.storage_bytes((W > 0).sum(axis=1), 300, 64)
    assert dense == np.zeros((7, 64), np.float32).nbytes
    assert sparse == stored


# ----------------------------------------------------------------------------- read-offs and tables

def test_interpolation_and_first_crossing():
    x, y = np.array([6.0, 2.0, 4.0]), np.array([0.9, 0.5, 0.7])
    assert aggregate.interpolate_at(x, y, 3.0) == pytest.approx(np.interp(3.0, [2, 4, 6], [0.5, 0.7, 0.9]))
    assert np.isnan(aggregate.interpolate_at(x, y, 7.0))
    assert aggregate.first_crossing(x, y, 0.8) == pytest.approx(5.0)
    assert aggregate.first_crossing(x, y, 0.4) == 2.0
    assert np.isnan(aggregate.first_crossing(x, y, 0.95))


def test_versus_purity_pairs_each_run_with_its_replicates_control():
    rows = []
    for seed in (0, 1, 2):
        rows.append({"model": "m", "kind": "finetune", "strategy": "none", "cs": 0.0, "seed": seed, "set": "s",
                     "acc1_at_l0": 0.5 + 0.01 * seed, "acc1_loss_at_l0": 0.1 - 0.01 * seed, "l0_at_relative_acc": 3.0, "acc1_dense": 0.6,
                     "purity_text": 0.1, "purity_image": 0.1, "l0_censored": False})
        rows.append({"model": "m", "kind": "finetune", "strategy": "random", "cs": 0.5, "seed": seed, "set": "s",
                     "acc1_at_l0": 0.4 + 0.01 * seed, "acc1_loss_at_l0": 0.2 - 0.01 * seed, "l0_at_relative_acc": 2.0, "acc1_dense": 0.6,
                     "purity_text": 0.2, "purity_image": 0.1, "l0_censored": False})
    table, spearman = aggregate.versus_purity(pd.DataFrame(rows))
    swap = table[table["strategy"] == "random"].iloc[0]
    assert swap["acc1_at_l0_minus_control"] == pytest.approx(-0.1)
    assert swap["acc1_loss_at_l0_minus_control"] == pytest.approx(0.1)
    assert swap["n"] == 3
    assert set(spearman["x"]) == {"purity_text", "purity_image", "cs"}


def test_checkpoint_runs_list_pretrained_then_finetunes():
    runs = paths.checkpoint_runs("clip", "R", "R/ft/{model}/{strategy}/Cs{cs}/seed{seed}", ["clip"],
                                 [("none", "0.0"), ("random", "0.5")], ["0", "1"])
    assert runs[0] == ("kind=pretrained", "R/eval/pretrained/clip/projections.npz")
    assert runs[-1] == ("kind=finetune,strategy=random,cs=0.5,seed=1", "R/ft/clip/random/Cs0.5/seed1/projections.npz")
    assert len(runs) == 5
    assert paths.checkpoint_runs("laclip", "R", "x", ["clip"], [], []) == [runs[0][:1] + ("R/eval/pretrained/laclip/projections.npz",)]


# ----------------------------------------------------------------------------- bad input of the CLIs

def test_evaluate_cli_errors(tmp_path):
    from workflow_scripts.common.io import save_npz

    bad = tmp_path / "projections.npz"
    save_npz(bad, image=np.eye(2))
    concepts = tmp_path / "concepts.npz"
    save_npz(concepts, concepts=np.asarray(["a"]), text=np.ones((1, 2)))
    base = ["--config", "config.yaml", "--model", "clip", "--features", "f.npz", "--out-dir", str(tmp_path)]
    with pytest.raises(InputError, match="one --run per --projections"):
        evaluate.main(base + ["--concepts", str(concepts), "--projections", str(bad)])
    with pytest.raises(InputError, match="lacks 'image'"):
        evaluate.main(base + ["--concepts", str(concepts), "--run", "kind=pretrained", "--projections", str(bad)])
    with pytest.raises(InputError, match="KEY=VALUE"):
        evaluate.parse_run("kind")
    with pytest.raises(InputError, match="another model"):
        evaluate.checkpoint_dictionary({"text": np.ones((2, 3)), "image": np.ones((2, 2))}, np.eye(2), np.eye(2))


def test_checkpoint_without_the_towers_is_an_error_naming_it(tmp_path):
    import torch

    from workflow_scripts.common.config import load_config
    from workflow_scripts.sparse import encode

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("ring\nstar\n")
    ckpt = tmp_path / "projections_only.pt"
    torch.save({"epoch": 0, "state_dict": {"text_projection": torch.zeros(64, 64)}, "meta": {}}, ckpt)
    config = load_config("tests/config/test.yaml")
    with pytest.raises(InputError) as err:
        encode.encode(config, "clip", str(ckpt), str(vocab))
    assert str(ckpt) in str(err.value)
    with pytest.raises(InputError, match="placeholder"):
        encode.concept_prompts(["a"], "a photo")


@pytest.mark.parametrize("sparse, match", [({"sets": ["nope"]}, "sparse.sets.0"),
                                           ({"example_lambda": 0.3}, "sparse.example_lambda"),
                                           ({"lambdas": [0.1, -0.2]}, "lambdas")])
def test_bad_sparse_settings_name_the_key(tmp_path, sparse, match):
    import yaml

    from workflow_scripts.common.config import load_config

    cfg = yaml.safe_load(open("tests/config/test.yaml"))
    cfg["sparse"] = {**cfg["sparse"], **sparse}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match=match):
        load_config(path)


def test_effective_misalignment_joins_by_replicate_and_the_control_by_its_one_row():
    runs = pd.DataFrame({"strategy": ["none", "random", "random"], "cs": [0.0, 0.5, 0.5], "seed": [1, 0, 1]})
    summary = pd.DataFrame({"strategy": ["none", "random", "random"], "cs": [0.0, 0.5, 0.5], "seed": [-1, 0, 1],
                            "text_changed": [0.0, 0.5, 0.49], "contradicts_any": [0.0, 0.4, 0.3]})
    out = aggregate.effective_per_run(runs, summary)
    assert out["contradicts_any"].tolist() == [0.0, 0.4, 0.3]
    assert aggregate.effective_per_run(runs, None) is runs
