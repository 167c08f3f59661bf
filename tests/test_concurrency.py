"""Concurrency (issue 24): two processes writing the same ``--out`` at once (one wins, the other is refused with
one line at once; a killed writer never blocks the next), and a :class:`~kgzsl.Recognizer` shared by 8 threads
answers as one thread does. Real data: the shipped bird taxonomy, real photos, the conftest photo run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kgzsl.cli import main
from kgzsl.core.locks import held_outputs, lock_folder
from kgzsl.core.outputs import check_output_dir, output_kind

ROOT = Path(__file__).resolve().parents[1]
BIRDS = ROOT / "data" / "taxonomies"
TINY_VECTORS = "eagle 0.1 0.2 0.3\nowl 0.4 0.5 0.6\nduck 0.7 0.8 0.9\n"  # a valid GloVe text file, read in no time

#: a kgzsl command in a child that holds its output claim for ``hold`` seconds before going on, so that two children
#: started together always overlap (the claim is taken before the work, as every writer does)
_SLOW_CLAIM = """
import sys, time
import kgzsl.core.locks as locks
import kgzsl.core.outputs as outputs
claim = locks.claim_output
def slow(*args, **kwargs):
    claim(*args, **kwargs)
    time.sleep(float(sys.argv[1]))
outputs.claim_output = slow
from kgzsl.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _build_args(tmp_path: Path, out: Path) -> list[str]:
    (tmp_path / "tiny.vec").write_text(TINY_VECTORS)
    return ["build-graph", "--taxonomy", str(BIRDS / "birds.csv"), "--seen", str(BIRDS / "birds-seen.txt"),
            "--vectors", str(tmp_path / "tiny.vec"), "--out", str(out), "--force", "--json"]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgzsl: error: "), err
    return lines[0]


def test_two_writers_of_one_output_one_wins_the_other_is_refused(tmp_path):
    out = tmp_path / "g"
    args = _build_args(tmp_path, out)
    children = [subprocess.Popen([sys.executable, "-c", _SLOW_CLAIM, "3", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [child.communicate(timeout=300) + (child.returncode,) for child in children]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2], results
    err = next(err for _, err, code in results if code == 2)
    line = _one_line(err)
    assert str(out) in line and "being written by another kgzsl process (pid " in line
    assert output_kind(out) == "graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g", "tiny.vec"]  # no temporary, no lock file beside it
    assert not [p for p in lock_folder().glob("*.lock") if str(out) in p.read_text()]  # the winner removed its lock file


def test_a_killed_writer_does_not_block_the_next(tmp_path, capsys):
    """A writer holding the claim refuses others at once; once it is SIGKILLed (no cleanup runs) the next run completes."""
    out = tmp_path / "g"
    args = _build_args(tmp_path, out)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from kgzsl.core.locks import command_scope; "
         "from kgzsl.core.outputs import check_output_dir\nwith command_scope():\n"
         "    check_output_dir(sys.argv[1], 'graph', True); print('claimed', flush=True); sys.stdin.read()", str(out)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        started = time.perf_counter()
        assert main(args) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"(pid {holder.pid})" in line and str(out) in line
        assert time.perf_counter() - started < 60  # refused before any work, not after it
        assert not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert main(args) == 0
    assert output_kind(out) == "graph" and held_outputs() == []  # the command's claim ended with it


def test_one_process_may_write_the_same_output_again(tmp_path, capsys):
    """Claims are per process and end with the command: a second command in the same process is not refused, and
    a library call outside a command keeps no claim once it returns."""
    out = tmp_path / "g"
    args = _build_args(tmp_path, out)
    assert main(args) == 0 and main(args) == 0
    bad = [str(tmp_path / "missing.vec") if arg.endswith("tiny.vec") else arg for arg in args]
    assert main(bad) == 2 and held_outputs() == []  # refused after the claim: released all the same
    capsys.readouterr()
    check_output_dir(out, "graph", force=True)
    assert held_outputs() == []


# ------------------------------------------------------------------------------------ threads
@pytest.fixture(scope="module")
def photos() -> list[Path]:
    from kgzsl.vision.samples import foolbox_imagenet_images

    return [path for path, _ in foolbox_imagenet_images()[:16]]


def test_a_recognizer_shared_by_8_threads_answers_as_one_thread(photo_run, photos):
    from kgzsl import Recognizer

    rec = Recognizer.from_run(photo_run["run"], progress=False)
    alone = [rec.predict(photo, top=5) for photo in photos]
    with ThreadPoolExecutor(max_workers=8) as pool:
        shared = list(pool.map(lambda photo: rec.predict(photo, top=5), photos * 2))
    for one, many in zip(alone * 2, shared):
        assert many.ids == one.ids
        assert many.scores == pytest.approx(one.scores, rel=1e-5, abs=1e-6)
    fresh = Recognizer.from_run(photo_run["run"], progress=False)  # the lazy first load, raced by 8 threads
    with ThreadPoolExecutor(max_workers=8) as pool:
        raced = list(pool.map(lambda photo: fresh.predict(photo, top=5, candidates="all"), photos[:8]))
    for photo, answer in zip(photos[:8], raced):
        assert answer.ids == rec.predict(photo, top=5, candidates="all").ids
