"""The curves a calibration record keeps: the reliability diagram and the accuracy-specificity trade-off.

They are computed on the calibration images at fit time from sums over them, whatever their number: confidence bins
(:class:`kgzsl.recognition.hedge.temperature.ReliabilityBins`); the answers' information gain along each rule's sweep,
summed in the fit's answers pass, and at its fitted parameters, in one more pass after the fit
(:class:`kgzsl.recognition.hedge.rules.GainSums`); their accuracy
(:class:`kgzsl.recognition.hedge.rules.AnswerRecords`); the flat top-1 answers' sums. So a calibrated run shows them without its photos (``kgzsl explore``). A record's
``curves`` (optional: older records have none)::

    bins                            the reliability diagram's equal-width confidence bins
    reliability.before / .after     per bin (empty ones too): mean confidence, accuracy and count, at T=1 and the fitted T
    accuracy_specificity.rules.R    per rule R: its parameter sweep (SWEEPS) with the answers' mean information gain and
                                    hierarchical accuracy there, and targets: [target, gain, accuracy] per calibrated target
    accuracy_specificity.flat       the flat top-1 answers' [gain, accuracy]
    images                          how many calibration images
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgzsl.errors import KgzslError

if TYPE_CHECKING:  # storage reads records with check_curves: no torch for that
    from kgzsl.recognition.hedge.rules import AnswerRecords, GainSums
    from kgzsl.recognition.hedge.temperature import ReliabilityBins

#: the parameter sweep of each rule drawn as its accuracy-specificity curve
SWEEPS = {"threshold": [0.0] + list(np.linspace(0.02, 1.0, 50)), "darts": [0.0] + list(np.logspace(-3, 3, 49))}


class FlatAnswers:
    """The flat top-1 answers' correctness and information gain summed a block of images at a time."""

    def __init__(self) -> None:
        self.images, self.correct, self.gain = 0, 0.0, 0.0

    def add(self, correct: np.ndarray, gain: np.ndarray) -> None:
        self.images += len(correct)
        self.correct += float(np.sum(correct))
        self.gain += float(np.sum(gain))

    def point(self) -> list[float]:
        """``[mean gain, accuracy]``."""
        return [self.gain / self.images, self.correct / self.images]


def fitted_curves(records: AnswerRecords, before: ReliabilityBins, after: ReliabilityBins, flat: FlatAnswers,
                  rules: dict[str, dict[str, float]], sweeps: GainSums, targets: GainSums) -> dict[str, Any]:
    """A record's ``curves`` from a fit's passes: ``rules`` are the fitted parameters (rule -> target -> value),
    ``sweeps`` the answers' information gain summed at :data:`SWEEPS` (the answers pass), ``targets`` at ``rules``
    (a pass after the fit)."""
    trade = {}
    for rule, values in rules.items():
        fitted = sorted(values.items(), key=lambda kv: float(kv[0]))
        at = dict(zip(targets.parameters[rule].tolist(), targets.mean(rule)))
        trade[rule] = {"parameter": sweeps.parameters[rule].tolist(), "gain": sweeps.mean(rule),
                       "accuracy": [records.accuracy(rule, x) for x in sweeps.parameters[rule].tolist()],
                       "targets": [[float(t), at[float(v)], records.accuracy(rule, v)] for t, v in fitted]}
    return {"bins": before.bins, "reliability": {"before": before.table(), "after": after.table()},
            "accuracy_specificity": {"rules": trade, "flat": flat.point()}, "images": len(records)}


def check_curves(curves: Any, path: str | Path) -> dict[str, Any]:
    """A record's ``curves`` as read from ``path``, refused (KgzslError naming the file) where truncated or garbled."""
    try:
        bins = curves["bins"]
        _require(isinstance(bins, int) and bins >= 1, "bins")
        for key in ("before", "after"):
            table = curves["reliability"][key]
            _numbers(table["confidence"], f"reliability.{key}.confidence", bins)
            _numbers(table["accuracy"], f"reliability.{key}.accuracy", bins)
            _numbers(table["count"], f"reliability.{key}.count", bins)
        trade = curves["accuracy_specificity"]
        _require(isinstance(trade["rules"], dict) and trade["rules"], "accuracy_specificity.rules")
        for rule, sweep in trade["rules"].items():
            _require(rule in SWEEPS, f"accuracy_specificity.rules.{rule}")
            size = len(sweep["parameter"])
            for key in ("parameter", "gain", "accuracy"):
                _numbers(sweep[key], f"accuracy_specificity.rules.{rule}.{key}", size)
            for row in sweep["targets"]:
                _numbers(row, f"accuracy_specificity.rules.{rule}.targets", 3)
        _numbers(trade["flat"], "accuracy_specificity.flat", 2)
        _require(isinstance(curves["images"], int) and curves["images"] >= 1, "images")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise KgzslError(f"{path}: the calibration's curves are truncated or garbled ({what}): "
                         "run `kgzsl calibrate` again") from None
    return curves


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"bad {what}")


def _numbers(values: Any, what: str, size: int) -> None:
    _require(isinstance(values, list) and len(values) == size and size > 0, what)
    _require(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values), what)
