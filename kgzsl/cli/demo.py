"""``kgzsl demo``: the end-to-end demo (ImageNet-21k graph, DGP on EfficientNet-Lite0, zero-shot on real held-out images)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kgzsl.cli.flags import (
    add_graph,
    add_hedge,
    add_json,
    add_model,
    add_number,
    add_seed,
    subparser,
)
from kgzsl.cli.steps import DEFAULT_GRAPH, emit


def add_parser(sub: Any) -> None:
    p = subparser(sub, "demo", help="the end-to-end demo: ImageNet-21k graph, DGP on EfficientNet-Lite0, zero-shot on real held-out images")
    add_graph(p, help="graph folder (built if missing)", default=DEFAULT_GRAPH)
    p.add_argument("--out", type=Path, default=Path("runs") / "demo", help="folder for the trained run and the PNG sheet")
    add_model(p)
    add_number(p, "--epochs", int, at_least=1, help="epochs (default: the model's schedule, kgzsl.propagation.schedules.SCHEDULES)")
    add_seed(p)
    add_hedge(p, default=0.9, help="target accuracy of the hedged column, shown once the run is calibrated (`kgzsl calibrate`)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.demo import format_demo, run_demo  # lazy: torch

    log = (lambda text: print(text, file=sys.stderr)) if args.json else print
    summary = run_demo(out=args.out, graph_dir=args.graph, model=args.model, epochs=args.epochs, seed=args.seed,
                       progress=not args.json, log=log, hedge=args.hedge)
    emit(args, summary, format_demo)
