"""Hedged, hierarchy-aware answers with calibrated confidence (Deng et al., CVPR 2012, "DARTS").

1. Calibration: ``p = softmax(scores / T)`` over the candidate classes, with the temperature ``T``
   minimising the negative log-likelihood of the true classes of labelled calibration images.
2. Hierarchical posteriors: ``P(v) = sum of p(c) over the candidates c in the subtree of v`` (v
   itself included), for every node v of a :class:`kgzsl.graph.ClassGraph` (``edge_index`` holds the
   ``child -> parent`` edges; a DAG is fine: a candidate counts once under each of its ancestors).
3. Hedging. Every node v has a reward, its information gain
   ``r(v) = log2(#candidates) - log2(#candidates in the subtree of v)`` (0 at the root, the most at a
   leaf candidate). Two rules pick the answer; an answer v is correct iff the true class is in its subtree.

   * ``threshold`` (default): the most informative node whose posterior is at least a threshold ``t``;
     ``t`` is the lowest threshold (bisection) whose hierarchical accuracy on calibration images
     reaches the target ``1 - eps``. Each answer states its own probability, at least ``t``.
   * ``darts`` (Deng et al.'s DARTS): ``argmax_v (r(v) + lambda) * P(v)`` with the smallest
     ``lambda >= 0`` (binary search) reaching the target. It maximises the mean information gain at
     that accuracy, by falling back to the root on the images it is least sure of.

4. Generalized setting: with seen classes among the candidates (scored by their real classifiers),
   the calibrated-stacking offset ``gamma`` is subtracted from their scores before the softmax;
   ``gamma`` is fitted first (harmonic mean of seen and unseen accuracy), then ``T``, then the rules.

Ties: nodes whose subtrees hold the same candidates are one answer (the deepest of them, then the
lowest node index, represents them); remaining ties in reward go to the deeper node, then the lower
node index. Depth = hops on the shortest path up to a root (a node without parents).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy import sparse

from kgzsl.errors import KgzslError, check_number
from kgzsl.graph import ClassGraph, ancestor_pairs, hop_distances

#: hedging rules (see the module docstring); the threshold rule is the default: every answer then carries
#: its own calibrated probability, and it never falls back to the root where some node is likely enough
RULES = ("threshold", "darts")
DEFAULT_RULE = "threshold"
#: float slack when comparing a subtree's summed probability with a threshold (the root's sums to 1 +- 1e-15)
PROBABILITY_SLACK = 1e-9


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


def _bisect(accuracy: Callable[[float], float], target: float, low: float, high: float, steps: int) -> float:
    """The lowest value found in ``[low, high]`` (``accuracy(high)`` meets ``target``) that still meets it."""
    for _ in range(steps):
        mid = (low + high) / 2
        if accuracy(mid) >= target:
            high = mid
        else:
            low = mid
    return float(high)


def search_lambda(accuracy: Callable[[float], float], target: float, steps: int = 60) -> float:
    """The smallest ``lambda >= 0`` with ``accuracy(lambda) >= target`` (= 1 - eps): 0 if it already
    holds, else double an upper bound from 1, then ``steps`` bisections (DARTS' binary search)."""
    _check_target(target)
    if accuracy(0.0) >= target:
        return 0.0
    high = 1.0
    while accuracy(high) < target:
        high *= 2
        if high > 1e12:
            raise KgzslError(f"target {target:g} is out of reach on these calibration images", parameter="target")
    return _bisect(accuracy, target, 0.0, high, steps)


def fit_lambda(hierarchy: Hierarchy, posteriors: np.ndarray, truth: Any, target: float, steps: int = 60) -> float:
    """:func:`search_lambda` for the hierarchical accuracy of ``hierarchy.choose`` on calibration images."""
    return fit_rule(hierarchy, posteriors, truth, target, "darts", steps)


def search_threshold(accuracy: Callable[[float], float], target: float, steps: int = 50) -> float:
    """The lowest posterior threshold in ``[0, 1]`` with ``accuracy(threshold) >= target``, by bisection
    (accuracy rises as the threshold pushes answers up the tree; at 1 only near-certain answers remain)."""
    _check_target(target)
    if accuracy(0.0) >= target:
        return 0.0
    if accuracy(1.0) < target:
        raise KgzslError(f"target {target:g} is out of reach on these calibration images", parameter="target")
    return _bisect(accuracy, target, 0.0, 1.0, steps)


def fit_threshold(hierarchy: Hierarchy, posteriors: np.ndarray, truth: Any, target: float, steps: int = 50) -> float:
    """:func:`search_threshold` for the hierarchical accuracy of ``hierarchy.choose_above`` on calibration images."""
    return fit_rule(hierarchy, posteriors, truth, target, "threshold", steps)


#: each rule's search for its parameter, given the accuracy a parameter value reaches
SEARCHES: dict[str, Callable[..., float]] = {"threshold": search_threshold, "darts": search_lambda}


def fit_rule(hierarchy: Hierarchy, posteriors: np.ndarray, truth: Any, target: float, rule: str,
             steps: int | None = None) -> float:
    """The parameter of ``rule`` (a threshold or DARTS' lambda) that meets ``target`` on calibration images
    (:data:`SEARCHES`; ``steps``: its bisection steps, default the search's own)."""
    search = SEARCHES[_rule(rule)]
    y = _calibration_truth(hierarchy, posteriors, truth)
    accuracy = lambda value: float(hierarchy.correct(hierarchy.answers(posteriors, rule, value), y).mean())  # noqa: E731
    return search(accuracy, target) if steps is None else search(accuracy, target, steps)


def _calibration_truth(hierarchy: Hierarchy, posteriors: np.ndarray, truth: Any) -> np.ndarray:
    if len(posteriors) == 0:
        raise KgzslError("no calibration images to fit on", parameter="posteriors")
    return _truth(truth, len(posteriors), len(hierarchy.candidate_ids))


def _check_target(target: float) -> None:
    check_number("target", target, above=0)
    if target > 1:
        raise KgzslError(f"target must be at most 1 (an accuracy), got {target:g}", parameter="target")


def _rule(rule: str) -> str:
    if rule not in RULES:
        raise KgzslError(f"rule must be one of {', '.join(RULES)}, got {rule!r}", parameter="rule")
    return rule


class Hedger:
    """Calibrated, hedged recognition over one candidate set: ``fit`` the temperature and the rule's
    parameter (threshold or DARTS multiplier) on labelled calibration images, then ``predict`` one
    :class:`HedgedAnswer` per image. ``gamma``: the calibrated-stacking offset the scores must carry
    (generalized setting); recorded here so callers score with the one calibrated."""

    def __init__(self, hierarchy: Hierarchy, temperature: float = 1.0, parameter: float = 0.0, target: float | None = None,
                 rule: str = DEFAULT_RULE, gamma: float = 0.0) -> None:
        check_number("temperature", temperature, above=0)
        check_number("parameter", parameter, at_least=0)
        self.hierarchy, self.temperature, self.parameter, self.target = hierarchy, float(temperature), float(parameter), target
        self.rule, self.gamma = _rule(rule), float(gamma)

    def fit(self, scores: Any, truth: Any, target: float, calibrate: bool = True) -> "Hedger":
        """Fit ``T`` (if ``calibrate``) by NLL, then the rule's parameter for hierarchical accuracy ``>= target``."""
        if calibrate:
            self.temperature = fit_temperature(scores, truth)
        post = self.hierarchy.posteriors(softmax(scores, self.temperature))
        self.parameter = fit_rule(self.hierarchy, post, truth, target, self.rule)
        self.target = float(target)
        return self

    def predict_columns(self, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """Answer columns and their posteriors, per image."""
        post = self.hierarchy.posteriors(softmax(scores, self.temperature))
        cols = self.hierarchy.answers(post, self.rule, self.parameter)
        return cols, post[np.arange(len(cols)), cols]

    def predict(self, scores: Any) -> list[HedgedAnswer]:
        """One hedged answer per image row of ``scores`` ``[images, candidates]``."""
        cols, probs = self.predict_columns(scores)
        return [self.hierarchy.answer(int(c), float(p)) for c, p in zip(cols, probs)]


# ------------------------------------------------------------------------------------ run files
#: a run's hedge calibration file format (version 1: DARTS multipliers only, unseen candidates; still read)
HEDGE_FORMAT = "kgzsl.hedge"
HEDGE_VERSION = 2
#: the candidate set calibrated by default, as :func:`kgzsl.recognize.candidate_mask` names it
HEDGE_CANDIDATES = "unseen"
#: the file in a run folder holding the calibration of each candidate set
HEDGE_FILES = {"unseen": "hedge.json", "all": "hedge-all.json"}
HEDGE_RULE_TEXT = {
    "unseen": ("unseen: every class of the run (not a structure-only node) whose real classifier was not used "
               "in training (the graph's unseen classes and the held-out seen classes)"),
    "all": ("all: every class of the run (not a structure-only node), seen ones scored by their real classifiers "
            "minus the calibrated-stacking gamma (generalized zero-shot)"),
}
DEFAULT_TARGETS = (0.5, 0.7, 0.9)


def hedge_file(candidates: str) -> str:
    """The file name of the calibration for ``candidates`` (``"unseen"`` or ``"all"``) in a run folder."""
    if not isinstance(candidates, str) or candidates not in HEDGE_FILES:
        raise KgzslError(f"hedging is calibrated for candidates {' or '.join(HEDGE_FILES)}, not {candidates!r}",
                         parameter="candidates")
    return HEDGE_FILES[candidates]


def read_hedge_record(path: str | Path) -> dict[str, Any]:
    """A calibration file, format checked, version 1 brought to version 2's fields (``rules``, ``gamma``)."""
    from kgzsl.io import check_format, read_json

    record = check_format(read_json(path, "hedge calibration"), HEDGE_FORMAT, None, path, "hedge calibration")
    if record.get("version") == 1:
        record = {**record, "version": 2, "rules": {"darts": record["lambdas"]}, "default_rule": "darts", "gamma": 0.0,
                  "calibration_accuracy": {"darts": record.get("calibration_accuracy", {})}}
    if record.get("version") != HEDGE_VERSION:
        raise KgzslError(f"{path} is hedge calibration version {record.get('version')}; this kgzsl reads 1 and {HEDGE_VERSION}")
    return record


def candidate_digest(ids: Sequence[str]) -> str:
    """SHA-256 of the candidate ids in column order: which candidate set a calibration holds for."""
    import hashlib

    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def _target_key(target: float) -> str:
    return f"{float(target):g}"


def check_calibration_labels(predictions: Any, labels: Sequence[str], where: str = "the features",
                             candidates: str = HEDGE_CANDIDATES) -> None:
    """Refuse labels that are not candidates: unknown to the run, not a candidate class (a structure-only node)
    or, for ``"unseen"``, seen-and-trained. KgzslError naming ``features`` and the first offender."""
    from kgzsl.recognize import candidate_mask

    if not len(labels):
        raise KgzslError(f"features: {where} hold no images to calibrate on", parameter="features")
    hedge_file(candidates)  # a calibratable candidate set
    mask = candidate_mask(predictions, candidates)
    unknown = sorted({w for w in labels if w not in predictions.index})
    if unknown:
        raise KgzslError(f"features: {len(unknown)} labels of {where} are not classes of the run (first: {unknown[0]}): "
                         "label images by class id (e.g. wnid folders)", parameter="features")
    trained = sorted({w for w in labels if bool(predictions.seen[predictions.index[w]])})
    if trained and candidates == "unseen":
        raise KgzslError(f"features: {len(trained)} classes of {where} were seen in training, their real classifier "
                         f"used (first: {trained[0]}): calibrate on images of held-out or unseen classes only "
                         "(or calibrate the generalized setting, candidates all)", parameter="features")
    outside = sorted({w for w in labels if not bool(mask[predictions.index[w]])})
    if outside:
        raise KgzslError(f"features: {len(outside)} classes of {where} are not candidate classes (first: {outside[0]}, "
                         "a structure-only node)", parameter="features")


def run_candidates(predictions: Any, candidates: str = HEDGE_CANDIDATES) -> tuple[list[str], Any]:
    """The ids of the run's candidates for hedging (``"unseen"`` or ``"all"``) and their prediction rows."""
    from kgzsl.recognize import candidate_mask

    hedge_file(candidates)  # a calibratable candidate set
    columns = candidate_mask(predictions, candidates).nonzero().view(-1)
    return [predictions.ids[int(c)] for c in columns], columns


def _check_targets(targets: Sequence[float]) -> list[float]:
    for target in targets:
        check_number("targets", target, above=0, meaning=" (an accuracy in (0, 1])")
        if target > 1:
            raise KgzslError(f"targets must be accuracies in (0, 1], got {target:g}", parameter="targets")
    if not len(targets):
        raise KgzslError("targets is empty: give target accuracies, e.g. 0.5 0.7 0.9", parameter="targets")
    return sorted(set(float(t) for t in targets))


def fit_gamma(task: HedgeTask, seen: np.ndarray) -> float:
    """Calibrated stacking: the ``gamma`` maximising the harmonic mean of seen and unseen top-1 accuracy on the
    calibration images (:func:`kgzsl.recognize.calibrate`); they must show both seen and unseen classes."""
    from kgzsl.recognize import calibrate

    of_seen = seen[task.truth]
    if of_seen.all() or not of_seen.any():
        kind = "seen" if of_seen.all() else "unseen"
        raise KgzslError(f"features: every calibration image is of a {kind} class: fitting the generalized setting's gamma "
                         "needs images of both seen (trained) and unseen classes (or give gamma)", parameter="features")
    return float(calibrate(torch.from_numpy(task.scores), torch.from_numpy(task.truth), torch.from_numpy(seen)).gamma)


def fit_hedging(task: HedgeTask, targets: Sequence[float] = DEFAULT_TARGETS, seen: np.ndarray | None = None,
                gamma: float | None = None) -> tuple[HedgeTask, dict[str, Any]]:
    """Fit hedged answers on a calibration task: with ``seen`` (which candidate columns are seen classes: the
    generalized setting) first the calibrated-stacking ``gamma`` (:func:`fit_gamma`, unless given), then the
    temperature, then each rule's parameter per target. Returns the task stacked and calibrated, and
    ``gamma``, ``temperature``, ``rules`` (rule -> target -> parameter) and ``reached`` (their accuracy there)."""
    wanted = _check_targets(targets)
    if seen is None:
        gamma = 0.0
    else:
        if gamma is not None:
            check_number("gamma", gamma)
        gamma = fit_gamma(task, seen) if gamma is None else float(gamma)
        task = task.stacked(gamma, seen)
    temperature = fit_temperature(task.scores, task.truth)
    task.calibrate(temperature)
    rules: dict[str, dict[str, float]] = {}
    reached: dict[str, dict[str, float]] = {}
    for rule in RULES:
        rules[rule], reached[rule] = {}, {}
        for target in wanted:
            value = fit_rule(task.hierarchy, task.post, task.truth, target, rule)
            rules[rule][_target_key(target)] = value
            reached[rule][_target_key(target)] = float(task.stats(task.answers(value, rule))["correct"].mean())
    return task, {"gamma": float(gamma), "temperature": temperature, "rules": rules, "reached": reached}


def calibrate_run(run: Any, graph: ClassGraph, features: Any, labels: Sequence[str], targets: Sequence[float] = DEFAULT_TARGETS,
                  feature_folder: str | None = None, plot: str | Path | None = None, candidates: str = HEDGE_CANDIDATES,
                  gamma: float | None = None) -> dict[str, Any]:
    """Fit, on labelled features, the temperature and each rule's parameter per target accuracy (and, for
    candidates ``"all"``, the calibrated-stacking ``gamma`` unless given) and write the run's calibration file
    (:func:`hedge_file`, atomically); optionally a reliability diagram PNG at ``plot``. Returns the record."""
    from kgzsl.io import write_json

    _check_targets(targets)  # before any scoring
    where = f"feature folder {feature_folder}" if feature_folder else "the features"
    task = run_task(run, graph, features, labels, where=where, candidates=candidates)
    seen = run.predictions.seen[run_candidates(run.predictions, "all")[1]].numpy() if candidates == "all" else None
    task, fitted = fit_hedging(task, targets, seen, gamma)
    raw, temperature, params, reached = task.scores, fitted["temperature"], fitted["rules"], fitted["reached"]
    record = {
        "format": HEDGE_FORMAT, "version": HEDGE_VERSION, "temperature": temperature, "gamma": fitted["gamma"],
        "rules": params, "default_rule": DEFAULT_RULE, "calibration_accuracy": reached, "candidates": candidates,
        "candidate_rule": HEDGE_RULE_TEXT[candidates], "candidate_count": len(task.hierarchy.candidate_ids),
        "candidate_sha256": candidate_digest(task.hierarchy.candidate_ids), "images": len(task.truth),
        "classes": len(set(labels)), "features": feature_folder,
        "ece_before": expected_calibration_error(softmax(raw, 1.0), task.truth),
        "ece_after": expected_calibration_error(softmax(raw, temperature), task.truth),
        "nll_before": nll(raw, task.truth, 1.0), "nll_after": nll(raw, task.truth, temperature),
    }
    if plot is not None:
        plot_reliability({"flat top-1, T=1": top1(softmax(raw, 1.0), task.truth),
                          f"flat top-1, T={temperature:.3g}": top1(task.probs, task.truth)},
                         plot, title=f"Reliability on {len(task.truth)} calibration images")
        record["plot"] = str(plot)
    write_json(Path(run.folder) / hedge_file(candidates), record)
    return record


def run_hedger(run: Any, graph: ClassGraph, target: float, candidates: str = HEDGE_CANDIDATES, rule: str | None = None) -> Hedger:
    """The :class:`Hedger` of a calibrated run for accuracy ``target`` over ``candidates`` (``rule``: default the
    calibration's): KgzslError if the run has no calibration for them (run ``kgzsl calibrate``), the target
    was not calibrated (naming those that were), or the run's candidate set is not the one calibrated."""
    check_number("hedge", target, above=0)
    record = run.hedging(candidates)
    if record is None:
        flag = "" if candidates == HEDGE_CANDIDATES else f" --candidates {candidates}"
        raise KgzslError(f"hedge: run {run.source} is not calibrated for candidates {candidates} (no {hedge_file(candidates)}): "
                         f"run `kgzsl calibrate --features FEATS --predictions {run.source}{flag}` first", parameter="hedge")
    rule = _rule(rule or record["default_rule"])
    if rule not in record["rules"]:
        raise KgzslError(f"hedge: rule {rule} was not calibrated for run {run.source} (calibrated: "
                         f"{', '.join(record['rules'])}): run `kgzsl calibrate` again", parameter="hedge")
    values, key = record["rules"][rule], _target_key(target)
    if key not in values:
        raise KgzslError(f"hedge: target {key} was not calibrated for run {run.source}; calibrated targets: "
                         f"{', '.join(sorted(values, key=float))} (or rerun `kgzsl calibrate --targets ...`)", parameter="hedge")
    ids, _ = run_candidates(run.predictions, candidates)
    if candidate_digest(ids) != record.get("candidate_sha256"):
        raise KgzslError(f"hedge: the calibration in {run.folder} is for another candidate set than the run's: "
                         "run `kgzsl calibrate` again", parameter="hedge")
    return Hedger(Hierarchy(graph, ids), record["temperature"], values[key], float(target), rule, record.get("gamma", 0.0))


# ------------------------------------------------------------------------------------ evaluation
class HedgeTask:
    """One candidate set with labelled images: raw ``scores`` ``[images, candidates]``, true columns
    ``truth``, the :class:`Hierarchy`; :meth:`calibrate` sets the probabilities and posteriors."""

    def __init__(self, name: str, hierarchy: Hierarchy, scores: np.ndarray, truth: np.ndarray) -> None:
        self.name, self.hierarchy, self.scores, self.truth = name, hierarchy, scores, truth
        self.probs: np.ndarray | None = None
        self.post: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> "HedgeTask":
        return HedgeTask(self.name, self.hierarchy, self.scores[rows], self.truth[rows])

    def stacked(self, gamma: float, seen: np.ndarray) -> "HedgeTask":
        """Calibrated stacking: ``gamma`` subtracted from the scores of the seen candidate columns (``seen``)."""
        return HedgeTask(self.name, self.hierarchy, self.scores - gamma * np.asarray(seen, dtype=np.float64)[None, :], self.truth)

    def calibrate(self, temperature: float) -> "HedgeTask":
        self.probs = softmax(self.scores, temperature)
        self.post = self.hierarchy.posteriors(self.probs)
        return self

    def answers(self, parameter: float, rule: str) -> np.ndarray:
        """The hedged answer column of each image under ``rule`` with its ``parameter`` (threshold or lambda)."""
        return self.hierarchy.answers(self.post, rule, parameter)

    def flat(self) -> np.ndarray:
        """The answer column of each image's flat top-1 candidate."""
        return self.hierarchy.flat_answers(self.probs)

    def root(self) -> np.ndarray:
        """Always the root-like answer (every candidate)."""
        return np.full(len(self.truth), int(np.flatnonzero(self.hierarchy.root_like)[0]), dtype=np.int64)

    def stats(self, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Per image: correct, information gain, depth, root-like, and the answer's probability."""
        h = self.hierarchy
        return {"correct": h.correct(cols, self.truth), "gain": h.gain[cols], "depth": h.depth[cols],
                "root": h.root_like[cols], "prob": self.post[np.arange(len(cols)), cols]}


def pooled_stats(tasks: Sequence[HedgeTask], cols: Sequence[np.ndarray]) -> dict[str, float]:
    """Means over the images of ``tasks`` (answers ``cols``): hierarchical accuracy ``acc``, ``depth``,
    information ``gain`` (bits), share of ``root`` answers, mean answer probability ``prob``; and ``n``."""
    parts = [t.stats(c) for t, c in zip(tasks, cols)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {"acc": float(cat["correct"].mean()), "depth": float(cat["depth"].mean()), "gain": float(cat["gain"].mean()),
            "root": float(cat["root"].mean()), "prob": float(cat["prob"].mean()), "n": int(len(cat["correct"]))}


def hedge_rows(tasks: Sequence[HedgeTask], rules: dict[str, dict[Any, float]]) -> list[dict[str, Any]]:
    """One row a rule and calibrated target (``threshold 0.9``: ``rules[rule][target]`` is its parameter),
    then the baselines ``flat top-1`` and ``always root`` (:func:`pooled_stats` of calibrated ``tasks``, with
    ``answer``, ``rule``, ``target`` and ``parameter``)."""
    rows = [{"answer": f"{rule} {float(t):g}", "rule": rule, "target": float(t), "parameter": value,
             **pooled_stats(tasks, [task.answers(value, rule) for task in tasks])}
            for rule, values in rules.items() for t, value in sorted(values.items(), key=lambda kv: float(kv[0]))]
    for label, answers in (("flat top-1", lambda t: t.flat()), ("always root", lambda t: t.root())):
        rows.append({"answer": label, "rule": None, "target": None, "parameter": None,
                     **pooled_stats(tasks, [answers(t) for t in tasks])})
    return rows


HEDGE_HEADER = f"{'answer':<28}{'acc%':>7}{'conf%':>7}{'depth':>7}{'gain':>8}{'root%':>7}{'imgs':>6}"


def format_hedge_row(row: dict[str, Any]) -> str:
    short = {"threshold": "t", "darts": "lam"}.get(row.get("rule"), "")
    label = row["answer"] + (f" ({short} {row['parameter']:.3g})" if row.get("parameter") is not None else "")
    return (f"{label:<28}{100 * row['acc']:>7.1f}{100 * row['prob']:>7.1f}{row['depth']:>7.2f}{row['gain']:>8.2f}"
            f"{100 * row['root']:>7.1f}{row['n']:>6}")


def format_hedge_table(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    """The rows of :func:`hedge_rows` as a text table (acc%: hierarchical accuracy, conf%: mean probability)."""
    lines = ([title] if title else []) + [HEDGE_HEADER, "-" * len(HEDGE_HEADER)]
    return "\n".join(lines + [format_hedge_row(r) for r in rows])


#: the parameter sweep of each rule drawn by :func:`plot_accuracy_specificity`
SWEEPS = {"threshold": [0.0] + list(np.linspace(0.02, 1.0, 50)), "darts": [0.0] + list(np.logspace(-3, 3, 49))}


def plot_accuracy_specificity(sets: dict[str, Sequence[HedgeTask]], rules: dict[str, dict[Any, float]], path: str | Path,
                              title: str = "Accuracy-specificity trade-off (dots: calibrated targets)") -> None:
    """PNG (atomic) of hierarchical accuracy against mean information gain over each rule's parameter sweep,
    per set of calibrated tasks, with the calibrated targets as dots, flat top-1 as a cross and "always root"."""
    from kgzsl.io import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, (label, tasks) in enumerate(sets.items()):
        for rule, values in rules.items():
            color, style = f"C{k}", "-" if rule == DEFAULT_RULE else ":"
            pts = [pooled_stats(tasks, [t.answers(x, rule) for t in tasks]) for x in SWEEPS[rule]]
            ax.plot([p["gain"] for p in pts], [100 * p["acc"] for p in pts], style, color=color, label=f"{rule}, {label}")
            for target, value in sorted(values.items(), key=lambda kv: float(kv[0])):
                p = pooled_stats(tasks, [t.answers(value, rule) for t in tasks])
                ax.plot(p["gain"], 100 * p["acc"], "o", color=color, fillstyle="full" if rule == DEFAULT_RULE else "none")
                ax.annotate(f"{float(target):g}", (p["gain"], 100 * p["acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        flat = pooled_stats(tasks, [t.flat() for t in tasks])
        ax.plot(flat["gain"], 100 * flat["acc"], "x", color=f"C{k}", markersize=9, label=f"flat top-1, {label}")
    ax.plot(0, 100, "s", color="black", label="always root")
    ax.set(xlabel="mean information gain (bits)", ylabel="hierarchical accuracy (%)", ylim=(0, 102), title=title)
    ax.legend(fontsize=7, loc="lower left")
    save_png(fig, path)


def run_task(run: Any, graph: ClassGraph, features: Any, labels: Sequence[str], name: str = "",
             where: str = "the features", candidates: str = HEDGE_CANDIDATES, gamma: float = 0.0) -> HedgeTask:
    """A :class:`HedgeTask` of labelled features against the run's candidates for hedging (labels checked by
    :func:`check_calibration_labels`; ``where`` names the features in its messages; ``gamma`` subtracted
    from seen candidates' scores)."""
    from kgzsl.recognize import candidate_scores

    check_calibration_labels(run.predictions, labels, where, candidates)
    ids, _ = run_candidates(run.predictions, candidates)
    column = {c: j for j, c in enumerate(ids)}
    scores = candidate_scores(features, run.predictions, candidates, gamma)[0].numpy().astype(np.float64)
    return HedgeTask(name, Hierarchy(graph, ids), scores, np.array([column[w] for w in labels], dtype=np.int64))


def evaluate_hedging(run: Any, graph: ClassGraph, features: Any, labels: Sequence[str], name: str = "",
                     candidates: str = HEDGE_CANDIDATES) -> tuple[HedgeTask, dict[str, Any]]:
    """Hedged answers of a calibrated run (its calibration for ``candidates``) on labelled features, for every
    calibrated rule and target, with the flat top-1 and always-root baselines: the calibrated task and a
    summary (``rows`` of :func:`hedge_rows`, ``temperature``, ``gamma``, ``rules``)."""
    record = run.hedging(candidates)
    if record is None:
        raise KgzslError(f"hedge: run {run.source} is not calibrated for candidates {candidates} (no "
                         f"{hedge_file(candidates)}): run `kgzsl calibrate` first", parameter="hedge")
    run_hedger(run, graph, float(next(iter(record["rules"][record["default_rule"]]))), candidates)  # same candidate set
    task = run_task(run, graph, features, labels, name, candidates=candidates, gamma=record["gamma"])
    task.calibrate(record["temperature"])
    return task, {"split": name, "candidates": candidates, "temperature": record["temperature"], "gamma": record["gamma"],
                  "rules": record["rules"], "default_rule": record["default_rule"], "calibrated_on": record.get("features"),
                  "rows": hedge_rows([task], record["rules"])}


# ------------------------------------------------------------------------------------ shipped calibrations
#: calibrations shipped for the default runs (the demo's, ``Recognizer.pretrained``'s), written by
#: ``scripts/calibrate_default.py``; each file names the run it holds for (:func:`kgzsl.run.reuse_key`)
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "calibration"
SHIPPED_FORMAT = "kgzsl.shipped-hedge"


def shipped_calibration(run_key: dict[str, Any], where: Path = SHIPPED_DIR) -> dict[str, Any] | None:
    """The shipped calibration file content whose ``run`` is ``run_key``, or None."""
    from kgzsl.io import read_json

    for path in sorted(where.glob("*.json")) if where.is_dir() else []:
        shipped = read_json(path, "shipped calibration")
        if isinstance(shipped, dict) and shipped.get("format") == SHIPPED_FORMAT and shipped.get("run") == run_key:
            return {**shipped, "path": str(path)}
    return None


def install_shipped_calibration(folder: str | Path, run_key: dict[str, Any], where: Path = SHIPPED_DIR) -> list[str]:
    """Write the shipped calibrations for the run ``run_key`` into ``folder`` where it has none of its own;
    the names of the files written (none where nothing is shipped for that run)."""
    from kgzsl.io import write_json

    shipped = shipped_calibration(run_key, where)
    written = []
    for candidates, record in (shipped or {}).get("calibrations", {}).items():
        path = Path(folder) / hedge_file(candidates)
        if not path.exists():
            write_json(path, {**record, "shipped": Path(shipped["path"]).name})
            written.append(path.name)
    return written
