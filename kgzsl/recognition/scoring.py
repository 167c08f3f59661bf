"""Stage 3: recognition. Image features dotted with predicted classifiers.

``score(image, class) = [feature, 1] . w_class``: the predicted weight carries the bias as its last
column, exactly as the targets were built from the CNN's ``fc`` layer. Three settings:

* standard zero-shot: candidates are the unseen classes only;
* generalized zero-shot (GZSL): seen and unseen candidates together, with *calibrated stacking*
  (Chao et al., ECCV 2016): a constant ``gamma`` is subtracted from every seen class's score, chosen
  on validation images to maximise the harmonic mean of seen and unseen accuracy;
* transductive zero-shot: the unlabelled test images refine each other's scores by label propagation
  over their mutual-nearest-neighbour graph (:func:`transductive_scores`).

:func:`candidate_scores` and :func:`top_predictions` are the building blocks of the one recognition path,
:func:`kgzsl.recognition.recognize.recognize`, which every caller goes through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from kgzsl.errors import KgzslError, check_number

if TYPE_CHECKING:
    from kgzsl.propagation.predictions import Predictions


def with_bias(features: torch.Tensor) -> torch.Tensor:
    """Append the constant-1 column that meets the bias column of the classifiers."""
    return torch.cat([features, torch.ones(features.shape[0], 1, dtype=features.dtype)], dim=1)


def class_scores(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Scores ``[B, C]`` = ``[features, 1] @ weights.T`` for features ``[B, D]`` and weights ``[C, D+1]``."""
    features = torch.as_tensor(features, dtype=torch.float32)
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if features.ndim != 2 or weights.ndim != 2:
        raise KgzslError(f"features must be [images, dim] and weights [classes, dim+1], got {tuple(features.shape)} and {tuple(weights.shape)}")
    if features.shape[1] + 1 != weights.shape[1]:
        hint = ("their targets lacked a bias column: retrain with --no-bias" if features.shape[1] == weights.shape[1]
                else "extract features with the backbone the predictions were trained for")
        raise KgzslError(
            f"image features are {features.shape[1]}-d but the predicted classifiers are {weights.shape[1] - 1}-d (+1 bias): {hint}"
        )
    return with_bias(features) @ weights.T


def ranks_of_true(scores: torch.Tensor, true_index: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's true class; ties count against (rank = #classes scoring >= the true one)."""
    true_scores = scores.gather(1, true_index.view(-1, 1))
    return (scores >= true_scores).sum(dim=1)


def hit_at_k(scores: torch.Tensor, true_index: torch.Tensor, ks: tuple[int, ...] = (1, 2, 5, 10, 20)) -> dict[int, float]:
    """Fraction of rows whose true class ranks within the top k, ties counting against."""
    ranks = ranks_of_true(scores, true_index)
    return {k: float((ranks <= k).float().mean()) if len(ranks) else 0.0 for k in ks}


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, column indices) per row, k clipped to the number of columns."""
    return scores.topk(min(k, scores.shape[1]), dim=1)


# ------------------------------------------------------------------------------------------- GZSL
@dataclass
class GZSLResult:
    """Accuracies at one calibration constant, and the whole seen-unseen curve."""

    gamma: float
    seen_accuracy: float
    unseen_accuracy: float
    harmonic_mean: float
    curve: list[tuple[float, float, float]]  # (gamma, seen acc, unseen acc)

    @property
    def auc(self) -> float:
        """Area under the seen-unseen accuracy curve (AUSUC, Chao et al. 2016)."""
        points = sorted((u, s) for _, s, u in self.curve)
        xs = np.array([0.0] + [p[0] for p in points] + [points[-1][0]])
        ys = np.array([points[0][1]] + [p[1] for p in points] + [0.0])
        return float(np.trapezoid(ys, xs)) if hasattr(np, "trapezoid") else float(np.trapz(ys, xs))


def harmonic(seen: float, unseen: float) -> float:
    return 2 * seen * unseen / (seen + unseen) if seen + unseen > 0 else 0.0


def gzsl_accuracies(scores: torch.Tensor, true_index: torch.Tensor, seen_columns: torch.Tensor, gamma: float) -> tuple[float, float]:
    """Top-1 accuracy on images of seen classes and of unseen classes after subtracting ``gamma`` from seen scores."""
    calibrated = scores - gamma * seen_columns.float().view(1, -1)
    correct = calibrated.argmax(dim=1) == true_index
    of_seen = seen_columns[true_index]
    seen_acc = float(correct[of_seen].float().mean()) if of_seen.any() else 0.0
    unseen_acc = float(correct[~of_seen].float().mean()) if (~of_seen).any() else 0.0
    return seen_acc, unseen_acc


def seen_unseen_curve(scores: torch.Tensor, true_index: torch.Tensor, seen_columns: torch.Tensor, steps: int = 101) -> list[tuple[float, float, float]]:
    """(gamma, seen acc, unseen acc) over gammas spanning every seen/unseen decision this data can take."""
    gap = scores[:, seen_columns].max(dim=1).values - scores[:, ~seen_columns].max(dim=1).values
    lo, hi = float(gap.min()) - 1e-6, float(gap.max()) + 1e-6
    gammas = sorted({0.0, *np.linspace(lo, hi, steps).tolist()})
    return [(g, *gzsl_accuracies(scores, true_index, seen_columns, g)) for g in gammas]


def calibrate(scores: torch.Tensor, true_index: torch.Tensor, seen_columns: torch.Tensor, steps: int = 101) -> GZSLResult:
    """Choose the calibrated-stacking ``gamma`` maximising the harmonic mean on these (validation) images."""
    seen_columns = torch.as_tensor(seen_columns, dtype=torch.bool)
    if seen_columns.all() or not seen_columns.any():
        raise KgzslError("generalized zero-shot needs both seen and unseen candidate classes")
    return best_on_curve(seen_unseen_curve(scores, true_index, seen_columns, steps))


def best_on_curve(curve: list[tuple[float, float, float]]) -> GZSLResult:
    """The point of a seen-unseen ``curve`` with the best harmonic mean (ties: the smallest ``|gamma|``)."""
    best = max(curve, key=lambda c: (harmonic(c[1], c[2]), -abs(c[0])))
    return GZSLResult(best[0], best[1], best[2], harmonic(best[1], best[2]), curve)


def gzsl_at_gamma(scores: torch.Tensor, true_index: torch.Tensor, seen_columns: torch.Tensor, gamma: float) -> GZSLResult:
    """Seen/unseen accuracy and harmonic mean on test images at a ``gamma`` chosen elsewhere (e.g. by
    :func:`calibrate`), with the whole seen-unseen curve."""
    seen_columns = torch.as_tensor(seen_columns, dtype=torch.bool)
    s, u = gzsl_accuracies(scores, true_index, seen_columns, gamma)
    return GZSLResult(gamma, s, u, harmonic(s, u), seen_unseen_curve(scores, true_index, seen_columns))


# ------------------------------------------------------------------------------------ transductive
def mutual_neighbours(features: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Symmetric affinity ``[B, B]`` between test images: centred cosine, kept only between mutual k-nearest
    neighbours with a positive similarity (an image with no such neighbour gets an empty row)."""
    x = torch.as_tensor(features, dtype=torch.float32)
    x = torch.nn.functional.normalize(x - x.mean(dim=0, keepdim=True), dim=1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    k = min(k, x.shape[0] - 1)
    if k < 1:
        return torch.zeros(x.shape[0], x.shape[0])
    near = torch.zeros_like(sim, dtype=torch.bool)
    near.scatter_(1, sim.topk(k, dim=1).indices, True)
    mutual = near & near.T & (sim > 0)
    return torch.where(mutual, sim, torch.zeros_like(sim))


def transductive_scores(features: torch.Tensor, scores: torch.Tensor, neighbours: int = 5, alpha: float = 0.5, iterations: int = 20) -> torch.Tensor:
    """Refine the class scores of unlabelled test images by label propagation over their mutual-kNN graph.

    Zhou et al. (NIPS 2003): ``F = (1 - alpha) (I - alpha S)^-1 Z`` with ``S = D^-1/2 W D^-1/2`` the
    normalised affinity of :func:`mutual_neighbours` and ``Z`` each image's scores standardised over the
    candidates (so that no image dominates by its feature norm); ``F`` is mapped back to each image's
    own score scale. Images of one class tend to be each other's neighbours, so a class that several
    of them rank high rises for all of them. An image with no mutual neighbour keeps its ranking, and
    no classifier is changed: only classes the images themselves score high can gain, which is
    why this cannot drag thousands of unsupported classes toward the data as a soft k-means over
    every unseen prototype did (it cost 17.6 points of Hit@5 on real photos).
    """
    scores = torch.as_tensor(scores, dtype=torch.float32)
    if not 0.0 <= alpha < 1.0:
        raise KgzslError(f"alpha must be within [0, 1), got {alpha}")
    if scores.shape[0] != torch.as_tensor(features).shape[0]:
        raise KgzslError(f"transductive scores: {scores.shape[0]} score rows for {torch.as_tensor(features).shape[0]} images")
    if scores.shape[0] < 2 or alpha == 0.0:
        return scores.clone()
    w = mutual_neighbours(features, neighbours)
    degree = w.sum(dim=1).clamp_min(1e-12).rsqrt()
    s = degree.view(-1, 1) * w * degree.view(1, -1)
    mean, std = scores.mean(dim=1, keepdim=True), scores.std(dim=1, keepdim=True).clamp_min(1e-12)
    z = (scores - mean) / std
    f = z
    for _ in range(iterations):
        f = alpha * (s @ f) + (1 - alpha) * z
    return mean + std * f / (1 - alpha)


# ------------------------------------------------------------------------------- over predictions
def candidate_mask(predictions: Predictions, candidates: str | list[str] = "unseen", where: str = "candidates") -> torch.Tensor:
    """Boolean mask over prediction rows: the classes an image may be named.

    ``"unseen"``: every class (not a structure-only node) whose real classifier was NOT used in
    training: the graph's unseen classes and any held-out seen classes (standard zero-shot).
    ``"all"``: every class, seen ones included (generalized zero-shot). A list: exactly those ids.
    """
    if isinstance(candidates, str) and candidates in ("unseen", "all"):
        mask = _named_mask(predictions, candidates).clone()
    else:
        wanted = list(candidates)
        unknown = [c for c in wanted if c not in predictions.index]
        if unknown:
            raise KgzslError(f"{where}: {len(unknown)} ids are not in the predictions (first: {', '.join(unknown[:3])})")
        mask = torch.zeros(len(predictions.ids), dtype=torch.bool)
        mask[torch.tensor([predictions.index[c] for c in wanted], dtype=torch.long)] = True
    if not mask.any():
        raise KgzslError(f"{where}: no candidate classes left")
    return mask


def _named_mask(predictions: Predictions, candidates: str) -> torch.Tensor:
    """The mask of ``"unseen"`` or ``"all"``, built once per predictions (kept in ``predictions.cache``: a warm
    one-photo predict otherwise spent 3 ms turning 23k roles into a tensor); never to be modified in place."""
    key = ("scoring.mask", candidates)
    if key not in predictions.cache:
        roles = predictions.meta.get("roles")
        is_class = (torch.tensor([r != "internal" for r in roles]) if roles
                    else torch.ones(len(predictions.ids), dtype=torch.bool))
        predictions.cache[key] = is_class & ~predictions.seen if candidates == "unseen" else is_class
    return predictions.cache[key]


def _candidate_columns(predictions: Predictions, candidates: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(the candidates' rows in ``predictions`` ``[C]``, which of them are seen classes ``[C]``), kept in
    ``predictions.cache`` for ``"unseen"`` and ``"all"``: the same tensors every call, never modified in place."""
    key = ("scoring.columns", candidates) if isinstance(candidates, str) else None
    if key is None or key not in predictions.cache:
        columns = candidate_mask(predictions, candidates).nonzero().view(-1)
        found = columns, predictions.seen.index_select(0, columns)  # seen[columns] took 3.9 ms for 20k here
        if key is None:
            return found
        predictions.cache[key] = found
    return predictions.cache[key]


def display_name(predictions: Predictions, row: int) -> str:
    """The first lemma name of a prediction row's class, or its id when the file carries no names."""
    names = predictions.meta.get("names")
    return names[row] if names else predictions.ids[row]


@dataclass
class ImagePrediction:
    """The top-k classes of one image."""

    image: str
    top: list[tuple[str, str, float]]  # (id, name, score)


def candidate_scores(
    features: torch.Tensor,
    predictions: Predictions,
    candidates: str | list[str] = "unseen",
    gamma: float = 0.0,
    transductive: bool = False,
    seen_rows: str = "real",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[B, C]`` of each feature row against the candidate classes, and those classes' rows in
    ``predictions`` (``[C]``). Seen classes are scored with their real classifiers (``seen_rows="real"``,
    where the file has them) or the predicted ones; ``gamma`` is subtracted from seen classes' scores
    (calibrated stacking); ``transductive`` first refines the unseen classifiers on these features."""
    check_number("gamma", gamma)  # NaN would rank every seen class NaN, without a word
    columns, seen_cols = _candidate_columns(predictions, candidates)
    weights = predictions.candidate_rows(columns, seen_rows)
    scores = class_scores(features, weights)
    if transductive:
        scores = transductive_scores(features, scores)
    if gamma == 0.0 and math.copysign(1.0, gamma) > 0:
        return scores, columns  # x - (+0.0 * s) is x, bit for bit (-0.0 too): no second pass over the scores
    return scores - gamma * seen_cols.float().view(1, -1), columns


def top_predictions(scores: torch.Tensor, columns: torch.Tensor, names: list[str], predictions: Predictions, top: int = 5) -> list[ImagePrediction]:
    """The ``top`` best-scoring candidates of each row of ``scores`` (from :func:`candidate_scores`)."""
    check_number("top", top, at_least=1)
    values, indices = top_k(scores, top)
    out = []
    for name, vals, rows in zip(names, values.tolist(), columns[indices].tolist()):  # rows in predictions, at once
        out.append(ImagePrediction(name, [(predictions.ids[r], display_name(predictions, r), v) for r, v in zip(rows, vals)]))
    return out
