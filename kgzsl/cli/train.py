"""``kgzsl train``: graph + real CNN classifier rows -> a trained GCNZ / SGCN / DGP run with classifiers for every node."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.cli.flags import (
    DEFAULT_BACKBONE,
    add_device,
    add_force,
    add_graph,
    add_json,
    add_model,
    add_number,
    add_seed,
    subparser,
)
from kgzsl.cli.steps import emit, graph_folder
from kgzsl.errors import KgzslError
from kgzsl.propagation.run_files import MODEL_FILE, PREDICTIONS_FILE, RECORD_FILE

if TYPE_CHECKING:
    from kgzsl.propagation.targets import Targets


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "train",
        help="graph + real CNN classifier rows -> trained GCNZ / SGCN / DGP and predicted classifiers for every node",
        description=(
            "Train a weight-propagation model to regress the seen classes' real classifier rows (weights + bias) "
            f"and predict classifiers for every node. Writes {MODEL_FILE}, {RECORD_FILE} and {PREDICTIONS_FILE}."
        ),
    )
    add_graph(p)
    add_model(p, help="propagation model")
    p.add_argument(
        "--backbone",
        help="targets: efficientnet-lite0/1/2, a state-dict file (.pth/.pt/.safetensors, e.g. torchvision ResNet) or a matrix "
             f"(.npy/.safetensors); default {DEFAULT_BACKBONE} unless --targets",
    )
    _add_targets(p)
    p.add_argument("--wnids", type=Path, help="wnid of each target row, one a line (needed for a matrix; default ImageNet-1k order)")
    bias = p.add_mutually_exclusive_group()
    bias.add_argument("--no-bias", dest="bias", action="store_const", const=False, default=None,
                      help="the matrix has no bias column (a zero one is appended); default: told from its width")
    bias.add_argument("--bias-column", dest="bias", action="store_const", const=True,
                      help="the matrix's last column is the bias; default: told from its width (1280/2048: none, +1: one)")
    add_number(p, "--epochs", int, at_least=1,
               help="(maximum) epochs (default: the model's schedule, kgzsl.propagation.schedules.SCHEDULES: dgp 500, gcnz/sgcn 3000)")
    add_number(p, "--lr", float, above=0, help="Adam learning rate (default: the model's schedule: dgp 3e-3, gcnz/sgcn 1e-3)")
    add_number(p, "--distance-lr", float, above=0,
               help="DGP: the distance weights' learning rate as a multiple of --lr (default 1). `--epochs 250 --distance-lr 4` "
                    "trains in half the time; docs/training.md says what it gives")
    add_seed(p, help="random seed (initialisation, dropout, validation split)")
    add_number(p, "--val-fraction", float, at_least=0, below=1, meaning=" (a share of the seen classes, from 0 up to 1)",
               help="share of the seen classes held out to choose the epoch (default: the model's schedule: dgp 0, gcnz/sgcn 0.05)")
    add_number(p, "--patience", int, at_least=0, meaning=" (0: never stop early)",
               help="stop after this many epochs without a better validation loss (0: never; default: kgzsl.propagation.schedules.DEFAULT_PATIENCE, 50)")
    p.add_argument("--exclude", type=Path, help="file of wnids whose targets must not be used (held-out classes)")
    p.add_argument("--no-refit", dest="refit", action="store_false",
                   help="keep the model chosen on the validation slice instead of refitting on every seen class for the chosen epochs")
    p.add_argument("--bf16", action="store_true", help="bfloat16 products (DGP: a faster step on CPUs with AVX-512 BF16; a different run from float32's, not bitwise)")
    add_device(p, "cpu", help="where the training steps run: cpu (default) or cuda[:N]")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    add_force(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.core.idlists import read_id_list  # lazy: startup
    from kgzsl.core.outputs import check_output_dir  # lazy: startup
    from kgzsl.graph.class_graph import load_graph  # lazy: numpy
    from kgzsl.propagation.run import save_run  # lazy: startup
    from kgzsl.propagation.training import train  # lazy: torch

    out = check_output_dir(args.out, "train", args.force)  # before training: never lose minutes of it
    args.graph = graph_folder(args.graph)
    graph = load_graph(args.graph)
    targets = _targets(args)
    exclude = read_id_list(args.exclude, "exclude") if args.exclude else None
    stopping = {} if args.patience is None else {"patience": args.patience}
    result = train(
        graph, targets, model=args.model, epochs=args.epochs, lr=args.lr, seed=args.seed, val_fraction=args.val_fraction,
        bf16=args.bf16, progress=not args.json, exclude=exclude, device=args.device, refit=args.refit,
        distance_lr=args.distance_lr, **stopping,
    )
    save_run(result, graph, out, force=args.force)
    summary = {**result.summary(), "out": str(out), "graph": str(args.graph), "targets": targets.source,
               "targets_assumed": targets.assumed or None}
    emit(args, summary, _text)


def _text(s: dict[str, Any]) -> str:
    val = "n/a" if s["val_loss"] is None else s["val_loss"]
    return (
        f"trained {s['model']} -> {s['out']}: {s['epochs_run']} epochs, best epoch {s['best_epoch']}, "
        f"seen loss {s['seen_loss']}, val loss {val} ({s['train_classes']} train / {s['val_classes']} val classes "
        f"from {s['targets']}), {s['seconds']} s" + (f"\n  targets: {s['targets_assumed']}" if s["targets_assumed"] else "")
    )


def _add_targets(p: argparse.ArgumentParser) -> None:
    """``--targets``: a targets file of ``kgzsl targets`` instead of a backbone's classifier or a matrix."""
    p.add_argument("--targets", type=Path, metavar="FILE",
                   help="targets file written by `kgzsl targets` (classifiers fitted on your images); "
                        "instead of --backbone/--wnids/--no-bias/--bias-column")


def _targets(args: argparse.Namespace) -> Targets:
    """The targets: the ``--targets`` file, else ``--backbone`` (default Lite0) with ``--wnids`` and the bias flags."""
    from kgzsl.propagation.targets import load_targets  # lazy: torch

    if args.targets is None:
        return load_targets(args.backbone or DEFAULT_BACKBONE, args.wnids, bias=args.bias)
    given = [flag for flag, value in (("--backbone", args.backbone), ("--wnids", args.wnids),
                                      ("--no-bias/--bias-column", args.bias)) if value is not None]
    if given:
        raise KgzslError(f"--targets {args.targets} names its classes, bias and backbone itself: drop {', '.join(given)}")
    from kgzsl.propagation.targets import load_fitted_targets  # lazy: torch

    return load_fitted_targets(args.targets)
