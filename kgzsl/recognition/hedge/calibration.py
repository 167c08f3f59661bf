"""Fitting a run's hedging on labelled photos: gamma (generalized setting), then the temperature, then every rule.

Each step is a pass over the images a block at a time that keeps a few numbers an image, never its scores: the
calibrated-stacking statistics (:func:`kgzsl.recognition.streaming.gzsl_stats`), the NLL's derivatives in the inverse
temperature (:func:`kgzsl.recognition.hedge.temperature.temperature_terms`, a few Newton passes), then the answers a
rule can give (:class:`kgzsl.recognition.hedge.rules.AnswerRecords`), and last, for the curves a record keeps, the
answers' information gain summed at the fitted parameters (:class:`kgzsl.recognition.hedge.rules.GainSums`, a number
a parameter). So a feature folder of any size is calibrated shard by shard (:func:`fit_calibration_batches`) in the
memory of a block, and features or scores in memory go the same way (:func:`fit_calibration`, :func:`fit_hedging`).
"""

from __future__ import annotations

import sys
from itertools import count
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from kgzsl.errors import KgzslError, check_number
from kgzsl.graph.class_graph import ClassGraph
from kgzsl.recognition.hedge.curves import SWEEPS, FlatAnswers, fitted_curves
from kgzsl.recognition.hedge.hierarchy import DEFAULT_RULE, RULES, Hierarchy, _rule
from kgzsl.recognition.hedge.rules import AnswerRecords, GainSums, Hedger
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
    ReliabilityBins,
    nll_terms,
    search_temperature,
    softmax,
    temperature_terms,
    top1,
)
from kgzsl.recognition.scoring import candidate_mask, candidate_scores, class_scores
from kgzsl.recognition.streaming import RowBlocks, calibrate_stats, gzsl_stats, join_stats

#: images scored at a time, whatever the batches they come in (:class:`kgzsl.recognition.streaming.RowBlocks`): the
#: fit does not depend on the shards, and a block's scores, probabilities and posteriors (float64, ~20k columns) are
#: what the fit holds beside its few numbers an image
BLOCK = 128

#: one pass over the calibration images: called with what the pass is for (its progress bar says so), it yields blocks
#: of raw float64 scores ``[images, candidates]`` with their true candidate columns
ScoreBlocks = Callable[[str], Iterable[tuple[np.ndarray, np.ndarray]]]


def check_calibration_labels(predictions: Any, labels: Sequence[str], where: str = "the features",
                             candidates: str = HEDGE_CANDIDATES, both: bool = False) -> None:
    """Refuse labels that are not candidates: unknown to the run, not a candidate class (a structure-only node)
    or, for ``"unseen"``, seen-and-trained; with ``both`` (``labels`` are every image's: gamma is to be fitted on
    them) also labels that are all of seen or all of unseen classes. KgzslError naming ``features`` and the first
    offender."""
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
    if both:
        _refuse_one_kind(np.array([bool(predictions.seen[predictions.index[w]]) for w in set(labels)]))


def _refuse_one_kind(of_seen: Any) -> None:
    if of_seen.all() or not of_seen.any():
        kind = "seen" if of_seen.all() else "unseen"
        raise KgzslError(f"features: every calibration image is of a {kind} class: fitting the generalized setting's gamma "
                         "needs images of both seen (trained) and unseen classes (or give gamma)", parameter="features")


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


def fit_passes(blocks: ScoreBlocks, hierarchy: Hierarchy, targets: Sequence[float] = DEFAULT_TARGETS,
               seen: np.ndarray | None = None, gamma: float | None = None, keep_top1: bool = False) -> dict[str, Any]:
    """Fit hedged answers over the passes ``blocks`` makes over labelled images: with ``seen`` (which candidate
    columns are seen classes: the generalized setting) first the calibrated-stacking ``gamma`` (one pass, unless
    given), then the temperature (a few passes), then each rule's parameter per target from one pass, then the
    answers' information gain at those parameters for the curves (one more pass). Returns ``gamma``, ``temperature``,
    ``rules`` (rule -> target -> parameter), ``reached`` (their accuracy there), ``images``, the top-1 ECE and mean
    NLL ``before`` and ``after`` the temperature, the ``curves`` a record keeps
    (:func:`kgzsl.recognition.hedge.curves.fitted_curves`, from confidence bins and gain sums) and, where
    ``keep_top1`` (two numbers an image: for a reliability plot of its own), ``top1``: the flat top-1 confidence
    and correctness per image, ``before`` and ``after``."""
    wanted = _check_targets(targets)
    offset = None
    if seen is None:
        gamma = 0.0
    else:
        if gamma is not None:
            check_number("gamma", gamma)
        gamma = _fit_gamma(blocks, np.asarray(seen, dtype=bool)) if gamma is None else float(gamma)
        offset = gamma * np.asarray(seen, dtype=np.float64)[None, :]

    def stacked(what: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for scores, truth in blocks(what):
            yield (scores if offset is None else scores - offset), truth

    passes = count(1)
    temperature = search_temperature(lambda beta: sum((temperature_terms(s, y, beta) for s, y in
                                                       stacked(f"temperature, pass {next(passes)}")), np.zeros(4)))
    records, flat = AnswerRecords(hierarchy), FlatAnswers()
    sweeps = GainSums(hierarchy, {rule: SWEEPS[rule] for rule in RULES})
    top: dict[str, list] = {"before": [], "after": []}
    bins = {"before": ReliabilityBins(), "after": ReliabilityBins()}
    nlls = {"before": 0.0, "after": 0.0}
    for scores, truth in stacked("answers"):
        probs = softmax(scores, temperature)
        records.add(hierarchy.posteriors(probs), truth, sweeps)
        flat_columns = hierarchy.flat_answers(probs)
        flat.add(hierarchy.correct(flat_columns, truth), hierarchy.gain[flat_columns])
        for key, p, t in (("before", softmax(scores, 1.0), 1.0), ("after", probs, temperature)):
            pair = top1(p, truth)
            bins[key].add(*pair)
            if keep_top1:
                top[key].append(pair)
            nlls[key] += float(np.sum(nll_terms(scores, truth, t)))
    images = len(records)
    rules: dict[str, dict[str, float]] = {}
    reached: dict[str, dict[str, float]] = {}
    for rule in RULES:
        rules[rule], reached[rule] = {}, {}
        for target in wanted:
            value = records.fit(rule, target)
            rules[rule][_target_key(target)] = value
            reached[rule][_target_key(target)] = records.accuracy(rule, value)
    dots = GainSums(hierarchy, {rule: list(values.values()) for rule, values in rules.items()})
    for scores, truth in stacked("curves at the fitted parameters"):  # known only now: one more pass
        dots.add(hierarchy.posteriors(softmax(scores, temperature)), truth)
    fitted = {"gamma": float(gamma), "temperature": temperature, "rules": rules, "reached": reached, "images": images,
              "ece_before": bins["before"].error(), "ece_after": bins["after"].error(),
              "nll_before": nlls["before"] / images, "nll_after": nlls["after"] / images,
              "curves": fitted_curves(records, bins["before"], bins["after"], flat, rules, sweeps, dots)}
    if keep_top1:
        fitted["top1"] = {key: tuple(np.concatenate(parts) for parts in zip(*pairs)) for key, pairs in top.items()}
    return fitted


def _fit_gamma(blocks: ScoreBlocks, seen: np.ndarray) -> float:
    """Calibrated stacking: the ``gamma`` maximising the harmonic mean of seen and unseen top-1 accuracy on the
    calibration images, from five numbers an image (:func:`kgzsl.recognition.streaming.calibrate_stats`, as
    :func:`kgzsl.recognition.scoring.calibrate` from every score); they must show both seen and unseen classes."""
    if seen.all() or not seen.any():
        raise KgzslError("generalized zero-shot needs both seen and unseen candidate classes")
    columns = torch.from_numpy(seen)
    stats = join_stats([gzsl_stats(torch.from_numpy(s), torch.from_numpy(y), columns) for s, y in blocks("gamma")])
    _refuse_one_kind(stats.of_seen)
    return float(calibrate_stats(stats).gamma)


def score_blocks(scores: np.ndarray, truth: np.ndarray) -> ScoreBlocks:
    """The passes of :func:`fit_passes` over scores in memory (float64 ``[images, candidates]``), :data:`BLOCK` rows at a time."""
    return lambda what: ((scores[i:i + BLOCK], truth[i:i + BLOCK]) for i in range(0, len(truth), BLOCK))


def fit_hedging(task: HedgeTask, targets: Sequence[float] = DEFAULT_TARGETS, seen: np.ndarray | None = None,
                gamma: float | None = None) -> dict[str, Any]:
    """:func:`fit_passes` over a calibration task's scores (in memory, as :func:`run_task` makes them)."""
    if not len(task.truth):
        raise KgzslError("scores has no images to fit a temperature on", parameter="scores")
    return fit_passes(score_blocks(task.scores, task.truth), task.hierarchy, targets, seen, gamma)


class FeatureBlocks:
    """The passes of :func:`fit_passes` over labelled features that come in batches (the shards of a feature folder):
    each pass reads them again from ``batches()``, checks their labels (:func:`check_calibration_labels`) and scores
    them :data:`BLOCK` at a time against the run's candidates, with a progress bar over the batches (``total`` of
    them) where ``progress``. Counts the ``images`` and ``classes`` of a pass."""

    def __init__(self, predictions: Any, batches: Callable[[], Iterable[tuple[Any, Sequence[str]]]],
                 candidates: str = HEDGE_CANDIDATES, where: str = "the features", progress: bool = False,
                 total: int | None = None) -> None:
        ids, columns = run_candidates(predictions, candidates)
        self.column = {c: j for j, c in enumerate(ids)}
        self.weights = predictions.candidate_rows(columns, keep=False)  # as candidate_scores gathers them
        self.predictions, self.batches, self.candidates, self.where = predictions, batches, candidates, where
        self.progress, self.total = progress, total
        self.images, self.classes, self.checked = 0, set(), set()

    def __call__(self, what: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        pending, self.images, self.classes = RowBlocks(BLOCK), 0, set()
        for features, labels in tqdm(self.batches(), desc=f"calibrate: {what}", total=self.total, unit="shard",
                                     file=sys.stderr, disable=not self.progress, leave=False, mininterval=0.5, delay=1.0):
            if len(features) != len(labels):
                raise KgzslError(f"features: {self.where} give {len(features)} features for {len(labels)} labels",
                                 parameter="features")
            if not len(labels):
                continue
            new = set(labels) - self.checked
            if new:  # each label once, not every shard of every pass
                check_calibration_labels(self.predictions, sorted(new), self.where, self.candidates)
                self.checked |= new
            self.images += len(labels)
            self.classes.update(labels)
            truth = torch.tensor([self.column[w] for w in labels], dtype=torch.int64)
            for block in pending.add(torch.as_tensor(features, dtype=torch.float32), truth):
                yield self._scored(*block)
        for block in pending.flush():
            yield self._scored(*block)
        if not self.images:
            raise KgzslError(f"features: {self.where} hold no images to calibrate on", parameter="features")

    def _scored(self, features: torch.Tensor, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return class_scores(features, self.weights).numpy().astype(np.float64), truth.numpy()


def fit_calibration_batches(run: Any, graph: ClassGraph, batches: Callable[[], Iterable[tuple[Any, Sequence[str]]]],
                            targets: Sequence[float] = DEFAULT_TARGETS, feature_folder: str | None = None,
                            candidates: str = HEDGE_CANDIDATES, gamma: float | None = None, progress: bool = False,
                            total: int | None = None, top1: bool = False
                            ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """:func:`fit_calibration` over labelled features that come in batches of ``(features, labels)``: ``batches()``
    gives them afresh for each of the few passes (the shards of a feature folder,
    :func:`kgzsl.vision.feature_folder.iter_feature_shards`, ``total`` of them for the progress bar). Memory holds a
    batch and a few numbers an image, whatever the number of images (two more with ``top1``)."""
    _check_targets(targets)  # before any scoring
    where = f"feature folder {feature_folder}" if feature_folder else "the features"
    ids, _ = run_candidates(run.predictions, candidates)
    hierarchy = Hierarchy(graph, ids)
    source = FeatureBlocks(run.predictions, batches, candidates, where, progress, total)
    fitted = fit_passes(source, hierarchy, targets, seen_columns(run.predictions, candidates), gamma, top1)
    temperature = fitted["temperature"]
    record = {
        "format": HEDGE_FORMAT, "version": HEDGE_VERSION, "temperature": temperature, "gamma": fitted["gamma"],
        "rules": fitted["rules"], "default_rule": DEFAULT_RULE, "calibration_accuracy": fitted["reached"],
        "candidates": candidates, "candidate_rule": HEDGE_RULE_TEXT[candidates], "candidate_count": len(ids),
        "candidate_sha256": candidate_digest(ids), "images": fitted["images"], "classes": len(source.classes),
        "features": feature_folder, **{key: fitted[key] for key in ("ece_before", "ece_after", "nll_before", "nll_after")},
        "curves": fitted["curves"],
    }
    pairs = fitted.get("top1", {})
    return record, {f"flat top-1, T={t}": pairs[key] for key, t in (("before", 1), ("after", f"{temperature:.3g}")) if key in pairs}


def fit_calibration(run: Any, graph: ClassGraph, features: Any, labels: Sequence[str],
                    targets: Sequence[float] = DEFAULT_TARGETS, feature_folder: str | None = None,
                    candidates: str = HEDGE_CANDIDATES, gamma: float | None = None, top1: bool = False
                    ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Fit, on labelled features, the temperature and each rule's parameter per target accuracy (and, for
    candidates ``"all"``, the calibrated-stacking ``gamma`` unless given). Returns the calibration record (its
    ``curves`` too, :mod:`kgzsl.recognition.hedge.curves`) and, with ``top1``, the flat top-1 (confidence, correct)
    pairs before and after the temperature, for a reliability plot (else no pairs)."""
    _check_targets(targets)
    check_calibration_labels(run.predictions, labels, f"feature folder {feature_folder}" if feature_folder else
                             "the features", candidates, both=candidates == "all" and gamma is None)
    return fit_calibration_batches(run, graph, lambda: [(features, list(labels))], targets, feature_folder, candidates, gamma,
                                   top1=top1)


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


