"""Hierarchical Hit@k, median rank and their place in evaluate_split, on hand-made trees and scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph, ancestor_pairs
from kgzsl.recognition.evaluate import (
    correct_columns,
    evaluate_split,
    format_table,
    hierarchical_ranks,
    rank_metrics,
)
from kgzsl.recognition.scoring import ranks_of_true


def _tree() -> ClassGraph:
    """A hand-made tree: r -> {a, b}; a -> {a1, a2}; b -> {b1} (no word vectors needed)."""
    ids = ["r", "a", "b", "a1", "a2", "b1"]
    parents = [[], [0], [0], [1], [1], [2]]
    dense_index, dense_distance = ancestor_pairs(parents)
    edges = np.array([(c, p) for c, ps in enumerate(parents) for p in ps], dtype=np.int64).T
    n = len(ids)
    return ClassGraph(ids, list(ids), [[i] for i in ids], [""] * n, ["internal", "internal", "unseen", "unseen", "unseen", "unseen"],
                      np.zeros((n, 2), np.float32), np.zeros(n, bool), edges, dense_index, dense_distance)


def _as_sets(cols: list[torch.Tensor]) -> list[set[int]]:
    return [set(c.tolist()) for c in cols]


def test_correct_columns_is_the_subtree_among_candidates():
    graph = _tree()
    columns = ["a", "a1", "b1", "a2", "r", "not-in-graph"]
    got = correct_columns(graph, ["a", "r", "a1", "b", "a"], columns)
    assert _as_sets(got) == [{0, 1, 3}, {0, 1, 2, 3, 4}, {1}, {2}, {0, 1, 3}]
    assert all(c.dtype == torch.long for c in got)
    assert sorted(got[1].tolist()) == got[1].tolist()


def test_correct_columns_unknown_true_id_raises():
    with pytest.raises(KgzslError, match="n0nsense"):
        correct_columns(_tree(), ["a", "n0nsense"], ["a"])


def test_hyponym_ranked_first_is_hierarchical_hit():
    graph = _tree()
    columns = ["a", "a1", "b1"]
    scores = torch.tensor([[0.1, 0.9, 0.5]])  # true class a; its hyponym a1 scores highest
    correct = correct_columns(graph, ["a"], columns)
    assert int(ranks_of_true(scores, torch.tensor([0]))[0]) == 3
    assert hierarchical_ranks(scores, correct).tolist() == [1]


def test_hierarchical_ties_count_against():
    graph = _tree()
    columns = ["a", "a1", "b", "b1"]
    scores = torch.tensor([[0.2, 0.7, 0.7, 0.1]])  # best correct (a1) ties with the wrong b
    assert hierarchical_ranks(scores, correct_columns(graph, ["a"], columns)).tolist() == [2]
    assert ranks_of_true(scores, torch.tensor([0])).tolist() == [3]


def test_hierarchical_equals_flat_without_descendants():
    graph = _tree()
    columns = ["a1", "a2", "b1"]  # leaves: no candidate descends from another true class
    truth = torch.tensor([0, 1, 2, 0, 2, 1, 1])
    scores = torch.randn(len(truth), len(columns), generator=torch.Generator().manual_seed(0))
    scores[3] = scores[3, 0]  # a full tie row
    correct = correct_columns(graph, [columns[t] for t in truth.tolist()], columns)
    assert torch.equal(hierarchical_ranks(scores, correct), ranks_of_true(scores, truth))
    # and with explicit single-column correct sets
    assert torch.equal(hierarchical_ranks(scores, [t.view(1) for t in truth]), ranks_of_true(scores, truth))


def test_hierarchical_ranks_rejects_empty_and_mismatched():
    scores = torch.zeros(2, 3)
    with pytest.raises(KgzslError, match=r"correct\[1\] is empty"):
        hierarchical_ranks(scores, [torch.tensor([0]), torch.zeros(0, dtype=torch.long)])
    with pytest.raises(KgzslError, match="2 rows"):
        hierarchical_ranks(scores, [torch.tensor([0])])
    with pytest.raises(KgzslError, match="outside"):
        hierarchical_ranks(scores, [torch.tensor([0]), torch.tensor([3])])


def test_rank_metrics_known_values():
    m = rank_metrics(torch.tensor([1, 3, 2, 10, 1]), ks=(1, 2, 5, 10))
    assert m["hit"] == pytest.approx({1: 0.4, 2: 0.6, 5: 0.8, 10: 1.0})
    assert m["median_rank"] == 2.0
    assert rank_metrics(torch.tensor([4, 1, 3, 2]), ks=(1,))["median_rank"] == 2.0  # lower median, not 2.5
    empty = rank_metrics(torch.zeros(0, dtype=torch.long), ks=(1,))
    assert empty["hit"] == {1: 0.0} and np.isnan(empty["median_rank"])


def _hand_case():
    """Hand-made: candidates a, a1, b, b1 with one-hot classifiers (bias 0); four images whose flat
    ranks are [2, 1, 3, 1] and hierarchical ranks [1, 1, 3, 1]."""
    class_ids = ["a", "a1", "b", "b1", "r"]
    weights = torch.cat([torch.eye(5)[:, :4], torch.zeros(5, 1)], dim=1)
    features = torch.tensor([
        [0.2, 1.0, 0.0, 0.0],  # a: a1 scores highest -> flat 2, hier 1
        [0.0, 1.0, 0.0, 0.5],  # a1: right -> 1, 1
        [0.3, 1.0, 0.1, 0.0],  # b: a1 > a > b > b1 -> flat 3, hier 3 (best of b, b1 is b)
        [0.0, 0.0, 0.5, 1.0],  # b1: right -> 1, 1
    ])
    labels = ["a", "a1", "b", "b1"]
    return features, labels, class_ids, weights, ["a", "a1", "b", "b1"]


def test_evaluate_split_with_graph_known_values():
    features, labels, class_ids, weights, split = _hand_case()
    ks = (1, 2, 5)
    result = evaluate_split(features, labels, class_ids, weights, split, ks=ks, graph=_tree())
    assert result.hit == pytest.approx({1: 0.5, 2: 0.75, 5: 1.0})
    assert result.hier_hit == pytest.approx({1: 0.75, 2: 0.75, 5: 1.0})
    assert all(result.hier_hit[k] >= result.hit[k] for k in ks)
    assert result.median_rank == 1.0 and result.hier_median_rank == 1.0  # lower medians of [1,1,2,3] and [1,1,1,3]
    d = result.as_dict()
    assert d["hit@1"] == 0.5 and d["hier_hit@1"] == 0.75 and d["median_rank"] == 1.0 and d["hier_median_rank"] == 1.0
    head = format_table([result]).splitlines()[0].split()
    assert head[-4:] == ["med", "h@1", "h@5", "hmed"]
    assert format_table([result]).splitlines()[2].split()[-4:] == ["1", "75.0", "100.0", "1"]


def test_evaluate_split_without_graph_keeps_old_output():
    features, labels, class_ids, weights, split = _hand_case()
    result = evaluate_split(features, labels, class_ids, weights, split, ks=(1, 2))
    assert result.hier_hit is None and result.hier_median_rank is None and result.median_rank == 1.0
    d = result.as_dict()
    assert not any(k.startswith("hier") for k in d)
    assert list(d)[:8] == ["split", "with_seen", "images", "classes_with_images", "candidates", "hit@1", "hit@2", "missing_classes"]
    table = format_table([result])
    assert "med" in table.splitlines()[0] and "h@1" not in table and "hmed" not in table


def test_evaluate_split_with_seen_and_graph():
    """Seen candidates (here the root r) join the ranking; r is an ancestor, never a correct answer."""
    features, labels, class_ids, weights, split = _hand_case()
    weights = weights.clone()
    weights[4, -1] = 10.0  # r outscores everything
    result = evaluate_split(features, labels, class_ids, weights, split, seen_ids=["r"], with_seen=True, ks=(1, 2), graph=_tree())
    assert result.candidates == 5
    assert result.hit[1] == 0.0 and result.hier_hit[1] == 0.0
    assert result.hier_hit[2] == 0.75 and result.hit[2] == 0.5


def test_evaluate_split_label_missing_from_graph():
    features, labels, class_ids, weights, split = _hand_case()
    class_ids = ["a", "a1", "b", "zz9", "r"]
    labels = ["a", "a1", "b", "zz9"]
    with pytest.raises(KgzslError, match="zz9"):
        evaluate_split(features, labels, class_ids, weights, ["a", "a1", "b", "zz9"], graph=_tree())


def test_correct_columns_scales_to_many_candidates():
    """A hand-made wide tree: 50 internal nodes under one root, 400 leaves under each (20k leaves)."""
    n_mid, n_leaf = 50, 400
    ids = ["root"] + [f"m{i}" for i in range(n_mid)] + [f"l{i}_{j}" for i in range(n_mid) for j in range(n_leaf)]
    parents = [[]] + [[0]] * n_mid + [[1 + i] for i in range(n_mid) for _ in range(n_leaf)]
    dense_index, dense_distance = ancestor_pairs(parents)
    n = len(ids)
    graph = ClassGraph(ids, list(ids), [[i] for i in ids], [""] * n, ["unseen"] * n, np.zeros((n, 1), np.float32),
                       np.zeros(n, bool), np.zeros((2, 0), np.int64), dense_index, dense_distance)
    columns = ids[1 + n_mid:]
    got = correct_columns(graph, ["m3", "root", "l7_5"], columns)
    assert got[0].tolist() == list(range(3 * n_leaf, 4 * n_leaf))
    assert got[1].tolist() == list(range(len(columns)))
    assert got[2].tolist() == [7 * n_leaf + 5]
