"""Checkpoint download: resume from a .part file, SHA-256 verification, bad files kept aside."""

from __future__ import annotations

import hashlib
import http.server
import threading

import numpy as np
import pytest

from workflow_scripts.common.errors import InputError
from workflow_scripts.models.fetch import fetch


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def source(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, size=3_000_000, dtype=np.uint8).tobytes()
    path = tmp_path / "remote" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(data)
    return path, data


def test_file_url_download(tmp_path, source):
    path, data = source
    out = fetch(path.as_uri(), tmp_path / "ckpt" / "m.pt", sha(data))
    assert out.read_bytes() == data
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.pt"]


def test_resume_appends_to_the_part_file(tmp_path, source):
    """A .part whose first bytes differ from the source proves the rest was appended, not re-downloaded."""
    path, data = source
    out = tmp_path / "m.pt"
    prefix = b"X" * 1_000_000
    (tmp_path / "m.pt.part").write_bytes(prefix)
    expected = prefix + data[len(prefix):]
    fetch(path.as_uri(), out, sha(expected))
    assert out.read_bytes() == expected
    assert not (tmp_path / "m.pt.part").exists()


def test_checksum_mismatch_moves_the_bytes_aside(tmp_path, source):
    path, data = source
    out = tmp_path / "m.pt"
    with pytest.raises(InputError, match="SHA-256") as err:
        fetch(path.as_uri(), out, "0" * 64)
    assert "m.pt.corrupt" in str(err.value)
    assert not out.exists() and not (tmp_path / "m.pt.part").exists()
    assert (tmp_path / "m.pt.corrupt").read_bytes() == data
    # the next attempt starts afresh (the corrupt bytes are not resumed from) and succeeds
    assert fetch(path.as_uri(), out, sha(data)).read_bytes() == data


def test_existing_file_is_verified_not_replaced(tmp_path, source):
    path, data = source
    out = tmp_path / "m.pt"
    out.write_bytes(data)
    assert fetch((tmp_path / "missing.pt").as_uri(), out, sha(data)) == out  # no download needed
    out.write_bytes(b"user's own file")
    with pytest.raises(InputError, match="exists but its SHA-256"):
        fetch(path.as_uri(), out, sha(data))
    assert out.read_bytes() == b"user's own file"


def test_missing_source_and_bad_scheme(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        fetch((tmp_path / "nope.pt").as_uri(), tmp_path / "m.pt", "0" * 64)
    with pytest.raises(InputError, match="unsupported URL scheme"):
        fetch("ftp://host/x.pt", tmp_path / "m.pt", "0" * 64)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one blob, honouring `Range: bytes=N-` with 206 like a CDN; records the ranges asked for."""

    blob = b""
    ranges: list = []

    def do_GET(self):  # noqa: N802 (http.server naming)
        start = 0
        header = self.headers.get("Range")
        self.ranges.append(header)
        if header:
            start = int(header.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.blob) - 1}/{len(self.blob)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.blob) - start))
        self.end_headers()
        self.wfile.write(self.blob[start:])

    def log_message(self, *args):
        pass


def test_http_range_resume(tmp_path, source):
    _, data = source
    RangeHandler.blob, RangeHandler.ranges = data, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.pt"
        (tmp_path / "m.pt.part").write_bytes(data[:1234])
        out = fetch(url, tmp_path / "m.pt", sha(data))
        assert out.read_bytes() == data
        assert RangeHandler.ranges == ["bytes=1234-"]
    finally:
        server.shutdown()
