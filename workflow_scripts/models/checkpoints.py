"""Checkpoint files: atomic saving in the original's format and safe loading.

Format (docs/architecture.md): `{"epoch": int, "state_dict": {key: tensor} (no 'module.' prefix),
"optimizer": state dict | None, "meta": {...}}`, holding only tensors and plain Python values so that
`torch.load(weights_only=True)` reads it. Legacy files that pickle Python objects (LaCLIP's train.py
stores an `argparse.Namespace`) load only with an explicit, per-model opt-in.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..common.errors import InputError
from ..common.io import atomic_path

PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError unless obj is built from tensors, primitives, lists/tuples and str-keyed dicts."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} would need pickling")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, PLAIN_TYPES):
        raise TypeError(f"{where}: {type(obj).__name__} would need pickling; store plain values")


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], epoch: int,
                    optimizer: dict | None = None, meta: dict | None = None, **extra: Any) -> Path:
    """Write `{'epoch', 'state_dict', 'optimizer', 'meta', **extra}` atomically; returns the path.

    Tensors are detached and moved to CPU, a DDP `module.` prefix is dropped. Anything that
    weights_only loading could not read back is a TypeError here, before a file is written.
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v.detach().cpu() for k, v in state_dict.items()}
    ckpt = {"epoch": int(epoch), "state_dict": state, "optimizer": optimizer, "meta": dict(meta or {}), **extra}
    _check_plain(ckpt, "checkpoint")
    path = Path(path)
    save_torch(ckpt, path)
    return path


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` atomically, with the same bytes for the same content.

    torch names the folder inside its zip archive after the file it is given, and atomic_path's temporary
    name is random: saving through an open file object makes that folder `archive` on every save.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def _unsupported_global(message: str) -> str | None:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def load_checkpoint(path: str | os.PathLike, trust_legacy_pickle: bool = False,
                    config_key: str = "models.<name>.trust_legacy_pickle") -> Any:
    """torch.load a checkpoint on CPU, weights_only unless the caller opts in for a trusted legacy file.

    A missing, truncated or corrupt file, or (without the opt-in) one that pickles Python objects, is an
    InputError naming the file (and the config key that opts in).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _unsupported_global(str(exc))
        if found is None:
            raise InputError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
        if not trust_legacy_pickle:
            raise InputError(
                f"{path}: the checkpoint pickles Python objects ({found}), which safe loading "
                f"(torch.load weights_only=True) refuses. If you trust this file, set {config_key}: true") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError) as exc:
        raise InputError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the file was readable far enough to name a global; anything else is damage
        raise InputError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [""])[0][:200]


# ----------------------------------------------------------------------------- projection-only checkpoints

PROJECTIONS_ONLY = "projections"   # meta["contents"] of a fine-tune's checkpoint


def is_projection_only(checkpoint: Any) -> bool:
    """A fine-tune's checkpoint: the trained projections plus the pretrained checkpoint's path and SHA-256."""
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    return isinstance(meta, dict) and meta.get("contents") == PROJECTIONS_ONLY


def materialize(checkpoint: dict, path: str | os.PathLike, pretrained: str | os.PathLike | None = None,
                trust_legacy_pickle: bool = False) -> dict:
    """The full checkpoint of a projection-only one: the pretrained state dict with the trained projections.

    `pretrained` defaults to the path recorded in the checkpoint; its SHA-256 must equal the recorded one
    (a different or modified file is an InputError naming both), and every projection key must exist there
    with the same shape.
    """
    from ..common.io import sha256_file

    meta = checkpoint["meta"]
    base_path = Path(pretrained or meta["pretrained"])
    if not base_path.is_file():
        raise InputError(f"{path}: its pretrained checkpoint {base_path} is missing; pass the file's new location")
    digest = sha256_file(base_path)
    if digest != meta.get("pretrained_sha256"):
        raise InputError(f"{path}: was fine-tuned from a file with SHA-256 {meta.get('pretrained_sha256')}, "
                         f"but {base_path} has {digest}")
    base = load_checkpoint(base_path, trust_legacy_pickle=trust_legacy_pickle)
    state = dict(base["state_dict"] if isinstance(base, dict) and "state_dict" in base else base)
    for key, value in checkpoint["state_dict"].items():
        if key not in state or tuple(state[key].shape) != tuple(value.shape):
            raise InputError(f"{path}: projection {key} {tuple(value.shape)} does not fit {base_path}")
        state[key] = value
    return {**checkpoint, "state_dict": state, "meta": {**meta, "contents": "full"}}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ..common.io import setup_logging

    ap = argparse.ArgumentParser(description="Build a full checkpoint (open_clip state dict in our format) from a "
                                             "fine-tune's projection-only checkpoint.")
    ap.add_argument("checkpoint", help="results/finetune/.../checkpoint.pt")
    ap.add_argument("--out", required=True, help="the full checkpoint to write")
    ap.add_argument("--pretrained", help="the pretrained checkpoint (default: the path recorded in the file)")
    args = ap.parse_args(argv)
    setup_logging()
    raw = load_checkpoint(args.checkpoint)
    if not is_projection_only(raw):
        raise InputError(f"{args.checkpoint}: not a projection-only fine-tune checkpoint")
    full = materialize(raw, args.checkpoint, args.pretrained)
    save_checkpoint(args.out, full["state_dict"], full["epoch"], full.get("optimizer"), full["meta"])
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
