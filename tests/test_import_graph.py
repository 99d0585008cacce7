"""The packages depend on each other in one direction only (docs/design.md section 2).

Every import in every source file counts, including the lazy ones inside functions and the string
imports (``importlib.import_module``, ``find_spec``, ``__import__``), because a cycle through a lazy
import is still a cycle: it only fails later, in somebody else's process.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["textrlhf", "reward_models", "textenv", "agents", "scripts", "course"]
"""Bottom to top: a package may import itself and the packages before it, never one after it."""
STRING_IMPORTS = {"import_module", "find_spec", "__import__"}


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in ``tree``, static or by string."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in STRING_IMPORTS and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _upward_imports(package: str) -> list[str]:
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in _imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            top = name.split(".")[0]
            if top in LAYERS and top not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("package", LAYERS)
def test_no_package_imports_a_package_above_it(package):
    assert _upward_imports(package) == [], f"{package} may only import {LAYERS[: LAYERS.index(package) + 1]}"


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(LAYERS), "add the new package to LAYERS (and to docs/design.md section 2)"


def test_the_check_sees_lazy_and_string_imports():
    tree = ast.parse(
        "def f():\n    import agents.policy\n    from scripts import cli\n"
        "importlib.import_module('course.checks')\nfind_spec('textenv')\n"
    )
    assert [name for _, name in _imported_names(tree)] == ["agents.policy", "scripts", "course.checks", "textenv"]
