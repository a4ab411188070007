"""The layers: benchmarks -> webmanager -> plugins -> cluster, with no import running back up; only cluster/raft.py imports pysyncobj."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BELOW = {"cluster": set(), "plugins": {"cluster"}, "webmanager": {"cluster", "plugins"}}  # what each package may import


def imported(path: Path) -> set[str]:
    """The top-level packages a module imports (relative imports stay in its own package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(BELOW))
def test_no_import_runs_back_up(package: str) -> None:
    above = set(BELOW) - BELOW[package] - {package}
    wrong = {str(path.relative_to(ROOT)): sorted(imported(path) & above) for path in (ROOT / package).rglob("*.py") if imported(path) & above}
    assert not wrong, f"{package}/ imports from a layer above it: {wrong}"


def test_only_raft_py_imports_pysyncobj() -> None:
    users = {str(path.relative_to(ROOT)) for package in BELOW for path in (ROOT / package).rglob("*.py") if "pysyncobj" in imported(path)}
    assert users == {"cluster/raft.py"}
