#!/usr/bin/env python3
"""Real-image benchmark: how often kgzsl names real photos of classes it never saw.

Reads an ImageFolder tree with two parts (``../shared/images`` from the project root, or
``$KGZSL_IMAGES``, or ``--images``; it skips with a reason where there is none):

* ``unseen/<wnid>/*.jpg``: classes outside ImageNet-1k. *unseen* protocol: train on all 1k seen
  classes; the candidates are every unseen class of the graph (20,844 on the default graph).
* ``heldout/<wnid>/*.jpg``: ImageNet-1k classes. *held-out* protocol: 5 seeded folds of these classes;
  each fold is trained with its classes excluded (their real classifiers never used); the candidates
  are the graph's unseen classes plus the fold's classes; the images are the fold's.

Metrics over images: flat Hit@1/2/5/10/20 and median rank (ties count against), and hierarchical
Hit@k / median rank (a top-k class that is the true class or one of its WordNet hyponyms counts:
many of these classes are basic-level, e.g. *dog*). Methods: the graph networks (``dgp``, ``sgcn``,
``gcnz``) and ConSE (Norouzi et al. 2014, T=10), for each graph (i.e. each node-feature set).
``--transductive`` adds each method's transductive row; ``--gzsl`` the generalized setting on the
unseen-protocol run (seen = the held-out folder's classes, with real classifiers; gamma calibrated
on a seeded half of the images, reported on the other half).

    .venv/bin/python scripts/bench_images.py --graphs graphs/imagenet21k --models conse dgp
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kgzsl.cli.flags import add_precision
from kgzsl.graph.class_graph import ClassGraph, load_graph
from kgzsl.recognition.evaluate import (
    DEFAULT_KS,
    correct_columns,
    hierarchical_ranks,
    rank_metrics,
)
from kgzsl.recognition.scoring import class_scores, ranks_of_true

ROOT = Path(__file__).resolve().parent.parent
GNN_MODELS = ("dgp", "sgcn", "gcnz")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def images_root(given: Path | None) -> Path | None:
    import os

    for path in ([given] if given else []) + ([Path(os.environ["KGZSL_IMAGES"])] if os.environ.get("KGZSL_IMAGES") else []) + [ROOT.parent / "shared" / "images"]:
        if path and (path / "unseen").is_dir() and (path / "heldout").is_dir():
            return path
    return None


def image_features(root: Path, work: Path, backbone_name: str, precision: str = "auto") -> dict[str, object]:
    """Features of both folders in ``precision`` (``auto``: the default, int8 for Lite0 on the CPU), extracted once
    into ``work`` (resumable) and loaded. fp32 folders keep their old names, so caches made before int8 was the
    default stay fp32's."""
    from kgzsl.vision.backbones import load_backbone, resolve_precision
    from kgzsl.vision.features import extract_features, load_features

    precision = resolve_precision(precision, backbone_name)
    tag = backbone_name if precision == "fp32" else f"{backbone_name}-{precision}"
    backbone = None
    out = {}
    for part in ("unseen", "heldout"):
        folder = work / f"features-{tag}-{part}"
        if not (folder / "manifest.json").is_file():
            backbone = backbone or load_backbone(backbone_name, precision=precision)
            extract_features(root / part, backbone, folder, progress=True)
        out[part] = load_features(folder)
    return out


def graph_tag(graph_dir: Path, graph: ClassGraph) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(graph.features).tobytes()).hexdigest()[:8]
    return f"{graph_dir.name}-{digest}"


def trained(graph_dir: Path, graph: ClassGraph, targets, model: str, exclude: list[str], args) -> "object":
    """Predictions of ``model`` trained with ``exclude`` held out; cached under ``work/runs``."""
    from kgzsl.propagation.run import load_run, save_run
    from kgzsl.propagation.run_files import PREDICTIONS_FILE
    from kgzsl.propagation.training import DEFAULT_PATIENCE, SCHEDULES, train

    held = hashlib.sha256("\n".join(sorted(exclude)).encode()).hexdigest()[:8] if exclude else "all"
    tag = f"{graph_tag(graph_dir, graph)}-{model}-{held}-s{args.seed}" + ("" if args.refit else "-norefit")
    plan = SCHEDULES[model]
    epochs, lr = args.epochs or plan.epochs, args.lr or plan.lr
    tag += f"-e{epochs}-lr{lr:g}-v{plan.val_fraction:g}-p{DEFAULT_PATIENCE}"
    run = args.work / "runs" / tag
    if not (run / PREDICTIONS_FILE).is_file():
        start = time.perf_counter()
        result = train(graph, targets, model=model, exclude=exclude, seed=args.seed, refit=args.refit,
                       device=args.device, progress=False, epochs=epochs, lr=lr)
        save_run(result, graph, run, force=True)
        log(f"    trained {model} ({tag}): best epoch {result.best_epoch}, {time.perf_counter() - start:.0f} s")
    return load_run(run).predictions


def conse(graph: ClassGraph, targets, features: torch.Tensor, candidate_nodes: list[int], exclude: list[str]) -> torch.Tensor:
    """ConSE scores: the CNN's own softmax over the seen classes still in use, mapped into the graph's node features."""
    from kgzsl.recognition.baselines import conse_scores

    index = graph.index()
    keep = [i for i, w in enumerate(targets.wnids) if w in index and w not in set(exclude)]
    seen_nodes = [index[targets.wnids[i]] for i in keep]
    x = torch.as_tensor(graph.features, dtype=torch.float32)
    return conse_scores(features, targets.weights[keep], x[seen_nodes], x[candidate_nodes], top=10)


def transductive(features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    from kgzsl.recognition.scoring import transductive_scores

    return transductive_scores(features, scores)


def measure(scores: torch.Tensor, labels: list[str], candidate_ids: list[str], graph: ClassGraph) -> dict[str, torch.Tensor]:
    """Flat and hierarchical ranks of each image's true class among the candidates."""
    column = {c: j for j, c in enumerate(candidate_ids)}
    flat = ranks_of_true(scores, torch.tensor([column[w] for w in labels]))
    hier = hierarchical_ranks(scores, correct_columns(graph, labels, candidate_ids))
    return {"flat": flat, "hier": hier}


def summarise(ranks: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    flat, hier = rank_metrics(torch.cat(ranks["flat"])), rank_metrics(torch.cat(ranks["hier"]))
    row = {f"hit@{k}": flat["hit"][k] for k in DEFAULT_KS}
    row["median_rank"] = flat["median_rank"]
    row.update({f"hier_hit@{k}": hier["hit"][k] for k in DEFAULT_KS})
    row["hier_median_rank"] = hier["median_rank"]
    row["images"] = int(torch.cat(ranks["flat"]).numel())
    return row


def protocol_sets(graph: ClassGraph, feats: dict, args) -> list[tuple[str, list[str], list[int]]]:
    """(name, excluded wnids, image rows) per training the protocol needs."""
    sets = []
    if "unseen" in args.protocols:
        sets.append(("unseen", [], list(range(len(feats["unseen"].labels)))))
    if "heldout" in args.protocols:
        classes = sorted(set(feats["heldout"].labels))
        folds = np.array_split(np.random.default_rng(args.seed).permutation(len(classes)), 5)[: args.folds]
        for f, fold in enumerate(folds):
            held = sorted(classes[i] for i in fold)
            rows = [i for i, w in enumerate(feats["heldout"].labels) if w in set(held)]
            sets.append((f"heldout-{f + 1}", held, rows))
    return sets


def run_graph(graph_dir: Path, feats: dict, targets, args) -> list[dict]:
    graph = load_graph(graph_dir)
    unseen_nodes = [i for i, r in enumerate(graph.roles) if r == "unseen"]
    results: dict[tuple[str, str], dict[str, list[torch.Tensor]]] = {}
    gzsl_rows = []
    for name, held, rows in protocol_sets(graph, feats, args):
        protocol = name.split("-")[0]
        part = feats["unseen" if protocol == "unseen" else "heldout"]
        index = graph.index()
        candidate_nodes = unseen_nodes + [index[w] for w in held]
        candidate_ids = [graph.ids[i] for i in candidate_nodes]
        x = part.features[rows]
        labels = [part.labels[i] for i in rows]
        log(f"  {graph_dir.name} {name}: {len(rows)} images, {len(candidate_nodes)} candidates")
        for model in args.models:
            if model == "conse":
                scores = conse(graph, targets, x, candidate_nodes, held)
            else:
                predictions = trained(graph_dir, graph, targets, model, held, args)
                scores = class_scores(x, predictions.rows(candidate_ids))
                if args.gzsl and protocol == "unseen":
                    gzsl_rows.append(gzsl(graph_dir.name, model, predictions, feats, args))
            variants = [(model, scores)]
            if args.transductive:
                variants.append((model + "+trans", transductive(x, scores)))
            for method, s in variants:
                got = measure(s, labels, candidate_ids, graph)
                bucket = results.setdefault((method, protocol), {"flat": [], "hier": []})
                bucket["flat"].append(got["flat"])
                bucket["hier"].append(got["hier"])
    rows_out = []
    for (method, protocol), ranks in results.items():
        rows_out.append({"graph": graph_dir.name, "vectors": graph.meta.get("vectors"), "method": method,
                         "protocol": protocol, **summarise(ranks)})
    return rows_out + gzsl_rows


def gzsl(graph_name: str, model: str, predictions, feats: dict, args) -> dict:
    """Generalized zero-shot on all images: the held-out folder's classes are seen (trained on), the unseen folder's are not."""
    from kgzsl.recognition.evaluate import evaluate_gzsl_split, gzsl_scores
    from kgzsl.recognition.scoring import calibrate

    x = torch.cat([feats["unseen"].features, feats["heldout"].features])
    labels = feats["unseen"].labels + feats["heldout"].labels
    unseen_ids = [i for i, s in zip(predictions.ids, predictions.seen.tolist()) if not s and predictions.meta["roles"][predictions.index[i]] == "unseen"]
    seen_ids = [i for i, s in zip(predictions.ids, predictions.seen.tolist()) if s]
    row = {"graph": graph_name, "method": model, "protocol": "gzsl"}
    for seen_rows in ("predicted", "real"):
        weights = predictions.classifiers(seen_rows)
        test, chosen = evaluate_gzsl_split(x, labels, predictions.ids, weights, unseen_ids, seen_ids, seed=args.seed)
        row[seen_rows] = {"gamma": chosen.gamma, "seen": test.seen_accuracy, "unseen": test.unseen_accuracy,
                          "H": test.harmonic_mean, "AUSUC": test.auc}
        # for comparison with a gamma tuned on all the images (optimistic)
        tuned = calibrate(*gzsl_scores(x, labels, predictions.ids, weights, unseen_ids, seen_ids))
        row[seen_rows]["H_tuned_on_all"] = tuned.harmonic_mean
        row[seen_rows]["AUSUC_all"] = tuned.auc
    return row


def print_table(rows: list[dict]) -> None:
    head = f"{'protocol':<9}{'graph':<18}{'method':<13}" + "".join(f"{'@' + str(k):>6}" for k in DEFAULT_KS) + f"{'med':>6}" + "".join(f"{'h@' + str(k):>6}" for k in (1, 2, 5)) + f"{'hmed':>6}{'imgs':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["protocol"] == "gzsl":
            continue
        print(f"{r['protocol']:<9}{r['graph'][:17]:<18}{r['method']:<13}" + "".join(f"{100 * r[f'hit@{k}']:>6.1f}" for k in DEFAULT_KS)
              + f"{r['median_rank']:>6.0f}" + "".join(f"{100 * r[f'hier_hit@{k}']:>6.1f}" for k in (1, 2, 5)) + f"{r['hier_median_rank']:>6.0f}{r['images']:>6}")
    for r in rows:
        if r["protocol"] == "gzsl":
            for seen_rows in ("predicted", "real"):
                g = r[seen_rows]
                print(f"GZSL {r['graph']} {r['method']} seen rows {seen_rows:<9}: gamma {g['gamma']:.3f}  seen {100 * g['seen']:.1f}  "
                      f"unseen {100 * g['unseen']:.1f}  H {g['H']:.3f}  AUSUC {g['AUSUC']:.3f}  "
                      f"(gamma tuned on all images: H {g['H_tuned_on_all']:.3f}, AUSUC {g['AUSUC_all']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", nargs="+", type=Path, default=[ROOT / "graphs" / "imagenet21k"])
    parser.add_argument("--models", nargs="+", default=["conse", "dgp"], choices=["conse", *GNN_MODELS])
    parser.add_argument("--protocols", nargs="+", default=["unseen", "heldout"], choices=["unseen", "heldout"])
    parser.add_argument("--folds", type=int, default=5, help="how many of the 5 held-out folds to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the model's schedule (default: kgzsl.propagation.schedules.SCHEDULES)")
    parser.add_argument("--lr", type=float, help="override the model's learning rate (default: its schedule's)")
    parser.add_argument("--no-refit", dest="refit", action="store_false", help="train without the refit on all seen classes")
    parser.add_argument("--transductive", action="store_true")
    parser.add_argument("--gzsl", action="store_true")
    parser.add_argument("--device", default="cpu")
    add_precision(parser)  # kgzsl's own --precision: the same choices and default as the commands
    parser.add_argument("--images", type=Path)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-images", help="features and trained runs are cached here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = images_root(args.images)
    if root is None:
        print("bench_images: skipped: no image tree with unseen/ and heldout/ (looked at --images, $KGZSL_IMAGES, ../shared/images)")
        return
    from kgzsl.propagation.targets import load_targets

    start = time.perf_counter()
    feats = image_features(root, args.work, "efficientnet-lite0", args.precision)
    targets = load_targets("efficientnet-lite0")
    rows = []
    for graph_dir in args.graphs:
        rows.extend(run_graph(graph_dir, feats, targets, args))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print(f"Real-image benchmark: {root}, EfficientNet-Lite0 features, seed {args.seed}, refit {args.refit}, {time.perf_counter() - start:.0f} s")
    print_table(rows)


if __name__ == "__main__":
    main()
