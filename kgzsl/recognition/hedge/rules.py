"""The two hedging rules (a probability threshold, and DARTS's lambda) and the searches that fit them to a target accuracy."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kgzsl.errors import KgzslError, check_number
from kgzsl.recognition.hedge.hierarchy import (
    DEFAULT_RULE,
    HedgedAnswer,
    Hierarchy,
    _rule,
)
from kgzsl.recognition.hedge.temperature import _truth, fit_temperature, softmax

#: hedging rules (see the module docstring); the threshold rule is the default: every answer then carries
#: its own calibrated probability, and it never falls back to the root where some node is likely enough






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
