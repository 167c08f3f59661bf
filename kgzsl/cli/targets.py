"""``kgzsl targets``: fit the seen classes' classifiers (targets for train) from labelled images of a new domain."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kgzsl.cli.flags import (
    DEFAULT_BACKBONE,
    add_arch,
    add_device,
    add_force,
    add_graph,
    add_json,
    add_number,
    add_seed,
    subparser,
)
from kgzsl.cli.steps import emit, graph_folder


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "targets", help="fit the seen classes' classifiers (targets for train) from labelled images of a new domain",
        description=(
            "Fit one classifier (weights + bias, in the feature space predict scores in) a class folder by class-balanced "
            "multinomial logistic regression (scikit-learn, lbfgs), C chosen by cross-validation on the images. Folder "
            "names are mapped to graph nodes by id, wnid or name. Writes a targets file for `kgzsl train --targets`."
        ),
    )
    p.add_argument("images", type=Path, metavar="IMAGES",
                   help="ImageFolder tree (one sub-folder a class, named by node id, wnid or name), or a `kgzsl features` folder")
    add_graph(p)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, metavar="NAME-or-FILE",
                   help="feature extractor: efficientnet-lite0|1|2 or a torchvision ResNet state dict (a features folder must be of it)")
    add_arch(p, help="architecture of a ResNet state dict; omitted: told from its keys")
    p.add_argument("--out", type=Path, required=True, help="targets file to write (.safetensors)")
    add_number(p, "--min-images", int, default=3, at_least=1, help="warn about classes with fewer images")
    add_number(p, "--folds", int, default=5, at_least=2, help="cross-validation folds (fewer when a class has fewer images)")
    add_seed(p, help="seed of the cross-validation folds")
    add_device(p, "cpu", help="where features are extracted: cpu or cuda[:N]")
    add_force(p, help="replace an existing targets file")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.graph.class_graph import load_graph  # lazy: numpy
    from kgzsl.propagation.classifiers import (  # lazy: torch
        save_fitted_targets,
        targets_from_images,
    )
    from kgzsl.propagation.targets import check_targets_out  # lazy: torch

    out = check_targets_out(args.out, args.force)  # before any work: never after minutes of extraction
    args.graph = graph_folder(args.graph)
    graph = load_graph(args.graph)
    fitted = targets_from_images(args.images, graph, args.backbone, arch=args.arch, device=args.device, seed=args.seed,
                                 folds=args.folds, min_images=args.min_images, progress=not args.json)
    save_fitted_targets(fitted, out, force=args.force)
    summary = {**fitted.summary(), "out": str(out), "source": str(args.images), "graph": str(args.graph)}
    emit(args, summary, _text)


def _text(s: dict[str, Any]) -> str:
    from kgzsl.propagation.classifiers import format_fitted  # lazy: torch

    return f"targets {s['out']} from {s['source']} (graph {s['graph']}):\n" + format_fitted(s)
