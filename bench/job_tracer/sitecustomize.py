"""Phase tracer for bench/job_startup.py, loaded by every Python process started with this folder on
PYTHONPATH (Python imports `sitecustomize` at start-up). Only processes that run a workflow stage
(`python -m workflow_scripts.<package>.<module>` or `torchrun ... -m workflow_scripts.<package>.<module>`) are traced.

Wall time is split exclusively (nested phases pause their parent) into:
  imports  - outermost `import` statements (module bodies running at import time included)
  model    - building or loading a model / checkpoint (models.build_model, load_model, checkpoints.load_checkpoint)
  data     - reading inputs (npz, CSV, caption files, images, evaluation sets)
  write    - writing outputs (atomic writers, torch.save of checkpoints)
  work     - everything else the process does
and `interpreter`, from the kernel's process start to this file. One JSON line per process is appended
to $JOB_PHASES_OUT at exit.
"""

from __future__ import annotations

import atexit
import builtins
import json
import os
import sys
import time

_OUT = os.environ.get("JOB_PHASES_OUT")
_ARGV = list(getattr(sys, "orig_argv", sys.argv))
_TRACED = bool(_OUT) and any(a.startswith("workflow_scripts.") for a in _ARGV)

# (module, attribute, phase): patched as soon as the module has been imported
_TARGETS = [
    ("workflow_scripts.models.clip", "build_model", "model"),
    ("workflow_scripts.models.clip", "load_model", "model"),
    ("workflow_scripts.models.checkpoints", "load_checkpoint", "model"),
    ("workflow_scripts.common.io", "load_npz", "data"),
    ("workflow_scripts.common.io", "load_array", "data"),
    ("workflow_scripts.common.data", "read_pairs_csv", "data"),
    ("workflow_scripts.common.data", "read_text_lines", "data"),
    ("workflow_scripts.common.data", "load_image_array", "data"),
    ("workflow_scripts.misalign.captions", "read_captions", "data"),
    ("workflow_scripts.common.evalsets", "open_set", "data"),
    ("workflow_scripts.misalign.similarity", "load_neighbours", "data"),
    ("workflow_scripts.common.io", "save_npz", "write"),
    ("workflow_scripts.common.io", "save_arrays", "write"),
    ("workflow_scripts.common.io", "write_table", "write"),
    ("workflow_scripts.common.io", "write_lines", "write"),
    ("workflow_scripts.common.io", "write_json", "write"),
    ("workflow_scripts.common.io", "write_text", "write"),
    ("workflow_scripts.models.checkpoints", "save_checkpoint", "write"),
]


def _process_start() -> float:
    """Wall-clock time at which the kernel started this process (Linux /proc), else now."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


class _Clock:
    """Exclusive time per phase over a stack of active phases."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.stack = ["work"]
        self.last = time.perf_counter()

    def _charge(self) -> None:
        now = time.perf_counter()
        top = self.stack[-1]
        self.totals[top] = self.totals.get(top, 0.0) + now - self.last
        self.last = now

    def push(self, phase: str) -> None:
        self._charge()
        self.stack.append(phase)

    def pop(self) -> None:
        self._charge()
        self.stack.pop()


def _install() -> None:
    clock = _Clock()
    started = _process_start()
    loaded = time.time()
    patched: set[tuple[str, str]] = set()
    real_import = builtins.__import__
    depth = [0]

    def timed(fn, phase):
        def wrapper(*args, **kwargs):
            clock.push(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                clock.pop()
        wrapper.__wrapped__ = fn
        return wrapper

    def patch_loaded() -> None:
        for module, attr, phase in _TARGETS:
            mod = sys.modules.get(module)
            if mod is not None and (module, attr) not in patched and hasattr(mod, attr):
                setattr(mod, attr, timed(getattr(mod, attr), phase))
                patched.add((module, attr))
        torch = sys.modules.get("torch")
        if torch is not None and ("torch", "save") not in patched and hasattr(torch, "save"):
            torch.save = timed(torch.save, "write")
            patched.add(("torch", "save"))

    def traced_import(name, globals=None, locals=None, fromlist=(), level=0):
        outer = depth[0] == 0
        if outer:
            clock.push("imports")
        depth[0] += 1
        try:
            return real_import(name, globals, locals, fromlist, level)
        finally:
            depth[0] -= 1
            if outer:
                clock.pop()
            patch_loaded()

    builtins.__import__ = traced_import

    def report() -> None:
        clock._charge()
        record = {"pid": os.getpid(), "ppid": os.getppid(), "argv": _ARGV, "rank": os.environ.get("RANK"),
                  "start": started, "end": time.time(), "interpreter": loaded - started,
                  "phases": clock.totals}
        with open(_OUT, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    atexit.register(report)


if _TRACED:
    _install()
