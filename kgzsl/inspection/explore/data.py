"""What the explorer shows about every node, computed once for the whole run.

The per-class numbers are those of ``kgzsl inspect --json`` (:func:`kgzsl.inspection.explain.inspect_node`):
the nearest classes by classifier come from :func:`~kgzsl.inspection.explain.nearest_by_weight` itself, run on
each node's few best candidates (a batched cosine only picks them); the attribution solves the same ridge
system as :func:`~kgzsl.inspection.explain.attribution` once for all nodes (its matrix is shared), in float64.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kgzsl.graph.class_graph import ClassGraph, node_features
from kgzsl.inspection.explain import GROUP_WEIGHTS, last_layer_inputs, nearest_by_weight, seen_target_rows
from kgzsl.propagation.models import PropagationModel
from kgzsl.propagation.predictions import Predictions
from kgzsl.propagation.targets import Targets, align_targets
from kgzsl.vision.speed import one_torch_thread

#: role codes of the site's node table (index into this tuple)
ROLES = ("seen", "unseen", "internal")
#: extra candidates the batched cosine keeps per node before nearest_by_weight ranks them exactly
_SPARE = 8
_CHUNK = 512


def _chunks(n: int, desc: str, progress: bool) -> Iterator[slice]:
    bar = tqdm(total=n, desc=desc, unit="node", file=sys.stderr, disable=not progress, mininterval=0.5)
    with bar:
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            yield slice(start, stop)
            bar.update(stop - start)


def class_candidates(graph: ClassGraph) -> np.ndarray:
    """The nodes ``kgzsl inspect`` ranks as neighbours: every class (not a structure-only node)."""
    return np.flatnonzero(np.array([r != "internal" for r in graph.roles]))


def node_table(graph: ClassGraph, predictions: Predictions) -> dict[str, Any]:
    """The site's table of every node: ids, names, gloss, role code, trained flag and hypernym parents."""
    parents: list[list[int]] = [[] for _ in range(graph.num_nodes)]
    for child, parent in np.asarray(graph.edge_index).T.tolist():
        parents[child].append(parent)
    return {
        "ids": list(graph.ids),
        "names": [list(names) or [node_id] for names, node_id in zip(graph.names, graph.ids)],
        "gloss": list(graph.glosses),
        "role": [ROLES.index(r) for r in graph.roles],
        "trained": [int(t) for t in predictions.seen.tolist()],
        "parents": [sorted(p) for p in parents],
    }


def _top_cosines(unit: torch.Tensor, rows: slice, candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best cosine candidates of each node in ``rows`` (itself excluded): values and candidate positions."""
    sims = unit[rows] @ unit[candidates].T
    own = (candidates[None, :] == torch.arange(rows.start, rows.stop)[:, None])
    sims[own] = -float("inf")
    top = sims.topk(min(k, len(candidates)), dim=1)
    return top.values, top.indices


def nearest_by_classifier(pred: torch.Tensor, candidates: np.ndarray, k: int = 10,
                          progress: bool = True) -> list[list[tuple[int, float]]]:
    """Each node's ``k`` nearest candidates by classifier cosine, as ``kgzsl inspect`` lists them: a batched
    cosine keeps a few more than ``k``, then :func:`nearest_by_weight` ranks those rows exactly as it ranks all."""
    pred = torch.as_tensor(pred, dtype=torch.float32)
    unit = F.normalize(pred, dim=1)
    cands = torch.as_tensor(candidates, dtype=torch.long)
    out: list[list[tuple[int, float]]] = []
    for rows in _chunks(len(pred), "nearest by classifier", progress):
        _, picks = _top_cosines(unit, rows, cands, k + _SPARE)
        with one_torch_thread():  # tiny tensors: a second thread only adds its wake-up cost to every call
            for offset, pick in enumerate(picks.tolist()):
                node = rows.start + offset
                local = [node] + [c for c in (int(cands[j]) for j in pick) if c != node]
                ranked = nearest_by_weight(pred[local], 0, np.arange(1, len(local)), k)
                out.append([(local[i], round(c, 4)) for i, c in ranked])
    return out




def nearest_by_feature(graph: ClassGraph, candidates: np.ndarray, k: int = 10,
                       progress: bool = True) -> list[list[tuple[int, float]]]:
    """Each node's ``k`` nearest candidates by node feature (the word/text vector the graph was built with)."""
    unit = node_features(graph)
    cands = torch.as_tensor(candidates, dtype=torch.long)
    out: list[list[tuple[int, float]]] = []
    for rows in _chunks(graph.num_nodes, "nearest by feature", progress):
        values, picks = _top_cosines(unit, rows, cands, k)
        for node, vals, pick in zip(range(rows.start, rows.stop), values.tolist(), picks.tolist()):
            out.append([(int(cands[j]), round(v, 4)) for v, j in zip(vals, pick) if int(cands[j]) != node][:k])
    return out


def attributions(model: PropagationModel, graph: ClassGraph, predictions: Predictions, targets: Targets | None,
                 k: int = 10, ridge: float = 1e-2, progress: bool = True) -> tuple[list[list[tuple[int, float]]], list[float | None]]:
    """Each node's ``k`` largest representer weights over the seen classes and the faithfulness of the expansion
    (None without targets), as :func:`~kgzsl.inspection.explain.attribution` and ``kgzsl inspect`` give them."""
    with torch.no_grad():
        z = last_layer_inputs(model, graph)
    seen_nodes = np.flatnonzero(predictions.seen.numpy()).tolist()
    zs = z[torch.as_tensor(seen_nodes)].double()
    kernel = zs @ zs.T
    lam = ridge * float(kernel.diagonal().mean())
    factor = torch.linalg.cholesky(kernel + lam * torch.eye(len(seen_nodes), dtype=kernel.dtype))
    unit, known = None, None
    if targets is not None:
        found, unit = seen_target_rows(*align_targets(graph, targets), seen_nodes)
        known = torch.tensor(found, dtype=torch.long)
    tops: list[list[tuple[int, float]]] = []
    faith: list[float | None] = []
    for rows in _chunks(graph.num_nodes, "attribution", progress):
        beta = torch.cholesky_solve(zs @ z[rows].double().T, factor).T.float()  # [rows, seen]
        order = beta.abs().argsort(dim=1, descending=True)[:, :k]
        for b, o in zip(beta, order.tolist()):
            tops.append([(seen_nodes[i], round(float(b[i]), 4)) for i in o])
        if unit is not None:
            expansion = beta[:, known] @ unit
            faith.extend(float(c) for c in F.cosine_similarity(expansion, predictions.pred[rows], dim=1))
        else:
            faith.extend([None] * (rows.stop - rows.start))
    return tops, faith


def true_cosines(graph: ClassGraph, predictions: Predictions, targets: Targets | None) -> list[float | None]:
    """Each node's cosine between its predicted and its true classifier, where the targets have one."""
    out: list[float | None] = [None] * graph.num_nodes
    if targets is None:
        return out
    t_nodes, t_rows = align_targets(graph, targets, report_missing=False)  # attributions() reported them
    cos = F.cosine_similarity(predictions.pred[t_nodes], t_rows, dim=1)
    for node, c in zip(t_nodes.tolist(), cos.tolist()):
        if out[node] is None:  # inspect takes a node's first target row
            out[node] = round(float(c), 4)
    return out


def group_weights(model: PropagationModel | None) -> dict[str, Any] | None:
    """The model's learned hop-distance group weights as ``kgzsl inspect --json`` reports them (DGP), or None."""
    weights = model.distance_weights() if model is not None else None
    if weights is None:
        return None
    return {"key": f"{model.name}{GROUP_WEIGHTS}", "distances": weights.labels(),
            **{f"{phase}_phase": [round(float(v), 4) for v in w] for phase, w in weights.phases.items()}}


def class_details(graph: ClassGraph, predictions: Predictions, model: PropagationModel | None, targets: Targets | None,
                  k: int = 10, progress: bool = True) -> list[dict[str, Any]]:
    """One compact record a node for the class pages: ``w`` nearest by classifier, ``f`` by node feature,
    ``a`` attribution and ``af`` its faithfulness, ``n`` weight norm, ``t`` cosine to the true classifier."""
    candidates = class_candidates(graph)
    by_weight = nearest_by_classifier(predictions.pred, candidates, k, progress)
    by_feature = nearest_by_feature(graph, candidates, k, progress)
    attr, faith = attributions(model, graph, predictions, targets, k, progress=progress) if model is not None else (None, None)
    norms = predictions.pred.norm(dim=1).tolist()
    true = true_cosines(graph, predictions, targets)
    records = []
    for i in range(graph.num_nodes):
        record: dict[str, Any] = {"w": by_weight[i], "f": by_feature[i], "n": round(norms[i], 4)}
        if true[i] is not None:
            record["t"] = true[i]
        if attr is not None:
            record["a"] = attr[i]
            record["af"] = None if faith[i] is None else round(faith[i], 4)
        records.append(record)
    return records
