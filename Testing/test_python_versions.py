"""The library and the Slicer module run on Python 3.9: Slicer 5.6 to 5.8 bundle 3.9.10.

Tests run on a newer Python, where 3.10+ code imports fine, so the check is static: vermin (a well-kept
minimum-version detector) for syntax, standard-library names and keyword arguments, and, because vermin
does not see it, any ``X | Y`` between types evaluated at run time (a type alias, an ``isinstance``), which
raises TypeError on 3.9 (annotations are safe: every module has ``from __future__ import annotations``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import vermin

REPO = Path(__file__).resolve().parents[1]
OLDEST = (3, 9)
SOURCES = sorted((REPO / "MRISynthesisLib").rglob("*.py")) + sorted((REPO / "MRISynthesis").rglob("*.py"))
TYPE_NAMES = {"int", "str", "float", "bool", "bytes", "complex", "dict", "list", "tuple", "set", "frozenset", "type",
              "object", "Tensor", "ndarray", "Path", "Volume"}


def test_sources_are_found():
    names = {p.name for p in SOURCES}
    assert {"pipeline.py", "seq2seq.py", "MRISynthesis.py", "logic.py"} <= names


def test_vermin_finds_nothing_newer_than_python_3_9():
    config = vermin.Config()
    config.add_target((True, OLDEST))  # True: this version or newer
    config.set_verbose(2)  # its report names each construct and the version it needs
    too_new = []
    for path in SOURCES:
        visitor = vermin.visit(path.read_text(encoding="utf-8"), config, path=str(path))
        minimum = visitor.minimum_versions()[1]
        if minimum is not None and tuple(minimum[:2]) > OLDEST:
            needs = [line for line in visitor.output_text().splitlines() if "requires" in line]
            too_new.append(f"{path.relative_to(REPO)} needs {'.'.join(map(str, minimum))}: {needs}")
    assert not too_new, "\n".join(too_new)


def _is_type(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in TYPE_NAMES
    if isinstance(node, ast.Attribute):
        return node.attr in TYPE_NAMES
    if isinstance(node, ast.Subscript):  # list[int], tuple[str, ...]
        return _is_type(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_type(node.left) or _is_type(node.right)
    return False


def runtime_type_unions(source: str) -> list[int]:
    """Lines where ``X | Y`` between types is evaluated at run time (outside annotations)."""
    tree = ast.parse(source)
    in_annotations = set()
    for node in ast.walk(tree):
        for field in ("annotation", "returns"):
            annotation = getattr(node, field, None)
            if annotation is not None:
                in_annotations.update(id(n) for n in ast.walk(annotation))
    return sorted({node.lineno for node in ast.walk(tree)
                   if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in in_annotations
                   and _is_type(node)})


def test_the_union_check_sees_a_runtime_union_and_ignores_annotations():
    source = "from __future__ import annotations\nimport torch\nTarget = int | str | torch.Tensor\n" \
             "def f(x: int | None) -> str | None:\n    return isinstance(x, (int, str)) and flags | 4\n" \
             "ok = isinstance(1, int | None)\n"
    assert runtime_type_unions(source) == [3, 6]


def test_no_type_union_is_evaluated_at_run_time():
    found = [f"{path.relative_to(REPO)}:{line}" for path in SOURCES for line in runtime_type_unions(path.read_text("utf-8"))]
    assert not found, f"X | Y between types fails on Python 3.9; use typing.Union or Optional: {found}"


def test_annotations_are_not_evaluated_at_import():
    """``X | None`` in a signature is only safe on 3.9 under ``from __future__ import annotations``."""
    missing = []
    for path in SOURCES:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        unions_in_annotations = any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                                    for node in ast.walk(tree) for field in ("annotation", "returns")
                                    if getattr(node, field, None) is not None
                                    for n in ast.walk(getattr(node, field)))
        if unions_in_annotations and "from __future__ import annotations" not in source:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"annotations with X | Y but no `from __future__ import annotations`: {missing}"
