"""``kgzsl explore``: write a static site to browse a run (search, class pages, a map of every classifier, photos)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kgzsl.cli.flags import add_force, add_graph, add_json, add_number, subparser
from kgzsl.cli.steps import emit


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "explore", help="write a static site to browse a run: search, class pages, a map of every classifier, photos",
        description=(
            "Write a self-contained static site (open SITE/index.html by double-click; no server, nothing fetched): "
            "search over every node, a page per class deep-linked as index.html#WNID (what `kgzsl inspect` reports, "
            "each neighbour a link), a t-SNE map of every predicted classifier (computed once, then cached), with "
            "--features the photos scoring each class highest and each photo's top-5, and a calibrated run's curves."
        ),
    )
    p.add_argument("run", metavar="RUN", help="a run folder written by kgzsl train (or kgzsl propagate)")
    p.add_argument("--out", type=Path, required=True, help="the site folder to write (SITE/index.html)")
    p.add_argument("--features", type=Path, help="a feature folder of `kgzsl features`: its photos on the class pages")
    p.add_argument("--candidates", choices=["all", "unseen"], default="all",
                   help="the classes each photo is ranked among (all: seen ones by their real classifiers)")
    add_graph(p, help="graph folder the run was trained on (default: the one the run records)")
    add_number(p, "--top", int, default=10, at_least=1, help="how many neighbours / attributions a class page lists")
    add_force(p, help="replace an existing site that kgzsl explore wrote")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.inspection.explore.build import explore  # lazy: torch

    summary = explore(args.run, args.out, features=args.features, graph_dir=args.graph, force=args.force, top=args.top,
                      candidates=args.candidates)
    emit(args, summary, lambda s: (f"wrote {s['out']}/index.html: {s['nodes']} nodes, {s['files']} files, "
                                   f"{s['bytes'] / 1e6:.1f} MB{' (map from the cache)' if s['map_cached'] else ''}"))
