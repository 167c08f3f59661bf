"""Scores over a user's labels as probabilities: ``softmax(score / T)`` with the run's calibrated temperature.

``kgzsl calibrate`` fits ``T`` on labelled photos (``hedge.json``; ``hedge-all.json`` for the generalized setting,
with the calibrated-stacking gamma that seen classes' scores carry); the default runs come with one
(``data/calibration``). An uncalibrated run uses :data:`UNCALIBRATED_TEMPERATURE` and says so once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from kgzsl.recognition.hedge.storage import hedge_file, run_calibration
from kgzsl.recognition.hedge.temperature import softmax

log = logging.getLogger("kgzsl")

#: the temperature of an uncalibrated run: the raw scores as logits
UNCALIBRATED_TEMPERATURE = 1.0
_TOLD: set[str] = set()  # the runs already said to be uncalibrated (once a process)


@dataclass(frozen=True)
class LabelTemperature:
    """The softmax temperature of label probabilities, the gamma seen classes' scores carry, and where both came
    from (``source``: the calibration file, or None for an uncalibrated run)."""

    temperature: float
    gamma: float
    source: str | None

    @property
    def calibrated(self) -> bool:
        return self.source is not None

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "gamma": self.gamma, "calibration": self.source}


def label_temperature(run: Any, with_seen: bool = False, warn: bool = True) -> LabelTemperature:
    """The run's calibrated temperature: the generalized calibration (``hedge-all.json``, with its gamma) where the
    labels include classes the run trained on (``with_seen``) and the run has one, else ``hedge.json``'s (gamma 0);
    an uncalibrated run gets :data:`UNCALIBRATED_TEMPERATURE`, with one warning a run and process (``warn=False``:
    the caller says it with :func:`warn_uncalibrated` once it has results, so an input refused later gets one line)."""
    for candidates in (["all", "unseen"] if with_seen else ["unseen"]):
        record = run_calibration(run, candidates)
        if record is not None and record.get("temperature"):
            gamma = float(record.get("gamma", 0.0)) if candidates == "all" else 0.0
            return LabelTemperature(float(record["temperature"]), gamma, str(run.folder / hedge_file(candidates)))
    found = LabelTemperature(UNCALIBRATED_TEMPERATURE, 0.0, None)
    if warn:
        warn_uncalibrated(run, found)
    return found


def warn_uncalibrated(run: Any, temperature: LabelTemperature) -> None:
    """Say once a run and process that ``run`` has no calibrated temperature (nothing where it has one)."""
    key = str(run.folder)
    if temperature.calibrated or key in _TOLD:
        return
    _TOLD.add(key)
    log.warning("run %s is not calibrated: probabilities are softmax(score / %g) over the candidates; `kgzsl "
                "calibrate` fits the temperature", run.source, temperature.temperature)


def label_probabilities(scores: Any, temperature: float) -> np.ndarray:
    """Row-wise ``softmax(scores / temperature)`` (float64 ``[images, labels]``, each row summing to 1)."""
    return softmax(scores, temperature)
