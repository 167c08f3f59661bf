"""``kgzsl evaluate``: Hit@k of extracted features against predicted classifiers, per split (the ImageNet-21k protocol),
with optional GZSL, transductive and hedged-answer reports."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.cli.flags import (
    add_graph,
    add_json,
    add_predictions,
    add_seed,
    add_seen_rows,
    subparser,
)
from kgzsl.cli.steps import check_backbone, check_plot_file, emit
from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    from kgzsl.graph.class_graph import ClassGraph
    from kgzsl.propagation.predictions import Predictions
    from kgzsl.propagation.run import Run
    from kgzsl.recognition.evaluate import SplitEvaluation


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "evaluate", help="Hit@k of extracted features against predicted classifiers, per split (ImageNet-21k protocol)",
        description=(
            "For each split file (unseen wnids, e.g. 2-hops / 3-hops / All): the images of the split's classes, "
            "ranked against the split's classes (--with-seen adds the seen classes: the +1K generalized form). "
            "Hit@1/2/5/10/20 averaged over images, ties counting against. The features are read one shard at a time "
            "and only each image's ranks kept (GZSL: five numbers an image), so memory does not grow with the images; "
            "--transductive and --hedge hold the features of the splits' images."
        ),
    )
    p.add_argument("--features", type=Path, required=True, help="feature folder written by kgzsl features (labels = wnid folders)")
    add_predictions(p)
    p.add_argument("--split", type=Path, nargs="+", required=True, help="split files, one wnid a line")
    p.add_argument("--with-seen", action="store_true", help="add the seen classes to the candidates (+1K)")
    add_graph(p, help="graph folder for hierarchical Hit@k (default: the graph the run was trained on, if present)")
    add_seen_rows(p, help="score seen classes with their real classifiers (default) or the predicted ones")
    p.add_argument("--transductive", action="store_true",
                   help="also report transductive label propagation over these images and its gain (holds each split's "
                        "image features in memory: propagation needs them together)")
    p.add_argument("--gzsl", action="store_true", help="generalized zero-shot with calibrated stacking (needs images of seen classes too)")
    p.add_argument("--plot", type=Path, help="with --gzsl: write the seen-unseen accuracy curve PNG here")
    p.add_argument("--hedge", action="store_true",
                   help="also report hedged answers at each target calibrated by `kgzsl calibrate` (hierarchical accuracy, "
                        "depth, information gain), with flat top-1 and always-root baselines; candidates: the run's unseen classes "
                        "(holds each split's image features and candidate scores in memory)")
    p.add_argument("--hedge-candidates", choices=["unseen", "all"], default="unseen",
                   help="with --hedge: the candidate set whose calibration to use (all: generalized, seen classes too)")
    p.add_argument("--hedge-plot", type=Path, help="with --hedge: write the accuracy-specificity curve PNG here (one curve a split)")
    add_seed(p, help="seed of the calibration/test image split for --gzsl")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    check_inputs(args)  # torch-free: a mistake is reported before seconds of loading
    from kgzsl.inspection.plots import plot_seen_unseen  # lazy: torch
    from kgzsl.propagation.run import load_run  # lazy: startup
    from kgzsl.recognition.evaluate import (  # lazy: torch
        add_transductive,
        evaluate_stream,
    )
    from kgzsl.vision.feature_folder import read_manifest  # lazy: torch

    plots = _plot_paths(args)
    if args.hedge_plot:
        if not args.hedge:
            raise KgzslError("--hedge-plot draws the accuracy-specificity curve of hedged answers: it needs --hedge")
        check_plot_file(args.hedge_plot)
    run = load_run(args.predictions)
    graph = _evaluation_graph(args, run)
    manifest = read_manifest(args.features)
    check_backbone(args, run.predictions, manifest.get("backbone"), f"the features in {args.features} come from")
    relabel = _relabel(args, manifest, graph)
    splits = _read_splits(args, run.predictions)
    _refuse_seen_images(args, run.predictions, splits, relabel(list(manifest.get("labels", []))))
    shards = ((shard.features, relabel(shard.labels)) for shard in _shards(args.features))
    evaluations = evaluate_stream(shards, run.predictions, splits, with_seen=args.with_seen, graph=graph,
                                  seen_rows=args.seen_rows, gzsl=args.gzsl, seed=args.seed)
    feats = _split_features(args, relabel, splits, int(manifest["dim"])) if args.transductive or args.hedge else None
    if args.transductive:
        add_transductive(evaluations, feats.features, feats.labels, run.predictions, splits, with_seen=args.with_seen,
                         graph=graph, seen_rows=args.seen_rows)
    entries = [evaluation.as_dict() for evaluation in evaluations]
    for entry, evaluation, plot in zip(entries, evaluations, plots):
        if plot is not None and evaluation.gzsl is not None:
            plot_seen_unseen(evaluation.gzsl, str(plot), title=f"GZSL on {entry['split']}: seen vs unseen accuracy")
            entry["gzsl"]["plot"] = str(plot)
    if args.hedge:
        _hedge(args, run, feats, splits, entries)
    summary = {"features": str(args.features), "predictions": str(args.predictions), "splits": entries,
               "graph": graph.meta.get("folder") if graph is not None else None}
    emit(args, summary, lambda s: _text(s, evaluations))


def check_inputs(args: argparse.Namespace) -> None:
    """What can be checked without torch, before any model or feature is read: the input files and folders exist,
    the split files read, and with ``--hedge`` the run has the calibration it needs."""
    from kgzsl.core.idlists import read_id_list  # lazy: startup
    from kgzsl.propagation.run_files import HEDGE_FILES  # lazy: startup

    run_folder = check_run_inputs(args)
    for split_file in args.split:
        read_id_list(split_file, "split")
    if args.hedge and not (run_folder / HEDGE_FILES[args.hedge_candidates]).is_file():
        flag = "" if args.hedge_candidates == "unseen" else f" --candidates {args.hedge_candidates}"
        raise KgzslError(f"--hedge: run {args.predictions} is not calibrated for candidates {args.hedge_candidates} (no "
                         f"{HEDGE_FILES[args.hedge_candidates]}): run `kgzsl calibrate --features FEATS --predictions "
                         f"{args.predictions}{flag}` first")


def check_run_inputs(args: argparse.Namespace) -> Path:
    """``--predictions``, ``--features`` and ``--graph`` exist (torch-free, for evaluate and calibrate); the run's folder."""
    from kgzsl.propagation.run_files import predictions_file  # lazy: startup

    file = predictions_file(args.predictions)
    if not file.is_file():
        raise KgzslError(f"--predictions {args.predictions} does not exist: give a run folder of `kgzsl train` or its "
                         "predictions file")
    if not Path(args.features).is_dir():
        raise KgzslError(f"--features: feature folder {args.features} does not exist")
    if not (Path(args.features) / "manifest.json").is_file() and not (Path(args.features) / "run.json").is_file():
        raise KgzslError(f"--features: feature folder {args.features} has no manifest.json: it is not the output of "
                         "`kgzsl features`")
    if args.graph is not None and not Path(args.graph).is_dir():
        raise KgzslError(f"--graph: graph folder {args.graph} does not exist")
    return file.parent


def _refuse_seen_images(args: argparse.Namespace, predictions: Predictions, splits: list[tuple[str, list[str]]],
                        labels: list[str]) -> None:
    """Refuse to evaluate images of classes seen in training as zero-shot ones (their real classifiers were trained
    on such images: every figure would read 100 %), as ``kgzsl calibrate`` refuses to calibrate on them unless
    asked for the generalized setting (here ``--with-seen``)."""
    if args.with_seen:
        return
    present = set(labels)
    for name, split in splits:
        trained = [w for w in split if w in present and bool(predictions.seen[predictions.index[w]])]
        if trained:
            raise KgzslError(
                f"--split {name}: {len(trained)} of its classes with images in --features {args.features} were seen in "
                f"training, their real classifier used (first: {trained[0]}): a split lists held-out or unseen classes "
                "(or evaluate the generalized setting, --with-seen)")


def _shards(folder: Path) -> Iterator[Any]:
    """The feature folder's shards, one at a time (:func:`kgzsl.vision.feature_folder.iter_feature_shards`)."""
    from kgzsl.vision.feature_folder import iter_feature_shards  # lazy: torch

    yield from iter_feature_shards(folder)


def _relabel(args: argparse.Namespace, manifest: dict[str, Any], graph: ClassGraph | None) -> Callable[[list[str]], list[str]]:
    """Image labels as the graph's node ids (wnid folders against a taxonomy named by class, say), decided once on
    the manifest's label list as :func:`kgzsl.graph.names.labels_as_node_ids` decides it on every label; unchanged
    without a graph."""
    from kgzsl.graph.names import labels_as_node_ids  # lazy: numpy

    if graph is None:
        return list
    known = [str(label) for label in manifest.get("labels", [])]
    mapping = dict(zip(known, labels_as_node_ids(known, graph, f"feature folder {args.features}", strict=False)))
    return lambda labels: [mapping.get(label, label) for label in labels]


def _split_features(args: argparse.Namespace, relabel: Callable[[list[str]], list[str]],
                    splits: list[tuple[str, list[str]]], dim: int) -> Any:
    """The features of the images of the splits' classes only (a FeatureSet), for --transductive and --hedge, which
    need a split's images together: unlike the rest of the evaluation, they hold these in memory."""
    import torch  # lazy: torch

    from kgzsl.vision.feature_folder import FeatureSet  # lazy: torch

    wanted = {w for _, split in splits for w in split}
    blocks, labels = [], []
    for shard in _shards(args.features):
        shard_labels = relabel(shard.labels)
        rows = [i for i, label in enumerate(shard_labels) if label in wanted]
        if rows:
            blocks.append(shard.features[torch.tensor(rows)])
            labels.extend(shard_labels[i] for i in rows)
    features = torch.cat(blocks) if blocks else torch.zeros((0, dim))
    return FeatureSet(features, labels, [])


def _hedge(args: argparse.Namespace, run: Run, feats: Any, splits: list[tuple[str, list[str]]],
           entries: list[dict[str, Any]]) -> None:
    """``--hedge``: each split's hedged-answer table into its entry (``hedge``); ``--hedge-plot`` the curve."""
    import torch  # lazy: torch

    from kgzsl.inspection.plots import plot_accuracy_specificity  # lazy: torch
    from kgzsl.recognition.hedge.reporting import evaluate_hedging  # lazy: torch

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
        check_plot_file(path)
    return paths


def _read_splits(args: argparse.Namespace, predictions: Predictions) -> list[tuple[str, list[str]]]:
    """(name, ids) of each ``--split`` file; every id must be a class of the predictions (none silently dropped)."""
    from kgzsl.core.idlists import read_id_list  # lazy: startup

    splits = []
    for split_file in args.split:
        split = read_id_list(split_file, "split")
        split.require_known(predictions.index, f"a class of the predictions {args.predictions}")
        splits.append((Path(split_file).stem, split))
    return splits


def _evaluation_graph(args: argparse.Namespace, run: Run) -> ClassGraph | None:
    """The graph for hierarchical Hit@k: --graph (refused unless it is the run's), else the run's own where it
    still is; None without one."""
    from kgzsl.graph.class_graph import load_graph  # lazy: numpy

    if args.graph is not None:
        return run.load_graph(args.graph)
    try:
        folder = run.graph_folder()
    except KgzslError:  # the run records no graph folder, or it is gone: no hierarchical figures
        return None
    graph = load_graph(folder)
    return graph if run.trained_on(graph) else None


def _text(s: dict[str, Any], evaluations: list[SplitEvaluation]) -> str:
    from kgzsl.recognition.evaluate import format_table  # lazy: torch
    from kgzsl.recognition.hedge.reporting import format_hedge_table  # lazy: torch

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

