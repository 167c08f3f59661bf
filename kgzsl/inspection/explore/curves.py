"""The explorer's calibration panel: a calibrated run's reliability and accuracy-specificity curves, as data.

The calibration record (``hedge.json``) holds the fitted temperature and thresholds; the curves need labelled
photos, so they are drawn from ``--features`` where its labels are classes of the calibrated candidate set
(the same computation as :func:`kgzsl.inspection.plots.plot_reliability` and
:func:`~kgzsl.inspection.plots.plot_accuracy_specificity`); without them the page shows the record's figures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph
from kgzsl.graph.names import labels_as_node_ids
from kgzsl.propagation.run import Run
from kgzsl.recognition.hedge.hierarchy import DEFAULT_RULE
from kgzsl.recognition.hedge.reporting import SWEEPS, evaluate_hedging, pooled_stats
from kgzsl.recognition.hedge.storage import run_calibration
from kgzsl.recognition.hedge.temperature import binned_reliability, calibration_error, softmax, top1

log = logging.getLogger("kgzsl")

#: the calibration record's figures shown as they are
_RECORD_KEYS = ("candidates", "temperature", "gamma", "default_rule", "rules", "calibration_accuracy", "images", "classes",
                "features", "ece_before", "ece_after", "nll_before", "nll_after", "shipped")


def _reliability(conf: Any, hit: Any, bins: int = 15) -> dict[str, Any]:
    rows = [r for r in binned_reliability(conf, hit, bins) if r["count"]]
    return {"confidence": [round(r["confidence"], 4) for r in rows], "accuracy": [round(r["accuracy"], 4) for r in rows],
            "count": [r["count"] for r in rows], "ece": round(calibration_error(conf, hit, bins), 4)}


def calibration_panel(run: Run, graph: ClassGraph, features: Any = None, labels: Sequence[str] | None = None,
                      where: str = "") -> dict[str, Any] | None:
    """The calibration of ``run`` for unseen candidates as site data (None where the run is not calibrated):
    the record's figures and, given labelled ``features`` of calibrated classes, the curves."""
    record = run_calibration(run, "unseen")
    if record is None:
        return None
    panel: dict[str, Any] = {"record": {k: record[k] for k in _RECORD_KEYS if k in record}}
    if features is None or labels is None:
        return panel
    try:
        ids = labels_as_node_ids(labels, graph, where)
        task, _ = evaluate_hedging(run, graph, features, ids, where, candidates="unseen")
    except KgzslError as exc:  # photos of seen classes, say: the site is still written, without curves
        log.warning("no calibration curves from %s: %s", where, exc)
        panel["curves_skipped"] = str(exc)
        return panel
    temperature = record["temperature"]
    panel["reliability"] = {"T=1": _reliability(*top1(softmax(task.scores, 1.0), task.truth)),
                            f"T={temperature:.3g}": _reliability(*top1(task.probs, task.truth))}
    sweeps = {}
    for rule, values in record["rules"].items():
        points = [pooled_stats([task], [task.answers(x, rule)]) for x in SWEEPS[rule]]
        dots = [(float(t), pooled_stats([task], [task.answers(v, rule)])) for t, v in values.items()]
        sweeps[rule] = {"gain": [round(p["gain"], 4) for p in points], "accuracy": [round(p["acc"], 4) for p in points],
                        "targets": [[t, round(p["gain"], 4), round(p["acc"], 4)] for t, p in sorted(dots)],
                        "default": rule == DEFAULT_RULE}
    flat = pooled_stats([task], [task.flat()])
    panel["accuracy_specificity"] = {"rules": sweeps, "flat": [round(flat["gain"], 4), round(flat["acc"], 4)],
                                     "images": len(task.truth), "features": where}
    return panel
