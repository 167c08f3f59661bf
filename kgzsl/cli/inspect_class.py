"""``kgzsl inspect``: why a class got the classifier it did (neighbourhood, nearest classifiers, attribution, plots).
Named inspect_class to stay clear of the standard library's inspect."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.cli.flags import add_graph, add_json, add_number, add_predictions, subparser
from kgzsl.cli.steps import check_backbone, check_plot_file, emit, note
from kgzsl.errors import KgzslError
from kgzsl.propagation.run_files import MODEL_FILE

if TYPE_CHECKING:
    from kgzsl.propagation.predictions import Predictions
    from kgzsl.propagation.targets import Targets


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "inspect", help="why a class got the classifier it did: neighbourhood, nearest classifiers, attribution, plots",
        description=(
            "Report one class (a wnid, or a name such as 'giraffe'): its graph neighbourhood, the classes with the most "
            "similar predicted classifier, its weight norm and cosine to its true classifier where one is known, the seen "
            f"classes its prediction is built from (needs the run's {MODEL_FILE} beside the predictions) and, for DGP, "
            "the learned distance-group weights."
        ),
    )
    p.add_argument("query", metavar="WNID-or-name", help="the class to inspect")
    add_graph(p, help="graph folder the predictions were trained on (default: the one the run records)")
    add_predictions(p)
    p.add_argument("--targets", help="true classifiers to compare with (default: the run's targets source)")
    p.add_argument("--no-targets", action="store_true", help="skip the comparison with true classifiers")
    add_number(p, "--top", int, default=10, at_least=1, help="how many nearest classes / attributions to list")
    p.add_argument("--plot", type=Path, help="write a PNG: weight map with the subtree labelled, DGP group weights, held-out cosines")
    p.add_argument("--map", choices=["pca", "tsne"], default="pca", help="2-D projection of the weight map (t-SNE needs scikit-learn)")
    add_json(p, help="print the report as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.inspection.explain import (  # lazy: torch
        format_report,
        inspect_node,
        resolve,
    )
    from kgzsl.inspection.plots import plot_inspection  # lazy: torch
    from kgzsl.propagation.run import load_run  # lazy: startup

    if args.plot:
        check_plot_file(args.plot)
    run = load_run(args.predictions)
    graph = run.load_graph(args.graph)
    node = resolve(graph, args.query)
    model = run.load_model(graph)
    targets = _targets(args, run.predictions)
    report = inspect_node(graph, run.predictions, graph.ids[node], model=model, targets=targets, k=args.top)
    if args.plot:
        plot_inspection(graph, run.predictions, node, str(args.plot), model=model, targets=targets, method=args.map)
        report["plot"] = str(args.plot)
    emit(args, report, lambda r: format_report(r) + (f"\n  plot: {r['plot']}" if "plot" in r else ""))


def _targets(args: argparse.Namespace, predictions: Predictions) -> Targets | None:
    """The true classifiers to compare with: ``--targets`` (checked against the run's backbone), else the
    run's own where they still load (a note where not); None with ``--no-targets``."""
    from kgzsl.propagation.targets import load_targets  # lazy: torch

    source = args.targets or predictions.meta.get("targets")
    if not source or args.no_targets:
        return None
    try:
        targets = load_targets(source)
    except KgzslError as exc:
        if args.targets:
            raise
        note(f"the run's targets cannot be loaded again ({exc}): no comparison with true classifiers (pass --targets)")
        return None
    if args.targets:
        check_backbone(args, predictions, {"name": targets.backbone, "fingerprint": targets.fingerprint} if targets.backbone else None,
                        "--targets is")
    return targets

