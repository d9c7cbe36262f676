"""The CLI wrapper: bad input ends a stage with its message once (issue: job errors were printed twice)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

SCRIPT = """
import logging, sys
from workflow_scripts.common.errors import InputError
from workflow_scripts.common.io import run_cli, setup_logging

def main(argv):
    if argv and argv[0] == "--log":
        setup_logging(argv[1])
    raise InputError("data.csv:7: 2 fields, expected image_path,caption")

run_cli(main, sys.argv[1:])
"""


def _run(*args):
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=REPO, capture_output=True, text=True)


def test_bad_input_is_reported_once_with_logging(tmp_path):
    log = tmp_path / "rule.log"
    proc = _run("--log", str(log))
    assert proc.returncode == 2
    assert proc.stderr.count("data.csv:7: 2 fields") == 1, proc.stderr
    assert log.read_text().count("data.csv:7: 2 fields") == 1
    assert "Traceback" not in proc.stderr


def test_bad_input_is_reported_once_without_logging():
    proc = _run()
    assert proc.returncode == 2 and proc.stderr.count("data.csv:7: 2 fields") == 1, proc.stderr
