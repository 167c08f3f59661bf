"""The two hedging rules (a probability threshold, and DARTS's lambda) and the searches that fit them to a target accuracy."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from kgzsl.errors import KgzslError, check_number
from kgzsl.recognition.hedge.hierarchy import (
    DEFAULT_RULE,
    PROBABILITY_SLACK,
    HedgedAnswer,
    Hierarchy,
    _rule,
)
from kgzsl.recognition.hedge.temperature import _truth, fit_temperature, softmax

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
    (:data:`SEARCHES` over their :class:`AnswerRecords`; ``steps``: its bisection steps, default the search's own)."""
    _rule(rule)
    records = AnswerRecords(hierarchy)
    records.add(posteriors, _calibration_truth(hierarchy, posteriors, truth))
    return records.fit(rule, target, steps)


def _calibration_truth(hierarchy: Hierarchy, posteriors: np.ndarray, truth: Any) -> np.ndarray:
    if len(posteriors) == 0:
        raise KgzslError("no calibration images to fit on", parameter="posteriors")
    return _truth(truth, len(posteriors), len(hierarchy.candidate_ids))


def _check_target(target: float) -> None:
    check_number("target", target, above=0)
    if target > 1:
        raise KgzslError(f"target must be at most 1 (an accuracy), got {target:g}", parameter="target")


class AnswerRecords:
    """What the rules need of each calibration image, instead of its every posterior: where, as a rule's parameter
    grows, its answer turns from right to wrong or back (a few places an image, against 20k posteriors), so that
    :meth:`accuracy` is the accuracy of the whole posteriors, and :meth:`add` takes images a block at a time (a pass
    over a feature folder).

    Both rules answer one of the image's *records*: the answer columns, in order of preference (information gain,
    then column), whose posterior beats every one before them (and the root-like one). Under the threshold rule the
    first record whose posterior reaches the threshold, else column 0 (none root-like), as
    :meth:`Hierarchy.choose_above`: kept are the posteriors where its correctness changes, compared as it compares
    them, so float for float. Under DARTS the record maximising ``(gain + lambda) * posterior`` (any other column is
    matched by a record with at least its gain and posterior), as :meth:`Hierarchy.choose`: at ``lambda = 0``, then
    along the upper envelope of these lines, kept are the pairs of lines where its correctness changes, compared as it
    compares them (float for float but where three lines meet within float noise).

    Every move of a block's answers (right or wrong) is found too, and handed to a :class:`GainSums` for the
    answers' information gain at fixed parameters (the accuracy-specificity curve a calibration keeps), never kept."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy
        self.order = np.lexsort((np.arange(len(hierarchy.gain)), -hierarchy.gain))  # preference: gain, then column
        self.root_at = np.flatnonzero(hierarchy.root_like[self.order])  # the root-like column's place there, if any
        self.parts: dict[str, list[tuple[np.ndarray, ...]]] = {key: [] for key in ("threshold", "darts")}
        self.first: dict[str, list[np.ndarray]] = {key: [] for key in self.parts}
        self.counts: dict[str, list[np.ndarray]] = {key: [] for key in self.parts}
        self._joined: dict[str, tuple[np.ndarray, ...]] | None = None

    def add(self, posteriors: np.ndarray, truth: np.ndarray, gains: GainSums | None = None) -> None:
        """Record images: their answer posteriors ``[images, answers]`` and true candidate columns (and their
        answers' information gain in ``gains``)."""
        n = len(posteriors)
        for rule, (images, values, first, moves) in self.changes(posteriors, truth).items():
            self._keep(rule, images, values, first, n)
            if gains is not None:
                gains.add_moves(rule, n, *moves)
        self._joined = None

    def changes(self, posteriors: np.ndarray, truth: np.ndarray) -> dict[str, tuple[Any, ...]]:
        """A block of images' turns and moves, kept nowhere: per rule the image of each turn, the turns (as
        :meth:`accuracy` compares them), whether each image's answer at 0 is right and its ``moves``: every change of
        answer as the parameter grows (the same values), with the change of information gain, and the summed
        information gain of the answers at 0."""
        h, n = self.hierarchy, len(posteriors)
        ranked = posteriors[:, self.order]
        beats = np.empty(ranked.shape, dtype=bool)
        beats[:, :1] = True
        np.greater(ranked[:, 1:], np.maximum.accumulate(ranked, axis=1)[:, :-1], out=beats[:, 1:])
        beats[:, self.root_at] = True
        rows, at = np.nonzero(beats)
        columns, post = self.order[at], ranked[rows, at]
        truth = np.asarray(truth, dtype=np.int64)
        right = h.correct(columns, truth[rows])
        counts = np.bincount(rows, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        # threshold: where the next record (or, none root-like, column 0 after the last) is right where this is not
        turns = np.flatnonzero((right[1:] != right[:-1]) & (rows[1:] == rows[:-1]))
        last = starts + counts - 1
        if not len(self.root_at):
            last = last[right[last] != h.correct(np.zeros(n, dtype=np.int64), truth)]
            turns = np.sort(np.concatenate([turns, last]))
        steps = np.flatnonzero(rows[1:] == rows[:-1])  # the answer moves to the next record as the threshold passes
        after = columns[steps + 1]
        if not len(self.root_at):  # ... and from the last record to column 0
            steps, after = np.concatenate([steps, starts + counts - 1]), np.concatenate([after, np.zeros(n, np.int64)])
        moved = ((post[steps],), h.gain[after] - h.gain[columns[steps]], float(np.sum(h.gain[columns[starts]])))
        found = {"threshold": (rows[turns], (post[turns],), right[starts], moved)}
        # DARTS: the records as lines, padded to [images, longest]
        place = np.arange(len(rows)) - starts[rows]
        shape = (n, int(counts.max()) if n else 0)
        slope, gain = np.full(shape, -1.0), np.zeros(shape)
        col, hit = np.full(shape, np.iinfo(np.int64).max), np.zeros(shape, dtype=bool)
        slope[rows, place], gain[rows, place], col[rows, place], hit[rows, place] = post, h.gain[columns], columns, right
        images, lines, first, moves, start = _envelope_turns(gain, slope, col, hit)
        found["darts"] = (images, lines, first, (moves, h.gain[moves[1]] - h.gain[moves[0]], float(np.sum(h.gain[start]))))
        return found

    def _keep(self, rule: str, images: np.ndarray, values: tuple[np.ndarray, ...], first: np.ndarray, n: int) -> None:
        self.parts[rule].append(values)
        self.first[rule].append(np.asarray(first, dtype=bool))
        self.counts[rule].append(np.bincount(images, minlength=n).astype(np.int32))

    def __len__(self) -> int:
        return sum(len(first) for first in self.first["threshold"])

    def _arrays(self, rule: str) -> tuple[np.ndarray, ...]:
        if self._joined is None:
            if not len(self):
                raise KgzslError("no calibration images to fit on", parameter="posteriors")
            self._joined = {}
            for key in self.parts:
                values = tuple(np.concatenate(column) for column in zip(*self.parts[key]))
                first, counts = np.concatenate(self.first[key]), np.concatenate(self.counts[key])
                self.parts[key], self.first[key], self.counts[key] = [values], [first], [counts]
                ends = np.cumsum(counts, dtype=np.int64)
                self._joined[key] = (values, first, ends - counts, ends)
        return self._joined[rule]

    def accuracy(self, rule: str, parameter: float) -> float:
        """The share of the images whose answer under ``rule`` with ``parameter`` (threshold or lambda) is right."""
        values, first, starts, ends = self._arrays(_rule(rule))
        passed = _passed(self.hierarchy, rule, values, _check_parameter(rule, parameter))
        done = np.concatenate([[0], np.cumsum(passed, dtype=np.int64)])
        return float((first ^ ((done[ends] - done[starts]) % 2 == 1)).mean())

    def fit(self, rule: str, target: float, steps: int | None = None) -> float:
        """:func:`fit_rule` on the recorded images."""
        search = SEARCHES[_rule(rule)]
        accuracy = lambda value: self.accuracy(rule, value)  # noqa: E731
        return search(accuracy, target) if steps is None else search(accuracy, target, steps)


class GainSums:
    """The information gain (bits) of the images' answers under each rule summed at fixed parameter values (a sweep,
    the fitted targets), a block of images at a time: ``parameters`` numbers whatever the number of images. Fed the
    moves :meth:`AnswerRecords.add` finds, or images by :meth:`add`."""

    def __init__(self, hierarchy: Hierarchy, parameters: dict[str, Sequence[float]]) -> None:
        self.hierarchy, self._records = hierarchy, None
        self.parameters = {_rule(rule): np.array([_check_parameter(rule, v) for v in values], dtype=np.float64)
                           for rule, values in parameters.items()}
        self.sums = {rule: np.zeros(len(values)) for rule, values in self.parameters.items()}
        self.images = {rule: 0 for rule in self.parameters}

    def add(self, posteriors: np.ndarray, truth: np.ndarray) -> None:
        """Count images: their answer posteriors ``[images, answers]`` and true candidate columns."""
        if self._records is None:
            self._records = AnswerRecords(self.hierarchy)
        for rule, (_, _, _, moves) in self._records.changes(posteriors, truth).items():
            self.add_moves(rule, len(posteriors), *moves)

    def add_moves(self, rule: str, images: int, values: tuple[np.ndarray, ...], delta: np.ndarray, start: float) -> None:
        """Count ``images`` by their answers' moves (:meth:`AnswerRecords.changes`): the gain of their answers at 0,
        ``start``, plus each move's change ``delta`` where a parameter has passed it."""
        if rule not in self.parameters:
            return
        grid = self.parameters[rule]
        for lo in range(0, len(delta), _MOVES_AT_ONCE):  # [moves, parameters] at a time
            chunk = tuple(v[lo:lo + _MOVES_AT_ONCE, None] for v in values)
            passed = _passed(self.hierarchy, rule, chunk, grid[None, :])
            self.sums[rule] += delta[lo:lo + _MOVES_AT_ONCE] @ passed
        self.sums[rule] += start
        self.images[rule] += images

    def mean(self, rule: str) -> list[float]:
        """The answers' mean information gain at each of the rule's parameters."""
        if not self.images[rule]:
            raise KgzslError("no calibration images to fit on", parameter="posteriors")
        return (self.sums[rule] / self.images[rule]).tolist()


#: moves compared with a rule's parameters at a time (a block of 128 images makes ~4k; [moves, parameters] floats: ~3 MB)
_MOVES_AT_ONCE = 1 << 13


def _check_parameter(rule: str, parameter: float) -> float:
    check_number("threshold" if rule == "threshold" else "lam", parameter, at_least=0)
    return float(parameter)


def _passed(hierarchy: Hierarchy, rule: str, values: tuple[np.ndarray, ...], parameter: Any) -> np.ndarray:
    """Which of the changes ``values`` (a record's posterior, or two lines' columns and slopes) ``parameter`` (a
    number or an array broadcast with them) has passed, compared as :meth:`Hierarchy.choose_above` or
    :meth:`Hierarchy.choose` compares."""
    if rule == "threshold":
        return ~(values[0] >= parameter - PROBABILITY_SLACK)
    (left, right), (low, high) = values[:2], values[2:4]
    gain = hierarchy.gain
    before, after = (gain[left] + parameter) * low, (gain[right] + parameter) * high
    return (after > before) | ((after == before) & (right < left))


def _envelope_turns(gain: np.ndarray, slope: np.ndarray, column: np.ndarray, right: np.ndarray
                    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """DARTS along lambda >= 0 for lines ``(gain + lambda) * slope`` ``[images, lines]`` (padding: slope -1), ties to
    the lower ``column``: where the best line turns from right to wrong or back. Returns the image of each turn (by
    image, then lambda), the columns and slopes of the lines before and after it, and whether each image's best line
    at ``lambda = 0`` is right (found as :meth:`Hierarchy.choose` finds it); then the same columns and slopes for
    every move of the best line (right or wrong), and each image's best column at ``lambda = 0``."""
    n = len(slope)
    at_zero = gain * slope
    best = np.where(at_zero == at_zero.max(axis=1, keepdims=True), column, np.iinfo(np.int64).max).argmin(axis=1)
    every = np.arange(n)
    first, start = right[every, best], column[every, best]
    now, state = np.zeros(n), first.copy()
    turns: list[tuple[np.ndarray, ...]] = []
    moves: list[tuple[np.ndarray, ...]] = []
    active = every if slope.shape[1] else every[:0]
    while len(active):
        k = best[active]
        s0, i0 = slope[active, k][:, None], at_zero[active, k][:, None]
        later = slope[active] > s0
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = np.where(later, np.maximum((i0 - at_zero[active]) / (slope[active] - s0), now[active][:, None]), np.inf)
        soonest = cross.min(axis=1)
        going = np.isfinite(soonest)
        active, cross, soonest = active[going], cross[going], soonest[going]
        nxt = np.where(cross == soonest[:, None], slope[active], -np.inf).argmax(axis=1)  # the steepest crossing there
        moves.append((column[active, best[active]], column[active, nxt], slope[active, best[active]], slope[active, nxt]))
        turned = right[active, nxt] != state[active]
        was, at = active[turned], nxt[turned]
        turns.append((was, column[was, best[was]], column[was, at], slope[was, best[was]], slope[was, at]))
        best[active], now[active], state[active] = nxt, soonest, right[active, nxt]
    images, left, right_, low, high = (np.concatenate(c) for c in zip(*turns)) if turns else (
        np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
    order = np.argsort(images, kind="stable")
    moved = [np.concatenate(c) for c in zip(*moves)] if moves else [np.zeros(0, dtype=np.int64)] * 2 + [np.zeros(0)] * 2
    return (images[order], (left[order].astype(np.int32), right_[order].astype(np.int32), low[order], high[order]), first,
            (moved[0].astype(np.int32), moved[1].astype(np.int32), moved[2], moved[3]), start)


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
