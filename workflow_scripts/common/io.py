"""Atomic output writing, logging and small helpers shared by every stage CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import InputError

log = logging.getLogger("workflow_scripts")
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Readers never see a half-written output and an interrupted job leaves no partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (UTF-8, '\\n' newlines)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Write one string per line (each gets exactly one trailing newline), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_table(df, path: str | os.PathLike) -> None:
    """Write a pandas table atomically as parquet or CSV, chosen by the suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix in (".csv", ".tsv"):
            df.to_csv(tmp, index=False, sep="\t" if path.suffix == ".tsv" else ",", float_format="%.6g")
        else:
            raise ValueError(f"{path}: unsupported table suffix {path.suffix!r}")


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """np.savez atomically (uncompressed: these are read back often)."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an .npz, naming the file if it is missing or corrupt."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError...
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None


def save_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save one array atomically (.npy: read back as a memory map, without a copy)."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array))


def load_array(path: str | os.PathLike) -> np.ndarray:
    """Memory-map an .npy file copy-on-write (writable for torch.from_numpy, pages read on first use),
    naming the file if it is missing, truncated or not an .npy file."""
    try:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # ValueError for a bad header or a file shorter than its header says
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable object (records which settings made an output)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def derive_seed(*parts: int) -> int:
    """Combine integers (a config seed, a stream id, an epoch...) into one 63-bit seed.

    Stable across processes and platforms (unlike hash()), so every random stream of a run is a pure
    function of the config: reruns, resumed runs and every rank draw the same numbers.
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to the rule's log file (appending)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a stage's main(); bad input exits 2 with its message, once, instead of a traceback: through the
    stage's logging when it has set it up (stderr and the rule's log), else on stderr."""
    try:
        code = main(argv)
    except InputError as exc:
        if logging.getLogger().handlers:
            log.error("%s", exc)
        else:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def progress(iterable=None, **kwargs):
    """tqdm progress bar that also renders sensibly in log files (mininterval, ascii when not a tty)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", 1.0 if sys.stderr.isatty() else 10.0)
    kwargs.setdefault("ascii", not sys.stderr.isatty())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def torch_threads_from_env() -> None:
    """Give torch the job's threads: OMP_NUM_THREADS, which Snakemake sets to the rule's `threads` (torch's
    own default counts every core of the node)."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
