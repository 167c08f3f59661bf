"""``kgzsl calibrate``: fit calibrated, hedged answers (temperature + thresholds / DARTS multipliers) on labelled features."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kgzsl.cli.flags import add_graph, add_json, add_number, add_predictions, subparser
from kgzsl.cli.steps import check_backbone, check_plot_file, emit
from kgzsl.errors import KgzslError


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "calibrate", help="fit calibrated, hedged answers (temperature + thresholds / DARTS multipliers) on labelled images",
        description=(
            "Fit the softmax temperature and, per target accuracy, the threshold (default rule) and the DARTS multiplier "
            "of hedged answers on labelled features. --candidates unseen (default): images of classes whose real "
            "classifier was not used in training (the run's held-out or unseen classes); writes hedge.json. --candidates "
            "all (generalized zero-shot): images of seen and unseen classes, with the calibrated-stacking gamma fitted "
            "first; writes hedge-all.json. `kgzsl predict --hedge TARGET` uses them."
        ),
    )
    p.add_argument("--features", type=Path, required=True,
                   help="feature folder written by kgzsl features (labels = wnid folders) of held-out classes' images")
    add_predictions(p)
    add_number(p, "--targets", float, nargs="+", default=[0.5, 0.7, 0.9], above=0,
               meaning=" (a target accuracy in (0, 1])", help="target hierarchical accuracies to calibrate")
    p.add_argument("--candidates", choices=["unseen", "all"], default="unseen",
                   help="unseen (default; writes hedge.json): calibrate on images of held-out or unseen classes; all "
                        "(generalized zero-shot; writes hedge-all.json): seen classes too, with calibrated stacking")
    add_number(p, "--gamma", float, help="with --candidates all: the calibrated-stacking gamma (default: fitted on "
               "these images, which then must show seen and unseen classes)")
    add_graph(p, help="graph folder the predictions were trained on (default: the one the run records)")
    p.add_argument("--plot", type=Path, help="write the reliability diagram PNG (flat top-1 before/after) here")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.cli.evaluate import check_run_inputs  # lazy: startup

    too_high = [t for t in args.targets if t > 1]
    if too_high:
        raise KgzslError(f"--targets must be accuracies in (0, 1], got {too_high[0]:g}")
    if args.gamma is not None and args.candidates != "all":
        raise KgzslError("--gamma offsets seen candidates' scores: it needs --candidates all")
    if args.plot:
        check_plot_file(args.plot)
    check_run_inputs(args)  # torch-free: a mistake is reported before seconds of loading
    from kgzsl.graph.names import labels_as_node_ids  # lazy: numpy
    from kgzsl.inspection.plots import plot_reliability  # lazy: torch
    from kgzsl.propagation.run import load_run  # lazy: startup
    from kgzsl.recognition.hedge.calibration import (  # lazy: torch
        check_calibration_labels,
        fit_calibration_batches,
    )
    from kgzsl.recognition.hedge.storage import write_calibration  # lazy: startup
    from kgzsl.vision.feature_folder import iter_feature_shards, read_manifest  # lazy: torch

    run = load_run(args.predictions)
    graph = run.load_graph(args.graph)
    manifest = read_manifest(args.features)
    check_backbone(args, run.predictions, manifest.get("backbone"), f"the features in {args.features} come from")
    where = f"feature folder {args.features}"
    known = [str(label) for label in manifest.get("labels", [])]  # every label of the folder, once
    node = dict(zip(known, labels_as_node_ids(known, graph, where)))
    if manifest["features"]:  # refused before the first shard is read
        check_calibration_labels(run.predictions, sorted(set(node.values())), where, args.candidates,
                                 both=args.candidates == "all" and args.gamma is None)

    def shards() -> Any:  # read again for each pass: memory holds one shard
        for shard in iter_feature_shards(args.features):
            missing = [label for label in shard.labels if label not in node]
            node.update(zip(missing, labels_as_node_ids(missing, graph, where)))
            yield shard.features, [node[label] for label in shard.labels]

    record, curves = fit_calibration_batches(run, graph, shards, args.targets, str(args.features), args.candidates,
                                             args.gamma, progress=not args.json, total=len(manifest["shards"]),
                                             top1=bool(args.plot))
    if args.plot:
        plot_reliability(curves, args.plot, title=f"Reliability on {record['images']} calibration images")
        record["plot"] = str(args.plot)
    out = write_calibration(run, record)
    summary = {**record, "predictions": str(args.predictions), "out": str(out)}
    emit(args, summary, _text)


def _text(s: dict[str, Any]) -> str:
    stacking = f", gamma {s['gamma']:.4g}" if s["candidates"] == "all" else ""
    lines = [f"calibrated {s['predictions']} on {s['images']} images of {s['classes']} classes "
             f"({s['candidate_count']} {s['candidates']} candidates{stacking}) -> {s['out']}",
             f"  temperature {s['temperature']:.4g}; top-1 ECE {s['ece_before']:.3f} -> {s['ece_after']:.3f}; "
             f"NLL {s['nll_before']:.3f} -> {s['nll_after']:.3f}"]
    names = {"threshold": "threshold", "darts": "lambda"}
    for rule, values in s["rules"].items():
        lines.extend(f"  {rule} target {t}: {names[rule]} {v:.4g} (accuracy on these images "
                     f"{100 * s['calibration_accuracy'][rule][t]:.1f}%)" for t, v in values.items())
    if "plot" in s:
        lines.append(f"  reliability diagram: {s['plot']}")
    return "\n".join(lines)
