"""Temperature scaling and calibration measures: softmax with a temperature fitted by NLL, ECE and reliability bins."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from kgzsl.errors import KgzslError, check_number


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


def nll_terms(scores: np.ndarray, truth: np.ndarray, temperature: float) -> np.ndarray:
    """Per image ``log sum exp(scores / T) - scores[truth] / T`` (checked float64 ``scores`` and ``truth``)."""
    z = scores / temperature
    top = z.max(axis=1)
    log_norm = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return log_norm - z[np.arange(len(truth)), truth]


def nll(scores: Any, truth: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood ``-mean log softmax(scores / T)[truth]``."""
    check_number("temperature", temperature, above=0)
    s = _scores(scores)
    return float(np.mean(nll_terms(s, _truth(truth, len(s), s.shape[1]), temperature)))


def temperature_terms(scores: np.ndarray, truth: np.ndarray, beta: float) -> np.ndarray:
    """``[f'(beta), f''(beta), f'(0), f'(inf)]`` summed over the images of ``scores`` (float64 ``[images, candidates]``,
    true columns ``truth``), for ``f(beta) = log sum exp(beta s) - beta s[truth]``, an image's NLL at ``T = 1/beta``:
    ``f'`` is the mean score under ``softmax(beta s)`` less the true score, ``f''`` the scores' variance under it (``f``
    is convex in ``beta``); at ``beta = 0`` the plain mean score, at infinity the best one. Sums over blocks of
    images add up to those over all of them: one pass over the images a block at a time."""
    true = scores[np.arange(len(truth)), truth]
    best = scores.max(axis=1)
    e = np.exp((scores - best[:, None]) * beta)
    p = e / e.sum(axis=1, keepdims=True)
    mean = (p * scores).sum(axis=1)
    var = (p * (scores - mean[:, None]) ** 2).sum(axis=1)
    return np.array([np.sum(mean - true), np.sum(var), np.sum(scores.mean(axis=1) - true), np.sum(best - true)])


#: Newton steps on ``log beta`` are at most this long (a factor e^2 of the temperature) before the bracket is known
MAX_LOG_STEP = 2.0


def search_temperature(terms: Callable[[float], Sequence[float]], low: float = 1e-4, high: float = 1e4) -> float:
    """The temperature in ``[low, high]`` minimising the NLL, given ``terms(beta)`` summed over the images
    (:func:`temperature_terms`: one pass over them a call, so few calls are made).

    Safeguarded Newton on the convex NLL in ``beta``, from ``T = 1``, stepped on ``log beta``: a step is at most
    :data:`MAX_LOG_STEP`, bisects the bracket of known derivative signs where Newton would leave it, and the search
    ends at a bound where the minimum lies beyond it (the first call tells whether ``f'`` changes sign at all: it
    does not where every image's true class scores best, and the NLL falls towards ``T = 0``), or once a step is below 1e-7 (Newton converges quadratically:
    the error left is of the order of its square). Deterministic."""
    edge_lo, edge_hi = -math.log(high), -math.log(low)  # log beta
    lo, hi = edge_lo, edge_hi  # the bracket: f' < 0 at lo and f' > 0 at hi once known
    known_lo = known_hi = False
    x = min(max(0.0, lo), hi)
    for _ in range(200):
        beta = math.exp(x)
        slope, curvature, at_zero, at_infinity = (float(v) for v in terms(beta))
        if at_infinity <= 0 or at_zero >= 0:  # f' keeps one sign: the NLL falls all the way to a bound
            return float(low if at_infinity <= 0 else high)
        if slope == 0 or not math.isfinite(slope):
            break
        if slope < 0:
            if x >= edge_hi:
                return float(low)  # still falling at the lowest temperature
            lo, known_lo = x, True
        else:
            if x <= edge_lo:
                return float(high)
            hi, known_hi = x, True
        step = -slope / curvature if curvature > 0 else math.copysign(math.inf, -slope)
        newton = math.log(beta + step) - x if beta + step > 0 else -math.inf
        if abs(newton) < 1e-7:  # converged: what is left is of the order of its square (Newton: quadratic)
            x += newton
            break
        nxt = x + min(max(newton, -MAX_LOG_STEP), MAX_LOG_STEP)
        if nxt >= hi:
            nxt = (lo + hi) / 2 if known_hi else edge_hi
        elif nxt <= lo:
            nxt = (lo + hi) / 2 if known_lo else edge_lo
        x = nxt
        if hi - lo < 1e-13:
            break
    return float(math.exp(-x))


def fit_temperature(scores: Any, truth: Any, low: float = 1e-4, high: float = 1e4) -> float:
    """The temperature ``T`` in ``[low, high]`` minimising :func:`nll` on labelled images (:func:`search_temperature`
    over them all at once)."""
    s = _scores(scores)
    y = _truth(truth, len(s), s.shape[1])
    if len(s) == 0:
        raise KgzslError("scores has no images to fit a temperature on", parameter="scores")
    return search_temperature(lambda beta: temperature_terms(s, y, beta), low, high)


def top1(probs: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the top-1 probability (confidence) and whether the top-1 is the true column."""
    p = _scores(probs, "probs")
    y = _truth(truth, len(p), p.shape[1])
    return p.max(axis=1), p.argmax(axis=1) == y


class ReliabilityBins:
    """Answers counted into equal-width confidence bins a block at a time: per bin the count and the sums of
    confidence and correctness, so a pass over any number of images holds ``3 * bins`` numbers (the one binning of
    :func:`binned_reliability` and :func:`calibration_error` too)."""

    def __init__(self, bins: int = 15) -> None:
        check_number("bins", bins, at_least=1)
        self.bins = int(bins)
        self.count = np.zeros(self.bins, dtype=np.int64)
        self.confidence = np.zeros(self.bins)
        self.correct = np.zeros(self.bins)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Count answers: their probabilities in [0, 1] and whether each is right (as :func:`top1` gives them)."""
        conf = np.asarray(confidence, dtype=np.float64).ravel()
        hit = np.asarray(correct, dtype=np.float64).ravel()
        if conf.shape != hit.shape or not np.isfinite(conf).all() or (conf.size and (conf.min() < 0 or conf.max() > 1 + 1e-9)):
            raise KgzslError(f"confidence must be {hit.size} probabilities in [0, 1], one per answer", parameter="confidence")
        which = np.clip((conf * self.bins).astype(np.int64), 0, self.bins - 1)
        self.count += np.bincount(which, minlength=self.bins)
        self.confidence += np.bincount(which, weights=conf, minlength=self.bins)
        self.correct += np.bincount(which, weights=hit, minlength=self.bins)

    def table(self) -> dict[str, list]:
        """Per bin (empty ones too) the mean ``confidence``, ``accuracy`` (0 where empty) and ``count``."""
        n = np.maximum(self.count, 1)
        return {"confidence": (self.confidence / n).tolist(), "accuracy": (self.correct / n).tolist(),
                "count": self.count.tolist()}

    def error(self) -> float:
        """The ECE of the answers counted (:func:`calibration_error`)."""
        total = int(self.count.sum())
        if total == 0:
            raise KgzslError("confidence has no answers", parameter="confidence")
        return float(np.abs(self.correct - self.confidence).sum() / total)


def binned_reliability(confidence: Any, correct: Any, bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width confidence bin: ``count``, mean ``confidence`` and ``accuracy`` (any answer kind:
    flat top-1 or hedged node, its probability and whether it is right)."""
    counted = ReliabilityBins(bins)
    counted.add(confidence, correct)
    table = counted.table()
    return [{"low": b / bins, "high": (b + 1) / bins, "count": n, "confidence": c, "accuracy": a}
            for b, (c, a, n) in enumerate(zip(table["confidence"], table["accuracy"], table["count"]))]


def calibration_error(confidence: Any, correct: Any, bins: int = 15) -> float:
    """``ECE = sum_b (n_b / n) * |accuracy_b - confidence_b|`` over equal-width confidence bins."""
    counted = ReliabilityBins(bins)
    counted.add(confidence, correct)
    return counted.error()


def expected_calibration_error(probs: Any, truth: Any, bins: int = 15) -> float:
    """Top-1 ECE of ``probs`` ``[images, candidates]``: :func:`calibration_error` of the top-1 probability."""
    return calibration_error(*top1(probs, truth), bins)
