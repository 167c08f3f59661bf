"""The ``kgzsl`` program runs under kgzsl.core.collector's settings (a higher collection threshold, everything frozen
before the exit); ``kgzsl.cli.main`` called from Python leaves its caller's collector as it was."""

from __future__ import annotations

import gc
import subprocess
import sys

import kgzsl.cli as cli
from kgzsl.core.collector import THRESHOLD


def test_a_command_process_collects_less_often_and_freezes_on_the_way_out():
    code = ("import gc\nfrom kgzsl.core.collector import command_process\nprint(gc.get_freeze_count())\n"
            "with command_process():\n    print(gc.get_threshold()[0])\nprint(gc.get_freeze_count() > 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", str(THRESHOLD), "True"]


def test_the_program_entry_points_run_main_under_it(monkeypatch):
    monkeypatch.setattr(cli, "main", lambda: gc.get_threshold()[0])
    before = gc.get_threshold()
    try:
        assert cli.console() == THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    python_m = (cli.__file__.rsplit("/", 2)[0] + "/__main__.py")
    assert "sys.exit(console())" in open(python_m, encoding="utf-8").read()


def test_main_from_python_leaves_the_callers_collector_alone(capsys):
    before = gc.get_threshold(), gc.get_freeze_count()
    assert cli.main(["train"]) == 2  # a usage error: parsed, refused, returned
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
