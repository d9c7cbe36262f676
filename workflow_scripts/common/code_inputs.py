"""The workflow's own Python files a job runs: its modules and every module they import, found statically.

Rules list these files as inputs (rules/common.smk, `code`), so that editing any file a job can execute
reruns exactly the jobs that can execute it. Imports are followed in module bodies and inside functions (a
lazy import is still code the job may run): this over-approximates what one subcommand executes but never
misses a file. Importing `a.b.c` also runs the `__init__` of `a` and `a.b`, so those are listed too.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Iterable

from .errors import InputError


def module_file(root: Path, module: str) -> Path | None:
    """The file of dotted `module` (relative to the package directory `root`): module.py or its __init__.py."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


# `from .x import a, b` / `from .. import x` / `from .x import (\n a,\n b)` anywhere in a file, indented or not.
# A scan, not a parse: Snakemake computes the code inputs each time it parses the workflow (in every SLURM
# job too), and this is ~20x cheaper than ast over the whole package (tests/test_layout.py compares them).
_RELATIVE_IMPORT = re.compile(r"^[ \t]*from[ \t]+(\.+)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)


@functools.lru_cache(maxsize=None)
def imported_modules(root: Path, module: str) -> frozenset[str]:
    """The modules of the package `root` that `module` imports anywhere in its file (relative imports)."""
    path = module_file(root, module)
    if path is None:
        raise InputError(f"code input {module!r}: no module {root.name}.{module} under {root}")
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    text = path.read_text(encoding="utf-8")
    found = set()
    for match in _RELATIVE_IMPORT.finditer(text):
        dots, name, names = match.groups()
        if len(dots) - 1 > len(package):
            line = text.count("\n", 0, match.start()) + 1
            raise InputError(f"{path}:{line}: relative import beyond the package {root.name}")
        base = package[: len(package) - (len(dots) - 1)] + (name.split(".") if name else [])
        for alias in names.split("#")[0].strip("()").split(","):
            alias = alias.split("#")[0].split(" as ")[0].strip()
            if not alias:
                continue
            sub = ".".join(base + [alias])     # `from .pkg import module` imports a module; `from .mod import x` not
            found.add(sub if module_file(root, sub) is not None else ".".join(base))
    return frozenset(m for m in found if m)


def code_files(root: str | Path, modules: Iterable[str], follow_imports: bool = True) -> list[str]:
    """Paths relative to `root` (a package directory) of `modules` ("pkg.module" or "pkg/module"), of the
    `__init__` of every package on their way, and, with `follow_imports`, of everything they import."""
    root = Path(root)
    todo = [m.replace("/", ".") for m in modules]
    seen: dict[str, None] = {}
    while todo:
        module = todo.pop(0)
        if module in seen:
            continue
        seen[module] = None
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        if follow_imports:
            todo += sorted(imported_modules(root, module))
    files = {module_file(root, m) for m in seen}
    if None in files:
        missing = [m for m in seen if module_file(root, m) is None]
        raise InputError(f"code inputs: no module {', '.join(missing)} under {root}")
    return sorted(str(f.relative_to(root)) for f in files | {root / "__init__.py"})
