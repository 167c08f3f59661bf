"""Smoke test of the demo on a small real graph: the whole pipeline end to end, then reuse of the run."""

from __future__ import annotations

import pytest

from kgzsl.demo import format_demo, run_demo


def test_demo_runs_end_to_end_and_reuses_its_run(photo_run, tmp_path):
    """Held-out photos of the labelled classes plus the giraffe, ranked among the graph's unseen classes."""
    out = tmp_path / "demo"
    first = run_demo(out=out, graph_dir=photo_run["graph"], epochs=3, progress=False, log=lambda *a: None)
    assert first["trained_now"] and first["held_out_classes"] == len(photo_run["held"])
    assert first["images"] == 21 and not first["bad_files"]
    assert all(1 <= row["rank"] <= first["candidates"] for row in first["rows"])
    assert first["candidates"] > first["held_out_classes"]  # unseen classes + the held-out ones
    assert (out / "demo-top5.png").stat().st_size > 10_000 and (out / "run" / "train.json").is_file()
    text = format_demo(first)
    assert "giraffe.jpg" in text and "median rank" in text
    again = run_demo(out=out, graph_dir=photo_run["graph"], epochs=3, progress=False, log=lambda *a: None)
    assert not again["trained_now"]
    assert [r["rank"] for r in again["rows"]] == [r["rank"] for r in first["rows"]]


def test_demo_retrains_when_the_settings_change(photo_run, tmp_path):
    out = tmp_path / "demo"
    run_demo(out=out, graph_dir=photo_run["graph"], epochs=2, progress=False, log=lambda *a: None)
    changed = run_demo(out=out, graph_dir=photo_run["graph"], epochs=3, progress=False, log=lambda *a: None)
    assert changed["trained_now"]


def test_demo_refuses_a_graph_folder_that_is_not_one(tmp_path):
    from kgzsl.errors import KgzslError

    (tmp_path / "notes.txt").write_text("not a graph")
    with pytest.raises(KgzslError, match="graph_dir"):
        run_demo(out=tmp_path / "demo", graph_dir=tmp_path / "notes.txt", epochs=1, progress=False, log=lambda *a: None)
