"""Non-graph-network baselines that predict a classifier for every node from the seen targets.

Each returns predictions ``[N, D]`` for all nodes, rows L2-normalised, from node word vectors
``features [N, F]``, the indices of the training (seen) nodes and their targets ``[n, D]``
(normalised here, as in training the graph networks):

* :func:`ridge_predict`: ridge regression from word vectors to classifier weights (closed form);
* :func:`knn_predict`: the mean of the k seen classes most similar by word vector (cosine);
* :func:`wordnet_neighbour_predict`: the mean of the nearest seen classes in the graph (BFS over
  the undirected hypernym edges: all seen classes at the smallest hop distance that has any).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


def ridge_predict(features: np.ndarray, train_index: np.ndarray, targets: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Ridge regression ``B = (X^T X + alpha I)^-1 X^T T`` on the training nodes (with an intercept column)."""
    x = torch.as_tensor(features, dtype=torch.float64)
    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    xs = x[torch.as_tensor(train_index)]
    t = _unit(targets).double()
    gram = xs.T @ xs + alpha * torch.eye(xs.shape[1], dtype=x.dtype)
    coef = torch.linalg.solve(gram, xs.T @ t)
    return _unit((x @ coef).float())


def knn_predict(features: np.ndarray, train_index: np.ndarray, targets: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Mean of the normalised targets of the ``k`` training classes nearest by word-vector cosine.

    A training node's own target is excluded from its neighbours (so validation on training nodes is
    leave-one-out).
    """
    x = _unit(features)
    train_index = torch.as_tensor(train_index)
    sim = x @ x[train_index].T  # [N, n]
    sim[train_index, torch.arange(len(train_index))] = -float("inf")
    k = min(k, len(train_index) - 1) if len(train_index) > 1 else 1
    nearest = sim.topk(k, dim=1).indices
    return _unit(_unit(targets)[nearest].mean(dim=1))


def wordnet_neighbour_predict(
    edge_index: np.ndarray, num_nodes: int, train_index: np.ndarray, targets: torch.Tensor, query: np.ndarray | None = None
) -> torch.Tensor:
    """Mean normalised target of the nearest training classes in the graph (smallest undirected hop distance >= 1).

    Only the ``query`` nodes (default: all) are computed; other rows stay zero.
    """
    neighbours: list[list[int]] = [[] for _ in range(num_nodes)]
    for child, parent in np.asarray(edge_index).T.tolist():
        neighbours[child].append(parent)
        neighbours[parent].append(child)
    row_of = {int(node): row for row, node in enumerate(np.asarray(train_index).tolist())}
    t = _unit(targets)
    out = torch.zeros(num_nodes, t.shape[1])
    for start in (range(num_nodes) if query is None else np.asarray(query).tolist()):
        found: list[int] = []
        dist = {start: 0}
        queue = deque([start])
        limit = None
        while queue:
            node = queue.popleft()
            if limit is not None and dist[node] >= limit:
                break
            for other in neighbours[node]:
                if other not in dist:
                    dist[other] = dist[node] + 1
                    if other in row_of:
                        found.append(row_of[other])
                        limit = dist[other]
                    queue.append(other)
        if found:
            out[start] = t[found].mean(dim=0)
    return _unit(out)
