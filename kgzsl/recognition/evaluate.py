"""Stage 4: evaluation in the ImageNet-21k zero-shot protocol (Frome et al. 2013; GCNZ; DGP).

For a split (a list of unseen wnids, e.g. 2-hops / 3-hops / All), the test images are those of the
split's classes, the candidates are the split's classes (``with_seen`` adds the seen classes: the
generalized "+1K" form), and Hit@k is the fraction of images whose true class ranks within the top k,
averaged over images, ties counting against.

Given the class graph, it also reports *hierarchical* Hit@k: an image counts as correct at k when any
candidate that is its true class or one of its descendants (WordNet hyponyms) ranks within the top k,
so naming a more specific class of the right kind is not counted as an error. The median rank (flat,
and hierarchical with a graph) summarises the whole rank distribution, not only its head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from kgzsl.errors import KgzslError
from kgzsl.recognition.scoring import (
    GZSLResult,
    calibrate,
    class_scores,
    gzsl_at_gamma,
    ranks_of_true,
    transductive_scores,
)
from kgzsl.recognition.streaming import GZSLStats, RowBlocks, gzsl_on_halves, gzsl_stats

if TYPE_CHECKING:
    from kgzsl.graph.class_graph import ClassGraph
    from kgzsl.propagation.predictions import Predictions

DEFAULT_KS = (1, 2, 5, 10, 20)


@dataclass
class SplitResult:
    """Hit@k for one split, with the counts that say what was measured.

    ``median_rank`` is the flat median rank; ``hier_hit`` / ``hier_median_rank`` are set only when the
    split was evaluated with the class graph (hierarchical: a descendant of the true class counts).
    """

    split: str
    with_seen: bool
    images: int
    classes_with_images: int
    candidates: int
    hit: dict[int, float]
    missing_classes: list[str] = field(default_factory=list)
    median_rank: float | None = None
    hier_hit: dict[int, float] | None = None
    hier_median_rank: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "split": self.split,
            "with_seen": self.with_seen,
            "images": self.images,
            "classes_with_images": self.classes_with_images,
            "candidates": self.candidates,
            **{f"hit@{k}": round(v, 4) for k, v in self.hit.items()},
            "missing_classes": len(self.missing_classes),
        }
        if self.median_rank is not None:
            out["median_rank"] = self.median_rank
        if self.hier_hit is not None:
            out.update({f"hier_hit@{k}": round(v, 4) for k, v in self.hier_hit.items()})
            out["hier_median_rank"] = self.hier_median_rank
        return out


# ------------------------------------------------------------------------------ ranks and hierarchy
def rank_metrics(ranks: torch.Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, Any]:
    """``{"hit": {k: fraction of ranks <= k}, "median_rank": float}`` for 1-based ``ranks``.

    The median is torch's: for an even count it is the *lower* of the two middle ranks (no averaging),
    so it is always a rank that occurred. With no ranks every hit is 0.0 and the median is NaN.
    """
    ranks = torch.as_tensor(ranks).reshape(-1)
    if ranks.numel() == 0:
        return {"hit": {k: 0.0 for k in ks}, "median_rank": float("nan")}
    return {"hit": {k: float((ranks <= k).float().mean()) for k in ks}, "median_rank": float(ranks.median())}


def correct_columns(graph: ClassGraph, true_ids: list[str], column_ids: list[str]) -> list[torch.Tensor]:
    """For each true class id, the positions (long tensor) in ``column_ids`` of the candidates that name
    it correctly under the hierarchy: the class itself or any of its descendants in ``graph`` (a
    :class:`kgzsl.graph.class_graph.ClassGraph`).

    A candidate ``c`` counts for ``t`` iff ``(c, t)`` is a (node, ancestor) pair of ``graph.dense_index``;
    ``(t, t)`` always counts; candidate ids absent from the graph never match. One vectorised join over
    the pairs, restricted to the candidates and to the true classes asked for (20k candidates and
    ~270k pairs take well under a second). A true id not in the graph is an error.
    """
    index = graph.index()
    unknown = [t for t in dict.fromkeys(true_ids) if t not in index]
    if unknown:
        raise KgzslError(
            f"{len(unknown)} true classes are not in the class graph (first: {', '.join(unknown[:3])}): "
            f"is this the graph the predictions were made from?"
        )
    needed = np.array(sorted({index[t] for t in true_ids}), dtype=np.int64)
    col_nodes = np.array([index.get(c, -1) for c in column_ids], dtype=np.int64)
    pairs = np.asarray(graph.dense_index, dtype=np.int64).reshape(2, -1)
    keep = (pairs[0] != pairs[1]) & np.isin(pairs[1], needed) & np.isin(pairs[0], col_nodes[col_nodes >= 0])
    node = np.concatenate([pairs[0][keep], needed])  # every true class matches itself
    anc = np.concatenate([pairs[1][keep], needed])
    # join the (node, ancestor) pairs with the candidate columns on node (a node may fill several columns)
    order = np.argsort(col_nodes, kind="stable")
    sorted_nodes = col_nodes[order]
    lo = np.searchsorted(sorted_nodes, node, "left")
    counts = np.searchsorted(sorted_nodes, node, "right") - lo
    total = int(counts.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = order[np.repeat(lo, counts) + offsets]
    ancestors = np.repeat(anc, counts)
    by = np.lexsort((positions, ancestors))
    positions, ancestors = positions[by], ancestors[by]
    starts = np.flatnonzero(np.r_[True, ancestors[1:] != ancestors[:-1]]) if total else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], total]
    groups = {int(ancestors[a]): torch.from_numpy(positions[a:b].astype(np.int64)) for a, b in zip(starts, ends)}
    empty = torch.zeros(0, dtype=torch.long)
    return [groups.get(index[t], empty) for t in true_ids]


def hierarchical_ranks(scores: torch.Tensor, correct: list[torch.Tensor]) -> torch.Tensor:
    """1-based rank ``[B]`` of each row's best-scoring correct column (``correct[i]``: column indices
    of row i, e.g. from :func:`correct_columns`), ties counting against: the number of columns scoring
    >= the best correct score. With each ``correct[i]`` the single true column this equals
    :func:`kgzsl.recognition.scoring.ranks_of_true`.
    """
    if scores.ndim != 2:
        raise KgzslError(f"scores must be [images, classes], got shape {tuple(scores.shape)}")
    if len(correct) != scores.shape[0]:
        raise KgzslError(f"correct has {len(correct)} column sets for {scores.shape[0]} rows of scores")
    if scores.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    lengths = torch.tensor([len(c) for c in correct], dtype=torch.long)
    if (lengths == 0).any():
        row = int((lengths == 0).nonzero()[0, 0])
        raise KgzslError(f"correct[{row}] is empty: that row's true class has no candidate in its subtree")
    cols = torch.cat([torch.as_tensor(c, dtype=torch.long).reshape(-1) for c in correct])
    if cols.min() < 0 or cols.max() >= scores.shape[1]:
        raise KgzslError(f"correct refers to columns outside 0..{scores.shape[1] - 1} of scores")
    rows = torch.repeat_interleave(torch.arange(scores.shape[0]), lengths)
    best = torch.full((scores.shape[0],), -math.inf, dtype=scores.dtype)
    best = best.scatter_reduce(0, rows, scores[rows, cols], reduce="amax", include_self=True)
    return (scores >= best.view(-1, 1)).sum(dim=1)


# -------------------------------------------------------------------------------------- splits
def _label_columns(position: dict[str, int], columns: list[int], n_label_columns: int) -> dict[str, int]:
    """Each class id whose prediction row (``position``) is among the first ``n_label_columns`` candidate ``columns``:
    its column among the candidates (the images labelled with it are the ones evaluated)."""
    column_of = {c: j for j, c in enumerate(columns)}
    found = {label: column_of.get(row) for label, row in position.items()}
    return {label: j for label, j in found.items() if j is not None and j < n_label_columns}


def _labelled_rows(labels: list[str], label_column: dict[str, int]) -> tuple[list[int], torch.Tensor]:
    """The images whose label has a column in ``label_column`` (:func:`_label_columns`), and those columns."""
    rows = [i for i, label in enumerate(labels) if label in label_column]
    return rows, torch.tensor([label_column[labels[i]] for i in rows], dtype=torch.long)


#: classifier rows, one a class id (a ``[classes, D + 1]`` matrix), or a function giving those of some row numbers
Weights = torch.Tensor | Callable[[list[int]], torch.Tensor]


def _rows(weights: Weights, rows: list[int]) -> torch.Tensor:
    return weights(rows) if callable(weights) else torch.as_tensor(weights, dtype=torch.float32)[rows]


class _SplitStream:
    """One split's :func:`evaluate_split` accumulated over batches of labelled images: per image only its ranks (and
    with ``gzsl`` its :class:`GZSLStats`) are kept, never the features or the scores."""

    def __init__(self, name: str, split: list[str], class_ids: list[str], weights: Weights, seen_ids: list[str] | None,
                 with_seen: bool, graph: ClassGraph | None, ks: tuple[int, ...] = DEFAULT_KS, batch_size: int = 4096,
                 gzsl: bool = False) -> None:
        position = {c: i for i, c in enumerate(class_ids)}
        self.missing = [w for w in split if w not in position]
        split_cols = [position[w] for w in split if w in position]
        if not split_cols:
            raise KgzslError(f"none of the {len(split)} classes of split {name} has a predicted classifier: wrong predictions file?")
        columns = list(split_cols)
        if with_seen:
            if not seen_ids:
                raise KgzslError("with_seen needs the seen classes: the predictions file lists none", parameter="with_seen")
            split_set = set(split_cols)
            columns += [position[w] for w in seen_ids if w in position and position[w] not in split_set]
        self.name, self.split_size, self.with_seen, self.ks, self.batch_size = name, len(split), with_seen, ks, batch_size
        self.candidates, self.label_column = len(columns), _label_columns(position, columns, len(split_cols))
        self.weights = _rows(weights, columns)
        self.graph, self.column_ids, self.correct = graph, [class_ids[c] for c in columns], None
        if graph is not None:  # the correct columns of every split class in the graph, once
            index = graph.index()
            known = [label for label in self.label_column if label in index]
            self.correct = dict(zip(known, correct_columns(graph, known, self.column_ids)))
        self.ranks: list[torch.Tensor] = []
        self.hier: list[torch.Tensor] = []
        self.classes: set[str] = set()
        self.stats: list[GZSLStats] = []
        self.gzsl, self.pending, self.g_pending = gzsl, RowBlocks(batch_size), RowBlocks(batch_size)
        if gzsl:  # gzsl_scores' problem: the split's classes, then the seen ones
            unseen = set(split)
            gcols = split_cols + [position[w] for w in seen_ids or [] if w in position and w not in unseen]
            self.g_label_column = _label_columns(position, gcols, len(gcols))
            self.g_weights = _rows(weights, gcols)
            self.g_seen = torch.tensor([False] * len(split_cols) + [True] * (len(gcols) - len(split_cols)))

    def _correct_of(self, label: str) -> torch.Tensor:
        if label not in self.correct:
            correct_columns(self.graph, [label], self.column_ids)  # raises: the label is not in the graph
        return self.correct[label]

    def add(self, features: torch.Tensor, labels: list[str], transductive: bool = False) -> None:
        """Queue one batch of images for scoring (``transductive``: all of the split's images, refined together now)."""
        rows, truth = _labelled_rows(labels, self.label_column)
        self.classes.update(labels[i] for i in rows)
        if rows:
            chunk = torch.as_tensor(features[rows], dtype=torch.float32)
            correct = [self._correct_of(labels[i]) for i in rows] if self.correct is not None else [None] * len(rows)
            blocks = [(chunk, truth, correct)] if transductive else self.pending.add(chunk, truth, correct)
            for block in blocks:  # label propagation needs all the images at once
                self._score(*block, transductive=transductive)
        if self.gzsl:
            rows, truth = _labelled_rows(labels, self.g_label_column)
            if rows:
                for chunk, truth in self.g_pending.add(torch.as_tensor(features[rows], dtype=torch.float32), truth):
                    self.stats.append(gzsl_stats(class_scores(chunk, self.g_weights), truth, self.g_seen))

    def _score(self, chunk: torch.Tensor, truth: torch.Tensor, correct: list, transductive: bool = False) -> None:
        scores = class_scores(chunk, self.weights)
        if transductive:
            scores = transductive_scores(chunk, scores)
        self.ranks.append(ranks_of_true(scores, truth).to(torch.int32))
        if self.correct is not None:
            self.hier.append(hierarchical_ranks(scores, correct).to(torch.int32))

    def _flush(self) -> None:
        for block in self.pending.flush():
            self._score(*block)
        for chunk, truth in self.g_pending.flush():
            self.stats.append(gzsl_stats(class_scores(chunk, self.g_weights), truth, self.g_seen))

    def result(self) -> SplitResult:
        """The split's Hit@k and median ranks over every image added."""
        self._flush()
        ranks = torch.cat(self.ranks) if self.ranks else torch.zeros(0, dtype=torch.int32)
        if not len(ranks):
            raise KgzslError(f"no image has a label in split {self.name} ({self.split_size} classes): are these the right features?")
        flat = rank_metrics(ranks, self.ks)
        result = SplitResult(self.name, self.with_seen, len(ranks), len(self.classes), self.candidates, flat["hit"],
                             self.missing, median_rank=flat["median_rank"])
        if self.correct is not None:
            hier = rank_metrics(torch.cat(self.hier), self.ks)
            result.hier_hit, result.hier_median_rank = hier["hit"], hier["median_rank"]
        return result

    def gzsl_result(self, seed: int = 0, calibration_fraction: float = 0.5) -> tuple[GZSLResult, GZSLResult]:
        """:func:`evaluate_gzsl_split` over every image added, from their statistics: (test result, calibration)."""
        self._flush()
        if not self.stats:
            raise KgzslError("no image is labelled with a seen or unseen candidate class")
        stats = GZSLStats(*(torch.cat(parts) for parts in zip(*self.stats)))
        if stats.of_seen.all() or not stats.of_seen.any():
            raise KgzslError("generalized zero-shot needs images of both seen and unseen classes")
        return gzsl_on_halves(stats, calibration_fraction, seed)


def evaluate_split(
    features: torch.Tensor,
    labels: list[str],
    class_ids: list[str],
    weights: Weights,
    split: list[str],
    seen_ids: list[str] | None = None,
    with_seen: bool = False,
    ks: tuple[int, ...] = DEFAULT_KS,
    name: str = "split",
    batch_size: int = 4096,
    graph: ClassGraph | None = None,
    transductive: bool = False,
) -> SplitResult:
    """Hit@k and median rank over the images whose label is in ``split``, against the split's classes
    (+ ``seen_ids``). With ``graph`` (a :class:`kgzsl.graph.class_graph.ClassGraph` holding every split class) also
    the hierarchical Hit@k and median rank, where any candidate descending from the true class counts.
    ``transductive`` refines the scores of the split's images together (their labels are not used),
    see :func:`kgzsl.recognition.scoring.transductive_scores`."""
    stream = _SplitStream(name, split, class_ids, weights, seen_ids, with_seen, graph, ks, batch_size)
    stream.add(features, labels, transductive)
    return stream.result()


def _cell(value: float | None, fmt: str) -> str:
    return f"{'-':>7}" if value is None or value != value else format(value, fmt)


def format_table(results: list[SplitResult]) -> str:
    """A plain-text table: one row per split, Hit@k in percent, the median rank (``med``), and when any
    result has them the hierarchical Hit@1, Hit@5 and median rank (``h@1 h@5 hmed``)."""
    ks = list(results[0].hit) if results else []
    hier = any(r.hier_hit is not None for r in results)
    head = f"{'split':<16}{'cands':>7}{'images':>8}" + "".join(f"{'@' + str(k):>7}" for k in ks) + f"{'med':>7}"
    if hier:
        head += f"{'h@1':>7}{'h@5':>7}{'hmed':>7}"
    lines = [head, "-" * len(head)]
    for r in results:
        name = r.split + (" +seen" if r.with_seen else "")
        line = f"{name:<16}{r.candidates:>7}{r.images:>8}" + "".join(f"{100 * r.hit[k]:>7.1f}" for k in ks)
        line += _cell(r.median_rank, ">7.0f")
        if hier:
            h = r.hier_hit or {}
            line += "".join(_cell(100 * h[k] if k in h else None, ">7.1f") for k in (1, 5))
            line += _cell(r.hier_median_rank, ">7.0f")
        lines.append(line)
    return "\n".join(lines)


class GZSLScores(NamedTuple):
    """The generalized zero-shot problem of some images: their scores against the unseen then the seen
    candidates, each image's true column, and which columns are seen classes."""

    scores: torch.Tensor  # [images, unseen + seen candidates]
    truth: torch.Tensor  # [images], column of the true class
    seen_columns: torch.Tensor  # bool [unseen + seen candidates]


def gzsl_scores(
    features: torch.Tensor,
    labels: list[str],
    class_ids: list[str],
    weights: torch.Tensor,
    unseen_ids: list[str],
    seen_ids: list[str],
    batch_size: int = 4096,
) -> GZSLScores:
    """Score the images labelled with an unseen or seen class against both (``weights`` rows follow
    ``class_ids``; a seen id that is also unseen counts as unseen; ``batch_size`` images at a time, as
    :func:`evaluate_stream` scores them); images of other classes are left out.
    A KgzslError when no image is left, or only images of seen or only of unseen classes."""
    position = {c: i for i, c in enumerate(class_ids)}
    unseen_cols = [position[w] for w in unseen_ids if w in position]
    seen_cols = [position[w] for w in seen_ids if w in position and w not in set(unseen_ids)]
    columns = unseen_cols + seen_cols
    rows, truth = _labelled_rows(labels, _label_columns(position, columns, len(columns)))
    if not rows:
        raise KgzslError("no image is labelled with a seen or unseen candidate class")
    seen_mask = torch.tensor([False] * len(unseen_cols) + [True] * len(seen_cols))
    if seen_mask[truth].all() or not seen_mask[truth].any():
        raise KgzslError("generalized zero-shot needs images of both seen and unseen classes")
    x, w = torch.as_tensor(features, dtype=torch.float32)[rows], torch.as_tensor(weights)[columns]
    scores = torch.cat([class_scores(x[i:i + batch_size], w) for i in range(0, len(rows), batch_size)])  # as evaluate_stream
    return GZSLScores(scores, truth, seen_mask)


def evaluate_gzsl_split(
    features: torch.Tensor,
    labels: list[str],
    class_ids: list[str],
    weights: torch.Tensor,
    unseen_ids: list[str],
    seen_ids: list[str],
    calibration_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[GZSLResult, GZSLResult]:
    """Generalized zero-shot with calibrated stacking over :func:`gzsl_scores`: gamma chosen
    (:func:`kgzsl.recognition.scoring.calibrate`) on a seeded ``calibration_fraction`` of the images, accuracies
    (seen, unseen, harmonic mean) reported on the rest (:func:`kgzsl.recognition.scoring.gzsl_at_gamma`).
    Returns (test result, calibration result)."""
    scores, truth, seen_mask = gzsl_scores(features, labels, class_ids, weights, unseen_ids, seen_ids)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(truth)))
    n_cal = max(1, int(round(calibration_fraction * len(truth))))
    cal, test = order[:n_cal], order[n_cal:]
    if len(test) == 0:
        raise KgzslError("too few images to hold some out for calibration")
    chosen = calibrate(scores[cal], truth[cal], seen_mask)
    return gzsl_at_gamma(scores[test], truth[test], seen_mask, chosen.gamma), chosen


# ------------------------------------------------------------------------------ a run on its splits
@dataclass
class SplitEvaluation:
    """One split evaluated by :func:`evaluate_splits`: its Hit@k (``result``), with transduction the
    transductive Hit@k, with GZSL the test images' result at the gamma calibrated on the others."""

    result: SplitResult
    transductive: SplitResult | None = None
    gzsl: GZSLResult | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON entry of ``kgzsl evaluate``: the split's figures, then the transductive and GZSL ones."""
        entry = self.result.as_dict()
        if self.transductive is not None:
            entry["transductive"] = self.transductive.as_dict()
            entry["transductive_gain_hit@1"] = round(self.transductive.hit[1] - self.result.hit[1], 4)
        if self.gzsl is not None:
            g = self.gzsl
            entry["gzsl"] = {"gamma": g.gamma, "seen_accuracy": g.seen_accuracy, "unseen_accuracy": g.unseen_accuracy,
                             "harmonic_mean": g.harmonic_mean, "ausuc": g.auc}
        return entry


def _check_dim(features: torch.Tensor, predictions: Predictions) -> None:
    if features.shape[1] + 1 != predictions.pred.shape[1]:
        raise KgzslError(
            f"features are {features.shape[1]}-d but the predictions are {predictions.pred.shape[1] - 1}-d (+1 bias): "
            "extract features with the backbone the predictions were trained for"
        )


def _pairs(splits: Mapping[str, list[str]] | Sequence[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    return list(splits.items() if isinstance(splits, Mapping) else splits)


def _seen_ids(predictions: Predictions) -> list[str]:
    return [i for i, seen in zip(predictions.ids, predictions.seen.tolist()) if seen]


def evaluate_stream(
    batches: Iterable[tuple[torch.Tensor, list[str]]],
    predictions: Predictions,
    splits: Mapping[str, list[str]] | Sequence[tuple[str, list[str]]],
    with_seen: bool = False,
    graph: ClassGraph | None = None,
    seen_rows: str = "real",
    gzsl: bool = False,
    seed: int = 0,
    batch_size: int = 4096,
) -> list[SplitEvaluation]:
    """:func:`evaluate_splits` without transduction over images that come in batches of ``(features, labels)``, e.g.
    the shards of a feature folder (:func:`kgzsl.vision.feature_folder.iter_feature_shards`), read once for every
    split. A batch is scored and let go: per image only its ranks (with ``gzsl`` :class:`GZSLStats`) are kept, so
    memory does not grow with the features. Images are scored ``batch_size`` at a time whatever the batches, so the
    results are those of :func:`evaluate_splits`."""
    weights = partial(predictions.candidate_rows, seen_rows=seen_rows, keep=False)  # not every row copied first
    streams = [_SplitStream(name, split, predictions.ids, weights, _seen_ids(predictions), with_seen, graph,
                            batch_size=batch_size, gzsl=gzsl)
               for name, split in _pairs(splits)]
    for features, labels in batches:
        _check_dim(features, predictions)
        for stream in streams:
            stream.add(features, labels)
    return [SplitEvaluation(s.result(), gzsl=s.gzsl_result(seed)[0] if gzsl else None) for s in streams]


def add_transductive(
    evaluations: list[SplitEvaluation],
    features: torch.Tensor,
    labels: list[str],
    predictions: Predictions,
    splits: Mapping[str, list[str]] | Sequence[tuple[str, list[str]]],
    with_seen: bool = False,
    graph: ClassGraph | None = None,
    seen_rows: str = "real",
) -> None:
    """Set each split's transductive Hit@k (:func:`evaluate_split` with ``transductive``) in ``evaluations``. Label
    propagation needs all of a split's images together: this holds their features (give it only those rows)."""
    _check_dim(features, predictions)
    weights = partial(predictions.candidate_rows, seen_rows=seen_rows, keep=False)
    for evaluation, (name, split) in zip(evaluations, _pairs(splits)):
        evaluation.transductive = evaluate_split(features, labels, predictions.ids, weights, split, _seen_ids(predictions),
                                                 with_seen=with_seen, name=name + "+trans", graph=graph, transductive=True)


def evaluate_splits(
    features: torch.Tensor,
    labels: list[str],
    predictions: Predictions,
    splits: Mapping[str, list[str]] | Sequence[tuple[str, list[str]]],
    with_seen: bool = False,
    graph: ClassGraph | None = None,
    seen_rows: str = "real",
    transductive: bool = False,
    gzsl: bool = False,
    seed: int = 0,
) -> list[SplitEvaluation]:
    """Evaluate ``predictions`` on labelled ``features`` for each split (name -> unseen ids, or (name, ids) pairs), as
    ``kgzsl evaluate`` does: :func:`evaluate_split` (hierarchical too, given ``graph``); with
    ``transductive`` also its transductive form; with ``gzsl`` also :func:`evaluate_gzsl_split` (``seed``:
    its calibration/test image split). Seen classes are scored with their ``seen_rows`` classifiers.
    :func:`evaluate_stream` does the same without holding every feature."""
    _check_dim(features, predictions)
    found = evaluate_stream([(features, labels)], predictions, splits, with_seen, graph, seen_rows, gzsl, seed)
    if transductive:
        add_transductive(found, features, labels, predictions, splits, with_seen, graph, seen_rows)
    return found
