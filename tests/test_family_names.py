"""No code decides by a family's name: what a family does is a field of `Family`, so an
operator's new family (`[families.<name>]`) needs no code. Only data may name a family."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRING_METHODS = {"startswith", "endswith", "find", "index", "count", "split", "partition"}


def _is_family(node: ast.expr) -> bool:
    """`x.family`, a local named `family`, or their `.name`."""
    if isinstance(node, ast.Attribute) and node.attr == "name":
        node = node.value
    return (isinstance(node, ast.Attribute) and node.attr == "family") or (
        isinstance(node, ast.Name) and node.id == "family"
    )


def _is_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_is_literal(item) for item in node.elts)
    return False


def family_name_checks(source: str) -> list[int]:
    """Lines that compare a family name with a string literal, or test it with a str method."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(map(_is_family, operands)) and any(map(_is_literal, operands)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in STRING_METHODS and _is_family(node.func.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Match) and _is_family(node.subject):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "code",
    [
        'if spec.family == "gpt-image-2": pass',
        'ok = call.model.family != "dall-e-2"',
        'ok = spec.family.startswith("dall-e")',
        'fmt = "url" if family.name.startswith("dall-e") else "b64_json"',
        'ok = family in ("dall-e-2", "dall-e-3")',
        'ok = "dall-e-3" == asked.family',
        'match spec.family:\n    case "x": pass',
    ],
)
def test_the_check_sees_a_family_name_check(code: str) -> None:
    assert family_name_checks(code) == [1]


def test_the_check_lets_fields_and_constants_through() -> None:
    code = "ok = spec.rules.revises_prompt and family != VIRTUAL and family in families"
    assert family_name_checks(code) == []


def test_no_module_decides_by_a_family_name() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{line}"
        for folder in ("policies", "proxy")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line in family_name_checks(path.read_text(encoding="utf-8"))
    }
    assert not found, f"family names compared in code (make it a field of Family): {found}"
