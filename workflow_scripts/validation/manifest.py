"""The image manifest: one row per checked image (set, path as the study names it, file, size, mtime,
format, mode, width, height).

The workflow reads the manifest again when Snakemake starts (`changed_files`): an image whose size or
mtime differs from its row, or that is gone, makes the validation job run again, and so everything that
reads the images (rules/validation.smk). Replacing an image in place is therefore noticed without hashing
every file; a replacement that keeps both size and mtime (e.g. `cp -p` of a same-size file) is not.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .images import ImageRecord

COLUMNS = ("set", "path", "file", "bytes", "mtime_ns", "format", "mode", "width", "height")


def manifest_table(sets: Sequence[str], paths: Sequence[str], records: Sequence[ImageRecord]):
    """The manifest as a DataFrame (rows in the order given)."""
    import pandas as pd

    return pd.DataFrame({"set": list(sets), "path": list(paths), "file": [r.file for r in records],
                         "bytes": np.asarray([r.bytes for r in records], dtype=np.int64),
                         "mtime_ns": np.asarray([r.mtime_ns for r in records], dtype=np.int64),
                         "format": [r.format for r in records], "mode": [r.mode for r in records],
                         "width": np.asarray([r.width for r in records], dtype=np.int64),
                         "height": np.asarray([r.height for r in records], dtype=np.int64)},
                        columns=list(COLUMNS))


def _stat_differs(rows: list[tuple[str, int, int]]) -> list[str]:
    out = []
    for file, size, mtime in rows:
        try:
            st = os.stat(file)
        except OSError:
            out.append(file)
            continue
        if st.st_size != size or st.st_mtime_ns != mtime:
            out.append(file)
    return out


def changed_files(manifest: str | os.PathLike, threads: int = 8, chunk: int = 4096) -> list[str]:
    """Files of a manifest that are gone or whose size or mtime differ from it ([] without a manifest; the
    manifest itself when it cannot be read, so that the validation runs again and rewrites it)."""
    if not Path(manifest).exists():
        return []
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(manifest, columns=["file", "bytes", "mtime_ns"])
    except (OSError, pa.ArrowException) as exc:
        return [f"{manifest} (unreadable: {exc})"]
    rows = list(zip(table.column("file").to_pylist(), table.column("bytes").to_pylist(),
                    table.column("mtime_ns").to_pylist()))
    chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    if len(chunks) <= 1:
        return _stat_differs(rows)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [f for part in pool.map(_stat_differs, chunks) for f in part]


def file_state(path: str) -> str:
    """What a file is now, as the stamp records it: 'size mtime_ns', or 'missing'."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size} {st.st_mtime_ns}"


def mark_changes(manifest: str | os.PathLike, stamp: str | os.PathLike) -> list[str]:
    """Make `stamp` (an input of the job that writes `manifest`) tell Snakemake whether images changed.

    Images changed since the manifest: the stamp gets, per changed file, its path and what it is now (size
    and mtime in ns, or `missing`), and the current time, so it is newer than the manifest and the validation
    job runs again (and, through the manifest, everything reading the images). Its content differs with
    every new state of the files, so a second change of the same image is noticed too (Snakemake compares
    small inputs by checksum: a stamp rewritten with the same text would count as unchanged). Nothing
    changed, or no manifest yet: an existing stamp is left alone, a missing one is created with mtime 0
    (older than any output, it triggers nothing). Returns the changed files."""
    changed = changed_files(manifest)
    stamp = Path(stamp)
    if changed:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text("".join(f"{f}\t{file_state(f)}\n" for f in changed), encoding="utf-8")
    elif not stamp.exists():
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text("", encoding="utf-8")
        os.utime(stamp, ns=(0, 0))
    return changed
