"""Non-graph-network baselines that predict a classifier for every node from the seen targets.

Each returns predictions ``[N, D]`` for all nodes, rows L2-normalised, from node word vectors
``features [N, F]``, the indices of the training (seen) nodes and their targets ``[n, D]``
(normalised here, as in training the graph networks):

* :func:`ridge_predict`: ridge regression from word vectors to classifier weights (closed form);
* :func:`knn_predict`: the mean of the k seen classes most similar by word vector (cosine);
* :func:`wordnet_neighbour_predict`: the mean of the nearest seen classes in the graph (BFS over
  the undirected hypernym edges: all seen classes at the smallest hop distance that has any).

:func:`conse_scores` is a different kind of baseline: it predicts no classifiers but scores images
against candidate classes directly, from the seen-class CNN outputs and the class word vectors (ConSE).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import undirected_neighbours
from kgzsl.recognition.scoring import class_scores


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
    neighbours = undirected_neighbours(edge_index, num_nodes)
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


# ------------------------------------------------------------------------------------------- ConSE
CONSE_MISSING_SCORE = -1.0 - 1e-3
"""The score ConSE gives a candidate without a word vector: below every cosine, so it ranks last."""


def _check_conse_inputs(features: torch.Tensor, seen_weights: torch.Tensor, seen_vectors: torch.Tensor, top: int) -> None:
    if features.ndim != 2:
        raise KgzslError(f"features must be [images, dim], got shape {tuple(features.shape)}")
    if seen_weights.ndim != 2 or seen_weights.shape[1] != features.shape[1] + 1:
        raise KgzslError(
            f"seen_weights must be [seen classes, {features.shape[1] + 1}] (feature dim + bias), got shape {tuple(seen_weights.shape)}"
        )
    if seen_vectors.ndim != 2 or seen_vectors.shape[0] != seen_weights.shape[0]:
        raise KgzslError(
            f"seen_vectors must be [{seen_weights.shape[0]} seen classes, vector dim] like seen_weights, got shape {tuple(seen_vectors.shape)}"
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise KgzslError(f"top must be an integer >= 1, got {top!r}")


def conse_embedding(
    features: torch.Tensor, seen_weights: torch.Tensor, seen_vectors: torch.Tensor, top: int = 10
) -> torch.Tensor:
    """ConSE's semantic embedding ``f(x)`` ``[B, F]`` of each image (see :func:`conse_scores`).

    Seen classes whose vector is all zeros (no word vector) are never among the ``top``; ``top`` is
    clipped to the number of seen classes that have one.
    """
    features = torch.as_tensor(features, dtype=torch.float32)
    seen_weights = torch.as_tensor(seen_weights, dtype=torch.float32)
    seen_vectors = torch.as_tensor(seen_vectors, dtype=torch.float32)
    _check_conse_inputs(features, seen_weights, seen_vectors, top)
    has_vector = seen_vectors.abs().sum(dim=1) > 0
    if not has_vector.any():
        raise KgzslError("seen_vectors are all zero: ConSE needs word vectors for the seen classes")
    top = min(int(top), int(has_vector.sum()))
    probs = torch.softmax(class_scores(features, seen_weights), dim=1)  # p(y | x) over the seen classes
    probs = probs.masked_fill(~has_vector.view(1, -1), -1.0)  # never chosen (real probabilities are >= 0)
    p, which = probs.topk(top, dim=1)
    units = _unit(seen_vectors)
    return (p.unsqueeze(2) * units[which]).sum(dim=1) / p.sum(dim=1, keepdim=True).clamp_min(1e-30)


def conse_scores(
    features: torch.Tensor,
    seen_weights: torch.Tensor,
    seen_vectors: torch.Tensor,
    candidate_vectors: torch.Tensor,
    top: int = 10,
    batch_size: int = 1024,
) -> torch.Tensor:
    """ConSE (Norouzi et al., "Zero-shot learning by convex combination of semantic embeddings", ICLR 2014):
    scores ``[B, C]`` of images against candidate classes, using only the seen-class classifier.

    With ``p(y|x) = softmax_y([x, 1] . w_y)`` over the S seen classes (``seen_weights [S, D+1]``, bias in
    the last column), ``y_1..y_T`` the ``top`` most probable ones and ``s(y)`` the L2-normalised class
    vectors::

        f(x) = sum_t p(y_t|x) s(y_t) / sum_t p(y_t|x)
        score(x, c) = cos(f(x), s(c))

    ``top`` must be >= 1 and is clipped to S. Candidates whose vector is all zeros (no word vector)
    score :data:`CONSE_MISSING_SCORE` (-1.001), below any cosine. Images are scored ``batch_size`` at a
    time so memory stays bounded with ~20k candidates.
    """
    features = torch.as_tensor(features, dtype=torch.float32)
    seen_weights = torch.as_tensor(seen_weights, dtype=torch.float32)
    seen_vectors = torch.as_tensor(seen_vectors, dtype=torch.float32)
    candidate_vectors = torch.as_tensor(candidate_vectors, dtype=torch.float32)
    _check_conse_inputs(features, seen_weights, seen_vectors, top)
    if candidate_vectors.ndim != 2 or candidate_vectors.shape[1] != seen_vectors.shape[1]:
        raise KgzslError(
            f"candidate_vectors must be [candidates, {seen_vectors.shape[1]}] like seen_vectors, got shape {tuple(candidate_vectors.shape)}"
        )
    if batch_size < 1:
        raise KgzslError(f"batch_size must be >= 1, got {batch_size}")
    candidates = _unit(candidate_vectors)
    missing = candidate_vectors.abs().sum(dim=1) == 0
    out = torch.empty(features.shape[0], candidates.shape[0])
    for start in range(0, features.shape[0], batch_size):
        f = _unit(conse_embedding(features[start:start + batch_size], seen_weights, seen_vectors, top))
        out[start:start + batch_size] = (f @ candidates.T).masked_fill(missing.view(1, -1), CONSE_MISSING_SCORE)
    return out
