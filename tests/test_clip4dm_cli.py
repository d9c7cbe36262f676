"""CLIP4DM CLIs: bad input (unknown model or set, missing pack, missing image) is a clear error naming the
item, and no output is left behind."""

from __future__ import annotations

import json

import pytest

from workflow_scripts.common.errors import InputError

CONFIG = "tests/config/test.yaml"


def test_detect_missing_pack_names_it(tmp_path, repo, monkeypatch):
    from workflow_scripts.clip4dm import detect

    monkeypatch.chdir(repo)
    (tmp_path / "c.txt").write_text("a\nb\n")
    out = [tmp_path / "m.json", tmp_path / "s.parquet"]
    with pytest.raises(InputError, match="nope.npz: file not found"):
        detect.main(["--config", CONFIG, "--pack", str(tmp_path / "nope.npz"), "--captions", str(tmp_path / "c.txt"),
                     "--original", str(tmp_path / "c.txt"), "--manifest", str(tmp_path / "x.parquet"),
                     "--model", "clip", "--strategy", "random", "--cs", "0.5", "--replicate", "0",
                     "--out-metrics", str(out[0]), "--out-scores", str(out[1])])
    assert not any(p.exists() for p in out) and sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


@pytest.mark.parametrize("args, message", [
    (["--model", "nomodel", "--set", "foil"], "unknown model 'nomodel'"),
    (["--model", "clip", "--set", "nosuch"], "unknown clip4dm.real_data set 'nosuch'"),
])
def test_realdata_unknown_names(tmp_path, repo, monkeypatch, args, message):
    import yaml

    from workflow_scripts.clip4dm import realdata

    monkeypatch.chdir(repo)
    config = yaml.safe_load(open(CONFIG))
    config.setdefault("clip4dm", {})["real_data"] = {
        "foil": {"format": "foil", "json": str(tmp_path / "f.json"), "image_root": str(tmp_path)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match=message):
        realdata.main(["--config", str(path), *args, "--checkpoint", "x.pt", "--pack", "x.npz",
                       "--out-metrics", str(tmp_path / "m.json"), "--out-samples", str(tmp_path / "s.parquet")])
    assert not (tmp_path / "m.json").exists()


def test_realdata_missing_image_is_named(tmp_path, repo, monkeypatch):
    """A FOIL record whose image is not under the image root: the error names the image file."""
    import torch
    import yaml

    from workflow_scripts.models.checkpoints import save_checkpoint
    from workflow_scripts.clip4dm import realdata
    from workflow_scripts.models.clip import build_model

    monkeypatch.chdir(repo)
    (tmp_path / "f.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "missing.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "a red circle", "foil_word": "ORIG"}]}))
    config = yaml.safe_load(open(CONFIG))
    config.setdefault("clip4dm", {})["real_data"] = {
        "foil": {"format": "foil", "json": str(tmp_path / "f.json"), "image_root": str(tmp_path)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_model("fp-tiny-vit").state_dict(), epoch=0)
    with pytest.raises(InputError, match="missing.jpg: image not found"):
        realdata.main(["--config", str(path), "--model", "clip", "--set", "foil", "--checkpoint",
                       str(tmp_path / "m.pt"), "--pack", "x.npz", "--out-metrics", str(tmp_path / "m.json"),
                       "--out-samples", str(tmp_path / "s.parquet")])
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize("fmt", ["foil", "hat"])
def test_realdata_end_to_end_on_world_images(tmp_path, repo, monkeypatch, tiny_world, fmt):
    """A synthetic benchmark file over the tiny world's images, scored end to end with a random model:
    the metrics the original reports are there and in range."""
    import numpy as np
    import pandas as pd
    import torch
    import yaml

    from workflow_scripts.models.checkpoints import save_checkpoint
    from workflow_scripts.clip4dm import realdata
    from workflow_scripts.common.data import read_pairs_csv
    from workflow_scripts.common.io import save_npz
    from workflow_scripts.models.clip import build_model

    monkeypatch.chdir(repo)
    paths, captions = read_pairs_csv(tiny_world / "train.csv")
    if fmt == "foil":      # two original captions and one foil per image: each one's references are the others
        data = {"images": [{"id": i, "file_name": p} for i, p in enumerate(paths[:6])],
                "annotations": [{"id": 3 * i + k, "image_id": i, "caption": (c, captions[i + 6], "a purple box")[k],
                                 "foil_word": "ORIG" if k < 2 else "purple", "foil": k == 2}
                                for i, c in enumerate(captions[:6]) for k in (0, 1, 2)]}
    else:
        data = [{"sample_id": i, "image_path": p, "caption": f"a purple box {c}",
                 "grounding": [["a", 0], ["purple", i % 2]] + [[w, 0] for w in ("box", *c.split())],
                 "references": [c, captions[i + 6]]}
                for i, (p, c) in enumerate(zip(paths[:6], captions[:6]))]
    (tmp_path / "b.json").write_text(json.dumps(data))
    config = yaml.safe_load(open(CONFIG))
    config.setdefault("clip4dm", {})["real_data"] = {
        "bench": {"format": fmt, "json": str(tmp_path / "b.json"), "image_root": str(tiny_world)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_model("fp-tiny-vit").state_dict(), epoch=0)
    save_npz(tmp_path / "pack.npz", epsilon=np.float64(-1e-3))
    realdata.main(["--config", str(path), "--model", "clip", "--set", "bench", "--checkpoint", str(tmp_path / "m.pt"),
                   "--pack", str(tmp_path / "pack.npz"), "--out-metrics", str(tmp_path / "m.json"),
                   "--out-samples", str(tmp_path / "s.parquet")])
    metrics = json.loads((tmp_path / "m.json").read_text())
    samples = pd.read_parquet(tmp_path / "s.parquet")
    assert metrics["n"] == len(samples) == (18 if fmt == "foil" else 6)
    assert metrics["n_foil"] == (6 if fmt == "foil" else 3)
    for key in ("la", "ap_fclipscore", "ap_clipscore", "auroc_clipscore", "ap_refclipscore", "auroc_refclipscore"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["n_refclipscore"] == metrics["n"]
    # F-CLIPScore by the original's mode of the format: most negative word (foil) or most negative span (hat)
    assert metrics["fclipscore_mode"] == ("most_negative" if fmt == "foil" else "span_mean")
    factor = 1 - np.maximum(samples["cos"], 0)
    if fmt == "foil":
        np.testing.assert_allclose(samples["fclipscore"], samples["worst_score"] * factor, rtol=1e-12)
    # RefCLIPScore against a plain computation with open_clip's encode_text: 2.5 * max over every reference
    from workflow_scripts.models.clip import get_tokenizer, load_model

    model = load_model(config["models"]["clip"], str(tmp_path / "m.pt"), name="clip").eval()
    tok = get_tokenizer("fp-tiny-vit")

    def emb(text):
        with torch.no_grad():
            e = model.encode_text(tok(["A photo depicts " + text], context_length=24))[0].numpy()
        return e / np.linalg.norm(e)

    if fmt == "foil":
        refs = {3 * i + k: [(c, captions[i + 6])[j] for j in (0, 1) if j != k] if k < 2 else [c, captions[i + 6]]
                for i, c in enumerate(captions[:6]) for k in (0, 1, 2)}
        refs = [refs[j] for j in range(18)]
    else:
        refs = [[c, captions[i + 6]] for i, c in enumerate(captions[:6])]
    for (_, row), rs in zip(samples.iterrows(), refs):
        a = 2.5 * max(float(row["cos"]), 0.0)
        b = 2.5 * max(max(float(emb(row["caption"]) @ emb(r)) for r in rs), 0.0)
        assert row["refclipscore"] == pytest.approx(2 * a * b / (a + b) if a + b else 0.0, abs=1e-5)
