"""The explorer's calibration panel: a calibrated run's reliability and accuracy-specificity curves, as data.

Where they come from: ``kgzsl calibrate`` keeps both curves, computed on its calibration images, in the record
(``hedge.json``'s ``curves``, :mod:`kgzsl.recognition.hedge.curves`), so a calibrated run shows them without photos.
Given ``--features`` whose labels are classes of the calibrated candidate set, the curves are drawn from those photos
instead (:func:`photo_curves`, the computation of :func:`kgzsl.inspection.plots.plot_reliability` and
:func:`~kgzsl.inspection.plots.plot_accuracy_specificity`): they are the photos asked about, and may not be the
calibration images (on those the two agree to float noise, as tests/test_calibrate_curves.py checks). Where the photos
cannot be evaluated, or the record predates stored curves (older ``hedge.json``, the shipped calibrations of old),
the page falls back to what there is: the record's curves, else its figures (T, ECE, NLL) alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph
from kgzsl.graph.names import labels_as_node_ids
from kgzsl.propagation.run import Run
from kgzsl.recognition.hedge.calibration import HedgeTask
from kgzsl.recognition.hedge.curves import SWEEPS
from kgzsl.recognition.hedge.hierarchy import DEFAULT_RULE
from kgzsl.recognition.hedge.reporting import evaluate_hedging, pooled_stats
from kgzsl.recognition.hedge.storage import run_calibration
from kgzsl.recognition.hedge.temperature import binned_reliability, softmax, top1

log = logging.getLogger("kgzsl")

#: the calibration record's figures shown as they are
_RECORD_KEYS = ("candidates", "temperature", "gamma", "default_rule", "rules", "calibration_accuracy", "images", "classes",
                "features", "ece_before", "ece_after", "nll_before", "nll_after", "shipped")
#: the record's curves' reliability bins
BINS = 15


def photo_curves(task: HedgeTask, rules: dict[str, dict[str, float]], bins: int = BINS) -> dict[str, Any]:
    """The curves of a calibrated ``task`` (labelled photos, :func:`evaluate_hedging`) for the calibrated ``rules``,
    laid out as a record's ``curves``, from every photo's answers held in memory."""
    reliability = {}
    for key, probs in (("before", softmax(task.scores, 1.0)), ("after", task.probs)):
        table = binned_reliability(*top1(probs, task.truth), bins)
        reliability[key] = {name: [row[name] for row in table] for name in ("confidence", "accuracy", "count")}
    sweeps = {}
    for rule, values in rules.items():
        points = [pooled_stats([task], [task.answers(x, rule)]) for x in SWEEPS[rule]]
        dots = [(float(t), pooled_stats([task], [task.answers(v, rule)])) for t, v in values.items()]
        sweeps[rule] = {"parameter": [float(x) for x in SWEEPS[rule]], "gain": [p["gain"] for p in points],
                        "accuracy": [p["acc"] for p in points], "targets": [[t, p["gain"], p["acc"]] for t, p in sorted(dots)]}
    flat = pooled_stats([task], [task.flat()])
    return {"bins": bins, "reliability": reliability, "accuracy_specificity": {"rules": sweeps, "flat": [flat["gain"], flat["acc"]]},
            "images": len(task.truth)}


def _reliability(table: dict[str, list]) -> dict[str, Any]:
    """One reliability curve for the page: its non-empty bins, and its ECE."""
    rows = [(c, a, n) for c, a, n in zip(table["confidence"], table["accuracy"], table["count"]) if n]
    total = sum(n for _, _, n in rows)
    return {"confidence": [round(c, 4) for c, _, _ in rows], "accuracy": [round(a, 4) for _, a, _ in rows],
            "count": [int(n) for _, _, n in rows], "ece": round(sum(n * abs(a - c) for c, a, n in rows) / total, 4)}


def _site_curves(curves: dict[str, Any], temperature: float, source: str, where: str | None) -> dict[str, Any]:
    """A record's ``curves`` as the page draws them (rounded), saying which images they are of."""
    trade = curves["accuracy_specificity"]
    sweeps = {rule: {"gain": [round(g, 4) for g in s["gain"]], "accuracy": [round(a, 4) for a in s["accuracy"]],
                     "targets": [[t, round(g, 4), round(a, 4)] for t, g, a in s["targets"]], "default": rule == DEFAULT_RULE}
              for rule, s in trade["rules"].items()}
    return {"curves_from": source,
            "reliability": {"T=1": _reliability(curves["reliability"]["before"]),
                            f"T={temperature:.3g}": _reliability(curves["reliability"]["after"])},
            "accuracy_specificity": {"rules": sweeps, "flat": [round(v, 4) for v in trade["flat"]],
                                     "images": curves["images"], "features": where}}


def calibration_panel(run: Run, graph: ClassGraph, features: Any = None, labels: Sequence[str] | None = None,
                      where: str = "") -> dict[str, Any] | None:
    """The calibration of ``run`` for unseen candidates as site data (None where the run is not calibrated): the
    record's figures and the curves, of labelled ``features`` of calibrated classes where given, else the record's."""
    record = run_calibration(run, "unseen")
    if record is None:
        return None
    panel: dict[str, Any] = {"record": {k: record[k] for k in _RECORD_KEYS if k in record}}
    curves, source = record.get("curves"), "calibration"
    if features is not None and labels is not None:
        try:
            ids = labels_as_node_ids(labels, graph, where)
            task, _ = evaluate_hedging(run, graph, features, ids, where, candidates="unseen")
            curves, source = photo_curves(task, record["rules"]), "features"
        except KgzslError as exc:  # photos of seen classes, say: the site is still written, with the record's curves
            log.warning("no calibration curves from %s: %s", where, exc)
            panel["curves_skipped"] = str(exc)
    if curves is not None:
        panel.update(_site_curves(curves, record["temperature"], source, where if source == "features" else record.get("features")))
    return panel
