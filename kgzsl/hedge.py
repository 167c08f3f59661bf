"""Hedged, hierarchy-aware answers with calibrated confidence (Deng et al., CVPR 2012, "DARTS").

1. Calibration: ``p = softmax(scores / T)`` over the candidate classes, with the temperature ``T``
   minimising the negative log-likelihood of the true classes of labelled calibration images.
2. Hierarchical posteriors: ``P(v) = sum of p(c) over the candidates c in the subtree of v`` (v
   itself included), for every node v of a :class:`kgzsl.graph.ClassGraph` (``edge_index`` holds the
   ``child -> parent`` edges; a DAG is fine: a candidate counts once under each of its ancestors).
3. Hedging (DARTS): the reward of node v is its information gain
   ``r(v) = log2(#candidates) - log2(#candidates in the subtree of v)`` (0 at the root, the most at a
   leaf candidate). For a multiplier ``lambda >= 0`` the answer is ``argmax_v (r(v) + lambda) * P(v)``;
   ``lambda`` is the smallest one (binary search) whose hierarchical accuracy on calibration images
   reaches the target ``1 - eps``. An answer v is correct iff the true class is in its subtree.

Ties: nodes whose subtrees hold the same candidates are one answer (the deepest of them, then the
lowest node index, represents them); remaining ties in reward go to the deeper node, then the lower
node index. Depth = hops on the shortest path up to a root (a node without parents).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy import sparse

from kgzsl.errors import KgzslError, check_number
from kgzsl.graph import ClassGraph, ancestor_pairs

# ------------------------------------------------------------------------------------ calibration
def _scores(scores: Any, name: str = "scores") -> np.ndarray:
    array = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if array.ndim != 2 or array.shape[1] == 0:
        raise KgzslError(f"{name} must be [images, candidates], got shape {tuple(array.shape)}", parameter=name)
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise KgzslError(f"{name} holds NaN or infinite values", parameter=name)
    return array


def _truth(truth: Any, n: int, columns: int) -> np.ndarray:
    labels = np.asarray(truth.cpu() if isinstance(truth, torch.Tensor) else truth)
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise KgzslError(f"truth must be {n} integer candidate columns, got shape {labels.shape}", parameter="truth")
    if n and (labels.min() < 0 or labels.max() >= columns):
        raise KgzslError(f"truth holds columns outside 0..{columns - 1}", parameter="truth")
    return labels.astype(np.int64)


def softmax(scores: Any, temperature: float = 1.0) -> np.ndarray:
    """``p = softmax(scores / T)`` row-wise, float64 ``[images, candidates]``."""
    check_number("temperature", temperature, above=0)
    z = _scores(scores) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(scores: Any, truth: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood ``-mean log softmax(scores / T)[truth]``."""
    check_number("temperature", temperature, above=0)
    s = _scores(scores)
    y = _truth(truth, len(s), s.shape[1])
    z = s / temperature
    top = z.max(axis=1)
    log_norm = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(scores: Any, truth: Any, low: float = 1e-4, high: float = 1e4) -> float:
    """The temperature ``T`` in ``[low, high]`` minimising :func:`nll` on labelled images.

    Deterministic 1-d search on ``log T``: a 41-point grid, then golden-section in the bracket around
    the best grid point (the NLL is convex in ``1/T``, hence unimodal in ``log T``)."""
    s = _scores(scores)
    _truth(truth, len(s), s.shape[1])
    if len(s) == 0:
        raise KgzslError("scores has no images to fit a temperature on", parameter="scores")
    f = lambda log_t: nll(s, truth, math.exp(log_t))  # noqa: E731
    grid = np.linspace(math.log(low), math.log(high), 41)
    values = [f(x) for x in grid]
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(60):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


def top1(probs: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the top-1 probability (confidence) and whether the top-1 is the true column."""
    p = _scores(probs, "probs")
    y = _truth(truth, len(p), p.shape[1])
    return p.max(axis=1), p.argmax(axis=1) == y


def binned_reliability(confidence: Any, correct: Any, bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width confidence bin: ``count``, mean ``confidence`` and ``accuracy`` (any answer kind:
    flat top-1 or hedged node, its probability and whether it is right)."""
    check_number("bins", bins, at_least=1)
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hit.shape or not np.isfinite(conf).all() or (conf.size and (conf.min() < 0 or conf.max() > 1 + 1e-9)):
        raise KgzslError(f"confidence must be {hit.size} probabilities in [0, 1], one per answer", parameter="confidence")
    which = np.clip((conf * bins).astype(np.int64), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(m.sum()),
                    "confidence": float(conf[m].mean()) if m.any() else 0.0,
                    "accuracy": float(hit[m].mean()) if m.any() else 0.0})
    return out


def calibration_error(confidence: Any, correct: Any, bins: int = 15) -> float:
    """``ECE = sum_b (n_b / n) * |accuracy_b - confidence_b|`` over equal-width confidence bins."""
    table = binned_reliability(confidence, correct, bins)
    n = sum(row["count"] for row in table)
    if n == 0:
        raise KgzslError("confidence has no answers", parameter="confidence")
    return float(sum(row["count"] / n * abs(row["accuracy"] - row["confidence"]) for row in table))


def expected_calibration_error(probs: Any, truth: Any, bins: int = 15) -> float:
    """Top-1 ECE of ``probs`` ``[images, candidates]``: :func:`calibration_error` of the top-1 probability."""
    return calibration_error(*top1(probs, truth), bins)


def plot_reliability(curves: dict[str, tuple[Any, Any]], path: str | Path, bins: int = 15, title: str = "") -> None:
    """Reliability diagram PNG (written atomically): per curve label, ``(confidence, correct)`` per
    answer (see :func:`top1`): accuracy against mean confidence per bin, the diagonal, each curve's ECE."""
    from kgzsl.io import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, (conf, hit) in curves.items():
        table = [row for row in binned_reliability(conf, hit, bins) if row["count"]]
        ax.plot([r["confidence"] for r in table], [r["accuracy"] for r in table], marker="o",
                label=f"{label} (ECE {calibration_error(conf, hit, bins):.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left", fontsize=8)
    save_png(fig, path)


# ------------------------------------------------------------------------- hierarchical posteriors
def node_depths(graph: ClassGraph) -> np.ndarray:
    """Depth of every node: hops on the shortest ``parent -> child`` path from any root (0 at a root)."""
    n = graph.num_nodes
    children: list[list[int]] = [[] for _ in range(n)]
    has_parent = np.zeros(n, dtype=bool)
    for child, parent in np.asarray(graph.edge_index).reshape(2, -1).T.tolist():
        children[parent].append(child)
        has_parent[child] = True
    depth = np.full(n, -1, dtype=np.int64)
    queue = deque(np.flatnonzero(~has_parent).tolist())
    depth[list(queue)] = 0
    while queue:
        node = queue.popleft()
        for child in children[node]:
            if depth[child] < 0:
                depth[child] = depth[node] + 1
                queue.append(child)
    return depth


def subtree_matrix(graph: ClassGraph, candidate_ids: Sequence[str]) -> sparse.csc_matrix:
    """Sparse 0/1 matrix ``[candidates, nodes]``: entry ``(c, v)`` is 1 iff candidate column ``c`` is
    ``v`` or a descendant of ``v``; hence ``P = p @ M`` gives every node's posterior."""
    index = graph.index()
    unknown = [c for c in candidate_ids if c not in index]
    if unknown:
        raise KgzslError(f"{len(unknown)} candidate ids are not in the class graph (first: {unknown[0]})",
                         parameter="candidate_ids")
    if not candidate_ids:
        raise KgzslError("candidate_ids is empty", parameter="candidate_ids")
    parents: list[list[int]] = [[] for _ in range(graph.num_nodes)]
    for child, parent in np.asarray(graph.edge_index).reshape(2, -1).T.tolist():
        parents[child].append(parent)
    pairs, _ = ancestor_pairs(parents)
    nodes = np.array([index[c] for c in candidate_ids], dtype=np.int64)
    order = np.argsort(pairs[0], kind="stable")
    src, anc = pairs[0][order], pairs[1][order]
    lo, hi = np.searchsorted(src, nodes, "left"), np.searchsorted(src, nodes, "right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(nodes)), counts)
    cols = anc[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])] if counts.sum() else np.zeros(0, np.int64)
    data = np.ones(len(rows), dtype=np.float64)
    return sparse.csc_matrix((data, (rows, cols)), shape=(len(nodes), graph.num_nodes))


@dataclass(frozen=True)
class HedgedAnswer:
    """One hedged answer: the graph node, its posterior probability, information gain (bits) and depth."""

    node: int
    id: str
    name: str
    probability: float
    info_gain: float
    depth: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Hierarchy:
    """The candidates of one recognition task placed in a class graph, built once.

    ``matrix`` ``[candidates, answers]`` (csc): the subtree matrix restricted to the possible answers,
    one node per distinct candidate set (the deepest node holding it, then the lowest index), ordered
    by preference (deeper first, then lower node index) so that the first maximum breaks ties;
    ``nodes``, ``gain`` (``log2 C - log2 |subtree|`` bits) and ``depth`` per answer column."""

    def __init__(self, graph: ClassGraph, candidate_ids: Sequence[str]) -> None:
        self.graph = graph
        self.candidate_ids = list(candidate_ids)
        self.full = subtree_matrix(graph, self.candidate_ids)
        self.node_depth = node_depths(graph)
        counts = np.asarray(self.full.sum(axis=0)).ravel()
        preferred = np.lexsort((np.arange(graph.num_nodes), -self.node_depth))
        preferred = preferred[counts[preferred] > 0]
        seen: set[bytes] = set()
        keep = []
        for v in preferred.tolist():
            rows = self.full.indices[self.full.indptr[v]:self.full.indptr[v + 1]]
            key = np.unique(rows).tobytes()
            if key not in seen:
                seen.add(key)
                keep.append(v)
        self.nodes = np.array(keep, dtype=np.int64)
        self.matrix = self.full[:, self.nodes].tocsc()
        size = len(self.candidate_ids)
        self.gain = np.log2(size) - np.log2(counts[self.nodes])
        self.depth = self.node_depth[self.nodes]
        self.root_like = self.gain <= 1e-12
        self._member = self.matrix.tocsr()

    def node_posteriors(self, probs: Any) -> np.ndarray:
        """``P(v) = sum_{c in subtree(v)} p(c)`` for every graph node, ``[images, nodes]``."""
        p = self._probs(probs)
        return np.asarray((self.full.T @ p.T).T)

    def posteriors(self, probs: Any) -> np.ndarray:
        """Posteriors of the answer columns only, ``[images, answers]``."""
        p = self._probs(probs)
        return np.asarray((self.matrix.T @ p.T).T)

    def _probs(self, probs: Any) -> np.ndarray:
        p = _scores(probs, "probs")
        if p.shape[1] != len(self.candidate_ids):
            raise KgzslError(f"probs has {p.shape[1]} columns but there are {len(self.candidate_ids)} candidates",
                             parameter="probs")
        return p

    def choose(self, posteriors: np.ndarray, lam: float) -> np.ndarray:
        """Answer column per image: ``argmax_v (gain(v) + lambda) * P(v)`` (first maximum = preferred)."""
        check_number("lam", lam, at_least=0)
        return np.argmax((self.gain[None, :] + lam) * posteriors, axis=1)

    def correct(self, answers: np.ndarray, truth: Any) -> np.ndarray:
        """Whether each answer column's subtree holds the image's true candidate column."""
        y = _truth(truth, len(answers), len(self.candidate_ids))
        return np.asarray(self._member[y, answers]).ravel() > 0

    def flat_answers(self, probs: Any) -> np.ndarray:
        """The answer column of each image's top-1 candidate (the deepest node holding exactly that candidate)."""
        top = self._probs(probs).argmax(axis=1)
        if not hasattr(self, "_own"):  # candidate column -> the preferred answer column holding it, built once
            own: dict[int, int] = {}
            for j in range(self.matrix.shape[1]):
                rows = np.unique(self.matrix.indices[self.matrix.indptr[j]:self.matrix.indptr[j + 1]])
                if len(rows) == 1:
                    own.setdefault(int(rows[0]), j)
            self._own = own
        for c in set(top.tolist()) - set(self._own):  # its node also holds other candidates: answer that node
            self._own[c] = int(self._member[c].indices.min())
        return np.array([self._own[c] for c in top.tolist()], dtype=np.int64)

    def answer(self, column: int, posterior: float) -> HedgedAnswer:
        v = int(self.nodes[column])
        names = self.graph.names[v]
        return HedgedAnswer(v, self.graph.ids[v], names[0] if names else self.graph.ids[v], float(posterior),
                            float(self.gain[column]), int(self.depth[column]))


def search_lambda(accuracy: Callable[[float], float], target: float, steps: int = 60) -> float:
    """The smallest ``lambda >= 0`` with ``accuracy(lambda) >= target`` (= 1 - eps): 0 if it already
    holds, else double an upper bound from 1, then ``steps`` bisections (DARTS' binary search)."""
    check_number("target", target, above=0)
    if target > 1:
        raise KgzslError(f"target must be at most 1 (an accuracy), got {target:g}", parameter="target")
    if accuracy(0.0) >= target:
        return 0.0
    high = 1.0
    while accuracy(high) < target:
        high *= 2
        if high > 1e12:
            raise KgzslError(f"target {target:g} is out of reach on these calibration images", parameter="target")
    low = 0.0
    for _ in range(steps):
        mid = (low + high) / 2
        if accuracy(mid) >= target:
            high = mid
        else:
            low = mid
    return float(high)


def fit_lambda(hierarchy: Hierarchy, posteriors: np.ndarray, truth: Any, target: float, steps: int = 60) -> float:
    """:func:`search_lambda` for the hierarchical accuracy of ``hierarchy.choose`` on calibration images."""
    if len(posteriors) == 0:
        raise KgzslError("no calibration images to fit lambda on", parameter="posteriors")
    y = _truth(truth, len(posteriors), len(hierarchy.candidate_ids))
    return search_lambda(lambda lam: float(hierarchy.correct(hierarchy.choose(posteriors, lam), y).mean()), target, steps)


class Hedger:
    """Calibrated, hedged recognition over one candidate set: ``fit`` the temperature and the DARTS
    multiplier on labelled calibration images, then ``predict`` one :class:`HedgedAnswer` per image."""

    def __init__(self, hierarchy: Hierarchy, temperature: float = 1.0, lam: float = 0.0, target: float | None = None) -> None:
        check_number("temperature", temperature, above=0)
        check_number("lam", lam, at_least=0)
        self.hierarchy, self.temperature, self.lam, self.target = hierarchy, float(temperature), float(lam), target

    def fit(self, scores: Any, truth: Any, target: float, calibrate: bool = True) -> "Hedger":
        """Fit ``T`` (if ``calibrate``) by NLL, then ``lambda`` for hierarchical accuracy ``>= target``."""
        if calibrate:
            self.temperature = fit_temperature(scores, truth)
        post = self.hierarchy.posteriors(softmax(scores, self.temperature))
        self.lam = fit_lambda(self.hierarchy, post, truth, target)
        self.target = float(target)
        return self

    def predict_columns(self, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """Answer columns and their posteriors, per image."""
        post = self.hierarchy.posteriors(softmax(scores, self.temperature))
        cols = self.hierarchy.choose(post, self.lam)
        return cols, post[np.arange(len(cols)), cols]

    def predict(self, scores: Any) -> list[HedgedAnswer]:
        """One hedged answer per image row of ``scores`` ``[images, candidates]``."""
        cols, probs = self.predict_columns(scores)
        return [self.hierarchy.answer(int(c), float(p)) for c, p in zip(cols, probs)]
