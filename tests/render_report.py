"""Render report.html in headless Chromium (Debian's `chromium`) and save a PNG screenshot.

    python tests/render_report.py results/report.html [--out results/report.png] [--install]

--install runs `apt-get install -y chromium` when no chromium binary is found (needs root). Exits 2
with a clear message when no browser can be found.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def install_chromium() -> None:
    subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], check=True,
                   stdout=subprocess.DEVNULL, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def render(report: Path, out: Path, browser: str, width: int = 1400, height: int = 1800,
           budget_ms: int = 15000) -> Path:
    """Screenshot `report` after its scripts ran (the report is a React app that renders client-side)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
           f"--screenshot={out.resolve()}", report.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    if not out.exists() or out.stat().st_size == 0:
        raise RuntimeError(f"{browser} wrote no screenshot to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, help="PNG path (default: beside the report)")
    parser.add_argument("--install", action="store_true", help="apt-get install chromium if missing")
    args = parser.parse_args(argv)
    if not args.report.exists():
        print(f"error: {args.report}: no such report (run `make run` first)", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None and args.install:
        install_chromium()
        browser = find_browser()
    if browser is None:
        print("error: no chromium found; install Debian's `chromium` or pass --install (root)", file=sys.stderr)
        return 2
    out = render(args.report, args.out or args.report.with_suffix(".png"), browser)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
