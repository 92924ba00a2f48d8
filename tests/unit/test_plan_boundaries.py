"""The two rules of the mapping design (STYLE.md 7.1), checked on every module's AST:

- the engine reads only the plan: nothing in ``palmsim/engine/`` imports a workload, mapping
  or experiment spec or reads a ``.mapping``/``.workload``/``.experiment``/``.spec``
  attribute;
- structure is typed data: no module parses a step label back (``label.split``,
  ``label.startswith``, a regex over a label, ``"x" in label``, ``label[...]``).

Each checker is also run on planted violations, so the tests can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "palmsim"

#: Specs the engine must not see: the user's options reach it only compiled into the plan.
FORBIDDEN_SPECS = {
    "MappingSpec",
    "WorkloadSpec",
    "ExperimentSpec",
    "TrainingSpec",
    "ModelSpec",
    "InferenceSpec",
}
FORBIDDEN_ATTRIBUTES = {"mapping", "workload", "experiment", "spec"}
#: String methods that recover structure from text.
PARSE_METHODS = {
    "split",
    "rsplit",
    "partition",
    "rpartition",
    "startswith",
    "endswith",
    "removeprefix",
    "removesuffix",
    "find",
    "rfind",
    "index",
    "rindex",
    "count",
}


def engine_spec_reads(source: str) -> list[str]:
    """Where ``source`` (an engine module) imports a forbidden spec or reads a forbidden
    attribute, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in FORBIDDEN_SPECS:
                    found.append(f"{node.lineno}: imports {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append(f"{node.lineno}: reads .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_SPECS:
            found.append(f"{node.lineno}: uses {node.id}")
    return found


def _is_label(node: ast.AST) -> bool:
    """``label``, ``x.label`` or ``x["label"]``."""
    if isinstance(node, ast.Name):
        return node.id == "label"
    if isinstance(node, ast.Attribute):
        return node.attr == "label"
    if isinstance(node, ast.Subscript):
        key = node.slice
        return isinstance(key, ast.Constant) and key.value == "label"
    return False


def label_parses(source: str) -> list[str]:
    """Where ``source`` parses a label to recover structure, as ``line: how``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr in PARSE_METHODS and _is_label(func.value):
                found.append(f"{node.lineno}: label.{func.attr}()")
            elif (
                isinstance(func.value, ast.Name)
                and func.value.id == "re"
                and any(_is_label(a) for a in ast.walk(node) if a is not func)
            ):
                found.append(f"{node.lineno}: re.{func.attr}() over a label")
        elif isinstance(node, ast.Compare):
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.In | ast.NotIn) and _is_label(right):
                    found.append(f"{node.lineno}: 'in' a label")
        elif isinstance(node, ast.Subscript) and _is_label(node.value):
            found.append(f"{node.lineno}: indexes a label")
    return found


def _modules(folder: str = "") -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _id(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


@pytest.mark.parametrize("path", _modules("engine"), ids=_id)
def test_the_engine_reads_no_spec(path: Path) -> None:
    """The engine executes the plan; the user's options reach it only as compiled policy."""
    assert engine_spec_reads(path.read_text()) == [], _id(path)


@pytest.mark.parametrize("path", _modules(), ids=_id)
def test_no_module_parses_a_label(path: Path) -> None:
    """Layer, block, phase and group are fields of steps and records; labels are for people."""
    assert label_parses(path.read_text()) == [], _id(path)


@pytest.mark.parametrize(
    "planted",
    [
        "from palmsim.config.specs import MappingSpec",
        "blocking = not plan.mapping.p2p_overlap",
        "prompt_len = plan.inference.spec.prompt_len",
        "def f(e):\n    return e.workload.model",
    ],
)
def test_the_engine_check_catches_a_planted_spec_read(planted: str) -> None:
    assert engine_spec_reads(planted)


@pytest.mark.parametrize(
    "planted",
    [
        'category, rest = rec.label.split(".", 1)',
        'ok = label.startswith("L0.")',
        'key = _STEP_INDEX.sub(r"\\1.", r.label)\nkey = re.sub("L", "", r.label)',
        'ok = "attn" in step.label',
        "first = rec.label[0]",
        'kind = row["label"].partition(".")',
    ],
)
def test_the_label_check_catches_a_planted_parse(planted: str) -> None:
    assert label_parses(planted)


def test_the_label_check_allows_building_and_comparing_labels() -> None:
    assert label_parses('text = f"{rec.label} mb{mb}"\nsame = rec.label == other.label') == []
