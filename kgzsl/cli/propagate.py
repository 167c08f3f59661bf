"""``kgzsl propagate``: a trained run's model on a grown graph (new classes) -> a run with classifiers for every node,
no retraining."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kgzsl.cli.flags import add_force, add_graph, add_json, subparser
from kgzsl.cli.steps import emit, graph_folder
from kgzsl.propagation.run_files import MODEL_FILE, PREDICTIONS_FILE, RECORD_FILE


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "propagate", help="a trained run's model on a grown graph (new classes) -> a run with classifiers for every node, no retraining",
        description=(
            "Run the trained model of --run on another graph built with the same --vectors (the run's graph plus new "
            "classes, say): every node gets a predicted classifier, new ones included; the classes the run trained on "
            f"keep their real classifiers. Writes a run folder ({MODEL_FILE}, {RECORD_FILE} saying where it was "
            f"propagated from, {PREDICTIONS_FILE}) that predict, evaluate, inspect and calibrate take."
        ),
    )
    p.add_argument("--run", type=Path, required=True, help="run folder written by kgzsl train (it must hold the model)")
    add_graph(p, help="the graph to propagate onto (default: the shipped graphs/imagenet21k of the kgzsl project)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    add_force(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.propagation.grow import propagate  # lazy: torch

    result = propagate(args.run, graph_folder(args.graph), out=args.out, force=args.force)  # checks --out first
    emit(args, result.summary(), _text)


def _text(s: dict[str, Any]) -> str:
    new = ", ".join(n["name"] for n in s["new"][:20]) + (f" and {s['new_count'] - 20} more" if s["new_count"] > 20 else "")
    lines = [f"propagated {s['model']} of {s['run']} onto {s['graph']} -> {s['out']}: {s['nodes']} nodes "
             f"({s['run_nodes']} in the run's graph), {s['new_count']} new" + (f": {new}" if new else "")
             + f"; {s['seen']} trained classes keep their real classifiers, {s['seconds']} s"]
    if s["removed_count"]:
        lines.append(f"  {s['removed_count']} nodes of the run's graph are not in this graph")
    return "\n".join(lines)  # the notes went to stderr as warnings already
