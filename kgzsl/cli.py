"""The ``kgzsl`` command: a thin layer over the library API, one subcommand a pipeline stage.

Every subcommand takes ``--json`` for a machine-readable summary on stdout; progress goes to stderr.
Bad input ends with one line ``kgzsl: error: ...`` and exit status 2.

Each subcommand is a parser builder ``_add_<command>`` beside its ``cmd_<command>``, which parses,
calls the library and prints. Number flags are checked while parsing (:class:`_Checked`, with
:func:`kgzsl.errors.check_number`); a library error naming a Python parameter is reported with its
flag (:data:`FLAGS`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.core.resources import default_graph_dir
from kgzsl.errors import KgzslError, check_number
from kgzsl.propagation.run_files import MODEL_FILE, PREDICTIONS_FILE, RECORD_FILE

if TYPE_CHECKING:
    from kgzsl.graph.class_graph import ClassGraph
    from kgzsl.propagation.predictions import Predictions
    from kgzsl.propagation.run import Run
    from kgzsl.propagation.targets import Targets
    from kgzsl.recognition.evaluate import SplitEvaluation

#: --predictions of predict, evaluate and inspect: a run folder or its predictions file (see kgzsl.propagation.run)
PREDICTIONS_HELP = f"a run folder written by kgzsl train, or its {PREDICTIONS_FILE}"
#: the shipped ImageNet-21k graph, inside the installed package or the checkout kgzsl runs from (not the current folder)
DEFAULT_GRAPH = default_graph_dir()
GRAPH_HELP = "graph folder (default: the shipped graphs/imagenet21k of the kgzsl project)"
JSON_HELP = "print a JSON summary on stdout"
#: the backbone of train's targets by default (kgzsl.propagation.targets.DEFAULT_BACKBONE; spelled out here: that module imports torch)
DEFAULT_BACKBONE = "efficientnet-lite0"
#: the flag of each library parameter whose flag is not ``--`` + its name with dashes (see :func:`_cli_message`)
FLAGS = {"graph_dir": "--graph", "method": "--map"}


# ------------------------------------------------------------------------------------ parsing
class _UsageError(Exception):
    """A command-line mistake argparse found (unknown option, bad choice, missing argument, not a number)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line ``kgzsl: error: ...`` (from :func:`main`), not the usage block too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


class _RawEpilogDefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the epilog's line breaks (the torchrun usage)."""


class _Checked(argparse.Action):
    """Store a number (or each of a list) once :func:`kgzsl.errors.check_number` accepts it with ``bounds``:
    refused while parsing, before any work, as a KgzslError naming the parameter (the flag's dest)."""

    def __init__(self, option_strings: Sequence[str], dest: str, bounds: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.bounds = bounds or {}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        for value in values if isinstance(values, list) else [values]:
            check_number(self.dest, value, **self.bounds)
        setattr(namespace, self.dest, values)


def _cli_message(error: Exception) -> str:
    """The message of ``error``, its leading Python parameter (KgzslError.parameter) replaced by its flag."""
    text, name = str(error), getattr(error, "parameter", None)
    if not name or not text.startswith(name):
        return text
    return FLAGS.get(name, "--" + name.replace("_", "-")) + text[len(name):]


# ------------------------------------------------------------------------------ shared flags
def _subparser(sub: Any, name: str, help: str, description: str | None = None,
               formatter: type[argparse.HelpFormatter] = argparse.ArgumentDefaultsHelpFormatter,
               **kwargs: Any) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description, formatter_class=formatter, **kwargs)


def _add_number(p: argparse.ArgumentParser, flag: str, kind: type, help: str, default: Any = None,
                nargs: str | None = None, **bounds: Any) -> None:
    """A number flag of type ``kind``, refused while parsing outside ``bounds`` (see :class:`_Checked`)."""
    p.add_argument(flag, type=kind, default=default, nargs=nargs, action=_Checked, bounds=bounds, help=help)


def _add_json(p: argparse.ArgumentParser, help: str = JSON_HELP) -> None:
    p.add_argument("--json", action="store_true", help=help)


def _add_force(p: argparse.ArgumentParser, help: str = "replace an existing output folder") -> None:
    p.add_argument("--force", action="store_true", help=help)


def _add_graph(p: argparse.ArgumentParser, help: str = GRAPH_HELP, default: Path | None = None) -> None:
    p.add_argument("--graph", type=Path, default=default, help=help)


def _add_device(p: argparse.ArgumentParser, default: str, help: str) -> None:
    p.add_argument("--device", default=default, help=help)


def _add_seed(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--seed", type=int, default=0, help=help)


class _RegistryNames(Sequence[str]):
    """The names of a registry (``attribute`` of ``module``), imported on first use: the registries import
    torch, which a flag's choices then cost only when its subcommand's help is shown or the flag is given."""

    def __init__(self, module: str, attribute: str) -> None:
        self.module, self.attribute = module, attribute

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.attribute))

    def __getitem__(self, index: Any) -> Any:
        return self.names[index]

    def __len__(self) -> int:
        return len(self.names)


def _add_choice(p: argparse.ArgumentParser, flag: str, names: _RegistryNames, **kwargs: Any) -> None:
    """A flag whose choices are a registry's names (set after ``add_argument``, whose metavar check would
    read them, and so import the registry, for every command)."""
    p.add_argument(flag, **kwargs).choices = names


def _add_model(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--model``, one of :data:`kgzsl.propagation.models.MODELS`."""
    _add_choice(p, "--model", _RegistryNames("kgzsl.propagation.models", "MODELS"), default="dgp", help=help)


def _add_arch(p: argparse.ArgumentParser, help: str) -> None:
    """``--arch``, one of the ResNet depths :data:`kgzsl.vision.backbones.resnet.RESNET_LAYERS` builds."""
    _add_choice(p, "--arch", _RegistryNames("kgzsl.vision.backbones.resnet", "RESNET_LAYERS"), help=help)


def _add_predictions(p: argparse.ArgumentParser) -> None:
    """``--predictions`` (a run folder or its predictions file) and ``--allow-backbone-mismatch``."""
    p.add_argument("--predictions", type=Path, required=True, help=PREDICTIONS_HELP)
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="only warn when the backbone differs from the one the predictions were trained for")


def _add_hedge(p: argparse.ArgumentParser, help: str, default: float | None = None) -> None:
    """``--hedge``: a target accuracy calibrated by ``kgzsl calibrate``."""
    _add_number(p, "--hedge", float, default=default, above=0, meaning=" (a target accuracy in (0, 1])", help=help)


def _add_hedge_rule(p: argparse.ArgumentParser) -> None:
    """``--hedge-rule``: threshold (default of the calibration) or darts."""
    p.add_argument("--hedge-rule", choices=["threshold", "darts"],
                   help="how hedged answers are chosen: threshold (the most informative node at least as probable as the "
                        "calibrated threshold; the default) or darts (Deng et al.'s multiplier)")


def _add_seen_rows(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--seen-rows", choices=["real", "predicted"], default="real", help=help)


# ------------------------------------------------------------------------------ shared steps
def _graph_folder(given: Path | None) -> Path:
    """``--graph`` as given, else the shipped graph (a clear error where it is absent)."""
    if given is not None:
        return Path(given)
    if not (DEFAULT_GRAPH / "graph.json").is_file():
        raise KgzslError(
            f"the shipped graph {DEFAULT_GRAPH} is missing: pass --graph FOLDER, or build it with `kgzsl build-graph`"
        )
    return DEFAULT_GRAPH


def _check_backbone(args: argparse.Namespace, predictions: Predictions, backbone: dict[str, Any] | None, given: str) -> None:
    """Refuse (with --allow-backbone-mismatch: warn about) a backbone other than the one the predictions were trained for."""
    from kgzsl.propagation.predictions import backbone_mismatch_of

    mismatch = backbone_mismatch_of(predictions.meta, backbone)
    if mismatch is None:
        return
    text = f"predictions {args.predictions} were trained for {mismatch[0]} but {given} {mismatch[1]}"
    if args.allow_backbone_mismatch:
        print(f"kgzsl: warning: {text} (going on: --allow-backbone-mismatch)", file=sys.stderr)
        return
    raise KgzslError(f"{text}: use the run's backbone, or pass --allow-backbone-mismatch")


def _note(text: str) -> None:
    print(f"kgzsl: note: {text}", file=sys.stderr)


def _emit(args: argparse.Namespace, summary: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    """The summary as JSON (``--json``) or as text for people."""
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        print(human(summary))


def _check_plot_file(path: Path) -> None:
    from kgzsl.core.outputs import check_output_file

    check_output_file(path, "--plot file")


# ----------------------------------------------------------------------------------- build-graph
def _add_build_graph(sub: Any) -> None:
    p = _subparser(
        sub, "build-graph", help="class hierarchy + word vectors -> graph folder",
        description=(
            "Build a class graph. WordNet mode (default): seen + unseen (+ extra) wnids, closed upward along "
            "noun hypernyms to the root unless --no-closure; defaults are ImageNet-1k seen and ImageNet-21k "
            "unseen. Taxonomy mode (--taxonomy): a user hierarchy of plain class names for a new domain."
        ),
    )
    p.add_argument("--seen", type=Path, help="file of seen wnids (classes with a real classifier), one a line; default ImageNet-1k")
    p.add_argument("--unseen", type=Path, help="file of unseen wnids, one a line; default ImageNet-21k minus 1k")
    p.add_argument("--extra-nodes", type=Path, help="file of extra structure wnids (neither seen nor unseen)")
    p.add_argument("--no-closure", action="store_true", help="keep exactly the listed nodes (DGP's graph) instead of adding all ancestors")
    p.add_argument(
        "--instance-hypernyms", choices=["auto", "yes", "no"], default="auto",
        help="follow WordNet instance-of links too; auto = yes when closing upward, no with --no-closure",
    )
    p.add_argument("--taxonomy", type=Path, help="a user taxonomy (CSV child,parent[,synset] or nested JSON/YAML) instead of WordNet lists")
    p.add_argument("--vectors", default=None,
                   help="node features: glove-6b-50d+minilm (the default: GloVe 6B 50-d next to all-MiniLM-L6-v2 of 'names: gloss'), "
                        "minilm, minilm-names, minilm-parents, glove-6b-50d, a GloVe text / word2vec text or .bin / fastText "
                        ".bin file, or two of these joined by '+'")
    p.add_argument("--out", type=Path, default=DEFAULT_GRAPH, help="graph folder to write")
    _add_force(p)
    _add_json(p)
    p.set_defaults(func=cmd_build_graph)


def cmd_build_graph(args: argparse.Namespace) -> None:
    from kgzsl.core.outputs import check_output_dir
    from kgzsl.graph.embeddings import load_vectors

    start = time.perf_counter()
    out = check_output_dir(args.out, "graph", args.force)  # before any work: never after minutes of it
    vectors = load_vectors(args.vectors)
    graph = _taxonomy_graph(args, vectors) if args.taxonomy else _wordnet_graph(args, vectors)
    graph.save(out, force=args.force)
    summary = {**graph.summary(), "out": str(out), "seconds": round(time.perf_counter() - start, 2)}
    _emit(args, summary, _build_graph_text)


def _taxonomy_graph(args: argparse.Namespace, vectors: Any) -> ClassGraph:
    """Taxonomy mode: ``--taxonomy`` with ``--seen`` (and optionally ``--unseen``) class-name files."""
    from kgzsl.core.idlists import read_id_list
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

    taxonomy = load_taxonomy(args.taxonomy)
    seen = read_id_list(args.seen, "seen") if args.seen else None
    unseen = read_id_list(args.unseen, "unseen") if args.unseen else None
    return build_taxonomy_graph(taxonomy, seen=seen, unseen=unseen, vectors=vectors, progress=not args.json)


def _wordnet_graph(args: argparse.Namespace, vectors: Any) -> ClassGraph:
    """WordNet mode: the wnid files given, ImageNet-1k seen / 21k unseen for those not given."""
    from kgzsl.core.idlists import read_id_list
    from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids
    from kgzsl.graph.class_graph import build_wordnet_graph

    sources = {
        "seen": str(args.seen) if args.seen else "imagenet-1k (timm wheel)",
        "unseen": str(args.unseen) if args.unseen else "imagenet-21k minus 1k (timm wheel)",
    }
    seen = read_id_list(args.seen, "seen") if args.seen else imagenet1k_wnids()
    unseen = read_id_list(args.unseen, "unseen") if args.unseen else imagenet21k_unseen_wnids()
    extra = read_id_list(args.extra_nodes, "extra-nodes") if args.extra_nodes else []
    if args.extra_nodes:
        sources["extra"] = str(args.extra_nodes)
    if bool(args.seen) != bool(args.unseen):  # one list given, the other the ImageNet default: say which clash
        given, default = ("--seen", "unseen") if args.seen else ("--unseen", "seen")
        clash = sorted(set(seen) & set(unseen))
        if clash:
            raise KgzslError(
                f"{len(clash)} classes of {given} {args.seen or args.unseen} (first: {clash[0]}) are among the default "
                f"{default} classes ({sources[default]}), used because no --{default} was given: pass --{default} too"
            )
    return build_wordnet_graph(
        seen, unseen, extra, closure=not args.no_closure, vectors=vectors,
        instance_hypernyms={"auto": None, "yes": True, "no": False}[args.instance_hypernyms], sources=sources,
        progress=not args.json,
    )


def _build_graph_text(s: dict[str, Any]) -> str:
    return (
        f"graph {s['out']}: {s['nodes']} nodes ({s['seen']} seen, {s['unseen']} unseen, {s['internal']} internal), "
        f"{s['edges']} edges, {sum(s['dense_pairs_by_distance'])} dense pairs at distances "
        f"0..{len(s['dense_pairs_by_distance']) - 1}, {s['feature_dim']}-d vectors ({s['vectors']}), "
        f"{len(s['oov_nodes'])} nodes without a vector, {s['seconds']} s"
    )


# ----------------------------------------------------------------------------------------- splits
def _add_splits(sub: Any) -> None:
    p = _subparser(sub, "splits", help="hop-based unseen splits (k hops from the seen classes) and comparison with standard split files")
    _add_graph(p)
    _add_number(p, "--hops", int, nargs="+", default=[2, 3], at_least=1, help="hop counts to derive")
    p.add_argument("--compare", type=Path, nargs="*", help="standard split files (one wnid a line) to compare with")
    p.add_argument("--out", type=Path, help="folder to write split-K-hops.txt files into")
    _add_json(p)
    p.set_defaults(func=cmd_splits)


def cmd_splits(args: argparse.Namespace) -> None:
    from kgzsl.core.idlists import read_id_list
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.graph.splits import compare_split, hop_splits, write_split

    if args.out is not None:
        _check_splits_out(args.out)
    args.graph = _graph_folder(args.graph)
    graph = load_graph(args.graph)
    standards = {str(path): read_id_list(path, "standard split") for path in args.compare or []}
    summary: dict[str, Any] = {"graph": str(args.graph), "splits": {}}
    for hops, derived in hop_splits(graph, args.hops).items():
        entry: dict[str, Any] = {"classes": len(derived)}
        if args.out:
            entry["file"] = str(write_split(derived, args.out, hops))
        summary["splits"][f"{hops}-hops"] = entry
        for name, standard in standards.items():
            entry.setdefault("compare", {})[name] = compare_split(derived, standard, graph)
    _emit(args, summary, _splits_text)


def _check_splits_out(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that is a file or a folder that cannot be written."""
    from kgzsl.core.outputs import check_folder_for_files

    check_folder_for_files(out, "splits --out folder (split-K-hops.txt files go there)")


def _splits_text(s: dict[str, Any]) -> str:
    lines = []
    for name, entry in s["splits"].items():
        lines.append(f"{name}: {entry['classes']} unseen classes" + (f" -> {entry['file']}" if "file" in entry else ""))
        for other, c in entry.get("compare", {}).items():
            lines.append(
                f"  vs {other}: {c['common']} common of {c['standard']} ({c['standard_in_graph']} in graph); "
                f"precision {c['precision']}, recall {c['recall']}, Jaccard {c['jaccard']}"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- train
def _add_train(sub: Any) -> None:
    p = _subparser(
        sub, "train",
        help="graph + real CNN classifier rows -> trained GCNZ / SGCN / DGP and predicted classifiers for every node",
        description=(
            "Train a weight-propagation model to regress the seen classes' real classifier rows (weights + bias) "
            f"and predict classifiers for every node. Writes {MODEL_FILE}, {RECORD_FILE} and {PREDICTIONS_FILE}."
        ),
    )
    _add_graph(p)
    _add_model(p, help="propagation model")
    p.add_argument(
        "--backbone",
        help="targets: efficientnet-lite0/1/2, a state-dict file (.pth/.pt/.safetensors, e.g. torchvision ResNet) or a matrix "
             f"(.npy/.safetensors); default {DEFAULT_BACKBONE} unless --targets",
    )
    _add_train_targets(p)
    p.add_argument("--wnids", type=Path, help="wnid of each target row, one a line (needed for a matrix; default ImageNet-1k order)")
    bias = p.add_mutually_exclusive_group()
    bias.add_argument("--no-bias", dest="bias", action="store_const", const=False, default=None,
                      help="the matrix has no bias column (a zero one is appended); default: told from its width")
    bias.add_argument("--bias-column", dest="bias", action="store_const", const=True,
                      help="the matrix's last column is the bias; default: told from its width (1280/2048: none, +1: one)")
    _add_number(p, "--epochs", int, at_least=1,
                help="(maximum) epochs (default: the model's schedule, kgzsl.propagation.training.SCHEDULES: dgp 500, gcnz/sgcn 3000)")
    _add_number(p, "--lr", float, above=0, help="Adam learning rate (default: the model's schedule: dgp 3e-3, gcnz/sgcn 1e-3)")
    _add_seed(p, help="random seed (initialisation, dropout, validation split)")
    _add_number(p, "--val-fraction", float, at_least=0, below=1, meaning=" (a share of the seen classes, from 0 up to 1)",
                help="share of the seen classes held out to choose the epoch (default: the model's schedule: dgp 0, gcnz/sgcn 0.05)")
    _add_number(p, "--patience", int, at_least=0, meaning=" (0: never stop early)",
                help="stop after this many epochs without a better validation loss (0: never; default: kgzsl.propagation.training.DEFAULT_PATIENCE, 50)")
    p.add_argument("--exclude", type=Path, help="file of wnids whose targets must not be used (held-out classes)")
    p.add_argument("--no-refit", dest="refit", action="store_false",
                   help="keep the model chosen on the validation slice instead of refitting on every seen class for the chosen epochs")
    p.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast (faster on CPUs with bf16 units)")
    _add_device(p, "cpu", help="where the training steps run: cpu (default) or cuda[:N]")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    _add_force(p)
    _add_json(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    from kgzsl.core.idlists import read_id_list
    from kgzsl.core.outputs import check_output_dir
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.training import train

    out = check_output_dir(args.out, "train", args.force)  # before training: never lose minutes of it
    args.graph = _graph_folder(args.graph)
    graph = load_graph(args.graph)
    targets = _train_targets(args)
    exclude = read_id_list(args.exclude, "exclude") if args.exclude else None
    stopping = {} if args.patience is None else {"patience": args.patience}
    result = train(
        graph, targets, model=args.model, epochs=args.epochs, lr=args.lr, seed=args.seed, val_fraction=args.val_fraction,
        bf16=args.bf16, progress=not args.json, exclude=exclude, device=args.device, refit=args.refit, **stopping,
    )
    save_run(result, graph, out, force=args.force)
    summary = {**result.summary(), "out": str(out), "graph": str(args.graph), "targets": targets.source,
               "targets_assumed": targets.assumed or None}
    _emit(args, summary, _train_text)


def _train_text(s: dict[str, Any]) -> str:
    val = "n/a" if s["val_loss"] is None else s["val_loss"]
    return (
        f"trained {s['model']} -> {s['out']}: {s['epochs_run']} epochs, best epoch {s['best_epoch']}, "
        f"seen loss {s['seen_loss']}, val loss {val} ({s['train_classes']} train / {s['val_classes']} val classes "
        f"from {s['targets']}), {s['seconds']} s" + (f"\n  targets: {s['targets_assumed']}" if s["targets_assumed"] else "")
    )


# --------------------------------------------------------------------------------------- targets
def _add_targets(sub: Any) -> None:
    p = _subparser(
        sub, "targets", help="fit the seen classes' classifiers (targets for train) from labelled images of a new domain",
        description=(
            "Fit one classifier (weights + bias, in the feature space predict scores in) a class folder by class-balanced "
            "multinomial logistic regression (scikit-learn, lbfgs), C chosen by cross-validation on the images. Folder "
            "names are mapped to graph nodes by id, wnid or name. Writes a targets file for `kgzsl train --targets`."
        ),
    )
    p.add_argument("images", type=Path, metavar="IMAGES",
                   help="ImageFolder tree (one sub-folder a class, named by node id, wnid or name), or a `kgzsl features` folder")
    _add_graph(p)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, metavar="NAME-or-FILE",
                   help="feature extractor: efficientnet-lite0|1|2 or a torchvision ResNet state dict (a features folder must be of it)")
    _add_arch(p, help="architecture of a ResNet state dict; omitted: told from its keys")
    p.add_argument("--out", type=Path, required=True, help="targets file to write (.safetensors)")
    _add_number(p, "--min-images", int, default=3, at_least=1, help="warn about classes with fewer images")
    _add_number(p, "--folds", int, default=5, at_least=2, help="cross-validation folds (fewer when a class has fewer images)")
    _add_seed(p, help="seed of the cross-validation folds")
    _add_device(p, "cpu", help="where features are extracted: cpu or cuda[:N]")
    _add_force(p, help="replace an existing targets file")
    _add_json(p)
    p.set_defaults(func=cmd_targets)


def cmd_targets(args: argparse.Namespace) -> None:
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.classifiers import save_fitted_targets, targets_from_images
    from kgzsl.propagation.targets import check_targets_out

    out = check_targets_out(args.out, args.force)  # before any work: never after minutes of extraction
    args.graph = _graph_folder(args.graph)
    graph = load_graph(args.graph)
    fitted = targets_from_images(args.images, graph, args.backbone, arch=args.arch, device=args.device, seed=args.seed,
                                 folds=args.folds, min_images=args.min_images, progress=not args.json)
    save_fitted_targets(fitted, out, force=args.force)
    summary = {**fitted.summary(), "out": str(out), "source": str(args.images), "graph": str(args.graph)}
    _emit(args, summary, _targets_text)


def _targets_text(s: dict[str, Any]) -> str:
    from kgzsl.propagation.classifiers import format_fitted

    return f"targets {s['out']} from {s['source']} (graph {s['graph']}):\n" + format_fitted(s)


def _add_train_targets(p: argparse.ArgumentParser) -> None:
    """train's ``--targets``: a targets file of ``kgzsl targets`` instead of a backbone's classifier or a matrix."""
    p.add_argument("--targets", type=Path, metavar="FILE",
                   help="targets file written by `kgzsl targets` (classifiers fitted on your images); "
                        "instead of --backbone/--wnids/--no-bias/--bias-column")


def _train_targets(args: argparse.Namespace) -> Targets:
    """train's targets: the ``--targets`` file, else ``--backbone`` (default Lite0) with ``--wnids`` and the bias flags."""
    from kgzsl.propagation.targets import load_targets

    if args.targets is None:
        return load_targets(args.backbone or DEFAULT_BACKBONE, args.wnids, bias=args.bias)
    given = [flag for flag, value in (("--backbone", args.backbone), ("--wnids", args.wnids),
                                      ("--no-bias/--bias-column", args.bias)) if value is not None]
    if given:
        raise KgzslError(f"--targets {args.targets} names its classes, bias and backbone itself: drop {', '.join(given)}")
    from kgzsl.propagation.targets import load_fitted_targets

    return load_fitted_targets(args.targets)


# -------------------------------------------------------------------------------------- features
FEATURES_EPILOG = (
    "scale-out with torchrun (each rank takes every N-th shard; rank 0 writes manifest.json):\n"
    "  one machine, 4 processes (GPUs or CPU ranks):\n"
    "    torchrun --nproc_per_node 4 -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
    "  two machines (run on each; IMAGES and FEATS on a filesystem both share):\n"
    "    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST0 --master_port 29500 \\\n"
    "      -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
    "    torchrun --nnodes 2 --node_rank 1 --nproc_per_node 8 --master_addr HOST0 --master_port 29500 \\\n"
    "      -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
    "backend: nccl on GPUs, gloo on CPUs; a restart may use a different number of ranks."
)


def _add_features(sub: Any) -> None:
    p = _subparser(
        sub, "features",
        help="CNN features of an ImageFolder tree (one sub-folder per class) -> sharded feature folder",
        description=(
            "Extract pooled CNN features of every image under IMAGE_DIR/<class>/... into sharded safetensors "
            "files in --out. A rerun with the same arguments resumes an interrupted run, skipping finished "
            "shards; unreadable images are listed as bad files and skipped."
        ),
        epilog=FEATURES_EPILOG, formatter=_RawEpilogDefaultsFormatter,
    )
    p.add_argument("image_dir", type=Path, metavar="IMAGE_DIR", help="ImageFolder tree: one sub-folder per class (e.g. wnid), images inside")
    p.add_argument(
        "--backbone", required=True, metavar="NAME-or-FILE",
        help="efficientnet-lite0|1|2 (real ImageNet-1k weights) or a torchvision ResNet-50/101/152 state dict file",
    )
    _add_arch(p, help="architecture of a ResNet state dict; omitted: told from its keys")
    p.add_argument("--out", type=Path, required=True, help="feature folder to write (or to resume)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard file (the unit of resumption)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes per rank (0: decode in the main process)")
    _add_device(p, "auto", help="auto (cuda:LOCAL_RANK if a GPU exists, else cpu), cpu, cuda, cuda:N")
    _add_force(p, help="discard the shards of an earlier run in --out and start over")
    _add_json(p, help=JSON_HELP + " (rank 0 only)")
    p.set_defaults(func=cmd_features)


def cmd_features(args: argparse.Namespace) -> None:
    from kgzsl.vision.features import ExtractionOptions, extract_features_distributed

    options = ExtractionOptions(batch_size=args.batch_size, shard_size=args.shard_size, workers=args.workers,
                                force=args.force, progress=not args.json)
    ranks, summary = extract_features_distributed(args.image_dir, args.out, args.backbone, arch=args.arch,
                                                  device=args.device, options=options)
    if ranks.rank == 0:  # one summary per run, from rank 0
        _emit(args, summary, _features_text)


def _features_text(s: dict[str, Any]) -> str:
    lines = [
        f"features {s['out']}: {s['features']} of {s['images']} images, {s['dim']}-d ({s['backbone']}), "
        f"{s['shards']} shards ({s['shards_written']} written now, {s['shards_resumed']} resumed), "
        f"{s['ranks']} rank(s) on {s['device']}, {s['seconds']} s ({s['images_per_second']} images/s)"
    ]
    if s["bad_files"]:
        lines.append(f"{len(s['bad_files'])} bad files skipped:")
        lines.extend(f"  {bad['path']}: {bad['reason']}" for bad in s["bad_files"][:20])
        if len(s["bad_files"]) > 20:
            lines.append(f"  ... and {len(s['bad_files']) - 20} more (see manifest.json)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- predict
def _add_predict(sub: Any) -> None:
    p = _subparser(
        sub, "predict", help="name images: top-k classes by [feature, 1] . predicted classifier",
        description=(
            "Rank candidate classes for each image. --candidates unseen (default): standard zero-shot over every "
            "class whose real classifier was not used in training; all: generalized zero-shot over seen and unseen "
            "classes (use --gamma from a calibration to offset the bias toward seen classes); or a file of wnids."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _add_predictions(p)
    p.add_argument("--candidates", default="unseen", help="unseen, all, or a file of candidate wnids")
    _add_number(p, "--top", int, default=5, at_least=1, help="how many classes to print per image")
    _add_number(p, "--gamma", float, help="calibrated stacking: subtracted from seen classes' scores "
                "(default 0; with --hedge and --candidates all, the calibrated one)")
    p.add_argument("--transductive", action="store_true", help="refine the images' scores together by label propagation over their nearest neighbours")
    _add_seen_rows(p, help="with seen candidates: score seen classes with their real classifiers (default) or the predicted ones")
    p.add_argument("--backbone", help="feature extractor (default: the one the predictions were trained for)")
    _add_arch(p, help="architecture of a ResNet state dict")
    _add_hedge(p, help="also print the hedged answer (the most specific graph node meeting this target accuracy, "
                       "and its probability), calibrated by `kgzsl calibrate`")
    _add_hedge_rule(p)
    _add_graph(p, help="with --hedge: graph folder the predictions were trained on (default: the one the run records)")
    _add_json(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> None:
    from kgzsl.propagation.run import load_run
    from kgzsl.recognition.scoring import candidate_scores, top_predictions
    from kgzsl.vision.backbones import load_backbone
    from kgzsl.vision.features import image_list_features

    run = load_run(args.predictions)
    candidates = _candidates(args, run.predictions)
    hedger = _predict_hedger(args, run)
    backbone = load_backbone(_backbone_name(args, run), arch=args.arch)
    _check_backbone(args, run.predictions, backbone.describe(), "--backbone is")
    features, good, bad = image_list_features(args.images, backbone)
    rows, hedged = [], []
    gamma = hedger.gamma if hedger is not None else (args.gamma or 0.0)
    if good:
        scores, columns = candidate_scores(features, run.predictions, candidates, gamma, args.transductive, args.seen_rows)
        rows = top_predictions(scores, columns, good, run.predictions, args.top)
        hedged = hedger.predict(scores) if hedger is not None else []
    summary = {
        "predictions": str(args.predictions), "backbone": backbone.name, "candidates": args.candidates,
        "gamma": gamma, "transductive": args.transductive, "hedge": args.hedge,
        "hedge_rule": hedger.rule if hedger is not None else None,
        "images": [{"image": r.image, "top": [{"rank": k + 1, "id": i, "name": n, "score": round(v, 4)}
                                              for k, (i, n, v) in enumerate(r.top)]} for r in rows],
        "bad_files": bad,
    }
    for entry, answer in zip(summary["images"], hedged):
        entry["hedged"] = {**answer.as_dict(), "probability": round(answer.probability, 4), "info_gain": round(answer.info_gain, 4)}
    _emit(args, summary, _predict_text)
    if bad and not good:
        raise KgzslError(f"none of the {len(bad)} images could be read")


def _predict_hedger(args: argparse.Namespace, run: Run) -> Any:
    """With ``--hedge``: the run's calibrated :class:`kgzsl.recognition.hedge.rules.Hedger` for that target and candidate set
    (checked before any image is read); None without it."""
    from kgzsl.propagation.run import HEDGE_FILES
    from kgzsl.recognition.hedge.calibration import run_hedger

    if args.hedge is None:
        if args.hedge_rule is not None:
            raise KgzslError("--hedge-rule chooses how --hedge answers: give --hedge TARGET too")
        return None
    if args.candidates not in HEDGE_FILES or args.transductive:
        raise KgzslError(f"--hedge is calibrated for --candidates {' or '.join(HEDGE_FILES)} without --transductive "
                         f"(got --candidates {args.candidates}{' --transductive' if args.transductive else ''})")
    hedger = run_hedger(run, run.load_graph(args.graph), args.hedge, args.candidates, args.hedge_rule)
    if args.gamma is not None and args.gamma != hedger.gamma:
        raise KgzslError(f"--gamma {args.gamma:g} differs from the gamma {hedger.gamma:.4g} the run's hedging was calibrated "
                         "with: leave --gamma out (it is taken from the calibration)")
    return hedger


def _candidates(args: argparse.Namespace, predictions: Predictions) -> str | list[str]:
    """``--candidates``: unseen, all, or the ids of its file (each one a class of the predictions)."""
    from kgzsl.core.idlists import read_id_list

    if args.candidates in ("unseen", "all"):
        return args.candidates
    candidates = read_id_list(args.candidates, "candidates")
    names = dict(zip(predictions.meta.get("names") or [], predictions.ids))
    candidates.require_known(
        predictions.index, f"a class of the predictions {args.predictions}",
        hint=lambda entry: f" (it is the name of {names[entry]}: list ids)" if entry in names else "",
    )
    return candidates


def _backbone_name(args: argparse.Namespace, run: Run) -> str:
    """``--backbone``, else the run's; the default one (with a note) where the run records none."""
    if args.backbone or run.backbone:
        return args.backbone or run.backbone
    name = DEFAULT_BACKBONE
    _note(f"predictions {args.predictions} record no backbone (targets from a plain matrix): using {name}; "
          "pass --backbone to choose")
    return name


def _predict_text(s: dict[str, Any]) -> str:
    lines = []
    for image in s["images"]:
        lines.append(image["image"])
        lines.extend(f"  {t['rank']:>2}. {t['id']}  {t['name']:<40} {t['score']:.4f}" for t in image["top"])
        if "hedged" in image:
            h = image["hedged"]
            lines.append(f"  hedged at {s['hedge']:g} ({s['hedge_rule']}): {h['id']}  {h['name']:<27} probability {h['probability']:.3f} "
                         f"(depth {h['depth']}, {h['info_gain']:.2f} bits)")
    lines.extend(f"skipped {b['path']}: {b['reason']}" for b in s["bad_files"])
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ demo
def _add_demo(sub: Any) -> None:
    p = _subparser(sub, "demo", help="the end-to-end demo: ImageNet-21k graph, DGP on EfficientNet-Lite0, zero-shot on real held-out images")
    _add_graph(p, help="graph folder (built if missing)", default=DEFAULT_GRAPH)
    p.add_argument("--out", type=Path, default=Path("runs") / "demo", help="folder for the trained run and the PNG sheet")
    _add_model(p)
    _add_number(p, "--epochs", int, at_least=1, help="epochs (default: the model's schedule, kgzsl.propagation.training.SCHEDULES)")
    _add_seed(p)
    _add_hedge(p, default=0.9, help="target accuracy of the hedged column, shown once the run is calibrated (`kgzsl calibrate`)")
    _add_json(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> None:
    from kgzsl.demo import format_demo, run_demo

    log = (lambda text: print(text, file=sys.stderr)) if args.json else print
    summary = run_demo(out=args.out, graph_dir=args.graph, model=args.model, epochs=args.epochs, seed=args.seed,
                       progress=not args.json, log=log, hedge=args.hedge)
    _emit(args, summary, format_demo)


# ------------------------------------------------------------------------------------- calibrate
def _add_calibrate(sub: Any) -> None:
    p = _subparser(
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
    _add_predictions(p)
    _add_number(p, "--targets", float, nargs="+", default=[0.5, 0.7, 0.9], above=0,
                meaning=" (a target accuracy in (0, 1])", help="target hierarchical accuracies to calibrate")
    p.add_argument("--candidates", choices=["unseen", "all"], default="unseen",
                   help="unseen (default; writes hedge.json): calibrate on images of held-out or unseen classes; all "
                        "(generalized zero-shot; writes hedge-all.json): seen classes too, with calibrated stacking")
    _add_number(p, "--gamma", float, help="with --candidates all: the calibrated-stacking gamma (default: fitted on "
                "these images, which then must show seen and unseen classes)")
    _add_graph(p, help="graph folder the predictions were trained on (default: the one the run records)")
    p.add_argument("--plot", type=Path, help="write the reliability diagram PNG (flat top-1 before/after) here")
    _add_json(p)
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> None:
    from kgzsl.graph.names import labels_as_node_ids
    from kgzsl.inspection.plots import plot_reliability
    from kgzsl.propagation.run import load_run
    from kgzsl.recognition.hedge.calibration import fit_calibration
    from kgzsl.recognition.hedge.storage import write_calibration
    from kgzsl.vision.features import load_features, read_manifest

    if args.gamma is not None and args.candidates != "all":
        raise KgzslError("--gamma offsets seen candidates' scores: it needs --candidates all")
    if args.plot:
        _check_plot_file(args.plot)
    run = load_run(args.predictions)
    graph = run.load_graph(args.graph)
    _check_backbone(args, run.predictions, read_manifest(args.features).get("backbone"), f"the features in {args.features} come from")
    feats = load_features(args.features)
    labels = labels_as_node_ids(feats.labels, graph, f"feature folder {args.features}")
    record, curves = fit_calibration(run, graph, feats.features, labels, args.targets, str(args.features),
                                     args.candidates, args.gamma)
    if args.plot:
        plot_reliability(curves, args.plot, title=f"Reliability on {record['images']} calibration images")
        record["plot"] = str(args.plot)
    out = write_calibration(run, record)
    summary = {**record, "predictions": str(args.predictions), "out": str(out)}
    _emit(args, summary, _calibrate_text)


def _calibrate_text(s: dict[str, Any]) -> str:
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


# -------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: Any) -> None:
    p = _subparser(
        sub, "evaluate", help="Hit@k of extracted features against predicted classifiers, per split (ImageNet-21k protocol)",
        description=(
            "For each split file (unseen wnids, e.g. 2-hops / 3-hops / All): the images of the split's classes, "
            "ranked against the split's classes (--with-seen adds the seen classes: the +1K generalized form). "
            "Hit@1/2/5/10/20 averaged over images, ties counting against."
        ),
    )
    p.add_argument("--features", type=Path, required=True, help="feature folder written by kgzsl features (labels = wnid folders)")
    _add_predictions(p)
    p.add_argument("--split", type=Path, nargs="+", required=True, help="split files, one wnid a line")
    p.add_argument("--with-seen", action="store_true", help="add the seen classes to the candidates (+1K)")
    _add_graph(p, help="graph folder for hierarchical Hit@k (default: the graph the run was trained on, if present)")
    _add_seen_rows(p, help="score seen classes with their real classifiers (default) or the predicted ones")
    p.add_argument("--transductive", action="store_true", help="also report transductive label propagation over these images and its gain")
    p.add_argument("--gzsl", action="store_true", help="generalized zero-shot with calibrated stacking (needs images of seen classes too)")
    p.add_argument("--plot", type=Path, help="with --gzsl: write the seen-unseen accuracy curve PNG here")
    p.add_argument("--hedge", action="store_true",
                   help="also report hedged answers at each target calibrated by `kgzsl calibrate` (hierarchical accuracy, "
                        "depth, information gain), with flat top-1 and always-root baselines; candidates: the run's unseen classes")
    p.add_argument("--hedge-candidates", choices=["unseen", "all"], default="unseen",
                   help="with --hedge: the candidate set whose calibration to use (all: generalized, seen classes too)")
    p.add_argument("--hedge-plot", type=Path, help="with --hedge: write the accuracy-specificity curve PNG here (one curve a split)")
    _add_seed(p, help="seed of the calibration/test image split for --gzsl")
    _add_json(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from kgzsl.graph.names import labels_as_node_ids
    from kgzsl.inspection.plots import plot_seen_unseen
    from kgzsl.propagation.run import load_run
    from kgzsl.recognition.evaluate import evaluate_splits
    from kgzsl.vision.features import load_features, read_manifest

    plots = _plot_paths(args)
    if args.hedge_plot:
        if not args.hedge:
            raise KgzslError("--hedge-plot draws the accuracy-specificity curve of hedged answers: it needs --hedge")
        _check_plot_file(args.hedge_plot)
    run = load_run(args.predictions)
    graph = _evaluation_graph(args, run)
    _check_backbone(args, run.predictions, read_manifest(args.features).get("backbone"), f"the features in {args.features} come from")
    feats = load_features(args.features)
    if graph is not None:  # wnid folders against a taxonomy named by class, say
        feats = feats._replace(labels=labels_as_node_ids(feats.labels, graph, f"feature folder {args.features}", strict=False))
    splits = _read_splits(args, run.predictions)
    evaluations = evaluate_splits(feats.features, feats.labels, run.predictions, splits, with_seen=args.with_seen, graph=graph,
                                  seen_rows=args.seen_rows, transductive=args.transductive, gzsl=args.gzsl, seed=args.seed)
    entries = [evaluation.as_dict() for evaluation in evaluations]
    for entry, evaluation, plot in zip(entries, evaluations, plots):
        if plot is not None and evaluation.gzsl is not None:
            plot_seen_unseen(evaluation.gzsl, str(plot), title=f"GZSL on {entry['split']}: seen vs unseen accuracy")
            entry["gzsl"]["plot"] = str(plot)
    if args.hedge:
        _evaluate_hedge(args, run, feats, splits, entries)
    summary = {"features": str(args.features), "predictions": str(args.predictions), "splits": entries,
               "graph": graph.meta.get("folder") if graph is not None else None}
    _emit(args, summary, lambda s: _evaluate_text(s, evaluations))


def _evaluate_hedge(args: argparse.Namespace, run: Run, feats: Any, splits: list[tuple[str, list[str]]],
                    entries: list[dict[str, Any]]) -> None:
    """``--hedge``: each split's hedged-answer table into its entry (``hedge``); ``--hedge-plot`` the curve."""
    import torch

    from kgzsl.inspection.plots import plot_accuracy_specificity
    from kgzsl.recognition.hedge.reporting import evaluate_hedging

    graph = run.load_graph(args.graph)
    tasks = {}
    for (name, split), entry in zip(splits, entries):
        wanted = set(split)
        rows = [i for i, label in enumerate(feats.labels) if label in wanted]
        if not rows:
            raise KgzslError(f"--features {args.features} hold no images of split {name}'s classes")
        task, entry["hedge"] = evaluate_hedging(run, graph, feats.features[torch.tensor(rows)],
                                                [feats.labels[i] for i in rows], name, args.hedge_candidates)
        tasks[name] = [task]
    if args.hedge_plot:
        plot_accuracy_specificity(tasks, entries[0]["hedge"]["rules"], args.hedge_plot)
        for entry in entries:
            entry["hedge"]["plot"] = str(args.hedge_plot)


def _plot_paths(args: argparse.Namespace) -> list[Path | None]:
    """The PNG of each split (``--plot`` itself for one split, else its stem + ``-{split}.png``), checked
    before any work; all None without ``--plot``."""
    if not args.plot:
        return [None] * len(args.split)
    if not args.gzsl:
        raise KgzslError("--plot draws the generalized zero-shot seen-unseen curve: it needs --gzsl")
    plot = Path(args.plot)
    paths = [plot if len(args.split) == 1 else plot.with_name(f"{plot.stem}-{Path(s).stem}.png") for s in args.split]
    for path in paths:
        _check_plot_file(path)
    return paths


def _read_splits(args: argparse.Namespace, predictions: Predictions) -> list[tuple[str, list[str]]]:
    """(name, ids) of each ``--split`` file; every id must be a class of the predictions (none silently dropped)."""
    from kgzsl.core.idlists import read_id_list

    splits = []
    for split_file in args.split:
        split = read_id_list(split_file, "split")
        split.require_known(predictions.index, f"a class of the predictions {args.predictions}")
        splits.append((Path(split_file).stem, split))
    return splits


def _evaluation_graph(args: argparse.Namespace, run: Run) -> ClassGraph | None:
    """The graph for hierarchical Hit@k: --graph (refused unless it is the run's), else the run's own where it
    still is; None without one."""
    from kgzsl.graph.class_graph import load_graph

    if args.graph is not None:
        return run.load_graph(args.graph)
    try:
        folder = run.graph_folder()
    except KgzslError:  # the run records no graph folder, or it is gone: no hierarchical figures
        return None
    graph = load_graph(folder)
    return graph if run.trained_on(graph) else None


def _evaluate_text(s: dict[str, Any], evaluations: list[SplitEvaluation]) -> str:
    from kgzsl.recognition.evaluate import format_table
    from kgzsl.recognition.hedge.reporting import format_hedge_table

    results = [r for e in evaluations for r in (e.result, e.transductive) if r is not None]
    lines = [format_table(results)]
    for entry in s["splits"]:
        if "gzsl" in entry:
            g = entry["gzsl"]
            lines.append(f"GZSL {entry['split']}: gamma {g['gamma']:.4g}, seen {100 * g['seen_accuracy']:.1f}%, "
                         f"unseen {100 * g['unseen_accuracy']:.1f}%, H {100 * g['harmonic_mean']:.1f}%, AUSUC {g['ausuc']:.3f}")
        if "hedge" in entry:
            h = entry["hedge"]
            title = (f"hedged answers, {entry['split']} (T = {h['temperature']:.4g}; acc%: hierarchical accuracy, "
                     "conf%: mean probability of the answer)")
            lines.append(format_hedge_table(h["rows"], title) + (f"\n  curve: {h['plot']}" if "plot" in h else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- inspect
def _add_inspect(sub: Any) -> None:
    p = _subparser(
        sub, "inspect", help="why a class got the classifier it did: neighbourhood, nearest classifiers, attribution, plots",
        description=(
            "Report one class (a wnid, or a name such as 'giraffe'): its graph neighbourhood, the classes with the most "
            "similar predicted classifier, its weight norm and cosine to its true classifier where one is known, the seen "
            f"classes its prediction is built from (needs the run's {MODEL_FILE} beside the predictions) and, for DGP, "
            "the learned distance-group weights."
        ),
    )
    p.add_argument("query", metavar="WNID-or-name", help="the class to inspect")
    _add_graph(p, help="graph folder the predictions were trained on (default: the one the run records)")
    _add_predictions(p)
    p.add_argument("--targets", help="true classifiers to compare with (default: the run's targets source)")
    p.add_argument("--no-targets", action="store_true", help="skip the comparison with true classifiers")
    _add_number(p, "--top", int, default=10, at_least=1, help="how many nearest classes / attributions to list")
    p.add_argument("--plot", type=Path, help="write a PNG: weight map with the subtree labelled, DGP group weights, held-out cosines")
    p.add_argument("--map", choices=["pca", "tsne"], default="pca", help="2-D projection of the weight map (t-SNE needs scikit-learn)")
    _add_json(p, help="print the report as JSON on stdout")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> None:
    from kgzsl.inspection.explain import format_report, inspect_node, resolve
    from kgzsl.inspection.plots import plot_inspection
    from kgzsl.propagation.run import load_run

    if args.plot:
        _check_plot_file(args.plot)
    run = load_run(args.predictions)
    graph = run.load_graph(args.graph)
    node = resolve(graph, args.query)
    model = run.load_model(graph)
    targets = _inspect_targets(args, run.predictions)
    report = inspect_node(graph, run.predictions, graph.ids[node], model=model, targets=targets, k=args.top)
    if args.plot:
        plot_inspection(graph, run.predictions, node, str(args.plot), model=model, targets=targets, method=args.map)
        report["plot"] = str(args.plot)
    _emit(args, report, lambda r: format_report(r) + (f"\n  plot: {r['plot']}" if "plot" in r else ""))


def _inspect_targets(args: argparse.Namespace, predictions: Predictions) -> Targets | None:
    """The true classifiers to compare with: ``--targets`` (checked against the run's backbone), else the
    run's own where they still load (a note where not); None with ``--no-targets``."""
    from kgzsl.propagation.targets import load_targets

    source = args.targets or predictions.meta.get("targets")
    if not source or args.no_targets:
        return None
    try:
        targets = load_targets(source)
    except KgzslError as exc:
        if args.targets:
            raise
        _note(f"the run's targets cannot be loaded again ({exc}): no comparison with true classifiers (pass --targets)")
        return None
    if args.targets:
        _check_backbone(args, predictions, {"name": targets.backbone, "fingerprint": targets.fingerprint} if targets.backbone else None,
                        "--targets is")
    return targets


# ------------------------------------------------------------------------------------- propagate
def _add_propagate(sub: Any) -> None:
    p = _subparser(
        sub, "propagate", help="a trained run's model on a grown graph (new classes) -> a run with classifiers for every node, no retraining",
        description=(
            "Run the trained model of --run on another graph built with the same --vectors (the run's graph plus new "
            "classes, say): every node gets a predicted classifier, new ones included; the classes the run trained on "
            f"keep their real classifiers. Writes a run folder ({MODEL_FILE}, {RECORD_FILE} saying where it was "
            f"propagated from, {PREDICTIONS_FILE}) that predict, evaluate, inspect and calibrate take."
        ),
    )
    p.add_argument("--run", type=Path, required=True, help="run folder written by kgzsl train (it must hold the model)")
    _add_graph(p, help="the graph to propagate onto (default: the shipped graphs/imagenet21k of the kgzsl project)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    _add_force(p)
    _add_json(p)
    p.set_defaults(func=cmd_propagate)


def cmd_propagate(args: argparse.Namespace) -> None:
    from kgzsl.propagation.grow import propagate

    result = propagate(args.run, _graph_folder(args.graph), out=args.out, force=args.force)  # checks --out first
    _emit(args, result.summary(), _propagate_text)


def _propagate_text(s: dict[str, Any]) -> str:
    new = ", ".join(n["name"] for n in s["new"][:20]) + (f" and {s['new_count'] - 20} more" if s["new_count"] > 20 else "")
    lines = [f"propagated {s['model']} of {s['run']} onto {s['graph']} -> {s['out']}: {s['nodes']} nodes "
             f"({s['run_nodes']} in the run's graph), {s['new_count']} new" + (f": {new}" if new else "")
             + f"; {s['seen']} trained classes keep their real classifiers, {s['seconds']} s"]
    if s["removed_count"]:
        lines.append(f"  {s['removed_count']} nodes of the run's graph are not in this graph")
    return "\n".join(lines)  # the notes went to stderr as warnings already


# ------------------------------------------------------------------------------------------ main
#: the subcommands in the order ``kgzsl --help`` lists them
BUILDERS = (_add_build_graph, _add_splits, _add_train, _add_targets, _add_features, _add_predict, _add_demo, _add_calibrate, _add_evaluate,
            _add_inspect, _add_propagate)


def build_parser() -> argparse.ArgumentParser:
    """The ``kgzsl`` parser: one subparser a pipeline stage, each from its ``_add_<command>``."""
    parser = _Parser(
        prog="kgzsl",
        description="Knowledge-graph zero-shot image recognition. Pipeline: build-graph -> (targets) -> train -> (calibrate) -> predict / evaluate -> inspect; propagate grows a graph.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in BUILDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kgzsl`` command."""
    from kgzsl.core.signals import Terminated, raise_on_sigterm

    try:
        args = build_parser().parse_args(argv)
        with raise_on_sigterm():  # so a SIGTERM runs every writer's cleanup instead of leaving temporaries
            args.func(args)
    except (_UsageError, KgzslError) as exc:
        print(f"kgzsl: error: {_cli_message(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print("kgzsl: terminated by SIGTERM (temporary files removed; no partial output was left behind)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("kgzsl: interrupted (no partial output was left behind)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
