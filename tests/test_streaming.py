"""Evaluation a shard at a time: the shard iterator, GZSL from per-image statistics, and streaming evaluation equal
to in-memory evaluation on a real feature folder (the 20 foolbox photos, shards of 6 images) and a real run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.recognition.evaluate import (
    evaluate_gzsl_split,
    evaluate_splits,
    evaluate_stream,
)
from kgzsl.recognition.scoring import (
    calibrate,
    gzsl_accuracies,
    gzsl_at_gamma,
    seen_unseen_curve,
)
from kgzsl.recognition.streaming import (
    calibrate_stats,
    gzsl_on_halves,
    gzsl_stats,
    join_stats,
    stats_accuracies,
    stats_curve,
)
from kgzsl.vision import feature_folder
from kgzsl.vision.feature_folder import iter_feature_shards, load_features


@pytest.fixture(scope="module")
def feats(foolbox_shards):
    """EfficientNet-Lite0 features of the 20 foolbox photos in shards of 6 (conftest's ``foolbox_shards``)."""
    return foolbox_shards


def test_shards_are_load_features_in_pieces(feats, monkeypatch):
    shards = list(iter_feature_shards(feats))
    whole = load_features(feats)
    assert [len(s.labels) for s in shards] == [6, 6, 6, 2]
    assert torch.equal(torch.cat([s.features for s in shards]), whole.features)
    assert sum((s.labels for s in shards), []) == whole.labels and sum((s.paths for s in shards), []) == whole.paths
    reads = []
    real = feature_folder._read_shard
    monkeypatch.setattr(feature_folder, "_read_shard", lambda path, *a: reads.append(path.name) or real(path, *a))
    picked = list(iter_feature_shards(feats, rows=[19, 1, 2, 1]))  # shards 1 and 2 hold none: not read
    assert reads == ["shard-000000.safetensors", "shard-000003.safetensors"]
    assert torch.equal(torch.cat([s.features for s in picked]), whole.features[[1, 2, 19]])
    assert sum((s.paths for s in picked), []) == [whole.paths[i] for i in (1, 2, 19)]


def test_shards_listed_twice_are_refused(feats, tmp_path):
    copy = shutil.copytree(feats, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][1] = manifest["shards"][0]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KgzslError, match="twice"):
        next(iter_feature_shards(copy))


def _random_gzsl(seed: int, ties: bool):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(300, 12, generator=g)
    if ties:  # few distinct values: ties within and across the seen and unseen sides
        scores = (scores * 2).round() / 2
    truth = torch.randint(0, 12, (300,), generator=g)
    seen = torch.tensor([False] * 7 + [True] * 5)
    return scores, truth, seen


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_gzsl_statistics_give_scoring_answers(seed, ties):
    scores, truth, seen = _random_gzsl(seed, ties)
    stats = gzsl_stats(scores, truth, seen)
    for gamma in (0.0, 0.5, -0.5, 0.25, 1.0, 1e-9, 3.3):
        assert stats_accuracies(stats, gamma) == gzsl_accuracies(scores, truth, seen, gamma)
    assert stats_curve(stats) == seen_unseen_curve(scores, truth, seen)
    assert calibrate_stats(stats) == calibrate(scores, truth, seen)  # kgzsl calibrate's gamma
    wide = scores.double()  # calibrate scores in float64: gamma still subtracted as scoring does
    assert calibrate_stats(gzsl_stats(wide, truth, seen)) == calibrate(wide, truth, seen)
    test, chosen = gzsl_on_halves(stats, seed=seed)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(truth)))
    cal, rest = order[:150], order[150:]
    assert chosen == calibrate(scores[cal], truth[cal], seen)
    assert test == gzsl_at_gamma(scores[rest], truth[rest], seen, chosen.gamma)


def test_gzsl_statistics_in_batches_are_those_of_the_whole():
    scores, truth, seen = _random_gzsl(3, True)
    whole = gzsl_stats(scores, truth, seen)
    parts = [gzsl_stats(scores[i:i + 7], truth[i:i + 7], seen) for i in range(0, 300, 7)]
    assert all(torch.equal(a, torch.cat(b)) for a, b in zip(whole, zip(*parts)))
    assert all(torch.equal(a, b) for a, b in zip(whole, join_stats(parts)))
    with pytest.raises(KgzslError, match="no image"):
        join_stats([])


@pytest.fixture(scope="module")
def splits(photo_run, tmp_path_factory):
    """Two split files over the photo run's held-out classes (of the 20 photos): half of them, and all."""
    held = photo_run["held"]
    root = tmp_path_factory.mktemp("stream-splits")
    (root / "half.txt").write_text("\n".join(held[: len(held) // 2]) + "\n")
    (root / "held.txt").write_text("\n".join(held) + "\n")
    return [root / "half.txt", root / "held.txt"]


def test_streaming_equals_in_memory_on_a_real_feature_folder(photo_run, feats, splits):
    """Hit@k, hierarchical Hit@k, median ranks and GZSL (the second half of the held-out classes played as seen ones,
    so that both kinds of images exist) over 4 shards equal their in-memory values."""
    from dataclasses import replace

    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.run import load_run

    predictions, graph = load_run(photo_run["run"]).predictions, load_graph(photo_run["graph"])
    held = photo_run["held"]
    seen = predictions.seen.clone()
    seen[[predictions.index[w] for w in held[len(held) // 2:]]] = True
    predictions = replace(predictions, seen=seen, seen_true=None)
    pairs = [(path.stem, path.read_text().split()) for path in splits[:1]]
    whole = load_features(feats)
    for with_seen in (False, True):
        common = dict(with_seen=with_seen, graph=graph, gzsl=True, seed=1)
        memory = evaluate_splits(whole.features, whole.labels, predictions, pairs, **common)
        streamed = evaluate_stream(((s.features, s.labels) for s in iter_feature_shards(feats)), predictions, pairs, **common)
        assert [e.as_dict() for e in streamed] == [e.as_dict() for e in memory]
        assert [e.gzsl for e in streamed] == [e.gzsl for e in memory]  # the whole curves too
        assert memory[0].result.hier_hit is not None and (memory[0].result.candidates > 9) == with_seen
        # blocks of 4 images across shards of 6: the same blocks as scoring all the images 4 at a time
        small = evaluate_stream(((s.features, s.labels) for s in iter_feature_shards(feats)), predictions, pairs,
                                batch_size=4, **common)
        whole_small = evaluate_stream([(whole.features, whole.labels)], predictions, pairs, batch_size=4, **common)
        assert [e.as_dict() for e in small] == [e.as_dict() for e in whole_small]
        assert [e.gzsl for e in small] == [e.gzsl for e in whole_small]
    # GZSL as evaluate_gzsl_split computes it from every score
    seen_ids = [i for i, s in zip(predictions.ids, predictions.seen.tolist()) if s]
    expected = evaluate_gzsl_split(whole.features, whole.labels, predictions.ids, predictions.pred, pairs[0][1], seen_ids,
                                   seed=1)[0]
    assert memory[0].gzsl == expected


def test_evaluate_cli_streams_to_the_in_memory_figures(photo_run, feats, splits, capsys):
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.run import load_run

    predictions, graph = load_run(photo_run["run"]).predictions, load_graph(photo_run["graph"])
    capsys.readouterr()
    assert main(["evaluate", "--features", str(feats), "--predictions", str(photo_run["run"]), "--split", *map(str, splits),
                 "--transductive", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["splits"]
    whole = load_features(feats)
    pairs = [(path.stem, path.read_text().split()) for path in splits]
    memory = evaluate_splits(whole.features, whole.labels, predictions, pairs, graph=graph, transductive=True)
    assert entries == json.loads(json.dumps([e.as_dict() for e in memory]))
    assert "transductive" in entries[0] and entries[1]["images"] == 20 and "hier_hit@1" in entries[1]
