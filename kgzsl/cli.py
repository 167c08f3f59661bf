"""The ``kgzsl`` command: a thin layer over the library API, one subcommand a pipeline stage.

Every subcommand takes ``--json`` for a machine-readable summary on stdout; progress goes to stderr.
Bad input ends with one line ``kgzsl: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kgzsl.errors import KgzslError

#: the shipped ImageNet-21k graph, in the project kgzsl is installed from (not the current folder)
DEFAULT_GRAPH = Path(__file__).resolve().parent.parent / "graphs" / "imagenet21k"


def _graph_folder(given: Path | None) -> Path:
    """``--graph`` as given, else the shipped graph (a clear error where it is absent)."""
    if given is not None:
        return Path(given)
    if not (DEFAULT_GRAPH / "graph.json").is_file():
        raise KgzslError(
            f"the shipped graph {DEFAULT_GRAPH} is missing: pass --graph FOLDER, or build it with `kgzsl build-graph`"
        )
    return DEFAULT_GRAPH


def _at_least(args: argparse.Namespace, minimum: int, name: str, meaning: str = "") -> None:
    """Refuse an integer option (argparse dest ``name``, one value or a list) below ``minimum``; ``meaning`` of the minimum."""
    value = getattr(args, name, None)
    for v in value if isinstance(value, list) else [value]:
        if v is not None and v < minimum:
            raise KgzslError(f"--{name.replace('_', '-')} must be at least {minimum}{meaning}, got {v}")


def _finite(args: argparse.Namespace, name: str, above: float | None = None, below: float | None = None,
            meaning: str = "") -> None:
    """Refuse a float option (argparse dest ``name``) that is NaN or infinite, not above ``above`` or not below ``below``."""
    value = getattr(args, name, None)
    if value is None:
        return
    flag = f"--{name.replace('_', '-')}"
    if not math.isfinite(value):
        raise KgzslError(f"{flag} must be a finite number{meaning}, got {value}")
    if above is not None and not value > above:
        raise KgzslError(f"{flag} must be above {above:g}{meaning}, got {value:g}")
    if below is not None and not value < below:
        raise KgzslError(f"{flag} must be below {below:g}{meaning}, got {value:g}")


def _check_backbone(args: argparse.Namespace, predictions: Any, backbone: dict[str, Any] | None, given: str) -> None:
    """Refuse (with --allow-backbone-mismatch: warn about) a backbone other than the one the predictions were trained for."""
    from kgzsl.backbones.weights import EFFICIENTNET_LITE_VARIANTS
    from kgzsl.predictions import backbone_mismatch

    info = backbone or {}
    name = info.get("name")
    if name not in EFFICIENTNET_LITE_VARIANTS and info.get("source"):
        name = info["source"]
    mismatch = backbone_mismatch(predictions.meta, name, info.get("fingerprint"))
    if mismatch is None:
        return
    text = f"predictions {args.predictions} were trained for {mismatch[0]} but {given} {mismatch[1]}"
    if args.allow_backbone_mismatch:
        print(f"kgzsl: warning: {text} (going on: --allow-backbone-mismatch)", file=sys.stderr)
        return
    raise KgzslError(f"{text}: use the run's backbone, or pass --allow-backbone-mismatch")


def _emit(args: argparse.Namespace, summary: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        print(human(summary))


# ----------------------------------------------------------------------------------- build-graph
def cmd_build_graph(args: argparse.Namespace) -> None:
    from kgzsl.embeddings import load_vectors
    from kgzsl.graph import build_wordnet_graph, read_id_list

    from kgzsl.io import check_output_dir

    start = time.perf_counter()
    out = check_output_dir(args.out, "graph", args.force)  # before any work: never after minutes of it
    vectors = load_vectors(args.vectors)
    if args.taxonomy:
        from kgzsl.taxonomy import build_taxonomy_graph, load_taxonomy

        taxonomy = load_taxonomy(args.taxonomy)
        seen = read_id_list(args.seen, "seen") if args.seen else None
        unseen = read_id_list(args.unseen, "unseen") if args.unseen else None
        graph = build_taxonomy_graph(taxonomy, seen=seen, unseen=unseen, vectors=vectors, progress=not args.json)
    else:
        from kgzsl.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids

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
        graph = build_wordnet_graph(
            seen, unseen, extra, closure=not args.no_closure, vectors=vectors,
            instance_hypernyms={"auto": None, "yes": True, "no": False}[args.instance_hypernyms], sources=sources, progress=not args.json,
        )
    graph.save(out, force=args.force)
    summary = {**graph.summary(), "out": str(out), "seconds": round(time.perf_counter() - start, 2)}

    def human(s: dict[str, Any]) -> str:
        return (
            f"graph {s['out']}: {s['nodes']} nodes ({s['seen']} seen, {s['unseen']} unseen, {s['internal']} internal), "
            f"{s['edges']} edges, {sum(s['dense_pairs_by_distance'])} dense pairs at distances "
            f"0..{len(s['dense_pairs_by_distance']) - 1}, {s['feature_dim']}-d vectors ({s['vectors']}), "
            f"{len(s['oov_nodes'])} nodes without a vector, {s['seconds']} s"
        )

    _emit(args, summary, human)


# ----------------------------------------------------------------------------------------- splits
def cmd_splits(args: argparse.Namespace) -> None:
    from kgzsl.graph import load_graph, read_id_list
    from kgzsl.io import atomic_file
    from kgzsl.splits import compare_split, hop_split

    _at_least(args, 1, "hops")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise KgzslError(f"splits --out {args.out} is a file: --out names a folder to write split-K-hops.txt files into")
    if args.out is not None:
        from kgzsl.io import check_folder_for_files

        check_folder_for_files(args.out, "splits --out folder")
    args.graph = _graph_folder(args.graph)
    graph = load_graph(args.graph)
    summary: dict[str, Any] = {"graph": str(args.graph), "splits": {}}
    for hops in args.hops:
        derived = hop_split(graph, hops)
        entry: dict[str, Any] = {"classes": len(derived)}
        if args.out:
            path = Path(args.out) / f"split-{hops}-hops.txt"
            with atomic_file(path) as handle:
                handle.write("".join(f"{w}\n" for w in derived))
            entry["file"] = str(path)
        summary["splits"][f"{hops}-hops"] = entry
        for standard in args.compare or []:
            entry.setdefault("compare", {})[str(standard)] = compare_split(
                derived, read_id_list(standard, "standard split"), graph
            )

    def human(s: dict[str, Any]) -> str:
        lines = []
        for name, entry in s["splits"].items():
            lines.append(f"{name}: {entry['classes']} unseen classes" + (f" -> {entry['file']}" if "file" in entry else ""))
            for other, c in entry.get("compare", {}).items():
                lines.append(
                    f"  vs {other}: {c['common']} common of {c['standard']} ({c['standard_in_graph']} in graph); "
                    f"precision {c['precision']}, recall {c['recall']}, Jaccard {c['jaccard']}"
                )
        return "\n".join(lines)

    _emit(args, summary, human)


# ----------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> None:
    from kgzsl.graph import load_graph, read_id_list
    from kgzsl.targets import load_targets
    from kgzsl.train import save_run, train

    from kgzsl.io import check_output_dir

    _at_least(args, 1, "epochs")
    _at_least(args, 0, "patience", " (0: never stop early)")
    _finite(args, "lr", above=0)
    _finite(args, "val_fraction", below=1, meaning=" (a share of the seen classes, from 0 up to 1)")
    if args.val_fraction is not None and args.val_fraction < 0:
        raise KgzslError(f"--val-fraction must be at least 0 (a share of the seen classes), got {args.val_fraction:g}")
    out = check_output_dir(args.out, "train", args.force)  # before training: never lose minutes of it
    args.graph = _graph_folder(args.graph)
    graph = load_graph(args.graph)
    targets = load_targets(args.backbone, args.wnids, bias=args.bias)
    exclude = read_id_list(args.exclude, "exclude") if args.exclude else None
    stopping = {} if args.patience is None else {"patience": args.patience}
    result = train(
        graph, targets, model=args.model, epochs=args.epochs, lr=args.lr, seed=args.seed, val_fraction=args.val_fraction,
        bf16=args.bf16, progress=not args.json, exclude=exclude, device=args.device, refit=args.refit, **stopping,
    )
    save_run(result, graph, out, force=args.force)
    summary = {**result.summary(), "out": str(out), "graph": str(args.graph), "targets": targets.source,
               "targets_assumed": targets.assumed or None}

    def human(s: dict[str, Any]) -> str:
        val = "n/a" if s["val_loss"] is None else s["val_loss"]
        return (
            f"trained {s['model']} -> {s['out']}: {s['epochs_run']} epochs, best epoch {s['best_epoch']}, "
            f"seen loss {s['seen_loss']}, val loss {val} ({s['train_classes']} train / {s['val_classes']} val classes "
            f"from {s['targets']}), {s['seconds']} s" + (f"\n  targets: {s['targets_assumed']}" if s["targets_assumed"] else "")
        )

    _emit(args, summary, human)


# -------------------------------------------------------------------------------------- features
class _RawEpilogDefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the epilog's line breaks (the torchrun usage)."""


def cmd_features(args: argparse.Namespace) -> None:
    from kgzsl.backbones import load_backbone
    from kgzsl.features import extract_features, setup_distributed, teardown_distributed, tune_cpu_allocator
    from kgzsl.io import check_output_dir

    check_output_dir(args.out, "features", args.force)  # before loading a network; rank 0 checks again
    try:
        ranks = setup_distributed(args.device)
        if ranks.device.type == "cpu":
            tune_cpu_allocator()
        backbone = load_backbone(args.backbone, arch=args.arch, device=ranks.device)
        summary = extract_features(
            args.image_dir, backbone, args.out, batch_size=args.batch_size, shard_size=args.shard_size,
            workers=args.workers, force=args.force, progress=not args.json,
        )
    finally:
        teardown_distributed()
    if ranks.rank != 0:
        return  # one summary per run, from rank 0

    def human(s: dict[str, Any]) -> str:
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

    _emit(args, summary, human)


# ------------------------------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace) -> None:
    from kgzsl.demo import format_demo, run_demo

    _at_least(args, 1, "epochs")
    log = (lambda text: print(text, file=sys.stderr)) if args.json else print
    summary = run_demo(out=args.out, graph_dir=args.graph, model=args.model, epochs=args.epochs, seed=args.seed,
                       progress=not args.json, log=log)
    _emit(args, summary, format_demo)


# --------------------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> None:
    from kgzsl.backbones import load_backbone
    from kgzsl.features import image_list_features
    from kgzsl.graph import read_id_list
    from kgzsl.predictions import load_predictions
    from kgzsl.recognize import predict_features

    _at_least(args, 1, "top")
    _finite(args, "gamma")  # NaN would rank every seen class NaN, without a word
    predictions = load_predictions(args.predictions)
    candidates: str | list[str] = args.candidates
    if args.candidates not in ("unseen", "all"):
        candidates = read_id_list(args.candidates, "candidates")
        names = dict(zip(predictions.meta.get("names") or [], predictions.ids))
        candidates.require_known(
            predictions.index, f"a class of the predictions {args.predictions}",
            hint=lambda entry: f" (it is the name of {names[entry]}: list ids)" if entry in names else "",
        )
    backbone_name = args.backbone or predictions.meta.get("backbone")
    if not backbone_name:
        backbone_name = "efficientnet-lite0"
        print(f"kgzsl: note: predictions {args.predictions} record no backbone (targets from a plain matrix): "
              f"using {backbone_name}; pass --backbone to choose", file=sys.stderr)
    backbone = load_backbone(backbone_name, arch=args.arch)
    _check_backbone(args, predictions, backbone.describe(), "--backbone is")
    features, good, bad = image_list_features(args.images, backbone)
    rows = predict_features(features, good, predictions, candidates=candidates, top=args.top, gamma=args.gamma,
                            transductive=args.transductive, seen_rows=args.seen_rows) if good else []
    summary = {
        "predictions": str(args.predictions), "backbone": backbone.name, "candidates": args.candidates,
        "gamma": args.gamma, "transductive": args.transductive,
        "images": [{"image": r.image, "top": [{"rank": k + 1, "id": i, "name": n, "score": round(v, 4)}
                                              for k, (i, n, v) in enumerate(r.top)]} for r in rows],
        "bad_files": bad,
    }

    def human(s: dict[str, Any]) -> str:
        lines = []
        for image in s["images"]:
            lines.append(image["image"])
            lines.extend(f"  {t['rank']:>2}. {t['id']}  {t['name']:<40} {t['score']:.4f}" for t in image["top"])
        lines.extend(f"skipped {b['path']}: {b['reason']}" for b in s["bad_files"])
        return "\n".join(lines)

    _emit(args, summary, human)
    if bad and not good:
        raise KgzslError(f"none of the {len(bad)} images could be read")


# -------------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> None:
    from kgzsl.evaluate import evaluate_split, format_table, gzsl_evaluate
    from kgzsl.features import load_features, read_manifest
    from kgzsl.graph import read_id_list
    from kgzsl.predictions import load_predictions
    from kgzsl.recognize import plot_seen_unseen

    if args.plot and not args.gzsl:
        raise KgzslError("--plot draws the generalized zero-shot seen-unseen curve: it needs --gzsl")
    if args.plot:
        from kgzsl.io import check_output_file

        for split_file in args.split:
            check_output_file(_plot_path(args, Path(split_file).stem), "--plot file")
    predictions = load_predictions(args.predictions)
    graph = _evaluation_graph(args, predictions)
    _check_backbone(args, predictions, read_manifest(args.features).get("backbone"), f"the features in {args.features} come from")
    feats = load_features(args.features)
    if feats.features.shape[1] + 1 != predictions.pred.shape[1]:
        raise KgzslError(
            f"features in {args.features} are {feats.features.shape[1]}-d but predictions {args.predictions} are "
            f"{predictions.pred.shape[1] - 1}-d (+1 bias): extract features with the backbone the predictions were trained for"
        )
    seen_ids = [i for i, seen in zip(predictions.ids, predictions.seen.tolist()) if seen]
    weights = predictions.classifiers(args.seen_rows)
    summary: dict[str, Any] = {"features": str(args.features), "predictions": str(args.predictions), "splits": [],
                               "graph": graph.meta.get("folder") if graph is not None else None}
    results = []
    for split_file in args.split:
        split = read_id_list(split_file, "split")
        split.require_known(predictions.index, f"a class of the predictions {args.predictions}")  # none silently dropped
        name = Path(split_file).stem
        result = evaluate_split(feats.features, feats.labels, predictions.ids, weights, split, seen_ids,
                                with_seen=args.with_seen, name=name, graph=graph)
        results.append(result)
        entry = result.as_dict()
        if args.transductive:
            trans = evaluate_split(feats.features, feats.labels, predictions.ids, weights, split, seen_ids,
                                   with_seen=args.with_seen, name=name + "+trans", graph=graph, transductive=True)
            results.append(trans)
            entry["transductive"] = trans.as_dict()
            entry["transductive_gain_hit@1"] = round(trans.hit[1] - result.hit[1], 4)
        if args.gzsl:
            test, chosen = gzsl_evaluate(feats.features, feats.labels, predictions.ids, weights, split, seen_ids, seed=args.seed)
            entry["gzsl"] = {"gamma": chosen.gamma, "seen_accuracy": test.seen_accuracy, "unseen_accuracy": test.unseen_accuracy,
                             "harmonic_mean": test.harmonic_mean, "ausuc": test.auc}
            if args.plot:
                plot_path = _plot_path(args, name)
                plot_seen_unseen(test, str(plot_path), title=f"GZSL on {name}: seen vs unseen accuracy")
                entry["gzsl"]["plot"] = str(plot_path)
        summary["splits"].append(entry)

    def human(s: dict[str, Any]) -> str:
        lines = [format_table(results)]
        for entry in s["splits"]:
            if "gzsl" in entry:
                g = entry["gzsl"]
                lines.append(f"GZSL {entry['split']}: gamma {g['gamma']:.4g}, seen {100 * g['seen_accuracy']:.1f}%, "
                             f"unseen {100 * g['unseen_accuracy']:.1f}%, H {100 * g['harmonic_mean']:.1f}%, AUSUC {g['ausuc']:.3f}")
        return "\n".join(lines)

    _emit(args, summary, human)


def _plot_path(args: argparse.Namespace, name: str) -> Path:
    """The PNG of split ``name``: --plot itself for one split, else --plot's stem + ``-{name}.png``."""
    plot = Path(args.plot)
    return plot if len(args.split) == 1 else plot.with_name(f"{plot.stem}-{name}.png")


def _evaluation_graph(args: argparse.Namespace, predictions: Any) -> Any:
    """The graph for hierarchical Hit@k: --graph, else the one the run recorded if it is still that graph; None without one."""
    from kgzsl.graph import load_graph
    from kgzsl.train import graph_fingerprint

    if args.graph is not None:
        graph = load_graph(args.graph)
    else:
        recorded = Path(str(predictions.meta.get("graph") or ""))
        if not recorded.name or not (recorded / "graph.json").is_file():
            return None
        graph = load_graph(recorded)
    fingerprint = predictions.meta.get("graph_fingerprint")
    if fingerprint and fingerprint != graph_fingerprint(graph.ids, graph.edge_index):
        if args.graph is not None:
            raise KgzslError(f"graph {args.graph} is not the graph the predictions {args.predictions} were trained on")
        return None
    return graph


def _recorded_graph(args: argparse.Namespace, predictions: Any) -> Path:
    """The graph folder the run of ``--predictions`` records (predictions metadata, else its train.json)."""
    from kgzsl.io import read_json
    from kgzsl.predictions import predictions_file

    recorded = str(predictions.meta.get("graph") or "")
    record = predictions_file(args.predictions).parent / "train.json"
    if not recorded and record.is_file():
        info = read_json(record, "training record")
        recorded = str(info.get("graph") or "") if isinstance(info, dict) else ""
    if not recorded:
        raise KgzslError(f"predictions {args.predictions} record no graph folder (trained on a graph built in memory): pass --graph")
    path = Path(recorded)
    places = [path] if path.is_absolute() else [path, DEFAULT_GRAPH.parent.parent / path]  # older runs: relative to the project
    for place in places:
        if (place / "graph.json").is_file():
            return place
    raise KgzslError(f"the graph {recorded} that predictions {args.predictions} were trained on is not there: pass --graph")


# --------------------------------------------------------------------------------------- inspect
def cmd_inspect(args: argparse.Namespace) -> None:
    from kgzsl.graph import load_graph
    from kgzsl.inspect import format_report, inspect_node, plot_inspection, resolve
    from kgzsl.predictions import load_predictions, predictions_file
    from kgzsl.targets import load_targets
    from kgzsl.train import graph_fingerprint

    _at_least(args, 1, "top")
    if args.plot:
        from kgzsl.io import check_output_file

        check_output_file(args.plot, "--plot file")
    predictions = load_predictions(args.predictions)
    folder = args.graph if args.graph is not None else _recorded_graph(args, predictions)
    graph = load_graph(folder)
    recorded = predictions.meta.get("graph_fingerprint")
    if recorded and recorded != graph_fingerprint(graph.ids, graph.edge_index):
        given = "given with --graph" if args.graph is not None else "where the run says its graph is"
        raise KgzslError(f"graph {folder} ({given}) is not the graph the predictions {args.predictions} were trained on "
                         "(fingerprints differ): pass the run's graph with --graph")
    node = resolve(graph, args.query)
    model = None
    run_dir = predictions_file(args.predictions).parent
    if (run_dir / "model.safetensors").is_file() and (run_dir / "train.json").is_file():
        from kgzsl.train import load_checkpoint

        model, _ = load_checkpoint(run_dir, graph)
    source = args.targets or predictions.meta.get("targets")
    targets = None
    if source and not args.no_targets:
        try:
            targets = load_targets(source)
        except KgzslError as exc:
            if args.targets:
                raise
            print(f"kgzsl: note: the run's targets cannot be loaded again ({exc}): no comparison with true classifiers "
                  "(pass --targets)", file=sys.stderr)
    if targets is not None and args.targets:
        _check_backbone(args, predictions, {"name": targets.backbone, "fingerprint": targets.fingerprint} if targets.backbone else None,
                        "--targets is")
    report = inspect_node(graph, predictions, graph.ids[node], model=model, targets=targets, k=args.top)
    if args.plot:
        plot_inspection(graph, predictions, node, str(args.plot), model=model, targets=targets, method=args.map)
        report["plot"] = str(args.plot)
    _emit(args, report, lambda r: format_report(r) + (f"\n  plot: {r['plot']}" if "plot" in r else ""))


# ------------------------------------------------------------------------------------------ parser
class _UsageError(Exception):
    """A command-line mistake argparse found (unknown option, bad choice, missing argument, not a number)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line ``kgzsl: error: ...`` (from :func:`main`), not the usage block too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kgzsl",
        description="Knowledge-graph zero-shot image recognition. Pipeline: build-graph -> train -> predict / evaluate -> inspect.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "build-graph",
        help="class hierarchy + word vectors -> graph folder",
        description=(
            "Build a class graph. WordNet mode (default): seen + unseen (+ extra) wnids, closed upward along "
            "noun hypernyms to the root unless --no-closure; defaults are ImageNet-1k seen and ImageNet-21k "
            "unseen. Taxonomy mode (--taxonomy): a user hierarchy of plain class names for a new domain."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_build_graph)

    p = sub.add_parser(
        "splits",
        help="hop-based unseen splits (k hops from the seen classes) and comparison with standard split files",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--graph", type=Path, help="graph folder (default: the shipped graphs/imagenet21k of the kgzsl project)")
    p.add_argument("--hops", type=int, nargs="+", default=[2, 3], help="hop counts to derive")
    p.add_argument("--compare", type=Path, nargs="*", help="standard split files (one wnid a line) to compare with")
    p.add_argument("--out", type=Path, help="folder to write split-K-hops.txt files into")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_splits)

    p = sub.add_parser(
        "train",
        help="graph + real CNN classifier rows -> trained GCNZ / SGCN / DGP and predicted classifiers for every node",
        description=(
            "Train a weight-propagation model to regress the seen classes' real classifier rows (weights + bias) "
            "and predict classifiers for every node. Writes model.safetensors, train.json and predictions.safetensors."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--graph", type=Path, help="graph folder (default: the shipped graphs/imagenet21k of the kgzsl project)")
    p.add_argument("--model", choices=["gcnz", "sgcn", "dgp"], default="dgp", help="propagation model")
    p.add_argument(
        "--backbone", default="efficientnet-lite0",
        help="targets: efficientnet-lite0/1/2, a state-dict file (.pth/.pt/.safetensors, e.g. torchvision ResNet) or a matrix (.npy/.safetensors)",
    )
    p.add_argument("--wnids", type=Path, help="wnid of each target row, one a line (needed for a matrix; default ImageNet-1k order)")
    bias = p.add_mutually_exclusive_group()
    bias.add_argument("--no-bias", dest="bias", action="store_const", const=False, default=None,
                      help="the matrix has no bias column (a zero one is appended); default: told from its width")
    bias.add_argument("--bias-column", dest="bias", action="store_const", const=True,
                      help="the matrix's last column is the bias; default: told from its width (1280/2048: none, +1: one)")
    p.add_argument("--epochs", type=int, default=None, help="(maximum) epochs (default: the model's schedule, kgzsl.train.SCHEDULES: dgp 500, gcnz/sgcn 3000)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the model's schedule: dgp 3e-3, gcnz/sgcn 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (initialisation, dropout, validation split)")
    p.add_argument("--val-fraction", type=float, default=None, help="share of the seen classes held out to choose the epoch (default: the model's schedule: dgp 0, gcnz/sgcn 0.05)")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better validation loss (0: never; default: kgzsl.train.DEFAULT_PATIENCE, 50)")
    p.add_argument("--exclude", type=Path, help="file of wnids whose targets must not be used (held-out classes)")
    p.add_argument("--no-refit", dest="refit", action="store_false",
                   help="keep the model chosen on the validation slice instead of refitting on every seen class for the chosen epochs")
    p.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast (faster on CPUs with bf16 units)")
    p.add_argument("--device", default="cpu", help="where the training steps run: cpu (default) or cuda[:N]")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "features",
        help="CNN features of an ImageFolder tree (one sub-folder per class) -> sharded feature folder",
        description=(
            "Extract pooled CNN features of every image under IMAGE_DIR/<class>/... into sharded safetensors "
            "files in --out. A rerun with the same arguments resumes an interrupted run, skipping finished "
            "shards; unreadable images are listed as bad files and skipped."
        ),
        epilog=(
            "scale-out with torchrun (each rank takes every N-th shard; rank 0 writes manifest.json):\n"
            "  one machine, 4 processes (GPUs or CPU ranks):\n"
            "    torchrun --nproc_per_node 4 -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
            "  two machines (run on each; IMAGES and FEATS on a filesystem both share):\n"
            "    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST0 --master_port 29500 \\\n"
            "      -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
            "    torchrun --nnodes 2 --node_rank 1 --nproc_per_node 8 --master_addr HOST0 --master_port 29500 \\\n"
            "      -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
            "backend: nccl on GPUs, gloo on CPUs; a restart may use a different number of ranks."
        ),
        formatter_class=_RawEpilogDefaultsFormatter,
    )
    p.add_argument("image_dir", type=Path, metavar="IMAGE_DIR", help="ImageFolder tree: one sub-folder per class (e.g. wnid), images inside")
    p.add_argument(
        "--backbone", required=True, metavar="NAME-or-FILE",
        help="efficientnet-lite0|1|2 (real ImageNet-1k weights) or a torchvision ResNet-50/101/152 state dict file",
    )
    p.add_argument("--arch", choices=["resnet50", "resnet101", "resnet152"], help="architecture of a ResNet state dict; omitted: told from its keys")
    p.add_argument("--out", type=Path, required=True, help="feature folder to write (or to resume)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard file (the unit of resumption)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes per rank (0: decode in the main process)")
    p.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if a GPU exists, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--force", action="store_true", help="discard the shards of an earlier run in --out and start over")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout (rank 0 only)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser(
        "predict",
        help="name images: top-k classes by [feature, 1] . predicted classifier",
        description=(
            "Rank candidate classes for each image. --candidates unseen (default): standard zero-shot over every "
            "class whose real classifier was not used in training; all: generalized zero-shot over seen and unseen "
            "classes (use --gamma from a calibration to offset the bias toward seen classes); or a file of wnids."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--predictions", type=Path, required=True, help="predictions.safetensors written by kgzsl train, or its run folder")
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="only warn when the backbone differs from the one the predictions were trained for")
    p.add_argument("--candidates", default="unseen", help="unseen, all, or a file of candidate wnids")
    p.add_argument("--top", type=int, default=5, help="how many classes to print per image")
    p.add_argument("--gamma", type=float, default=0.0, help="calibrated stacking: subtracted from seen classes' scores")
    p.add_argument("--transductive", action="store_true", help="refine the images' scores together by label propagation over their nearest neighbours")
    p.add_argument("--seen-rows", choices=["real", "predicted"], default="real",
                   help="with seen candidates: score seen classes with their real classifiers (default) or the predicted ones")
    p.add_argument("--backbone", help="feature extractor (default: the one the predictions were trained for)")
    p.add_argument("--arch", choices=["resnet50", "resnet101", "resnet152"], help="architecture of a ResNet state dict")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "demo",
        help="the end-to-end demo: ImageNet-21k graph, DGP on EfficientNet-Lite0, zero-shot on real held-out images",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--graph", type=Path, default=DEFAULT_GRAPH, help="graph folder (built if missing)")
    p.add_argument("--out", type=Path, default=Path("runs") / "demo", help="folder for the trained run and the PNG sheet")
    p.add_argument("--model", choices=["gcnz", "sgcn", "dgp"], default="dgp")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the model's schedule, kgzsl.train.SCHEDULES)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "evaluate",
        help="Hit@k of extracted features against predicted classifiers, per split (ImageNet-21k protocol)",
        description=(
            "For each split file (unseen wnids, e.g. 2-hops / 3-hops / All): the images of the split's classes, "
            "ranked against the split's classes (--with-seen adds the seen classes: the +1K generalized form). "
            "Hit@1/2/5/10/20 averaged over images, ties counting against."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--features", type=Path, required=True, help="feature folder written by kgzsl features (labels = wnid folders)")
    p.add_argument("--predictions", type=Path, required=True, help="predictions.safetensors written by kgzsl train, or its run folder")
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="only warn when the backbone differs from the one the predictions were trained for")
    p.add_argument("--split", type=Path, nargs="+", required=True, help="split files, one wnid a line")
    p.add_argument("--with-seen", action="store_true", help="add the seen classes to the candidates (+1K)")
    p.add_argument("--graph", type=Path, help="graph folder for hierarchical Hit@k (default: the graph the run was trained on, if present)")
    p.add_argument("--seen-rows", choices=["real", "predicted"], default="real",
                   help="score seen classes with their real classifiers (default) or the predicted ones")
    p.add_argument("--transductive", action="store_true", help="also report transductive label propagation over these images and its gain")
    p.add_argument("--gzsl", action="store_true", help="generalized zero-shot with calibrated stacking (needs images of seen classes too)")
    p.add_argument("--plot", type=Path, help="with --gzsl: write the seen-unseen accuracy curve PNG here")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/test image split for --gzsl")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "inspect",
        help="why a class got the classifier it did: neighbourhood, nearest classifiers, attribution, plots",
        description=(
            "Report one class (a wnid, or a name such as 'giraffe'): its graph neighbourhood, the classes with the most "
            "similar predicted classifier, its weight norm and cosine to its true classifier where one is known, the seen "
            "classes its prediction is built from (needs the run's model.safetensors beside the predictions) and, for DGP, "
            "the learned distance-group weights."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("query", metavar="WNID-or-name", help="the class to inspect")
    p.add_argument("--graph", type=Path, help="graph folder the predictions were trained on (default: the one the run records)")
    p.add_argument("--predictions", type=Path, required=True, help="predictions.safetensors of a kgzsl train run, or its run folder")
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="only warn when the backbone differs from the one the predictions were trained for")
    p.add_argument("--targets", help="true classifiers to compare with (default: the run's targets source)")
    p.add_argument("--no-targets", action="store_true", help="skip the comparison with true classifiers")
    p.add_argument("--top", type=int, default=10, help="how many nearest classes / attributions to list")
    p.add_argument("--plot", type=Path, help="write a PNG: weight map with the subtree labelled, DGP group weights, held-out cosines")
    p.add_argument("--map", choices=["pca", "tsne"], default="pca", help="2-D projection of the weight map (t-SNE needs scikit-learn)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kgzsl`` command."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"kgzsl: error: {exc}", file=sys.stderr)
        return 2
    from kgzsl.io import Terminated, raise_on_sigterm

    try:
        with raise_on_sigterm():  # so a SIGTERM runs every writer's cleanup instead of leaving temporaries
            args.func(args)
    except KgzslError as exc:
        print(f"kgzsl: error: {exc}", file=sys.stderr)
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
