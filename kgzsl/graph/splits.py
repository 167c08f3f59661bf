"""Hop-based unseen splits: the unseen classes within k hops of a seen class in the graph.

The ImageNet-21k protocol of Frome et al. (DeViSE) and Norouzi et al. (ConSE), used by GCNZ and DGP,
names "2-hops" and "3-hops" splits: unseen classes whose tree distance to some ImageNet-1k class is at
most 2 (3). Distances here are shortest undirected paths along the graph's hypernym edges.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from kgzsl.core.atomic import atomic_file
from kgzsl.graph.class_graph import ClassGraph, hop_distances

#: the file a hop split is written to (in the folder of ``kgzsl splits --out``)
SPLIT_FILE = "split-{hops}-hops.txt"


def hops_from_seen(graph: ClassGraph) -> np.ndarray:
    """Undirected hop distance of every node to its nearest seen node (-1 where unreachable)."""
    return hop_distances(graph.neighbours(), np.flatnonzero(graph.mask("seen")).tolist())


def hop_splits(graph: ClassGraph, hops: Iterable[int]) -> dict[int, list[str]]:
    """For each ``k`` of ``hops``, the ids of the unseen classes within ``k`` hops of a seen class, in
    graph order; the distances are found once for all of them."""
    distance = hops_from_seen(graph)
    unseen = graph.mask("unseen") & (distance >= 0)
    return {k: [graph.ids[i] for i in np.flatnonzero(unseen & (distance <= k))] for k in hops}


def hop_split(graph: ClassGraph, hops: int) -> list[str]:
    """Ids of the unseen classes within ``hops`` hops of a seen class, in graph order."""
    return hop_splits(graph, [hops])[hops]


def write_split(ids: list[str], folder: str | os.PathLike, hops: int) -> Path:
    """Write a hop split as ``folder/split-{hops}-hops.txt`` (one id a line, atomically); returns the file."""
    path = Path(folder) / SPLIT_FILE.format(hops=hops)
    with atomic_file(path) as handle:
        handle.write("".join(f"{i}\n" for i in ids))
    return path


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
