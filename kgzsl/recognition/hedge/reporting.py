"""Hedged answers measured on labelled photos: accuracy, depth, gain and root share, as rows and tables."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph
from kgzsl.recognition.hedge.calibration import (
    HedgeTask,
    run_hedger,
    run_task,
    seen_columns,
)
from kgzsl.recognition.hedge.curves import SWEEPS  # noqa: F401  (the sweeps plots draw; kept importable here)
from kgzsl.recognition.hedge.storage import (
    HEDGE_CANDIDATES,
    hedge_file,
    run_calibration,
)


def pooled_stats(tasks: Sequence[HedgeTask], cols: Sequence[np.ndarray]) -> dict[str, float]:
    """Means over the images of ``tasks`` (answers ``cols``): hierarchical accuracy ``acc``, ``depth``,
    information ``gain`` (bits), share of ``root`` answers, mean answer probability ``prob``; and ``n``."""
    parts = [t.stats(c) for t, c in zip(tasks, cols)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {"acc": float(cat["correct"].mean()), "depth": float(cat["depth"].mean()), "gain": float(cat["gain"].mean()),
            "root": float(cat["root"].mean()), "prob": float(cat["prob"].mean()), "n": int(len(cat["correct"]))}


def hedge_rows(tasks: Sequence[HedgeTask], rules: dict[str, dict[Any, float]]) -> list[dict[str, Any]]:
    """One row a rule and calibrated target (``threshold 0.9``: ``rules[rule][target]`` is its parameter),
    then the baselines ``flat top-1`` and ``always root`` (:func:`pooled_stats` of calibrated ``tasks``, with
    ``answer``, ``rule``, ``target`` and ``parameter``)."""
    rows = [{"answer": f"{rule} {float(t):g}", "rule": rule, "target": float(t), "parameter": value,
             **pooled_stats(tasks, [task.answers(value, rule) for task in tasks])}
            for rule, values in rules.items() for t, value in sorted(values.items(), key=lambda kv: float(kv[0]))]
    for label, answers in (("flat top-1", lambda t: t.flat()), ("always root", lambda t: t.root())):
        rows.append({"answer": label, "rule": None, "target": None, "parameter": None,
                     **pooled_stats(tasks, [answers(t) for t in tasks])})
    return rows


HEDGE_HEADER = f"{'answer':<28}{'acc%':>7}{'conf%':>7}{'depth':>7}{'gain':>8}{'root%':>7}{'imgs':>6}"


def format_hedge_row(row: dict[str, Any]) -> str:
    short = {"threshold": "t", "darts": "lam"}.get(row.get("rule"), "")
    label = row["answer"] + (f" ({short} {row['parameter']:.3g})" if row.get("parameter") is not None else "")
    return (f"{label:<28}{100 * row['acc']:>7.1f}{100 * row['prob']:>7.1f}{row['depth']:>7.2f}{row['gain']:>8.2f}"
            f"{100 * row['root']:>7.1f}{row['n']:>6}")


def format_hedge_table(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    """The rows of :func:`hedge_rows` as a text table (acc%: hierarchical accuracy, conf%: mean probability)."""
    lines = ([title] if title else []) + [HEDGE_HEADER, "-" * len(HEDGE_HEADER)]
    return "\n".join(lines + [format_hedge_row(r) for r in rows])




def evaluate_hedging(run: Any, graph: ClassGraph, features: Any, labels: Sequence[str], name: str = "",
                     candidates: str = HEDGE_CANDIDATES) -> tuple[HedgeTask, dict[str, Any]]:
    """Hedged answers of a calibrated run (its calibration for ``candidates``) on labelled features, for every
    calibrated rule and target, with the flat top-1 and always-root baselines: the calibrated task and a
    summary (``rows`` of :func:`hedge_rows`, ``temperature``, ``gamma``, ``rules``)."""
    record = run_calibration(run, candidates)
    if record is None:
        raise KgzslError(f"hedge: run {run.source} is not calibrated for candidates {candidates} (no "
                         f"{hedge_file(candidates)}): run `kgzsl calibrate` first", parameter="hedge")
    run_hedger(run, graph, float(next(iter(record["rules"][record["default_rule"]]))), candidates)  # same candidate set
    task = run_task(run, graph, features, labels, name, candidates=candidates)
    seen = seen_columns(run.predictions, candidates)
    if seen is not None:  # stacked in float64 after scoring, as calibration did: the same images give its answers
        task = task.stacked(record["gamma"], seen)
    task.calibrate(record["temperature"])
    return task, {"split": name, "candidates": candidates, "temperature": record["temperature"], "gamma": record["gamma"],
                  "rules": record["rules"], "default_rule": record["default_rule"], "calibrated_on": record.get("features"),
                  "rows": hedge_rows([task], record["rules"])}
