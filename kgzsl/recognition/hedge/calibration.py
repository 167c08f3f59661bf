"""Fitting a run's hedging on labelled photos: gamma (generalized setting), then the temperature, then every rule."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from kgzsl.errors import KgzslError, check_number
from kgzsl.graph.class_graph import ClassGraph
from kgzsl.recognition.hedge.hierarchy import DEFAULT_RULE, RULES, Hierarchy, _rule
from kgzsl.recognition.hedge.rules import Hedger, fit_rule
from kgzsl.recognition.hedge.storage import (
    DEFAULT_TARGETS,
    HEDGE_CANDIDATES,
    HEDGE_FORMAT,
    HEDGE_RULE_TEXT,
    HEDGE_VERSION,
    _target_key,
    candidate_digest,
    hedge_file,
    run_calibration,
    write_calibration,
)
from kgzsl.recognition.hedge.temperature import (
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
    top1,
)
from kgzsl.recognition.scoring import (
    calibrate,
    candidate_mask,
    candidate_scores,
)


def check_calibration_labels(predictions: Any, labels: Sequence[str], where: str = "the features",
                             candidates: str = HEDGE_CANDIDATES) -> None:
    """Refuse labels that are not candidates: unknown to the run, not a candidate class (a structure-only node)
    or, for ``"unseen"``, seen-and-trained. KgzslError naming ``features`` and the first offender."""
    if not len(labels):
        raise KgzslError(f"features: {where} hold no images to calibrate on", parameter="features")
    hedge_file(candidates)  # a calibratable candidate set
    mask = candidate_mask(predictions, candidates)
    unknown = sorted({w for w in labels if w not in predictions.index})
    if unknown:
        raise KgzslError(f"features: {len(unknown)} labels of {where} are not classes of the run (first: {unknown[0]}): "
                         "label images by class id (e.g. wnid folders)", parameter="features")
    trained = sorted({w for w in labels if bool(predictions.seen[predictions.index[w]])})
    if trained and candidates == "unseen":
        raise KgzslError(f"features: {len(trained)} classes of {where} were seen in training, their real classifier "
                         f"used (first: {trained[0]}): calibrate on images of held-out or unseen classes only "
                         "(or calibrate the generalized setting, candidates all)", parameter="features")
    outside = sorted({w for w in labels if not bool(mask[predictions.index[w]])})
    if outside:
        raise KgzslError(f"features: {len(outside)} classes of {where} are not candidate classes (first: {outside[0]}, "
                         "a structure-only node)", parameter="features")


def run_candidates(predictions: Any, candidates: str = HEDGE_CANDIDATES) -> tuple[list[str], Any]:
    """The ids of the run's candidates for hedging (``"unseen"`` or ``"all"``) and their prediction rows."""
    hedge_file(candidates)  # a calibratable candidate set
    columns = candidate_mask(predictions, candidates).nonzero().view(-1)
    return [predictions.ids[int(c)] for c in columns], columns


def seen_columns(predictions: Any, candidates: str) -> np.ndarray | None:
    """Which candidate columns are seen classes, for calibrated stacking (``"all"``); None for ``"unseen"``."""
    return predictions.seen[run_candidates(predictions, "all")[1]].numpy() if candidates == "all" else None


def _check_targets(targets: Sequence[float]) -> list[float]:
    for target in targets:
        check_number("targets", target, above=0, meaning=" (an accuracy in (0, 1])")
        if target > 1:
            raise KgzslError(f"targets must be accuracies in (0, 1], got {target:g}", parameter="targets")
    if not len(targets):
        raise KgzslError("targets is empty: give target accuracies, e.g. 0.5 0.7 0.9", parameter="targets")
    return sorted(set(float(t) for t in targets))


def fit_gamma(task: HedgeTask, seen: np.ndarray) -> float:
    """Calibrated stacking: the ``gamma`` maximising the harmonic mean of seen and unseen top-1 accuracy on the
    calibration images (:func:`kgzsl.recognition.scoring.calibrate`); they must show both seen and unseen classes."""
    of_seen = seen[task.truth]
    if of_seen.all() or not of_seen.any():
        kind = "seen" if of_seen.all() else "unseen"
        raise KgzslError(f"features: every calibration image is of a {kind} class: fitting the generalized setting's gamma "
                         "needs images of both seen (trained) and unseen classes (or give gamma)", parameter="features")
    return float(calibrate(torch.from_numpy(task.scores), torch.from_numpy(task.truth), torch.from_numpy(seen)).gamma)


def fit_hedging(task: HedgeTask, targets: Sequence[float] = DEFAULT_TARGETS, seen: np.ndarray | None = None,
                gamma: float | None = None) -> tuple[HedgeTask, dict[str, Any]]:
    """Fit hedged answers on a calibration task: with ``seen`` (which candidate columns are seen classes: the
    generalized setting) first the calibrated-stacking ``gamma`` (:func:`fit_gamma`, unless given), then the
    temperature, then each rule's parameter per target. Returns the task stacked and calibrated, and
    ``gamma``, ``temperature``, ``rules`` (rule -> target -> parameter) and ``reached`` (their accuracy there)."""
    wanted = _check_targets(targets)
    if seen is None:
        gamma = 0.0
    else:
        if gamma is not None:
            check_number("gamma", gamma)
        gamma = fit_gamma(task, seen) if gamma is None else float(gamma)
        task = task.stacked(gamma, seen)
    temperature = fit_temperature(task.scores, task.truth)
    task.calibrate(temperature)
    rules: dict[str, dict[str, float]] = {}
    reached: dict[str, dict[str, float]] = {}
    for rule in RULES:
        rules[rule], reached[rule] = {}, {}
        for target in wanted:
            value = fit_rule(task.hierarchy, task.post, task.truth, target, rule)
            rules[rule][_target_key(target)] = value
            reached[rule][_target_key(target)] = float(task.stats(task.answers(value, rule))["correct"].mean())
    return task, {"gamma": float(gamma), "temperature": temperature, "rules": rules, "reached": reached}


def fit_calibration(run: Any, graph: ClassGraph, features: Any, labels: Sequence[str],
                    targets: Sequence[float] = DEFAULT_TARGETS, feature_folder: str | None = None,
                    candidates: str = HEDGE_CANDIDATES, gamma: float | None = None
                    ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Fit, on labelled features, the temperature and each rule's parameter per target accuracy (and, for
    candidates ``"all"``, the calibrated-stacking ``gamma`` unless given). Returns the calibration record and the
    flat top-1 (confidence, correct) pairs before and after the temperature, for a reliability diagram."""
    _check_targets(targets)  # before any scoring
    where = f"feature folder {feature_folder}" if feature_folder else "the features"
    task = run_task(run, graph, features, labels, where=where, candidates=candidates)
    seen = seen_columns(run.predictions, candidates)
    task, fitted = fit_hedging(task, targets, seen, gamma)
    raw, temperature, params, reached = task.scores, fitted["temperature"], fitted["rules"], fitted["reached"]
    record = {
        "format": HEDGE_FORMAT, "version": HEDGE_VERSION, "temperature": temperature, "gamma": fitted["gamma"],
        "rules": params, "default_rule": DEFAULT_RULE, "calibration_accuracy": reached, "candidates": candidates,
        "candidate_rule": HEDGE_RULE_TEXT[candidates], "candidate_count": len(task.hierarchy.candidate_ids),
        "candidate_sha256": candidate_digest(task.hierarchy.candidate_ids), "images": len(task.truth),
        "classes": len(set(labels)), "features": feature_folder,
        "ece_before": expected_calibration_error(softmax(raw, 1.0), task.truth),
        "ece_after": expected_calibration_error(softmax(raw, temperature), task.truth),
        "nll_before": nll(raw, task.truth, 1.0), "nll_after": nll(raw, task.truth, temperature),
    }
    curves = {"flat top-1, T=1": top1(softmax(raw, 1.0), task.truth),
              f"flat top-1, T={temperature:.3g}": top1(task.probs, task.truth)}
    return record, curves


def calibrate_run(run: Any, graph: ClassGraph, features: Any, labels: Sequence[str], targets: Sequence[float] = DEFAULT_TARGETS,
                  feature_folder: str | None = None, candidates: str = HEDGE_CANDIDATES,
                  gamma: float | None = None) -> dict[str, Any]:
    """:func:`fit_calibration`, then the record written as the run's calibration file (:func:`hedge_file`,
    atomically). Returns the record."""
    record, _ = fit_calibration(run, graph, features, labels, targets, feature_folder, candidates, gamma)
    write_calibration(run, record)
    return record


def run_hedger(run: Any, graph: ClassGraph, target: float, candidates: str = HEDGE_CANDIDATES, rule: str | None = None) -> Hedger:
    """The :class:`Hedger` of a calibrated run for accuracy ``target`` over ``candidates`` (``rule``: default the
    calibration's): KgzslError if the run has no calibration for them (run ``kgzsl calibrate``), the target
    was not calibrated (naming those that were), or the run's candidate set is not the one calibrated."""
    check_number("hedge", target, above=0)
    record = run_calibration(run, candidates)
    if record is None:
        flag = "" if candidates == HEDGE_CANDIDATES else f" --candidates {candidates}"
        raise KgzslError(f"hedge: run {run.source} is not calibrated for candidates {candidates} (no {hedge_file(candidates)}): "
                         f"run `kgzsl calibrate --features FEATS --predictions {run.source}{flag}` first", parameter="hedge")
    rule = _rule(rule or record["default_rule"])
    if rule not in record["rules"]:
        raise KgzslError(f"hedge: rule {rule} was not calibrated for run {run.source} (calibrated: "
                         f"{', '.join(record['rules'])}): run `kgzsl calibrate` again", parameter="hedge")
    values, key = record["rules"][rule], _target_key(target)
    if key not in values:
        raise KgzslError(f"hedge: target {key} was not calibrated for run {run.source}; calibrated targets: "
                         f"{', '.join(sorted(values, key=float))} (or rerun `kgzsl calibrate --targets ...`)", parameter="hedge")
    ids, _ = run_candidates(run.predictions, candidates)
    if candidate_digest(ids) != record.get("candidate_sha256"):
        raise KgzslError(f"hedge: the calibration in {run.folder} is for another candidate set than the run's: "
                         "run `kgzsl calibrate` again", parameter="hedge")
    return Hedger(Hierarchy(graph, ids), record["temperature"], values[key], float(target), rule, record.get("gamma", 0.0))


# ------------------------------------------------------------------------------------ evaluation
class HedgeTask:
    """One candidate set with labelled images: raw ``scores`` ``[images, candidates]``, true columns
    ``truth``, the :class:`Hierarchy`; :meth:`calibrate` sets the probabilities and posteriors."""

    def __init__(self, name: str, hierarchy: Hierarchy, scores: np.ndarray, truth: np.ndarray) -> None:
        self.name, self.hierarchy, self.scores, self.truth = name, hierarchy, scores, truth
        self.probs: np.ndarray | None = None
        self.post: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> "HedgeTask":
        return HedgeTask(self.name, self.hierarchy, self.scores[rows], self.truth[rows])

    def stacked(self, gamma: float, seen: np.ndarray) -> "HedgeTask":
        """Calibrated stacking: ``gamma`` subtracted from the scores of the seen candidate columns (``seen``)."""
        return HedgeTask(self.name, self.hierarchy, self.scores - gamma * np.asarray(seen, dtype=np.float64)[None, :], self.truth)

    def calibrate(self, temperature: float) -> "HedgeTask":
        self.probs = softmax(self.scores, temperature)
        self.post = self.hierarchy.posteriors(self.probs)
        return self

    def answers(self, parameter: float, rule: str) -> np.ndarray:
        """The hedged answer column of each image under ``rule`` with its ``parameter`` (threshold or lambda)."""
        return self.hierarchy.answers(self.post, rule, parameter)

    def flat(self) -> np.ndarray:
        """The answer column of each image's flat top-1 candidate."""
        return self.hierarchy.flat_answers(self.probs)

    def root(self) -> np.ndarray:
        """Always the root-like answer (every candidate)."""
        return np.full(len(self.truth), int(np.flatnonzero(self.hierarchy.root_like)[0]), dtype=np.int64)

    def stats(self, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Per image: correct, information gain, depth, root-like, and the answer's probability."""
        h = self.hierarchy
        return {"correct": h.correct(cols, self.truth), "gain": h.gain[cols], "depth": h.depth[cols],
                "root": h.root_like[cols], "prob": self.post[np.arange(len(cols)), cols]}


def run_task(run: Any, graph: ClassGraph, features: Any, labels: Sequence[str], name: str = "",
             where: str = "the features", candidates: str = HEDGE_CANDIDATES, gamma: float = 0.0) -> HedgeTask:
    """A :class:`HedgeTask` of labelled features against the run's candidates for hedging (labels checked by
    :func:`check_calibration_labels`; ``where`` names the features in its messages; ``gamma`` subtracted
    from seen candidates' scores)."""
    check_calibration_labels(run.predictions, labels, where, candidates)
    ids, _ = run_candidates(run.predictions, candidates)
    column = {c: j for j, c in enumerate(ids)}
    scores = candidate_scores(features, run.predictions, candidates, gamma)[0].numpy().astype(np.float64)
    return HedgeTask(name, Hierarchy(graph, ids), scores, np.array([column[w] for w in labels], dtype=np.int64))


