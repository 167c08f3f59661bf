"""Hop-based unseen splits: the unseen classes within k hops of a seen class in the graph.

The ImageNet-21k protocol of Frome et al. (DeViSE) and Norouzi et al. (ConSE), used by GCNZ and DGP,
names "2-hops" and "3-hops" splits: unseen classes whose tree distance to some ImageNet-1k class is at
most 2 (3). Distances here are shortest undirected paths along the graph's hypernym edges.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from kgzsl.graph import ClassGraph


def hops_from_seen(graph: ClassGraph) -> np.ndarray:
    """Undirected hop distance of every node to its nearest seen node (-1 where unreachable)."""
    neighbours: list[list[int]] = [[] for _ in range(graph.num_nodes)]
    for child, parent in graph.edge_index.T.tolist():
        neighbours[child].append(parent)
        neighbours[parent].append(child)
    distance = np.full(graph.num_nodes, -1, dtype=np.int64)
    queue = deque(np.flatnonzero(graph.mask("seen")).tolist())
    distance[list(queue)] = 0
    while queue:
        node = queue.popleft()
        for other in neighbours[node]:
            if distance[other] < 0:
                distance[other] = distance[node] + 1
                queue.append(other)
    return distance


def hop_split(graph: ClassGraph, hops: int) -> list[str]:
    """Ids of the unseen classes within ``hops`` hops of a seen class, in graph order."""
    distance = hops_from_seen(graph)
    unseen = graph.mask("unseen")
    keep = unseen & (distance >= 0) & (distance <= hops)
    return [graph.ids[i] for i in np.flatnonzero(keep)]


def compare_split(derived: list[str], standard: list[str], graph: ClassGraph) -> dict[str, Any]:
    """Overlap of a derived split with a standard split file: sizes, intersection, precision, recall, Jaccard."""
    derived_set, standard_set = set(derived), set(standard)
    both = derived_set & standard_set
    union = derived_set | standard_set
    in_graph = set(graph.ids)
    return {
        "derived": len(derived_set),
        "standard": len(standard_set),
        "standard_in_graph": len(standard_set & in_graph),
        "common": len(both),
        "precision": round(len(both) / len(derived_set), 4) if derived_set else 0.0,
        "recall": round(len(both) / len(standard_set), 4) if standard_set else 0.0,
        "jaccard": round(len(both) / len(union), 4) if union else 0.0,
    }
