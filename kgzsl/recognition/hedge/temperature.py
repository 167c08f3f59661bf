"""Temperature scaling and calibration measures: softmax with a temperature fitted by NLL, ECE and reliability bins."""

from __future__ import annotations

import math
from typing import Any

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
