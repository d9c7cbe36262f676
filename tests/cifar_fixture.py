"""A CIFAR-10 set in the python format of the official archive (cifar-10-python.tar.gz, extracted), written
from given images: what torchvision.datasets.CIFAR10 reads, byte-compatible except that the files are not
the archive's (so torchvision's md5 checks refuse them: `verify_checksums: false` opens them).

    cifar-10-batches-py/
        data_batch_1 .. data_batch_5, test_batch   pickled dicts: b'batch_label', b'labels' (list of int),
                                                   b'data' (N, 3072) uint8, each row the R, then G, then B
                                                   plane of a 32x32 image, row-major; b'filenames'
        batches.meta                               b'label_names', b'num_cases_per_batch', b'num_vis'

The given images go to test_batch (the `test` split); each data batch holds a few of them again (the
`train` split is not what the tests read, but torchvision wants every file). The archive was pickled by
Python 2: protocol 2, every string (keys, names) a Python 2 `str`, the pixels a NumPy array whose buffer is
one too. `_Py2Pickler` writes bytes the same way (opcodes SHORT_BINSTRING / BINSTRING), so the files load as
the archive's do: str keys with encoding="latin1" (torchvision), b'data' keys with encoding="bytes".
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BASE_FOLDER = "cifar-10-batches-py"


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python 2 `str` (pickle's pure-Python pickler; its C twin has no
    per-type hook)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump(obj)


def cifar_rows(images: list[np.ndarray]) -> np.ndarray:
    """(N, 3072) uint8 rows of 32x32x3 images: the R plane, then G, then B, each row-major (the archive's layout)."""
    for k, img in enumerate(images):
        if img.shape != (32, 32, 3) or img.dtype != np.uint8:
            raise ValueError(f"image {k}: {img.shape} {img.dtype}, expected (32, 32, 3) uint8")
    return np.stack([np.ascontiguousarray(img.transpose(2, 0, 1)).reshape(3072) for img in images]) \
        if images else np.zeros((0, 3072), dtype=np.uint8)


def _write_batch(path: Path, label: str, rows: np.ndarray, labels: list[int], names: list[str]) -> None:
    batch = {b"batch_label": label.encode(), b"labels": [int(x) for x in labels], b"data": rows,
             b"filenames": [n.encode() for n in names]}
    _dump(batch, path)


def write_cifar10(root: Path, images: list[np.ndarray], labels: list[int], classes: list[str] | None = None) -> Path:
    """Write a CIFAR-10 python-format set under `root` whose test split is `images` (uint8 32x32x3) with
    `labels`; `classes` (default CIFAR-10's ten) go to batches.meta. Returns `root` (the `root` of a
    `kind: cifar10` set)."""
    classes = list(CIFAR10_CLASSES if classes is None else classes)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if any(not 0 <= int(x) < len(classes) for x in labels):
        raise ValueError(f"labels must lie in [0, {len(classes)})")
    root = Path(root)
    folder = root / BASE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rows = cifar_rows(images)
    names = [f"{classes[int(y)].replace(' ', '_')}_s_{i:06d}.png" for i, y in enumerate(labels)]
    _write_batch(folder / "test_batch", "testing batch 1 of 1", rows, list(labels), names)
    per_batch = max(1, min(4, len(images)))
    for b in range(1, 6):
        take = [(b * per_batch + j) % max(1, len(images)) for j in range(per_batch)] if images else []
        _write_batch(folder / f"data_batch_{b}", f"training batch {b} of 5", rows[take],
                     [int(labels[t]) for t in take], [names[t] for t in take])
    meta = {b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    _dump(meta, folder / "batches.meta")
    return root
