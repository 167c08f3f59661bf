"""The package's shape: the pipeline's stages as sub-packages, no import cycle (imports made inside
functions counted), the layers contract, files that fit a head, and a wheel that carries the shipped data."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kgzsl"
STAGES = ("graph", "vision", "propagation", "recognition", "inspection", "cli")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Every module of kgzsl by dotted name (a package by its own name, for its ``__init__.py``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The kgzsl modules ``path`` imports anywhere (top level, inside functions, under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            wanted = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in wanted:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("kgzsl") and target != name:
                targets.add(target)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as a list of modules (first == last), or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return []

    sys.setrecursionlimit(10_000)
    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_find_cycle_finds_a_cycle_through_a_function_level_import() -> None:
    """The checker itself: a hand-made three-module loop is found, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    graph = import_graph()
    assert sum(len(v) for v in graph.values()) > 100  # the walk really saw the package's imports
    assert find_cycle(graph) == []


def test_the_layout_shows_the_pipeline() -> None:
    entries = {p.name for p in PACKAGE.iterdir()}
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").is_file(), f"kgzsl/{stage}/ is a stage of the pipeline"
    flat = sorted(e for e in entries if e.endswith(".py"))
    assert flat == ["__init__.py", "__main__.py", "api.py", "demo.py", "errors.py"], flat


def test_no_module_over_500_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_layers_contract() -> None:
    """``lint-imports`` (import-linter) keeps the layers of pyproject.toml: a stage imports only stages below it."""
    linter = Path(sys.executable).parent / "lint-imports"
    if not linter.is_file():
        pytest.skip("import-linter is not installed in this environment (scripts/setup.sh installs it)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([str(linter), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_wheel_carries_the_shipped_graph_and_calibrations(tmp_path: Path) -> None:
    """``pip wheel --no-deps .``, installed into a clean target and used from a folder outside the checkout:
    the default graph and the shipped calibrations resolve inside the installed package."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", "runs", "out")
    shutil.copytree(ROOT, source, ignore=ignore)
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheels), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheels.glob("kgzsl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for wanted in ("kgzsl/_shipped/graphs/imagenet21k/graph.json", "kgzsl/_shipped/graphs/imagenet21k/tensors.safetensors",
                   "kgzsl/_shipped/data/calibration/dgp-pretrained.json", "kgzsl/recognition/hedge/rules.py"):
        assert wanted in names, wanted
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import json, kgzsl\n"
        "from kgzsl.core.resources import calibration_dir, default_graph_dir, project_root\n"
        "from kgzsl.graph.class_graph import load_graph\n"
        "from kgzsl.demo import reuse_key\n"
        "from kgzsl.recognition.hedge.storage import shipped_calibration\n"
        "graph = load_graph(default_graph_dir())\n"
        "key = reuse_key(graph, 'dgp', (), None, 0)\n"
        "print(json.dumps({'package': kgzsl.__file__, 'graph': str(default_graph_dir()), 'calibration': str(calibration_dir()),\n"
        "                  'root': str(project_root()), 'nodes': graph.num_nodes, 'shipped': bool(shipped_calibration(key))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    result = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(target))
    assert found["root"] == "None"  # an installed wheel is no source checkout
    assert found["graph"] == str(target / "kgzsl" / "_shipped" / "graphs" / "imagenet21k")
    assert found["calibration"] == str(target / "kgzsl" / "_shipped" / "data" / "calibration")
    assert found["nodes"] > 20_000 and found["shipped"]
