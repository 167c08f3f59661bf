"""`kgzsl calibrate` a shard at a time: on a real feature folder (the 20 foolbox photos in shards of 6) and the small
real photo run, the streamed fit equals the fit of every score in memory as kgzsl fitted it before it streamed
(golden-section temperature over the whole NLL, rules searched over every posterior, gamma from every score), to
float tolerance; the same images in other batches give the same floats."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from kgzsl.cli import main
from kgzsl.recognition.hedge import calibration
from kgzsl.recognition.hedge.calibration import (
    fit_calibration,
    fit_calibration_batches,
    run_task,
    seen_columns,
)
from kgzsl.recognition.hedge.hierarchy import RULES
from kgzsl.recognition.hedge.rules import SEARCHES
from kgzsl.recognition.hedge.storage import run_calibration
from kgzsl.recognition.hedge.temperature import expected_calibration_error, nll, softmax
from kgzsl.recognition.scoring import calibrate
from kgzsl.vision.feature_folder import iter_feature_shards, load_features
from test_hedge import golden_temperature

#: the temperature of a golden-section search is as good as the NLL's float noise lets it be (~1e-8 relative); the
#: streamed fit's Newton steps end within 1e-14 of the minimum, and the rules' parameters follow the temperature
TEMPERATURE_RTOL = 1e-6
PARAMETER_RTOL, PARAMETER_ATOL = 1e-5, 1e-9
#: means over images summed in another order (and the temperature's difference)
MEASURE_RTOL = 1e-6


@pytest.fixture(scope="module")
def feats(foolbox_shards):
    """EfficientNet-Lite0 features of the 20 foolbox photos in shards of 6 (conftest's ``foolbox_shards``)."""
    return foolbox_shards




def in_memory_fit(run, graph, features, labels, candidates: str) -> dict:
    """The fit as kgzsl made it holding every score, probability and posterior (float64 [images, 20k])."""
    task = run_task(run, graph, features, labels, candidates=candidates)
    seen = seen_columns(run.predictions, candidates)
    gamma = 0.0
    if seen is not None:
        gamma = float(calibrate(torch.from_numpy(task.scores), torch.from_numpy(task.truth), torch.from_numpy(seen)).gamma)
        task = task.stacked(gamma, seen)
    temperature = golden_temperature(task.scores, task.truth)
    task.calibrate(temperature)
    h = task.hierarchy
    rules, reached = {}, {}
    for rule in RULES:
        rules[rule], reached[rule] = {}, {}
        for target in (0.5, 0.7, 0.9):
            accuracy = lambda v, rule=rule: float(h.correct(h.answers(task.post, rule, v), task.truth).mean())  # noqa: E731
            value = SEARCHES[rule](accuracy, target)
            rules[rule][f"{target:g}"], reached[rule][f"{target:g}"] = value, accuracy(value)
    return {"gamma": gamma, "temperature": temperature, "rules": rules, "calibration_accuracy": reached,
            "ece_before": expected_calibration_error(softmax(task.scores, 1.0), task.truth),
            "ece_after": expected_calibration_error(task.probs, task.truth),
            "nll_before": nll(task.scores, task.truth, 1.0), "nll_after": nll(task.scores, task.truth, temperature)}


def assert_matches(record: dict, expected: dict) -> None:
    assert record["gamma"] == expected["gamma"]  # five numbers an image decide it as every score does
    assert record["temperature"] == pytest.approx(expected["temperature"], rel=TEMPERATURE_RTOL)
    for rule, values in expected["rules"].items():
        assert record["rules"][rule].keys() == values.keys()
        for target, value in values.items():
            assert record["rules"][rule][target] == pytest.approx(value, rel=PARAMETER_RTOL, abs=PARAMETER_ATOL)
    assert record["calibration_accuracy"] == expected["calibration_accuracy"]
    for key in ("ece_before", "ece_after", "nll_before", "nll_after"):
        assert record[key] == pytest.approx(expected[key], rel=MEASURE_RTOL)


def test_cli_calibration_of_a_feature_folder_equals_the_in_memory_fit(photo_run, feats, tmp_path, capsys):
    from kgzsl.propagation.run import load_run

    folder = shutil.copytree(photo_run["run"], tmp_path / "run")
    capsys.readouterr()
    assert main(["calibrate", "--features", str(feats), "--predictions", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    run = load_run(folder)
    record = run_calibration(run)
    assert summary["images"] == record["images"] == 20 and record["classes"] == len(photo_run["held"])
    whole = load_features(feats)
    expected = in_memory_fit(run, run.load_graph(), whole.features, whole.labels, "unseen")
    assert_matches(record, expected)
    assert record["temperature"] != 1.0 and record["rules"]["threshold"]["0.9"] > 0  # something was fitted


def _blocks_of(monkeypatch, size: int) -> None:
    monkeypatch.setattr(calibration, "BLOCK", size)


def test_batches_do_not_change_the_floats_and_passes_are_few(photo_run, feats, monkeypatch):
    """Images are scored in blocks of BLOCK whatever the shards: shards of 6 in blocks of 4 give the floats of the
    features in memory in blocks of 4; the fit makes a handful of passes over the shards."""
    from kgzsl.propagation.run import load_run

    run = load_run(photo_run["run"])
    graph = run.load_graph()
    whole = load_features(feats)
    _blocks_of(monkeypatch, 4)
    passes = []

    def shards():
        passes.append(len(passes))
        return ((s.features, s.labels) for s in iter_feature_shards(feats))

    streamed, curves = fit_calibration_batches(run, graph, shards, feature_folder=str(feats), top1=True)
    in_memory, curves_memory = fit_calibration(run, graph, whole.features, whole.labels, feature_folder=str(feats), top1=True)
    assert streamed == in_memory  # the stored curves too
    assert len(curves) == 2 and curves.keys() == curves_memory.keys()
    assert all(np.array_equal(a, b) for k in curves for a, b in zip(curves[k], curves_memory[k]))
    assert 3 <= len(passes) <= 12
    _blocks_of(monkeypatch, 7)  # other blocks: sums in another order, the same fit to float tolerance
    other, _ = fit_calibration(run, graph, whole.features, whole.labels, feature_folder=str(feats))
    assert_matches(other, in_memory)


def test_generalized_calibration_streams_to_the_in_memory_fit(half_seen_photo_run, feats, monkeypatch):
    """candidates all: half the foolbox classes played as seen ones (scored by their predicted rows), so gamma is
    fitted from the streamed statistics first; blocks of 4 across shards of 6."""
    run, graph = half_seen_photo_run
    _blocks_of(monkeypatch, 4)
    shards = lambda: ((s.features, s.labels) for s in iter_feature_shards(feats))  # noqa: E731
    record, _ = fit_calibration_batches(run, graph, shards, candidates="all")
    whole = load_features(feats)
    expected = in_memory_fit(run, graph, whole.features, whole.labels, "all")
    assert record["candidates"] == "all" and record["candidate_count"] > 20
    assert_matches(record, expected)
