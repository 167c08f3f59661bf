"""Hierarchical posteriors over a class graph: each node's probability is the sum over the candidates in its subtree."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from kgzsl.errors import KgzslError, check_number
from kgzsl.graph.class_graph import ClassGraph, ancestor_pairs, hop_distances
from kgzsl.recognition.hedge.temperature import _scores, _truth

if TYPE_CHECKING:
    from scipy import sparse

#: the rules that pick a hedged answer (:mod:`kgzsl.recognition.hedge.rules`)
RULES = ("threshold", "darts")
DEFAULT_RULE = "threshold"
#: float slack when comparing a subtree's summed probability with a threshold (the root's sums to 1 +- 1e-15)
PROBABILITY_SLACK = 1e-9


def _rule(rule: str) -> str:
    if rule not in RULES:
        raise KgzslError(f"rule must be one of {', '.join(RULES)}, got {rule!r}", parameter="rule")
    return rule


# ------------------------------------------------------------------------- hierarchical posteriors
def node_depths(graph: ClassGraph) -> np.ndarray:
    """Depth of every node: hops on the shortest ``parent -> child`` path from any root (0 at a root)."""
    n = graph.num_nodes
    children: list[list[int]] = [[] for _ in range(n)]
    has_parent = np.zeros(n, dtype=bool)
    for child, parent in np.asarray(graph.edge_index).reshape(2, -1).T.tolist():
        children[parent].append(child)
        has_parent[child] = True
    return hop_distances(children, np.flatnonzero(~has_parent).tolist())


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
    from scipy import sparse  # lazy: scipy

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
        """DARTS: answer column per image ``argmax_v (gain(v) + lambda) * P(v)`` (first maximum = preferred)."""
        check_number("lam", lam, at_least=0)
        return np.argmax((self.gain[None, :] + lam) * posteriors, axis=1)

    def choose_above(self, posteriors: np.ndarray, threshold: float) -> np.ndarray:
        """Threshold rule: per image, the most informative answer column whose posterior is at least
        ``threshold`` (ties: the preferred, i.e. deeper, column). The root-like column (P = 1) always qualifies."""
        check_number("threshold", threshold, at_least=0)
        qualifies = posteriors >= threshold - PROBABILITY_SLACK
        qualifies[:, self.root_like] = True
        return np.argmax(np.where(qualifies, self.gain[None, :], -np.inf), axis=1)

    def answers(self, posteriors: np.ndarray, rule: str, parameter: float) -> np.ndarray:
        """Answer columns under ``rule``: ``"threshold"`` (:meth:`choose_above`) or ``"darts"`` (:meth:`choose`)."""
        return self.choose_above(posteriors, parameter) if _rule(rule) == "threshold" else self.choose(posteriors, parameter)

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
