"""Hop-based unseen splits."""

from __future__ import annotations

import json

import numpy as np

from kgzsl.cli import main
from kgzsl.graph.splits import compare_split, hop_split, hops_from_seen


def test_hops_on_small_graph(small_graph):
    g = small_graph
    index = g.index()
    distance = hops_from_seen(g)
    assert all(distance[index[w]] == 0 for w in g.ids if g.roles[index[w]] == "seen")
    # Labrador retriever -> retriever <- golden retriever: 2 hops; pug -> dog: dog is 1 hop from pug
    assert distance[index["n02099712"]] == 2
    assert distance[index["n02084071"]] == 1
    one, two = hop_split(g, 1), hop_split(g, 2)
    assert "n02084071" in one and "n02099712" not in one and "n02099712" in two
    assert set(one) <= set(two) and all(g.roles[index[w]] == "unseen" for w in two)


def test_compare_counts(small_graph):
    c = compare_split(["a", "b", "c"], ["b", "c", "d", "e"], small_graph)
    assert (c["common"], c["precision"], c["recall"], c["jaccard"]) == (2, round(2 / 3, 4), 0.5, 0.4)


def test_splits_cli_writes_and_compares(small_graph, tmp_path, capsys):
    folder = small_graph.save(tmp_path / "g")
    standard = tmp_path / "standard.txt"
    standard.write_text("n02084071\nn02099712\n")
    code = main(["splits", "--graph", str(folder), "--hops", "1", "2", "--compare", str(standard),
                 "--out", str(tmp_path / "splits"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    written = (tmp_path / "splits" / "split-2-hops.txt").read_text().split()
    assert summary["splits"]["2-hops"]["classes"] == len(written)
    assert summary["splits"]["2-hops"]["compare"][str(standard)]["recall"] == 1.0
    assert np.isclose(summary["splits"]["1-hops"]["compare"][str(standard)]["recall"], 0.5)
