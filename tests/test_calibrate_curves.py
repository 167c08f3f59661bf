"""The curves a calibration record keeps (reliability diagram, accuracy-specificity trade-off), computed as
``kgzsl calibrate`` streams a real feature folder (the 20 foolbox photos in shards of 6, scored in blocks of 4) on
the small real photo run, equal the explorer's curves of the same photos computed from every answer in memory;
records without curves still load, garbled ones are refused naming the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.inspection.explore.curves import photo_curves
from kgzsl.recognition.hedge import calibration
from kgzsl.recognition.hedge.calibration import (
    fit_calibration_batches,
    run_task,
    seen_columns,
)
from kgzsl.recognition.hedge.reporting import evaluate_hedging
from kgzsl.recognition.hedge.storage import read_hedge_record, run_calibration
from kgzsl.vision.feature_folder import iter_feature_shards, load_features

#: the stored curves against the photos' (sums over images in another order, the streamed temperature)
TOLERANCE = 1e-6


def assert_same_curves(stored: dict, expected: dict) -> None:
    """Every number of two curve sections within TOLERANCE; bin counts and layout exactly."""
    assert stored["bins"] == expected["bins"] and stored["images"] == expected["images"]
    for key in ("before", "after"):
        got, want = stored["reliability"][key], expected["reliability"][key]
        assert got["count"] == want["count"]
        for name in ("confidence", "accuracy"):
            assert got[name] == pytest.approx(want[name], abs=TOLERANCE), (key, name)
    got, want = stored["accuracy_specificity"], expected["accuracy_specificity"]
    assert got["flat"] == pytest.approx(want["flat"], abs=TOLERANCE)
    assert got["rules"].keys() == want["rules"].keys()
    for rule, sweep in want["rules"].items():
        for name in ("parameter", "gain", "accuracy"):
            assert got["rules"][rule][name] == pytest.approx(sweep[name], abs=TOLERANCE), (rule, name)
        assert np.array(got["rules"][rule]["targets"]) == pytest.approx(np.array(sweep["targets"]), abs=TOLERANCE)


@pytest.fixture(scope="module")
def calibrated(photo_run, foolbox_shards, tmp_path_factory):
    """A copy of the photo run calibrated by ``kgzsl calibrate`` on the foolbox feature folder, blocks of 4 images."""
    from kgzsl.propagation.run import load_run

    folder = shutil.copytree(photo_run["run"], tmp_path_factory.mktemp("curves") / "run")
    patch = pytest.MonkeyPatch()
    patch.setattr(calibration, "BLOCK", 4)
    try:
        assert main(["calibrate", "--features", str(foolbox_shards), "--predictions", str(folder), "--json"]) == 0
    finally:
        patch.undo()
    return load_run(folder)


def test_stored_curves_are_the_photos_curves(calibrated, foolbox_shards):
    run = calibrated
    record = run_calibration(run)
    curves = record["curves"]
    whole = load_features(foolbox_shards)
    task, _ = evaluate_hedging(run, run.load_graph(), whole.features, whole.labels)
    assert_same_curves(curves, photo_curves(task, record["rules"]))
    # something to draw: answers move along each sweep, and the targets reached are the record's
    assert sum(curves["reliability"]["after"]["count"]) == record["images"] == 20
    for rule, sweep in curves["accuracy_specificity"]["rules"].items():
        assert max(sweep["gain"]) > min(sweep["gain"]) and max(sweep["accuracy"]) > min(sweep["accuracy"])
        assert [t[2] for t in sweep["targets"]] == [record["calibration_accuracy"][rule][f"{t[0]:g}"] for t in sweep["targets"]]
    assert record["ece_after"] == pytest.approx(sum(n * abs(a - c) for c, a, n in zip(
        *(curves["reliability"]["after"][k] for k in ("confidence", "accuracy", "count")))) / 20, abs=1e-12)


def test_generalized_curves_are_the_stacked_photos_curves(half_seen_photo_run, foolbox_shards, monkeypatch):
    """candidates all (half the foolbox classes played as seen ones): the curves of the stacked, calibrated scores."""
    run, graph = half_seen_photo_run
    monkeypatch.setattr(calibration, "BLOCK", 4)
    shards = lambda: ((s.features, s.labels) for s in iter_feature_shards(foolbox_shards))  # noqa: E731
    record, _ = fit_calibration_batches(run, graph, shards, candidates="all")
    whole = load_features(foolbox_shards)
    task = run_task(run, graph, whole.features, whole.labels, candidates="all")
    task = task.stacked(record["gamma"], seen_columns(run.predictions, "all")).calibrate(record["temperature"])
    assert_same_curves(record["curves"], photo_curves(task, record["rules"]))


def test_records_without_curves_load_and_garbled_curves_are_refused(calibrated, tmp_path):
    record = run_calibration(calibrated)
    path = tmp_path / "hedge.json"
    old = {k: v for k, v in record.items() if k != "curves"}
    path.write_text(json.dumps(old))
    assert read_hedge_record(path) == old  # an older kgzsl's record: no curves, still read
    path.write_text(json.dumps(record))
    assert read_hedge_record(path) == record
    curves = record["curves"]
    sweep = curves["accuracy_specificity"]["rules"]["threshold"]
    garbled = [
        {**curves, "reliability": {"before": curves["reliability"]["before"]}},  # cut short
        {**curves, "bins": "15"},
        {k: v for k, v in curves.items() if k != "accuracy_specificity"},
        {**curves, "accuracy_specificity": {**curves["accuracy_specificity"], "rules": {
            "threshold": {**sweep, "gain": sweep["gain"][:-3]}}}},  # a truncated list
        {**curves, "accuracy_specificity": {**curves["accuracy_specificity"], "flat": [0.5, None]}},
        [1, 2, 3],
    ]
    for bad in garbled:
        path.write_text(json.dumps({**record, "curves": bad}))
        with pytest.raises(KgzslError, match=f"{path}: the calibration's curves are truncated or garbled"):
            read_hedge_record(path)
    text = json.dumps(record)
    path.write_text(text[: text.index('"curves"') + 40])  # the file itself cut inside its curves
    with pytest.raises(KgzslError, match=str(path)):
        read_hedge_record(path)
