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

from .errors import InputError
from .io import atomic_path

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
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


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
