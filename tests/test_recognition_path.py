"""The one recognition path (:func:`kgzsl.recognition.recognize.recognize`) gives exactly the rankings stored from a
small real run for every option, and Recognizer.predict, ``kgzsl predict`` and predict_features agree with it.

The inputs (a 45-node DGP run, real EfficientNet-Lite0 features of the 20 foolbox photos, its hedging calibrations)
and the rankings were written by scripts/make_ranking_fixture.py with the scoring functions the path is built on."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kgzsl import Recognizer
from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.propagation.run import load_run
from kgzsl.recognition.hedge.calibration import run_hedger
from kgzsl.recognition.recognize import RecognitionOptions, predict_features, recognize
from kgzsl.recognition.scoring import candidate_scores, ranks_of_true

DATA = Path(__file__).resolve().parent / "data"
RUN = DATA / "ranking-run"
RECORD = json.loads((DATA / "rankings-regression.json").read_text(encoding="utf-8"))
ENTRIES = RECORD["rankings"]


def _label(entry: dict) -> str:
    hedge = f"-hedge{entry['hedge']:g}-{entry['rule']}" if entry["hedge"] is not None else ""
    return (f"{entry['candidates']}-{entry['seen_rows']}-gamma{entry['gamma']:.3g}"
            f"{'-transductive' if entry['transductive'] else ''}{hedge}")


@pytest.fixture(scope="module")
def stored():
    """The stored run, its graph, the features and names of the 20 photos, and a cache of its hedgers."""
    run = load_run(RUN / "predictions.safetensors")
    graph = run.load_graph(RUN / "graph")
    features = torch.from_numpy(np.load(RUN / "features.npy"))
    assert features.dtype == torch.float32 and features.shape == (20, 1280)
    hedgers = {}

    def hedger(target, candidates, rule=None):
        key = (target, candidates, rule)
        if key not in hedgers:
            hedgers[key] = run_hedger(run, graph, target, candidates, rule)
        return hedgers[key]

    return SimpleNamespace(run=run, graph=graph, features=features, names=list(RECORD["names"]), hedger=hedger)


def _options(stored, entry: dict, **changes) -> RecognitionOptions:
    """The options that reproduce a stored entry (a hedged one takes its gamma from the hedger)."""
    candidates = RECORD["listed"] if entry["candidates"] == "listed" else entry["candidates"]
    if entry["hedge"] is None:
        options = RecognitionOptions(candidates, RECORD["top"], entry["gamma"], entry["transductive"], entry["seen_rows"])
    else:
        options = RecognitionOptions(candidates, RECORD["top"], seen_rows=entry["seen_rows"],
                                     hedger=stored.hedger(entry["hedge"], candidates, entry["rule"]))
    return replace(options, **changes) if changes else options


def _same(found, images: list[dict], predictions, top: int | None = None) -> None:
    """``found`` (RankedImage or Prediction) rank exactly as the stored ``images``: ids, names, scores to 1e-6, hedge."""
    assert len(found) == len(images)
    names = predictions.meta["names"]
    for got, want in zip(found, images):
        ids, scores = want["ids"][:top], want["scores"][:top]
        assert got.ids == ids, got.image
        assert got.names == [names[predictions.index[i]] for i in ids]
        assert got.scores == pytest.approx(scores, abs=1e-6, rel=1e-6)
        if "hedged" in want:
            h = want["hedged"]
            assert (got.hedged.id, got.hedged.depth) == (h["id"], h["depth"])
            assert got.hedged.probability == pytest.approx(h["probability"], abs=1e-6)
            assert got.hedged.info_gain == pytest.approx(h["info_gain"], abs=1e-9)
        else:
            assert got.hedged is None


def test_the_stored_record_covers_every_option():
    plain = {(e["candidates"], e["seen_rows"], e["gamma"], e["transductive"]) for e in ENTRIES if e["hedge"] is None}
    assert len(plain) == 3 * 2 * 2 * 2
    hedged = {(e["candidates"], e["seen_rows"], e["rule"], e["hedge"]) for e in ENTRIES if e["hedge"] is not None}
    assert len(hedged) == 2 * 2 * 2 * 3
    assert all(len(e["images"]) == 20 for e in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=[_label(e) for e in ENTRIES])
def test_recognize_reproduces_the_stored_rankings(stored, entry):
    options = _options(stored, entry)
    assert options.effective_gamma == entry["gamma"]
    found = recognize(stored.features, stored.names, stored.run.predictions, options)
    assert [r.image for r in found] == stored.names
    _same(found, entry["images"], stored.run.predictions)


@pytest.mark.parametrize("top", [1, 3, 100])
def test_top_keeps_a_prefix_clipped_to_the_candidates(stored, top):
    entry = ENTRIES[0]  # unseen candidates: 8 classes
    found = recognize(stored.features, stored.names, stored.run.predictions, _options(stored, entry, top=top))
    assert all(len(r.ids) == min(top, 8) for r in found)
    if top <= RECORD["top"]:
        _same(found, entry["images"], stored.run.predictions, top)


def test_true_ranks_are_the_ranks_of_the_full_scores(stored):
    """What the demo reads: each image's true class ranked among all candidates, ties counting against."""
    predictions = stored.run.predictions
    keep = [i for i, w in enumerate(RECORD["labels"]) if w in predictions.index and not predictions.seen[predictions.index[w]]
            and predictions.meta["roles"][predictions.index[w]] != "internal"]
    assert len(keep) == 5
    truth = [RECORD["labels"][i] for i in keep]
    found = recognize(stored.features[keep], [stored.names[i] for i in keep], predictions, RecognitionOptions(), truth=truth)
    scores, columns = candidate_scores(stored.features[keep], predictions, "unseen")
    column = {int(c): j for j, c in enumerate(columns)}
    expected = ranks_of_true(scores, torch.tensor([column[predictions.index[w]] for w in truth]))
    assert [r.true_rank for r in found] == expected.tolist()
    assert all(r.true_rank is None for r in recognize(stored.features, stored.names, predictions))


def _entry(candidates, seen_rows="real", gamma=0.0, transductive=False, hedge=None, rule=None) -> dict:
    for entry in ENTRIES:
        if (entry["candidates"], entry["seen_rows"], entry["transductive"], entry["hedge"], entry["rule"]) == (
                candidates, seen_rows, transductive, hedge, rule) and (hedge is not None or entry["gamma"] == gamma):
            return entry
    raise AssertionError("no such stored entry")


def test_recognizer_predict_agrees_with_recognize(stored):
    rec = Recognizer(stored.run, graph=RUN / "graph", progress=False)
    names = [f"features[{i}]" for i in range(20)]
    for kwargs, entry in [
        ({}, _entry("unseen")),
        ({"candidates": "all"}, _entry("all")),
        ({"candidates": RECORD["listed"], "top": 3}, _entry("listed")),
        ({"hedge": 0.9}, _entry("unseen", hedge=0.9, rule="threshold")),
        ({"candidates": "all", "hedge": 0.7}, _entry("all", hedge=0.7, rule="threshold")),
    ]:
        found = rec.predict(stored.features, **kwargs)
        assert [p.image for p in found] == names
        _same(found, entry["images"], stored.run.predictions, kwargs.get("top"))
        same = recognize(stored.features, names, stored.run.predictions, _options(stored, entry, top=kwargs.get("top", 5)))
        assert [(p.image, p.ids, p.names, p.scores, p.hedged) for p in found] == [
            (r.image, r.ids, r.names, r.scores, r.hedged) for r in same]
    one = rec.predict(stored.features[3])
    assert one.image == "features" and one.ids == _entry("unseen")["images"][3]["ids"]


def test_predict_features_is_recognize(stored):
    entry = _entry("all", "predicted", 0.5, True)
    rows = predict_features(stored.features, stored.names, stored.run.predictions, "all", 5, 0.5, True, "predicted")
    found = recognize(stored.features, stored.names, stored.run.predictions, _options(stored, entry))
    assert [(r.image, r.top) for r in rows] == [(r.image, r.top) for r in found]
    _same(found, entry["images"], stored.run.predictions)


@pytest.fixture
def fake_images(stored, monkeypatch):
    """``kgzsl predict`` reads the stored features instead of images: the CLI's own path from there on."""
    import kgzsl.vision.backbones
    import kgzsl.vision.features

    backbone = SimpleNamespace(name="efficientnet-lite0", describe=lambda: None)
    monkeypatch.setattr(kgzsl.vision.backbones, "load_backbone", lambda name, arch=None, precision="fp32": backbone)
    monkeypatch.setattr(kgzsl.vision.features, "image_list_features",
                        lambda paths, network: (stored.features, list(stored.names), []))
    return stored.names


@pytest.mark.parametrize("flags, key", [
    ([], ("unseen",)),
    (["--candidates", "all", "--gamma", "0.5", "--seen-rows", "predicted"], ("all", "predicted", 0.5)),
    (["--candidates", "LISTED", "--transductive"], ("listed", "real", 0.0, True)),
    (["--hedge", "0.9", "--hedge-rule", "darts"], ("unseen", "real", 0.0, False, 0.9, "darts")),
    (["--candidates", "all", "--hedge", "0.5"], ("all", "real", 0.0, False, 0.5, "threshold")),
])
def test_the_cli_prints_the_stored_rankings(stored, fake_images, flags, key, tmp_path, capsys):
    listed = tmp_path / "listed.txt"
    listed.write_text("\n".join(RECORD["listed"]) + "\n")
    flags = [str(listed) if f == "LISTED" else f for f in flags]
    args = ["predict", *fake_images, "--predictions", str(RUN / "predictions.safetensors"), "--graph", str(RUN / "graph")]
    assert main([*args, *flags, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    entry = _entry(*key)
    assert summary["gamma"] == entry["gamma"] and summary["bad_files"] == []
    for image, want in zip(summary["images"], entry["images"]):
        assert image["image"] == want["image"]
        assert [t["id"] for t in image["top"]] == want["ids"]
        assert [t["score"] for t in image["top"]] == [round(s, 4) for s in want["scores"]]
        assert [t["rank"] for t in image["top"]] == [1, 2, 3, 4, 5]
        if "hedged" in want:
            assert image["hedged"]["id"] == want["hedged"]["id"]
            assert image["hedged"]["probability"] == round(want["hedged"]["probability"], 4)
        else:
            assert "hedged" not in image
    assert len(summary["images"]) == 20
    assert main([*args, *flags]) == 0  # the text layout reads the same rows
    lines = capsys.readouterr().out.splitlines()
    first = entry["images"][0]
    assert lines[0] == first["image"]
    assert lines[1].split()[:2] == ["1.", first["ids"][0]] and lines[1].endswith(f"{first['scores'][0]:.4f}")


@pytest.mark.parametrize("changes, parameter", [
    ({"candidates": "bogus"}, "candidates"),
    ({"candidates": []}, "candidates"),
    ({"candidates": [1, 2]}, "candidates"),
    ({"top": 0}, "top"),
    ({"top": 2.5}, "top"),
    ({"top": True}, "top"),
    ({"gamma": math.nan}, "gamma"),
    ({"gamma": "0.5"}, "gamma"),
    ({"transductive": "yes"}, "transductive"),
    ({"seen_rows": "true"}, "seen_rows"),
    ({"hedger": object()}, "hedger"),
])
def test_bad_options_are_refused_by_name(changes, parameter):
    with pytest.raises(KgzslError, match=parameter) as caught:
        RecognitionOptions(**changes)
    assert caught.value.parameter == parameter


def test_bad_combinations_and_inputs_are_refused(stored):
    hedger = stored.hedger(0.9, "unseen")
    with pytest.raises(KgzslError, match="transductive") as caught:
        RecognitionOptions(hedger=hedger, transductive=True)
    assert caught.value.parameter == "transductive"
    all_hedger = stored.hedger(0.9, "all")
    with pytest.raises(KgzslError, match="gamma 0.5 differs") as caught:
        RecognitionOptions("all", gamma=0.5, hedger=all_hedger)
    assert caught.value.parameter == "gamma"
    assert RecognitionOptions("all", gamma=all_hedger.gamma, hedger=all_hedger).effective_gamma == all_hedger.gamma
    predictions = stored.run.predictions
    with pytest.raises(KgzslError, match="hedger: calibrated over 8 candidate classes"):
        recognize(stored.features, stored.names, predictions, RecognitionOptions("all", hedger=hedger))
    with pytest.raises(KgzslError, match="candidates: 1 ids are not in the predictions"):
        recognize(stored.features, stored.names, predictions, RecognitionOptions(["n99999999"]))
    with pytest.raises(KgzslError, match="options must be RecognitionOptions"):
        recognize(stored.features, stored.names, predictions, {"top": 5})
    with pytest.raises(KgzslError, match="one row per name"):
        recognize(stored.features, stored.names[:3], predictions)
    with pytest.raises(KgzslError, match="truth: 1 true classes are not candidates"):
        recognize(stored.features[:1], stored.names[:1], predictions, truth=["n01855672"])  # goose: seen, trained
