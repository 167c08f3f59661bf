"""The ``kgzsl.cli`` package's shape: ``--help`` of every subcommand imports neither torch nor numpy, and every
import made inside a function of kgzsl/cli/ says why it is lazy (a ``# lazy: <reason>`` comment)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "kgzsl" / "cli"
COMMANDS = ("build-graph", "splits", "train", "targets", "features", "predict", "demo", "calibrate", "evaluate",
            "inspect", "explore", "propagate")
HELP_SCRIPT = """
import sys
from kgzsl.cli import main
try:
    main([{command!r}, "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = sorted(name for name in ("torch", "numpy") if name in sys.modules)
assert not heavy, heavy
"""


def test_the_commands_are_the_registry() -> None:
    """The subcommands checked here are those ``kgzsl --help`` lists, in its order."""
    from kgzsl.cli import COMMANDS as MODULES
    from kgzsl.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert tuple(sub.choices) == COMMANDS
    assert len(MODULES) == len(COMMANDS)
    for module in MODULES:
        assert callable(module.add_parser) and callable(module.run), module.__name__


def test_spelled_out_choices_are_the_registries() -> None:
    """--model and --arch list their registries' names without importing them (torch): the same names, in order."""
    from kgzsl.cli.flags import DEFAULT_BACKBONE, MODEL_NAMES, PRECISIONS, RESNET_ARCHS
    from kgzsl.propagation.models import MODELS
    from kgzsl.propagation.targets import DEFAULT_BACKBONE as LIBRARY_DEFAULT
    from kgzsl.vision.backbones.resnet import RESNET_LAYERS
    from kgzsl.vision.speed import AUTO
    from kgzsl.vision.speed import PRECISIONS as LIBRARY_PRECISIONS

    assert MODEL_NAMES == tuple(MODELS)
    assert RESNET_ARCHS == tuple(RESNET_LAYERS)
    assert PRECISIONS == (AUTO, *LIBRARY_PRECISIONS)
    assert DEFAULT_BACKBONE == LIBRARY_DEFAULT


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_neither_torch_nor_numpy(command: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    result = subprocess.run([sys.executable, "-c", HELP_SCRIPT.format(command=command)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"usage: kgzsl {command}" in result.stdout


def _function_imports(tree: ast.AST) -> list[ast.stmt]:
    """The import statements nested anywhere inside a function body of ``tree``."""
    found: list[ast.stmt] = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            found.extend(node for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom)))
    return found


def test_function_level_imports_say_why() -> None:
    modules = sorted(CLI.glob("*.py"))
    assert len(modules) >= 14  # __init__, flags, steps and the eleven commands
    missing, seen = [], 0
    for path in modules:
        lines = path.read_text().splitlines()
        for node in {id(n): n for n in _function_imports(ast.parse(path.read_text()))}.values():
            seen += 1
            line = lines[node.lineno - 1]  # the first line of a parenthesised multi-line import
            comment = line.partition("#")[2].strip()
            if not (comment.startswith("lazy:") and len(comment.removeprefix("lazy:").split()) == 1):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    assert seen > 20  # the walk really found the commands' lazy imports
    assert missing == []


def test_the_checker_sees_a_nested_import() -> None:
    """The checker itself: an import inside a function is found, one at module level is not."""
    tree = ast.parse("import os\n\ndef f():\n    if True:\n        from json import dumps\n")
    assert [node.lineno for node in _function_imports(tree)] == [5]
