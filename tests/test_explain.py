"""Explaining propagated weights (``kgzsl.inspection.explain``, ``kgzsl inspect``) on a small real WordNet graph with real
EfficientNet-Lite0 targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.inspection.explain import (
    attribution,
    format_report,
    inspect_node,
    last_layer_inputs,
    neighbourhood,
    resolve,
)
from kgzsl.propagation.predictions import load_predictions
from kgzsl.propagation.run import load_checkpoint, save_run
from kgzsl.propagation.targets import load_targets
from kgzsl.propagation.training import train

JUNCO = "n01534433"  # an ImageNet-1k class ...
DARK_EYED_JUNCO = "n01534582"  # ... whose only graph neighbour with a real classifier is its parent, junco


@pytest.fixture(scope="module")
def setting(glove):
    from kgzsl.core.imagenet import imagenet1k_wnids
    from kgzsl.graph.class_graph import build_wordnet_graph
    from kgzsl.graph.wordnet import synset, wnid_of

    assert wnid_of(synset(DARK_EYED_JUNCO)) == DARK_EYED_JUNCO and synset(DARK_EYED_JUNCO).hypernyms()[0].name() == "junco.n.01"
    seen = sorted(set(imagenet1k_wnids()[::10]) | {JUNCO})
    graph = build_wordnet_graph(seen, [DARK_EYED_JUNCO, "n02439033"], vectors=glove)
    return graph, load_targets()


@pytest.fixture(scope="module")
def runs(setting, tmp_path_factory):
    graph, targets = setting
    out = {}
    for name in ("sgcn", "dgp"):
        result = train(graph, targets, model=name, epochs=60, seed=0, val_fraction=0.0, progress=False)
        folder = tmp_path_factory.mktemp(name) / "run"
        save_run(result, graph, folder)
        out[name] = folder
    return out


def test_neighbourhood_matches_the_graph(setting):
    graph, _ = setting
    node = resolve(graph, DARK_EYED_JUNCO)
    hood = neighbourhood(graph, node)
    index = graph.index()
    ancestors = dict(hood["ancestors"])
    assert ancestors[JUNCO] == 1
    # every ancestor listed is a real (node, ancestor) pair of the dense relation at that distance
    pairs = {(a, b): d for a, b, d in zip(*graph.dense_index.tolist(), graph.dense_distance.tolist())}
    assert all(pairs[(node, index[a])] == d for a, d in hood["ancestors"])
    assert len(hood["ancestors"]) == sum(1 for (a, _b), d in pairs.items() if a == node and d > 0)
    assert hood["descendants"] == []
    assert (DARK_EYED_JUNCO, 1) in neighbourhood(graph, index[JUNCO])["descendants"]


@pytest.mark.parametrize("model_name", ["sgcn", "dgp"])
def test_attribution_points_to_the_only_seen_neighbour(setting, runs, model_name):
    graph, targets = setting
    model, _ = load_checkpoint(runs[model_name], graph)
    predictions = load_predictions(runs[model_name] / "predictions.safetensors")
    z = last_layer_inputs(model, graph)
    seen_nodes = np.flatnonzero(predictions.seen.numpy()).tolist()
    attr = attribution(z, graph.index()[DARK_EYED_JUNCO], seen_nodes)
    top_node, top_weight = attr.top(1)[0]
    assert graph.ids[top_node] == JUNCO and top_weight > 0
    report = inspect_node(graph, predictions, DARK_EYED_JUNCO, model=model, targets=targets)
    assert report["attribution"][0]["id"] == JUNCO
    assert report["attribution_faithfulness"] > 0.5  # the representer expansion explains the prediction


def test_report_fields(setting, runs):
    graph, targets = setting
    predictions = load_predictions(runs["dgp"] / "predictions.safetensors")
    model, _ = load_checkpoint(runs["dgp"], graph)
    report = inspect_node(graph, predictions, JUNCO, model=model, targets=targets, k=5)
    assert report["trained_on_real_classifier"] and report["role"] == "seen"
    assert report["cosine_to_true_classifier"] > 0.3  # a trained class: its prediction is near its target
    assert abs(report["weight_norm"] - 1.0) < 1e-4
    assert len(report["nearest_by_weight"]) == 5 and report["nearest_by_weight"][0]["id"] != JUNCO
    groups = report["dgp_group_weights"]  # DGP's distance_weights(), the base class's optional diagnostic
    assert list(groups) == ["distances", "descendant_phase", "ancestor_phase"]
    assert groups["distances"] == ["0", "1", "2", "3", ">=4"] and abs(sum(groups["ancestor_phase"]) - 1) < 1e-3
    line = next(line for line in format_report(report).splitlines() if "distance-group" in line)
    first = f"0: {groups['descendant_phase'][0]:.2f}/{groups['ancestor_phase'][0]:.2f}, "
    assert line.startswith(f"  DGP distance-group weights (distance: descendant / ancestor phase): {first}")


def test_cli_inspect_plot_and_json(setting, runs, tmp_path, capsys):
    graph, _ = setting
    folder = graph.save(tmp_path / "g")
    png = tmp_path / "inspect.png"
    code = main(["inspect", "dark-eyed junco", "--graph", str(folder), "--predictions", str(runs["dgp"] / "predictions.safetensors"),
                 "--plot", str(png), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["id"] == DARK_EYED_JUNCO and report["plot"] == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] > 800 and image.size[1] > 400


def test_unknown_class_suggests_close_names(setting, tmp_path, capsys, runs):
    graph, _ = setting
    with pytest.raises(KgzslError, match=r"no class 'girafe'.*giraffe \(n02439033\)"):
        resolve(graph, "girafe")
    folder = graph.save(tmp_path / "g")
    code = main(["inspect", "n99999999", "--graph", str(folder), "--predictions", str(runs["dgp"] / "predictions.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "no class 'n99999999'" in err and len(err.strip().splitlines()) == 1


def test_last_layer_inputs_reproduce_the_output(setting, runs):
    graph, _ = setting
    model, _ = load_checkpoint(runs["dgp"], graph)
    z = last_layer_inputs(model, graph)
    w = torch.cat([model.lin_anc.weight, model.lin_anc.bias.view(-1, 1)], dim=1)
    from kgzsl.propagation.training import predict

    torch.testing.assert_close(torch.nn.functional.normalize(z @ w.T, dim=1), predict(model, graph), atol=1e-5, rtol=1e-4)


def test_the_explain_module_does_not_shadow_inspect():
    """``kgzsl/inspect.py`` became ``kgzsl/explain.py`` (the CLI command stays ``kgzsl inspect``)."""
    import importlib.util

    assert importlib.util.find_spec("kgzsl.inspect") is None
    assert importlib.util.find_spec("kgzsl.inspection.explain") is not None
