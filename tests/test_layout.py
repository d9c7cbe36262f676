"""The code layout: one package per stage mirroring rules/, no import cycle, small modules, CLIs that exist,
and the code inputs of rules (workflow_scripts/common/code_inputs.py) that follow every import."""

import ast
import re
from pathlib import Path

import pytest

from workflow_scripts.common.code_inputs import code_files, imported_modules
from workflow_scripts.common.errors import InputError

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "workflow_scripts"
MAX_LINES = 600
NOT_A_STAGE = {"common", "cluster"}       # shared plumbing; the SLURM tools (no rule)


def _modules() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG).with_suffix("").parts)
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [m for m in out if m]


def _import_graph() -> dict[str, set[str]]:
    return {m: set(imported_modules(PKG, m)) for m in _modules()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node importing itself."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert _cycles(_import_graph()) == []


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for module, targets in _import_graph().items():
        for target in targets:
            a, b = module.split(".")[0], target.split(".")[0]
            if a != b:
                graph.setdefault(a, set()).add(b)
    assert _cycles(graph) == []
    assert not graph.get("common"), "common/ is the bottom layer: it imports no stage"


def test_no_module_over_the_size_limit():
    long = {str(p.relative_to(REPO)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_packages_mirror_the_rules():
    stages = {p.stem for p in (REPO / "rules").glob("*.smk")} - {"common"}
    packages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert stages - packages == set(), "a rules/<stage>.smk without its workflow_scripts/<stage>/"
    assert packages - stages - NOT_A_STAGE == set(), "a package without its rules/<stage>.smk"
    assert not [p.name for p in PKG.glob("*.py") if p.name != "__init__.py"], "a module outside the packages"


def test_every_cli_the_workflow_calls_exists():
    texts = [p.read_text() for p in [*(REPO / "rules").glob("*.smk"), REPO / "Makefile"]]
    called = sorted({m for t in texts for m in re.findall(r"-m workflow_scripts\.([\w.]+)", t)})
    assert len(called) > 20
    for module in called:
        path = PKG.joinpath(*module.split(".")).with_suffix(".py")
        assert path.is_file(), f"python -m workflow_scripts.{module}: no such module"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), module
        assert "__main__" in path.read_text(encoding="utf-8"), f"{module} has no __main__ guard"


def _package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/cli.py": "from .core import run\n\ndef main():\n    from ..b import lazy\n",
        "a/core.py": "from ..c.base import X\n",
        "a/unused.py": "",
        "b/__init__.py": "",
        "b/lazy.py": "from . import helper\n",
        "b/helper.py": "",
        "c/__init__.py": "",
        "c/base.py": "X = 1\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_code_files_follow_lazy_and_package_imports(tmp_path):
    root = _package(tmp_path)
    assert code_files(root, ["a/cli"]) == [
        "__init__.py", "a/__init__.py", "a/cli.py", "a/core.py", "b/__init__.py", "b/helper.py", "b/lazy.py",
        "c/__init__.py", "c/base.py",
    ]
    assert code_files(root, ["a.cli"], follow_imports=False) == ["__init__.py", "a/__init__.py", "a/cli.py"]


def test_code_files_name_a_missing_module(tmp_path):
    root = _package(tmp_path)
    (root / "a" / "core.py").write_text("from .gone import X\n")
    with pytest.raises(InputError, match="a.gone"):
        code_files(root, ["a/cli"])


def test_the_swap_job_lists_the_kernels_it_runs():
    files = code_files(PKG, ["misalign/swap"])
    assert {"misalign/pairing.py", "misalign/exact_search.py", "misalign/similarity.py",
            "common/errors.py"} <= set(files)
    assert "finetune/train.py" not in files


def _ast_imports(module: str) -> set[str]:
    """Independent reference: the relative imports of `module`, from its syntax tree."""
    path = PKG.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        path = PKG.joinpath(*module.split("."), "__init__.py")
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                sub = ".".join(base + [alias.name])
                is_module = PKG.joinpath(*sub.split(".")).with_suffix(".py").is_file() or \
                    PKG.joinpath(*sub.split("."), "__init__.py").is_file()
                found.add(sub if is_module else ".".join(base))
    return {m for m in found if m}


def test_the_import_scan_equals_the_syntax_tree_on_every_module():
    for module in _modules():
        assert set(imported_modules(PKG, module)) == _ast_imports(module), module
