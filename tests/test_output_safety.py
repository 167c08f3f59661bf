"""Outputs never cost a user data: --force replaces only kgzsl's own output of the same kind, every
output is checked before any work, and no temporary survives SIGTERM (nor, after the next run, SIGKILL)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kgzsl.cli import main
from kgzsl.core.atomic import atomic_file, clean_stale_temporaries
from kgzsl.core.outputs import check_output_dir, check_output_file, output_kind
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import load_graph

ROOT = Path(__file__).resolve().parents[1]
BIRDS = ROOT / "data" / "taxonomies"
BUILD_BIRDS = ["build-graph", "--taxonomy", str(BIRDS / "birds.csv"), "--seen", str(BIRDS / "birds-seen.txt"),
               "--vectors", "glove-6b-50d"]
HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _listing(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones included) with a hash of each file's bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(".*") if p.name.endswith((".tmp", ".old")) or ".kgzsl-" in p.name]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("kgzsl: error:") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    """Make the first step of each long command fail loudly, so a test shows the check came first.

    Every kgzsl module is imported first: one imported for the first time while the patch is on would keep the
    patched function for the rest of the session (``from ... import load_graph`` binds it), failing later tests."""
    import importlib
    import pkgutil

    import kgzsl
    import kgzsl.graph.class_graph
    import kgzsl.graph.embeddings
    import kgzsl.propagation.training
    import kgzsl.vision.backbones

    for info in pkgutil.walk_packages(kgzsl.__path__, "kgzsl."):
        if not info.name.endswith("__main__"):
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional dependency that is not installed
                pass

    def started(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    for module, name in [(kgzsl.graph.embeddings, "load_vectors"), (kgzsl.graph.class_graph, "load_graph"), (kgzsl.propagation.training, "train"),
                         (kgzsl.vision.backbones, "load_backbone")]:
        monkeypatch.setattr(module, name, started)


def _commands(out: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {
        "build-graph": BUILD_BIRDS + ["--out", str(out)],
        "train": ["train", "--graph", str(tmp_path / "graph"), "--epochs", "2", "--out", str(out)],
        "features": ["features", str(tmp_path), "--backbone", "efficientnet-lite0", "--out", str(out)],
    }


# ------------------------------------------------------------------------------------ --force
@pytest.mark.parametrize("command", ["build-graph", "train", "features"])
def test_force_refuses_an_unrelated_folder(command, tmp_path, capsys, no_work):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\documentclass{article}\n")
    # names a feature run writes: --force used to clear these in any folder
    (thesis / "run.json").write_text('{"mine": true}\n')
    (thesis / "shard-000000.safetensors").write_bytes(b"my own data")
    before = _listing(tmp_path)
    assert main(_commands(thesis, tmp_path)[command] + ["--force"]) == 2
    err = _one_line_error(capsys)
    assert str(thesis) in err and "choose" in err
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("command", ["build-graph", "train", "features"])
def test_force_refuses_a_plain_file(command, tmp_path, capsys, no_work):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    before = _listing(tmp_path)
    assert main(_commands(notes, tmp_path)[command] + ["--force"]) == 2
    err = _one_line_error(capsys)
    assert str(notes) in err and "not a folder" in err
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("command", ["build-graph", "train", "features"])
@pytest.mark.parametrize("out", [".", "..", "./"])
def test_current_folder_and_its_parents_are_refused(command, out, tmp_path, capsys, monkeypatch, no_work):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep me\n")
    monkeypatch.chdir(work)
    before = _listing(tmp_path)
    assert main(_commands(Path(out), tmp_path)[command] + ["--force"]) == 2
    err = _one_line_error(capsys)
    assert "current folder" in err
    assert _listing(tmp_path) == before


def test_home_root_and_project_are_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # so no case is refused just for being the current folder
    for path, reason in [(home, "the home folder"), (Path("/"), "the root folder"), (ROOT, "the kgzsl project folder"),
                         (ROOT.parent, "a parent of the kgzsl project folder")]:
        for kind in ("graph", "train", "features"):
            # a clone under /tmp shares its parent with pytest's tmp_path: then either reason is right
            also = "|" + re.escape("a parent of the current folder") if path in Path.cwd().parents else ""
            with pytest.raises(KgzslError, match=re.escape(f"{path} is ") + f"({re.escape(reason)}{also})"):
                check_output_dir(path, kind, force=True)
    assert check_output_dir(home / "graph", "graph", force=True) == home / "graph"  # inside is fine


def test_force_replaces_only_the_same_kind(tmp_path, capsys, small_graph):
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train

    graph_dir = small_graph.save(tmp_path / "graph")
    run_dir = tmp_path / "run"
    result = train(small_graph, load_targets(), model="dgp", epochs=2, seed=0, progress=False)
    save_run(result, load_graph(graph_dir), run_dir)
    assert output_kind(graph_dir) == "graph" and output_kind(run_dir) == "train" and output_kind(tmp_path) is None

    # the same kind is replaced, and the replacement is complete
    (graph_dir / "stale.txt").write_text("from the old graph")
    small_graph.save(graph_dir, force=True)
    assert not (graph_dir / "stale.txt").exists() and load_graph(graph_dir).num_nodes == small_graph.num_nodes
    save_run(result, small_graph, run_dir, force=True)
    assert (run_dir / "predictions.safetensors").is_file()

    # another kind is not, through the library or the CLI
    before = _listing(tmp_path)
    with pytest.raises(KgzslError, match="is a kgzsl training run folder, not a graph folder"):
        small_graph.save(run_dir, force=True)
    with pytest.raises(KgzslError, match="is a kgzsl graph folder, not a training run folder"):
        save_run(result, small_graph, graph_dir, force=True)
    assert main(["train", "--graph", str(graph_dir), "--epochs", "2", "--out", str(graph_dir), "--force"]) == 2
    assert "is a kgzsl graph folder, not a training run folder" in _one_line_error(capsys)
    assert main(BUILD_BIRDS + ["--out", str(run_dir), "--force"]) == 2
    assert "is a kgzsl training run folder, not a graph folder" in _one_line_error(capsys)
    with pytest.raises(KgzslError, match="is a kgzsl graph folder, not a feature folder"):
        check_output_dir(graph_dir, "features", force=True)
    assert _listing(tmp_path) == before

    # without --force an existing output is refused, with the way out named
    assert main(["train", "--graph", str(graph_dir), "--epochs", "2", "--out", str(run_dir)]) == 2
    assert "already exists: pass --force" in _one_line_error(capsys)


def test_feature_writer_never_clears_a_foreign_folder(tmp_path):
    from kgzsl.vision.features import _prepare_out

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run.json").write_text('{"format": 1, "mine": true}\n')
    (foreign / "manifest.json").write_text('{"mine": true}\n')
    before = _listing(tmp_path)
    with pytest.raises(KgzslError, match="holds no kgzsl feature run"):
        _prepare_out(foreign, {"format": 1}, force=True)
    assert _listing(tmp_path) == before


# -------------------------------------------------------------------------- checked before work
def _read_only_cases(locked: Path, tmp_path: Path) -> dict[str, list[str]]:
    # inputs that pass the cheap checks made before the output's (they exist); never read further
    (tmp_path / "feats").mkdir(parents=True, exist_ok=True)
    (tmp_path / "feats" / "manifest.json").write_text("{}\n")
    (tmp_path / "p.safetensors").write_bytes(b"")
    (tmp_path / "s.txt").write_text("n02084071\n")
    return {
        **_commands(locked / "out", tmp_path),
        "splits": ["splits", "--graph", str(tmp_path / "graph"), "--out", str(locked / "splits")],
        "inspect": ["inspect", "dog", "--predictions", str(tmp_path / "p.safetensors"), "--plot", str(locked / "p.png")],
        "evaluate": ["evaluate", "--features", str(tmp_path / "feats"), "--predictions", str(tmp_path / "p.safetensors"),
                     "--split", str(tmp_path / "s.txt"), "--gzsl", "--plot", str(locked / "p.png")],
    }


@pytest.mark.skipif(IS_ROOT, reason="running as root: root writes into read-only folders, so there is nothing to refuse")
@pytest.mark.parametrize("command", ["build-graph", "train", "features", "splits", "inspect", "evaluate"])
def test_read_only_parent_fails_before_any_work(command, tmp_path, capsys, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(_read_only_cases(locked, tmp_path)[command]) == 2
        err = _one_line_error(capsys)
        assert "not writable" in err and str(locked) in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", ["build-graph", "train", "features", "splits", "inspect", "evaluate"])
def test_unwritable_parent_fails_before_any_work_even_as_root(command, tmp_path, capsys, no_work, monkeypatch):
    """The same, with the folder refusing new files the way a read-only one does (EACCES), whoever runs it."""
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == locked.resolve():
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert main(_read_only_cases(locked, tmp_path)[command]) == 2
    err = _one_line_error(capsys)
    assert "not writable (Permission denied)" in err and str(locked) in err
    assert list(locked.iterdir()) == []


def test_unwritable_place_fails_before_any_work(tmp_path, capsys, no_work):
    """Where even root cannot write (/proc), and below a plain file: refused at once, for every kind."""
    try:
        check_output_file(Path("/proc/kgzsl-probe.png"))
        pytest.skip("/proc is writable here")
    except KgzslError:
        pass
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for out, says in [(Path("/proc/kgzsl-out"), "not writable"), (notes / "out", "is a file, not a folder")]:
        for args in _commands(out, tmp_path).values():
            assert main(args) == 2
            assert says in _one_line_error(capsys)
    assert notes.read_text() == "mine\n"


def test_plot_to_a_folder_or_below_a_file_is_refused_at_once(tmp_path, capsys, no_work):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    folder = tmp_path / "plots"
    folder.mkdir()
    missing = str(tmp_path / "missing.safetensors")  # read only after the check, so never reached
    for plot, says in [(folder, "is a folder"), (notes / "p.png", "is a file, not a folder")]:
        assert main(["inspect", "dog", "--predictions", missing, "--plot", str(plot)]) == 2
        assert says in _one_line_error(capsys)
        inputs = _read_only_cases(folder, tmp_path / "inputs")["evaluate"][:7]  # inputs that pass the cheap checks
        assert main([*inputs, "--gzsl", "--plot", str(plot)]) == 2
        assert says in _one_line_error(capsys)
    assert main(["splits", "--graph", missing, "--out", str(notes / "splits")]) == 2
    assert "is a file" in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "notes.txt", "plots"] and not list(folder.iterdir())


def test_atomic_file_refuses_a_folder(tmp_path):
    with pytest.raises(KgzslError, match="is a folder"):
        with atomic_file(tmp_path):
            pass


# ------------------------------------------------------------------------------------ SIGTERM
# Runs the CLI in a child that sends itself SIGTERM right after the N-th safetensors file is written
# to its temporary (mid-save), or right after an --force replacement moved the old folder aside (or swapped it).
_KILLER = """
import os, signal, sys
import safetensors.numpy as sn
import safetensors.torch as st
at = sys.argv[1]
calls = [0]
def counted(save_file):  # kgzsl saves numpy arrays with safetensors.numpy, torch tensors with safetensors.torch
    def saving(*args, **kwargs):
        save_file(*args, **kwargs)
        calls[0] += 1
        if at == f"save{calls[0]}":
            os.kill(os.getpid(), signal.SIGTERM)
    return saving
st.save_file, sn.save_file = counted(st.save_file), counted(sn.save_file)
replace = os.replace
def replacing(src, dst):
    replace(src, dst)
    if at == "swap" and os.path.basename(dst) == "x":  # the old folder was just moved aside
        os.kill(os.getpid(), signal.SIGTERM)
os.replace = replacing
import kgzsl.core.atomic as atomic
exchange = atomic._exchange
def exchanging(a, b):  # the old and the new folder swapped in one step (Linux): the same moment as "swap" above
    done = exchange(a, b)
    if at == "swap":
        os.kill(os.getpid(), signal.SIGTERM)
    return done
atomic._exchange = exchanging
from kgzsl.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run_killed(at: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _KILLER, at, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _assert_terminated(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 143, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("kgzsl: terminated by SIGTERM"), result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_sigterm_during_build_graph_save(tmp_path):
    out = tmp_path / "g"
    _assert_terminated(_run_killed("save1", BUILD_BIRDS + ["--out", str(out)]))
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary
    assert main(BUILD_BIRDS + ["--out", str(out)]) == 0
    before, nodes = _listing(out), load_graph(out).num_nodes
    # killed between the two renames of a --force replacement: the new graph still lands whole
    _assert_terminated(_run_killed("swap", BUILD_BIRDS + ["--out", str(out), "--force"]))
    assert _temporaries(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["g"]
    assert _listing(out).keys() == before.keys() and load_graph(out).num_nodes == nodes


def test_sigterm_during_train_save(tmp_path, small_graph):
    graph_dir = small_graph.save(tmp_path / "graph")
    out = tmp_path / "run"
    args = ["train", "--graph", str(graph_dir), "--epochs", "3", "--out", str(out)]
    for at in ("save1", "save2"):  # model.safetensors, then predictions.safetensors
        _assert_terminated(_run_killed(at, args))
        assert _temporaries(tmp_path) == [] and not out.exists()
    assert main(args) == 0
    assert output_kind(out) == "train"


def test_sigterm_during_features_leaves_a_resumable_folder(tmp_path):
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the foolbox wheel (real ImageNet sample images) is not installed")
    photos = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("imagenet_*.jpg"))[:6]
    for photo in photos:
        (tmp_path / "images" / "n00000001").mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, tmp_path / "images" / "n00000001" / photo.name)
    out = tmp_path / "feats"
    args = ["features", str(tmp_path / "images"), "--backbone", "efficientnet-lite0", "--out", str(out),
            "--shard-size", "2", "--batch-size", "2", "--device", "cpu"]
    _assert_terminated(_run_killed("save2", args))
    assert _temporaries(tmp_path) == []
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-000000.safetensors"]  # the finished shard stays
    assert main(args + ["--json"]) == 0
    assert output_kind(out) == "features" and (out / "manifest.json").is_file() and _temporaries(tmp_path) == []


def test_sigterm_during_a_writability_probe_leaves_no_file(tmp_path, monkeypatch):
    """The probe's file is created and removed as one step: a SIGTERM between the two (seen once in CI's
    test_sigterm_at_any_moment_leaves_no_temporary[train]) is raised after the removal, not between."""
    import tempfile

    from kgzsl.core.atomic import _writable_place
    from kgzsl.core.signals import Terminated, raise_on_sigterm

    real = tempfile.mkstemp

    def mkstemp_then_sigterm(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # lands at the next bytecode: between creating and removing the file
        return made

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_sigterm)
    with pytest.raises(Terminated), raise_on_sigterm():
        _writable_place(tmp_path / "out", "output")
        time.sleep(1)  # the signal must have been raised before here
    assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("command", ["build-graph", "train"])
def test_sigterm_at_any_moment_leaves_no_temporary(command, tmp_path, small_graph):
    """SIGTERM at several moments of a real run: whatever was reached, nothing half-written stays."""
    graph_dir = small_graph.save(tmp_path / "graph")
    out = tmp_path / "out"
    args = {"build-graph": BUILD_BIRDS + ["--out", str(out), "--force"],
            "train": ["train", "--graph", str(graph_dir), "--epochs", "60", "--out", str(out), "--force"]}[command]
    for delay in (0.5, 2.0, 5.0):
        child = subprocess.Popen([sys.executable, "-m", "kgzsl", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=600)
        # killed during start-up (default action), terminated with cleanup, or already done
        assert child.returncode in (-signal.SIGTERM, 143, 0), err[-3000:]
        assert "Traceback" not in err
        assert _temporaries(tmp_path) == []
        assert not out.exists() or output_kind(out) == {"build-graph": "graph", "train": "train"}[command]
    assert main(args) == 0
    assert output_kind(out) == {"build-graph": "graph", "train": "train"}[command]


# -------------------------------------------------------------------------------- stale (SIGKILL)
def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_next_writer_removes_what_a_killed_writer_left(tmp_path, small_graph):
    out = tmp_path / "g"
    script = (
        "import os, signal, sys\n"
        "from kgzsl.core.outputs import atomic_dir\n"
        "with atomic_dir(sys.argv[1], kind='graph') as tmp:\n"
        "    (tmp / 'nodes.json').write_text('[]')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and re.fullmatch(r"\.g\.kgzsl-\d+-[A-Za-z0-9]*-\w+\.tmp", left[0])

    dead = _dead_pid()
    keep = {
        f".g.kgzsl-{os.getpid()}-{HOST}-abcdefgh.tmp",  # a live writer's (this process)
        f".g.kgzsl-{dead}-otherhost-abcdefgh.tmp",  # another machine's: its pid means nothing here
        f".h.kgzsl-{dead}-{HOST}-abcdefgh.tmp",  # a temporary of another output
        ".g.backup",  # the user's own dot-folders
        ".g.kgzsl-notes.tmp",
        f".g.kgzsl-{dead}-{HOST}-abcdefgh.txt",
    }
    for name in keep:
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.txt").write_text("keep")
    stale_file = tmp_path / f".g.kgzsl-{dead}-{HOST}-zyxwvuts.old"
    stale_file.write_text("left by a killed replacement")
    before = {name: _listing(tmp_path / name) for name in keep}

    small_graph.save(out)
    assert {p.name for p in tmp_path.iterdir()} == keep | {"g"}
    assert {name: _listing(tmp_path / name) for name in keep} == before
    assert load_graph(out).num_nodes == small_graph.num_nodes


def test_stale_temporaries_of_a_file_writer(tmp_path):
    dead = _dead_pid()
    target = tmp_path / "split-2-hops.txt"
    stale = tmp_path / f".split-2-hops.txt.kgzsl-{dead}-{HOST}-a1b2c3d4.tmp"
    stale.write_text("half")
    other = tmp_path / ".split-2-hops.txt.abc123.tmp"  # not in kgzsl's naming: not ours to remove
    other.write_text("unknown")
    assert clean_stale_temporaries(target) == [stale]
    with atomic_file(target) as handle:
        handle.write("n02084071\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, other.name])
    assert target.read_text() == "n02084071\n"


def test_sigterm_inside_a_finalizer_is_not_lost(tmp_path):
    """A SIGTERM handled while a ``__del__`` runs (garbage collection) would be printed and dropped by Python,
    and the run would go on to the end; it is delivered again right after, so the run still stops cleanly."""
    script = tmp_path / "finalizer.py"
    script.write_text(
        "import signal, time\n"
        "from kgzsl.core.signals import Terminated, raise_on_sigterm\n"
        "class Collected:\n"
        "    def __del__(self):\n"
        "        signal.raise_signal(signal.SIGTERM)\n"
        "with raise_on_sigterm():\n"
        "    try:\n"
        "        item = Collected(); del item\n"
        "        for _ in range(300): time.sleep(0.01)\n"
        "        print('ran to the end')\n"
        "    except Terminated:\n"
        "        print('terminated')\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "terminated" and "Traceback" not in done.stderr, done.stderr
