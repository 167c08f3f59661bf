"""The shape of the package's code: no function or method in kgzsl/ is longer than 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kgzsl"
MAX_LINES = 80


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` of every function or method (nested ones too) over ``limit`` lines,
    counted from its ``def`` line to its last line, docstring included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_the_package_is_found():
    assert (PACKAGE / "__init__.py").is_file() and len(list(PACKAGE.rglob("*.py"))) > 10


def test_no_function_is_over_80_lines():
    offenders = long_functions()
    assert not offenders, f"{len(offenders)} functions are over {MAX_LINES} lines; split them:\n" + "\n".join(offenders)


def test_the_line_count_counts_nested_functions_and_methods(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    (tmp_path / "pkg" / "m.py").write_text(
        f"class A:\n    def short(self):\n        return 1\n\n    def long(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n\n"
        f"def outer():\n    def inner():\n    {body.replace(chr(10), chr(10) + '    ')}\n    return inner\n"
    )
    found = long_functions(tmp_path / "pkg")
    assert sorted(f.split(" ")[1] for f in found) == ["inner", "long", "outer"]  # not the 3-line method
