"""Download a published checkpoint once, resumably, and verify its SHA-256 before anyone uses it.

The download goes to `<out>.part`; an interrupted transfer continues from there (HTTP Range request,
or a seek for file:// URLs). Only a file with the expected checksum is renamed to `<out>`; a mismatch
moves the bytes aside to `<out>.corrupt` (kept for inspection, never used) and fails.

    python -m workflow_scripts.models.fetch --url https://host/cc3m_laclip.pt --sha256 <64 hex> \\
        --out resources/checkpoints/laclip.pt --log logs/fetch/laclip.log
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from ..common.errors import InputError
from ..common.io import progress, run_cli, setup_logging, sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def _open_source(url: str, offset: int, timeout: float) -> tuple[BinaryIO, int | None, bool]:
    """Open `url` from byte `offset`: (stream, total size or None, whether the stream starts at offset)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        if not path.is_file():
            raise InputError(f"{url}: file not found")
        fh = open(path, "rb")
        total = path.stat().st_size
        fh.seek(min(offset, total))
        return fh, total, True
    if parsed.scheme not in ("http", "https"):
        raise InputError(f"{url}: unsupported URL scheme {parsed.scheme!r} (http, https or file)")
    request = urllib.request.Request(url, headers={"User-Agent": "feature-purity-workflow"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left beyond offset: the .part file is complete
            return _Empty(), offset, True
        raise InputError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(f"{url}: cannot download ({exc})") from None
    resumed = response.status == 206
    length = response.headers.get("Content-Length")
    total = (int(length) + (offset if resumed else 0)) if length is not None else None
    return response, total, resumed or not offset


class _Empty:
    def read(self, n: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


def download(url: str, part: Path, timeout: float = 60.0) -> None:
    """Append the rest of `url` to `part` (restarting when the server ignores the Range request)."""
    offset = part.stat().st_size if part.exists() else 0
    stream, total, resumed = _open_source(url, offset, timeout)
    if offset and not resumed:
        log.info("server ignored the range request; restarting %s", part)
        offset = 0
    elif offset:
        log.info("resuming %s at byte %d", part, offset)
    try:
        with open(part, "ab" if offset else "wb") as out:
            bar = progress(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name)
            while block := stream.read(CHUNK):
                out.write(block)
                bar.update(len(block))
            bar.close()
    finally:
        stream.close()


def fetch(url: str, out: str | os.PathLike, sha256: str, timeout: float = 60.0) -> Path:
    """Make `out` hold the file at `url` with SHA-256 `sha256`; returns `out`.

    An existing `out` with the right checksum is kept as is. A wrong checksum after download raises
    InputError and leaves the bytes at `<out>.corrupt`.
    """
    out = Path(out)
    sha256 = sha256.lower()
    if out.exists():
        found = sha256_file(out)
        if found == sha256:
            log.info("%s already present with the expected checksum", out)
            return out
        raise InputError(f"{out}: exists but its SHA-256 is {found}, not the configured {sha256}; "
                         "move it away to download again")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    download(url, part, timeout)
    found = sha256_file(part)
    if found != sha256:
        corrupt = out.with_name(out.name + ".corrupt")
        shutil.move(part, corrupt)
        raise InputError(f"{url}: SHA-256 of the download is {found}, expected {sha256}; "
                         f"the bytes were moved aside to {corrupt} and not used")
    os.replace(part, out)
    log.info("fetched %s -> %s (sha256 ok)", url, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="http(s):// or file:// URL")
    ap.add_argument("--sha256", required=True, help="expected SHA-256 (64 hex digits)")
    ap.add_argument("--out", required=True, help="destination file")
    ap.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    ap.add_argument("--log", help="log file")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    fetch(args.url, args.out, args.sha256, args.timeout)
    return 0


if __name__ == "__main__":
    run_cli(main)
