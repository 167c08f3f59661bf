"""Evaluating images that come in batches (the shards of a feature folder) as if they were scored all at once.

:class:`RowBlocks` re-cuts the batches into the fixed-size blocks that scoring every image at once would use, so the
float32 scores do not depend on the batches.

Generalized zero-shot keeps five numbers an image instead of its every score (:class:`GZSLStats`): calibrated
stacking asks of an image's scores only whether its true column is the first best once ``gamma`` is subtracted from
the seen columns, which the true score, the best of its own side (seen or unseen) before and after it, and the best
of the other side decide. The functions here give the answers of :mod:`kgzsl.recognition.scoring`'s
(``gzsl_accuracies``, ``seen_unseen_curve``, ``calibrate``) in the arithmetic of the scores given, ties included
(a tie between a seen and an unseen column goes to the unseen one: scoring puts the unseen candidates first).
``kgzsl calibrate`` fits its gamma from them too (:mod:`kgzsl.recognition.hedge.calibration`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from kgzsl.errors import KgzslError
from kgzsl.recognition.scoring import GZSLResult, best_on_curve, harmonic


class RowBlocks:
    """Rows waiting to be scored in blocks of ``size``, whatever the batches they came in: the blocks of scoring all
    the rows at once ``size`` at a time. A BLAS may round a row's float32 scores differently in a matrix of another
    height, so this keeps the scores, and all ranked from them, independent of how the images were batched."""

    def __init__(self, size: int) -> None:
        self.size, self.count = size, 0
        self.parts: list[tuple] = []

    def add(self, *columns: Any) -> list[tuple]:
        """Queue rows (tensors or lists, one row an image); every full block, taken off the queue."""
        self.parts.append(columns)
        self.count += len(columns[0])
        return [self._take(self.size) for _ in range(self.count // self.size)]

    def flush(self) -> list[tuple]:
        """What is left (less than a block), taken off the queue."""
        return [self._take(self.count)] if self.count else []

    def _take(self, n: int) -> tuple:
        joined = [c[0] if len(c) == 1 else torch.cat(c) if isinstance(c[0], torch.Tensor) else [x for part in c for x in part]
                  for c in zip(*self.parts)]
        self.parts = [tuple(c[n:] for c in joined)] if n < self.count else []
        self.count -= n
        return tuple(c[:n] for c in joined)


class GZSLStats(NamedTuple):
    """What calibrated stacking needs of each image's scores against the unseen then the seen candidates (as
    :func:`kgzsl.recognition.evaluate.gzsl_scores` orders them) instead of every score: five numbers an image."""

    true: torch.Tensor  # float32 [images]: the true column's score
    before: torch.Tensor  # best score on the true column's side (seen or unseen) left of it; -inf for none
    after: torch.Tensor  # the same right of it
    other: torch.Tensor  # best score on the other side
    of_seen: torch.Tensor  # bool [images]: the true class is a seen one

    def take(self, rows: torch.Tensor) -> GZSLStats:
        return GZSLStats(*(t[rows] for t in self))


def gzsl_stats(scores: torch.Tensor, truth: torch.Tensor, seen_columns: torch.Tensor) -> GZSLStats:
    """The :class:`GZSLStats` of score rows ``[images, candidates]`` (true columns ``truth``, seen ones ``seen_columns``)."""
    seen_columns = torch.as_tensor(seen_columns, dtype=torch.bool)
    col, t = torch.arange(scores.shape[1]).view(1, -1), truth.view(-1, 1)
    of_seen = seen_columns[truth]
    same = seen_columns.view(1, -1) == of_seen.view(-1, 1)
    low = torch.tensor(-math.inf, dtype=scores.dtype)
    best = [torch.where(mask, scores, low).amax(dim=1) for mask in (same & (col < t), same & (col > t), ~same)]
    return GZSLStats(scores.gather(1, t).view(-1), *best, of_seen)


def join_stats(parts: list[GZSLStats]) -> GZSLStats:
    """The statistics of batches of images, as one (``parts`` in image order)."""
    if not parts:
        raise KgzslError("no image is labelled with a seen or unseen candidate class")
    return GZSLStats(*(torch.cat(column) for column in zip(*parts)))


def stats_accuracies(stats: GZSLStats, gamma: float) -> tuple[float, float]:
    """:func:`kgzsl.recognition.scoring.gzsl_accuracies` from the statistics, in the same float32 arithmetic: an image
    is right when its true column is the first best after ``gamma`` leaves the seen scores (unseen columns first)."""
    g = gamma * torch.ones(())  # float32, as scoring subtracts it
    true, before, after, other, of_seen = stats
    unseen_right = (true > before) & (true >= after) & (true >= other - g)
    shifted = true - g
    seen_right = (shifted > other) & (shifted > before - g) & (shifted >= after - g)
    correct = torch.where(of_seen, seen_right, unseen_right)
    seen_acc = float(correct[of_seen].float().mean()) if of_seen.any() else 0.0
    unseen_acc = float(correct[~of_seen].float().mean()) if (~of_seen).any() else 0.0
    return seen_acc, unseen_acc


def stats_curve(stats: GZSLStats, steps: int = 101) -> list[tuple[float, float, float]]:
    """:func:`kgzsl.recognition.scoring.seen_unseen_curve` from the statistics."""
    own = torch.maximum(torch.maximum(stats.before, stats.after), stats.true)
    gap = torch.where(stats.of_seen, own, stats.other) - torch.where(stats.of_seen, stats.other, own)
    lo, hi = float(gap.min()) - 1e-6, float(gap.max()) + 1e-6
    gammas = sorted({0.0, *np.linspace(lo, hi, steps).tolist()})
    return [(g, *stats_accuracies(stats, g)) for g in gammas]


def calibrate_stats(stats: GZSLStats, steps: int = 101) -> GZSLResult:
    """:func:`kgzsl.recognition.scoring.calibrate` from the statistics: the point of the seen-unseen curve with the
    best harmonic mean (its ``gamma`` is calibrated stacking's)."""
    return best_on_curve(stats_curve(stats, steps))


def gzsl_on_halves(stats: GZSLStats, calibration_fraction: float = 0.5, seed: int = 0) -> tuple[GZSLResult, GZSLResult]:
    """:func:`kgzsl.recognition.evaluate.evaluate_gzsl_split` from the statistics: gamma calibrated on a seeded ``calibration_fraction`` of the
    images (as :func:`kgzsl.recognition.scoring.calibrate`), accuracies on the rest. (test result, calibration)."""
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(stats.true)))
    n_cal = max(1, int(round(calibration_fraction * len(stats.true))))
    cal, test = stats.take(order[:n_cal]), stats.take(order[n_cal:])
    if len(test.true) == 0:
        raise KgzslError("too few images to hold some out for calibration")
    chosen = calibrate_stats(cal)
    s, u = stats_accuracies(test, chosen.gamma)
    return GZSLResult(chosen.gamma, s, u, harmonic(s, u), stats_curve(test)), chosen
