"""Checkpoint files: the original's format, atomic writes, safe loading and clear errors."""

from __future__ import annotations

import argparse

import pytest
import torch

from workflow_scripts.models.checkpoints import load_checkpoint, save_checkpoint
from workflow_scripts.common.errors import InputError


def test_roundtrip_format_loads_with_weights_only(tmp_path):
    state = {"module.w": torch.randn(3, 4), "b": torch.arange(5)}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(2, 2))])
    opt.param_groups[0]["params"][0].grad = torch.ones(2, 2)
    opt.step()
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", state, epoch=3, optimizer=opt.state_dict(),
                           meta={"arch": "fp-tiny-vit", "cs": 0.1, "zero_shot": {"shape": 0.5}, "tags": [1, "a"]})
    raw = torch.load(path, weights_only=True)  # the format contract itself, not just our loader
    assert set(raw) == {"epoch", "state_dict", "optimizer", "meta"}
    assert raw["epoch"] == 3 and raw["meta"]["zero_shot"] == {"shape": 0.5}
    assert set(raw["state_dict"]) == {"w", "b"}  # DDP prefix dropped
    assert torch.equal(raw["state_dict"]["w"], state["module.w"])
    assert torch.equal(raw["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert load_checkpoint(path)["meta"]["arch"] == "fp-tiny-vit"
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary files left


def test_save_refuses_objects_that_need_pickling(tmp_path):
    with pytest.raises(TypeError, match="Namespace"):
        save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(1)}, epoch=0, meta={"args": argparse.Namespace(a=1)})
    assert not (tmp_path / "c.pt").exists()


def test_legacy_pickle_refused_without_opt_in(tmp_path):
    path = tmp_path / "laclip.pt"
    torch.save({"epoch": 35, "state_dict": {"module.w": torch.ones(2)}, "args": argparse.Namespace(lr=3e-3)}, path)
    with pytest.raises(InputError) as err:
        load_checkpoint(path, config_key="models.laclip.trust_legacy_pickle")
    msg = str(err.value)
    assert str(path) in msg and "models.laclip.trust_legacy_pickle" in msg and "argparse.Namespace" in msg
    loaded = load_checkpoint(path, trust_legacy_pickle=True)
    assert loaded["args"].lr == 3e-3 and torch.equal(loaded["state_dict"]["module.w"], torch.ones(2))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_file_error_names_the_file(tmp_path, damage):
    good = save_checkpoint(tmp_path / "good.pt", {"w": torch.randn(1000)}, epoch=1)
    data = good.read_bytes()
    bad = tmp_path / f"{damage}.pt"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint " * 20, "empty": b""}[damage])
    for trust in (False, True):
        with pytest.raises(InputError, match=rf"{bad}: corrupt or truncated"):
            load_checkpoint(bad, trust_legacy_pickle=trust)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=rf"{tmp_path / 'nope.pt'}: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_the_same_checkpoint_has_the_same_bytes_wherever_it_is_written(tmp_path):
    """torch.save names its archive's folder after the file it writes: through atomic_path's random temporary
    name that made every save differ; the bytes must depend on the content only."""
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    a = save_checkpoint(tmp_path / "a" / "checkpoint.pt", state, epoch=1, meta={"seed": 0})
    b = save_checkpoint(tmp_path / "other-name.pt", state, epoch=1, meta={"seed": 0})
    assert a.read_bytes() == b.read_bytes()
    c = save_checkpoint(tmp_path / "c.pt", {"w": state["w"] + 1}, epoch=1, meta={"seed": 0})
    assert c.read_bytes() != a.read_bytes()
