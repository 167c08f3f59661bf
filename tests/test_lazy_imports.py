"""Imports made inside functions are the exception: each says why it is lazy (a ``# lazy: <reason>`` comment
on its first line: it keeps torch out of ``import kgzsl`` and ``--help``, or defers a heavy optional
dependency), and the modules meant to be light really import no torch."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kgzsl"

#: ``# lazy: <one word>``, the whole comment
LAZY_COMMENT = re.compile(r"#\s*lazy:\s*[\w.-]+\s*$")

#: Modules that must import without torch (``kgzsl.core.*`` is added below, every module of it).
TORCH_FREE = (
    "kgzsl",
    "kgzsl.errors",
    "kgzsl.propagation.run_files",
    "kgzsl.propagation.run",
    "kgzsl.graph.class_graph",
    "kgzsl.graph.names",
    "kgzsl.graph.wordnet",
    "kgzsl.graph.taxonomy",
    "kgzsl.demo",
)


def _core_modules() -> list[str]:
    return sorted("kgzsl.core" if p.name == "__init__.py" else f"kgzsl.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py"))


def function_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement with a function (or method) among its ancestors, once each, in line order."""
    found: dict[int, ast.Import | ast.ImportFrom] = {}
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found[id(node)] = node
    return sorted(found.values(), key=lambda node: node.lineno)


def unexplained(source: str) -> list[tuple[int, str]]:
    """(line, text) of each function-level import of ``source`` whose first line lacks ``# lazy: <word>``."""
    lines = source.splitlines()
    missing = []
    for node in function_imports(ast.parse(source)):
        line = lines[node.lineno - 1]  # the first line of a parenthesised multi-line import too
        if not LAZY_COMMENT.search(line):
            missing.append((node.lineno, line.strip()))
    return missing


def test_function_level_imports_say_why() -> None:
    checked = sorted(PACKAGE.rglob("*.py"))
    assert len(checked) > 40  # the walk really covers the package
    missing = [f"{path.relative_to(ROOT).as_posix()}:{line}: {text}"
               for path in checked for line, text in unexplained(path.read_text(encoding="utf-8"))]
    assert missing == [], "hoist these imports to the module's top, or say why they are lazy (# lazy: torch):\n" + "\n".join(missing)


def test_the_checker() -> None:
    """Nested and multi-line imports are found; module-level and TYPE_CHECKING ones are not; the comment counts."""
    source = (
        "from typing import TYPE_CHECKING\nimport os\nif TYPE_CHECKING:\n    import torch\n\n"
        "class A:\n    import json\n\n    def m(self):\n        import torch  # lazy: torch\n\n"
        "def f():\n    if True:\n        from json import dumps\n    from os import (  # lazy: nothing\n        path,\n    )\n"
        "    def g():\n        import re  # lazy: two words\n"
    )
    assert [node.lineno for node in function_imports(ast.parse(source))] == [10, 14, 15, 19]
    assert [line for line, _ in unexplained(source)] == [14, 19]


@pytest.mark.parametrize("module", [*TORCH_FREE, *_core_modules()])
def test_module_imports_without_torch(module: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    probe = f"import sys\nimport {module}\nassert 'torch' not in sys.modules, 'torch imported'\n"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"import {module}: {result.stderr[-2000:]}"
