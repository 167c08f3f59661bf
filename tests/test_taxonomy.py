"""User taxonomies for new domains: the shipped bird example, the nested forms, and bad files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import load_graph
from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

DATA = Path(__file__).resolve().parent.parent / "data" / "taxonomies"


def test_shipped_bird_taxonomy_builds(tmp_path, capsys):
    out = tmp_path / "birds"
    code = main(["build-graph", "--taxonomy", str(DATA / "birds.csv"), "--seen", str(DATA / "birds-seen.txt"),
                 "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["nodes"] == 21 and summary["edges"] == 20 and summary["roots"] == 1
    assert summary["seen"] == 6 and summary["unseen"] == 6  # unseen = the other leaves
    graph = load_graph(out)
    index = graph.index()
    assert graph.wnids[index["owl"]] == "n01621127"  # pinned by synset name owl.n.01
    assert graph.wnids[index["wood duck"]] is None  # left free
    assert "raptor" in graph.names[index["raptor"]] and "bird of prey" in graph.names[index["raptor"]]
    edges = {(graph.ids[a], graph.ids[b]) for a, b in graph.edge_index.T.tolist()}
    assert ("barn owl", "owl") in edges and ("owl", "raptor") in edges
    # every seen bird has a real ImageNet-1k classifier to regress (the default targets)
    from kgzsl.core.imagenet import imagenet1k_wnids

    seen = [i for i, r in enumerate(graph.roles) if r == "seen"]
    assert all(graph.wnids[i] in set(imagenet1k_wnids()) for i in seen), [graph.ids[i] for i in seen]
    # the shipped graphs/birds is this build (README: the command that rebuilds it)
    shipped = DATA.parent.parent / "graphs" / "birds"
    assert (shipped / "nodes.json").read_bytes() == (out / "nodes.json").read_bytes()
    assert np.array_equal(load_graph(shipped).edge_index, graph.edge_index)


def _lite0_like(wnids: list[str]):
    import torch

    from kgzsl.propagation.targets import Targets

    return Targets(wnids, torch.randn(len(wnids), 9, generator=torch.Generator().manual_seed(0)), "hand-made rows")


def test_seen_classes_without_a_target_are_named(tmp_path, glove, caplog):
    """A free (unpinned) seen class, or one pinned to a synset no target row names, is reported by name."""
    import logging

    from kgzsl.propagation.training import train

    path = tmp_path / "t.csv"
    path.write_text("kitchenware,\npot,kitchenware,pot.n.01\nwhisk,kitchenware\nwok,kitchenware,wok.n.01\nteapot,kitchenware\n")
    graph = build_taxonomy_graph(load_taxonomy(path), seen=["pot", "whisk", "wok"], vectors=glove)
    targets = _lite0_like(["n04596742", "n03991062"])  # wok and the ImageNet-1k "pot" (a flowerpot), not pot.n.01
    with caplog.at_level(logging.WARNING, logger="kgzsl"):
        result = train(graph, targets, epochs=1, progress=False, hidden_channels=8)
    warning = [r.getMessage() for r in caplog.records if "no target row" in r.getMessage()]
    assert len(warning) == 1 and "2 of the 3 seen classes" in warning[0] and "pot, whisk" in warning[0]
    assert "not in" not in caplog.text  # not the count of target classes outside the graph
    assert result.config["seen_without_target"] == ["pot", "whisk"] and result.config["counts"]["seen_without_target"] == 2
    graph = build_taxonomy_graph(load_taxonomy(path), seen=["pot", "whisk"], vectors=glove)
    with pytest.raises(KgzslError, match="none of the 2 seen classes .* has a target row in hand-made rows: pot, whisk"):
        train(graph, targets, epochs=1, progress=False)


def test_classes_without_a_word_vector_are_named(tmp_path, glove, caplog):
    import logging

    path = tmp_path / "t.csv"
    path.write_text("animal,\nzxqvbird,animal\ndog,animal\nqqxfish,animal\n")
    with caplog.at_level(logging.WARNING, logger="kgzsl"):
        graph = build_taxonomy_graph(load_taxonomy(path), seen=["dog"], vectors=glove)
    assert graph.oov_ids == ["zxqvbird", "qqxfish"]
    assert "2 classes have no word vector" in caplog.text and "zxqvbird, qqxfish" in caplog.text


def test_nested_yaml_and_json_agree(tmp_path, glove):
    tree = {"animal": {"dog": {"husky": {}, "corgi": None}, "cat": ["lynx", "puma"]}}
    (tmp_path / "t.json").write_text(json.dumps({"tree": tree, "synsets": {"dog": "dog.n.01"}}))
    (tmp_path / "t.yaml").write_text(
        "tree:\n  animal:\n    dog:\n      husky: {}\n      corgi:\n    cat: [lynx, puma]\nsynsets:\n  dog: n02084071\n"
    )
    graphs = [build_taxonomy_graph(load_taxonomy(tmp_path / f), seen=["husky", "lynx"], vectors=glove)
              for f in ("t.json", "t.yaml")]
    a, b = graphs
    assert a.ids == b.ids and a.roles == b.roles and a.wnids == b.wnids
    assert np.array_equal(a.edge_index, b.edge_index) and np.allclose(a.features, b.features)
    assert a.roles[a.ids.index("corgi")] == "unseen" and a.roles[a.ids.index("cat")] == "internal"
    assert a.wnids[a.ids.index("dog")] == "n02084071"


def test_csv_allows_several_parents(tmp_path, glove):
    (tmp_path / "t.csv").write_text("thing,\npet,thing\nanimal,thing\ndog,pet\ndog,animal\n")
    g = build_taxonomy_graph(load_taxonomy(tmp_path / "t.csv"), seen=["pet"], unseen=["dog"], vectors=glove)
    edges = {(g.ids[a], g.ids[b]) for a, b in g.edge_index.T.tolist()}
    assert {("dog", "pet"), ("dog", "animal")} <= edges


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("cycle.csv", "a,\nb,a\nc,b\nb,c\n", "cycle: b -> c -> b"),
        ("unknown.csv", "a,\nb,aa\n", "parent 'aa' of 'b' is not declared"),
        ("dup.csv", "a,\nb,a\nb,a\n", "duplicate row"),
        ("pins.csv", "r,\na,r,dog.n.01\nb,r\na,b,cat.n.01\n", "pinned to both"),
        ("dup.json", '{"a": {"b": {}, "c": {"b": {}}}}', "duplicate class name 'b'"),
        ("bad.json", '{"a": [1, 2', "not valid JSON"),
        ("bad.txt", "a,b\n", "unknown format"),
        ("cols.csv", "a,b,c,d,e\n", "expected 'child,parent[,synset[,description]]'"),
    ],
)
def test_bad_taxonomies(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(KgzslError, match=re.escape(message)) as info:
        build_taxonomy_graph(load_taxonomy(path), seen=["a"])
    assert str(path) in str(info.value) or name.endswith(".csv") and "cycle" in message


def test_bad_pin_and_seen_names(tmp_path, glove):
    path = tmp_path / "t.csv"
    path.write_text("a,,notasynset.n.01\nb,a\n")
    with pytest.raises(KgzslError, match="synset of 'a'"):
        build_taxonomy_graph(load_taxonomy(path), seen=["b"], vectors=glove)
    path.write_text("a,\nb,a\n")
    with pytest.raises(KgzslError, match="not in taxonomy.*zebra"):
        build_taxonomy_graph(load_taxonomy(path), seen=["zebra"], vectors=glove)
    with pytest.raises(KgzslError, match="needs --seen"):
        build_taxonomy_graph(load_taxonomy(path), seen=None, vectors=glove)
