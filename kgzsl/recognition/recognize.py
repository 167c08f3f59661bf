"""The one recognition path: features in, each image's best candidate classes (and hedged answer) out.

:class:`RecognitionOptions` holds every choice (candidate set, how many to keep, calibrated-stacking
``gamma``, transductive refinement, real or predicted seen rows, a calibrated hedger), checked once;
:func:`recognize` scores with :func:`kgzsl.recognition.scoring.candidate_scores`, ranks with
:func:`kgzsl.recognition.scoring.top_predictions` and hedges with the hedger. ``Recognizer.predict``,
``kgzsl predict`` and the demo all call it, so that there is one path to keep right and fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any

import torch

from kgzsl.errors import KgzslError, check_number
from kgzsl.propagation.predictions import SEEN_ROWS, Predictions
from kgzsl.recognition.hedge.hierarchy import HedgedAnswer
from kgzsl.recognition.hedge.rules import Hedger
from kgzsl.recognition.scoring import (
    ImagePrediction,
    candidate_scores,
    ranks_of_true,
    top_predictions,
)


@dataclass(frozen=True)
class RecognitionOptions:
    """How :func:`recognize` ranks: ``candidates`` ``"unseen"`` (standard zero-shot), ``"all"`` (generalized) or a
    list of ids; the ``top`` best kept; ``gamma`` subtracted from seen classes' scores (None: the hedger's, else 0);
    ``transductive`` label propagation among the images; seen classes scored with their ``"real"`` or
    ``"predicted"`` classifiers (``seen_rows``); a calibrated ``hedger`` adds a hedged answer per image; a
    ``temperature`` adds each kept class's probability, ``softmax(scores / temperature)`` over all the candidates.
    Checked on creation: a KgzslError names the bad parameter."""

    candidates: str | Sequence[str] = "unseen"
    top: int = 5
    gamma: float | None = None
    transductive: bool = False
    seen_rows: str = "real"
    hedger: Hedger | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.candidates, str):
            if self.candidates not in ("unseen", "all"):
                raise KgzslError(f"candidates must be 'unseen', 'all' or a list of class ids, got {self.candidates!r}",
                                 parameter="candidates")
        elif not isinstance(self.candidates, Sequence) or not all(isinstance(c, str) for c in self.candidates):
            raise KgzslError(f"candidates must be 'unseen', 'all' or a list of class ids, got {self.candidates!r}",
                             parameter="candidates")
        elif not len(self.candidates):
            raise KgzslError("candidates is an empty list: give class ids, 'unseen' or 'all'", parameter="candidates")
        if isinstance(self.top, bool) or not isinstance(self.top, Integral):
            raise KgzslError(f"top must be a whole number, got {self.top!r}", parameter="top")
        check_number("top", self.top, at_least=1)
        if self.gamma is not None:
            if isinstance(self.gamma, bool) or not isinstance(self.gamma, Real):
                raise KgzslError(f"gamma must be a number, got {self.gamma!r}", parameter="gamma")
            check_number("gamma", self.gamma)  # NaN would rank every seen class NaN, without a word
        if not isinstance(self.transductive, bool):
            raise KgzslError(f"transductive must be True or False, got {self.transductive!r}", parameter="transductive")
        if self.temperature is not None:
            if isinstance(self.temperature, bool) or not isinstance(self.temperature, Real):
                raise KgzslError(f"temperature must be a number, got {self.temperature!r}", parameter="temperature")
            check_number("temperature", self.temperature, above=0)
        if self.seen_rows not in SEEN_ROWS:
            raise KgzslError(f"seen_rows must be 'real' or 'predicted', got {self.seen_rows!r}", parameter="seen_rows")
        if self.hedger is not None:
            if not isinstance(self.hedger, Hedger):
                raise KgzslError(f"hedger must be a calibrated Hedger, got a {type(self.hedger).__name__}", parameter="hedger")
            if self.transductive:
                raise KgzslError("transductive: hedging is calibrated on scores without transductive refinement; "
                                 "leave one of them out", parameter="transductive")
            if self.gamma is not None and self.gamma != self.hedger.gamma:
                raise KgzslError(f"gamma {self.gamma:g} differs from the gamma {self.hedger.gamma:.4g} the hedger was "
                                 "calibrated with: leave gamma out (it is taken from the calibration)", parameter="gamma")

    @property
    def effective_gamma(self) -> float:
        """The gamma scores carry: the one given, else the hedger's, else 0."""
        if self.gamma is not None:
            return float(self.gamma) or 0.0  # never -0.0
        return self.hedger.gamma if self.hedger is not None else 0.0


@dataclass(frozen=True)
class RankedImage:
    """One image's best candidate classes, best first (ids, names, scores), its hedged answer (with a hedger)
    and, given its true class, that class's rank among the candidates (1-based, ties counting against)."""

    image: str
    ids: list[str]
    names: list[str]
    scores: list[float]
    hedged: HedgedAnswer | None = None
    true_rank: int | None = None
    probabilities: list[float] | None = None

    @property
    def top(self) -> list[tuple[str, str, float]]:
        """``(id, name, score)`` of each kept class, best first."""
        return list(zip(self.ids, self.names, self.scores))


def recognize(features: Any, names: Sequence[str], predictions: Predictions, options: RecognitionOptions | None = None,
              truth: Sequence[str] | None = None) -> list[RankedImage]:
    """Rank ``options.candidates`` for each row of ``features`` ``[images, D]`` (named by ``names``) with the
    classifiers of ``predictions``; ``truth`` (each image's class id) adds its rank. One :class:`RankedImage`
    per row, in order; the full score matrix is not kept."""
    options = options if options is not None else RecognitionOptions()
    if not isinstance(options, RecognitionOptions):
        raise KgzslError(f"options must be RecognitionOptions, got a {type(options).__name__}", parameter="options")
    features = torch.as_tensor(features, dtype=torch.float32)
    if features.ndim != 2 or features.shape[0] != len(names):
        raise KgzslError(f"features must be [images, D] with one row per name: got {tuple(features.shape)} for "
                         f"{len(names)} names", parameter="features")
    scores, columns = candidate_scores(features, predictions, options.candidates, options.effective_gamma,
                                       options.transductive, options.seen_rows)
    rows = top_predictions(scores, columns, list(names), predictions, options.top)
    hedged: list[HedgedAnswer | None] = [None] * len(rows)
    if options.hedger is not None:
        _check_hedger_candidates(options.hedger, predictions, columns)
        hedged = list(options.hedger.predict(scores))
    ranks: list[int | None] = [None] * len(rows)
    if truth is not None:
        ranks = _true_ranks(scores, columns, predictions, truth)
    found = [_ranked(row, answer, rank) for row, answer, rank in zip(rows, hedged, ranks)]
    if options.temperature is not None:
        log_norm = torch.logsumexp(scores.double() / options.temperature, dim=1).tolist()
        found = [replace(r, probabilities=[math.exp(v / options.temperature - z) for v in r.scores])
                 for r, z in zip(found, log_norm)]
    return found


def predict_features(
    features: Any,
    names: Sequence[str],
    predictions: Predictions,
    candidates: str | Sequence[str] = "unseen",
    top: int = 5,
    gamma: float = 0.0,
    transductive: bool = False,
    seen_rows: str = "real",
) -> list[ImagePrediction]:
    """:func:`recognize` with its options as arguments, each image's top as ``(id, name, score)`` tuples."""
    options = RecognitionOptions(candidates, top, gamma, transductive, seen_rows)
    return [ImagePrediction(r.image, r.top) for r in recognize(features, names, predictions, options)]


def _ranked(row: ImagePrediction, hedged: HedgedAnswer | None, rank: int | None) -> RankedImage:
    return RankedImage(row.image, [t[0] for t in row.top], [t[1] for t in row.top], [t[2] for t in row.top], hedged, rank)


def _check_hedger_candidates(hedger: Hedger, predictions: Predictions, columns: torch.Tensor) -> None:
    """Refuse a hedger calibrated over another candidate set than the one scored (the candidates' ids kept in
    ``predictions.cache``: listing 20k of them cost a warm hedged one-photo predict 16 ms)."""
    key = ("recognize.ids", columns.numpy().tobytes())
    if key not in predictions.cache:
        predictions.cache[key] = [predictions.ids[c] for c in columns.tolist()]
    ids = predictions.cache[key]
    if ids != hedger.hierarchy.candidate_ids:
        raise KgzslError(f"hedger: calibrated over {len(hedger.hierarchy.candidate_ids)} candidate classes, but these "
                         f"options score {len(ids)} others: use the candidate set it was calibrated for", parameter="hedger")


def _true_ranks(scores: torch.Tensor, columns: torch.Tensor, predictions: Predictions, truth: Sequence[str]) -> list[int | None]:
    """The rank of each image's true class among the candidates (KgzslError where it is not one)."""
    if len(truth) != scores.shape[0]:
        raise KgzslError(f"truth: {len(truth)} classes for {scores.shape[0]} images", parameter="truth")
    column_of = {c: j for j, c in enumerate(columns.tolist())}
    outside = [t for t in truth if predictions.index.get(t) not in column_of]
    if outside:
        raise KgzslError(f"truth: {len(outside)} true classes are not candidates (first: {outside[0]})", parameter="truth")
    true_columns = torch.tensor([column_of[predictions.index[t]] for t in truth], dtype=torch.long)
    return [int(r) for r in ranks_of_true(scores, true_columns)]
