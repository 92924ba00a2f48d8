"""The import rules of the house style (STYLE.md 2), checked by walking every module's AST."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "palmsim"

# Lower layers never import higher ones.
RANK = {
    "units": 0,
    "errors": 0,
    "registry": 0,
    "config": 1,
    "hardware": 2,
    "workload": 2,
    "mapping": 3,
    "serving": 3,
    "engine": 4,
    "guard": 4.5,
    "report": 5,
    "api": 6,
    "validate": 6,
    "tile_cases": 6,
    "explore": 6,
    "calibrate": 6,
    "cli": 7,
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE).parts
    name = rel[0].removesuffix(".py")
    return name if name in RANK else None


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_import_rules(path: Path) -> None:
    rel = path.relative_to(PACKAGE).as_posix()
    tree = ast.parse(path.read_text(), filename=str(path))
    imports = _imports(tree)
    if any(i == "simpy" or i.startswith("simpy.") for i in imports):
        assert rel.startswith("engine/"), f"{rel} imports simpy outside palmsim/engine/"
    if any(i.split(".")[0] == "matplotlib" for i in imports):
        assert rel == "report/plots.py", f"{rel} imports matplotlib outside report/plots.py"
    opens = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open"
    ]
    opens += [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr in {"write_text", "write_bytes", "mkdir", "savefig"}
    ]
    if opens:
        assert rel in {"config/loader.py", "report/export.py", "report/plots.py"}, (
            f"{rel} does file I/O outside the loader and the exporter"
        )
    mine = _layer(path)
    if mine is None:
        return
    for name in imports:
        parts = name.split(".")
        if parts[0] != "palmsim" or len(parts) < 2:
            continue
        theirs = parts[1]
        if theirs in RANK:
            assert RANK[theirs] <= RANK[mine], f"{rel} (layer {mine}) imports {name}"
