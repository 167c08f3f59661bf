#!/usr/bin/env python3
"""H1K: the held-out-class benchmark this machine can run, for weight propagation quality.

The 1000 ImageNet-1k classes are split into 5 folds of 200 (a seeded permutation). For each fold,
every method sees the real EfficientNet-Lite0 classifiers of the other 800 classes, over the
ImageNet-21k graph, and predicts the held-out 200. Reported, averaged over folds:

* cos: mean cosine between each held-out class's predicted and true classifier (bias included);
* Hit@k: each held-out class's TRUE classifier is the query, the 200 PREDICTED classifiers are the
  candidates (cosine), hit if its own prediction ranks within the top k; ties count against.

Hyper-parameters of the baselines (ridge alpha, kNN k) are chosen on a validation slice of the 800
training classes, never on the held-out fold; the graph networks use their papers' settings and
early stopping on their trainer's validation slice of the training classes.

    .venv/bin/python scripts/h1k.py [--graph graphs/imagenet21k] [--models ridge knn wordnet sgcn dgp gcnz] [--folds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids
from kgzsl.graph.class_graph import ClassGraph, build_wordnet_graph, load_graph
from kgzsl.recognition.baselines import (
    knn_predict,
    ridge_predict,
    wordnet_neighbour_predict,
)
from kgzsl.recognition.evaluate import rank_metrics
from kgzsl.recognition.scoring import ranks_of_true

GNN_MODELS = ("gcnz", "sgcn", "dgp")
BASELINES = ("ridge", "knn", "wordnet")


def metrics(pred: torch.Tensor, true: torch.Tensor, ks=(1, 2, 5, 10)) -> dict[str, float]:
    p, t = F.normalize(pred.float(), dim=1), F.normalize(true.float(), dim=1)
    sims = t @ p.T  # query: true row i; candidates: predicted rows
    ranks = ranks_of_true(sims, torch.arange(sims.shape[0]))
    out = {"cos": float((p * t).sum(dim=1).mean())}
    out.update({f"hit@{k}": hit for k, hit in rank_metrics(ranks, ks)["hit"].items()})
    return out


def figures(row: dict[str, float]) -> str:
    """One log line's worth of a result row: ``cos 0.2330, hit@1 0.5250, ...``."""
    return ", ".join(f"{k} {v:.4f}" for k, v in row.items())


def choose(values, fit, train_nodes, train_targets, seed) -> tuple[object, list]:
    """Pick the hyper-parameter with the best mean cosine on a 10% validation slice of the training classes."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_nodes))
    n_val = max(1, len(order) // 10)
    val, fit_rows = order[:n_val], order[n_val:]
    scores = []
    for value in values:
        pred = fit(value, train_nodes[fit_rows], train_targets[fit_rows])
        scores.append(metrics(pred[train_nodes[val]], train_targets[val])["cos"])
    return values[int(np.argmax(scores))], scores


def fold_classes(count: int, seed: int, folds: int = 5) -> list[np.ndarray]:
    """The held-out folds: a seeded permutation of ``count`` class positions cut into ``folds`` parts."""
    return np.array_split(np.random.default_rng(seed).permutation(count), folds)


def run_method(name: str, graph: ClassGraph, targets: torch.Tensor, train_nodes, held_nodes, seed: int, epochs, log, lite0, device="cpu", bf16=False,
               distance_lr=None):
    if name == "ridge":
        fit = lambda a, nodes, t: ridge_predict(graph.features, nodes, t, alpha=a)  # noqa: E731
        alpha, _ = choose([0.01, 0.1, 1.0, 10.0, 100.0], fit, train_nodes, targets_rows(targets, train_nodes), seed)
        log(f"    ridge alpha={alpha}")
        return fit(alpha, train_nodes, targets_rows(targets, train_nodes))[held_nodes]
    if name == "knn":
        fit = lambda k, nodes, t: knn_predict(graph.features, nodes, t, k=k)  # noqa: E731
        k, _ = choose([1, 2, 3, 5, 10, 20], fit, train_nodes, targets_rows(targets, train_nodes), seed)
        log(f"    knn k={k}")
        return fit(k, train_nodes, targets_rows(targets, train_nodes))[held_nodes]
    if name == "wordnet":
        return wordnet_neighbour_predict(graph.edge_index, graph.num_nodes, train_nodes, targets_rows(targets, train_nodes), query=held_nodes)[held_nodes]
    from kgzsl.propagation.training import train

    held_wnids = [graph.ids[i] for i in held_nodes]
    result = train(graph, lite0, model=name, exclude=held_wnids, seed=seed,
                   epochs=epochs, progress=False, device=device, bf16=bf16, distance_lr=distance_lr if name == "dgp" else None)
    log(f"    {name}: best epoch {result.best_epoch}, {result.seconds:.0f} s")
    return result.predictions[torch.as_tensor(held_nodes)]


def targets_rows(targets: torch.Tensor, nodes: np.ndarray) -> torch.Tensor:
    return targets[torch.as_tensor(nodes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", type=Path, help="ImageNet-21k graph folder (default: build the default one in a temp dir)")
    parser.add_argument("--models", nargs="+", default=list(BASELINES + ("sgcn", "dgp", "gcnz")))
    parser.add_argument("--folds", type=int, default=5, help="how many of the 5 folds to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the graph networks' epoch count")
    parser.add_argument("--distance-lr", type=float, help="DGP's distance weights' lr as a multiple of its lr (`kgzsl train --distance-lr`)")
    parser.add_argument("--device", default="cpu", help="where the graph networks train (cpu, cuda)")
    parser.add_argument("--bf16", action="store_true", help="train the graph networks with bf16 products (`kgzsl train --bf16`)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731

    if args.graph:
        graph = load_graph(args.graph)
    else:
        graph = build_wordnet_graph(imagenet1k_wnids(), imagenet21k_unseen_wnids())
    from kgzsl.propagation.targets import load_targets

    lite0 = load_targets("efficientnet-lite0")  # [1000, 1281]: fc weights + bias, sorted 1k wnids
    fc, wnids = lite0.weights, lite0.wnids
    index = graph.index()
    seen_nodes = np.array([index[w] for w in wnids])
    targets = torch.zeros(graph.num_nodes, fc.shape[1])
    targets[torch.as_tensor(seen_nodes)] = fc
    folds = fold_classes(len(wnids), args.seed)[: args.folds]

    rows = {}
    for name in args.models:
        per_fold, start = [], time.perf_counter()
        for f, held in enumerate(folds):
            log(f"{name}: fold {f + 1}/{len(folds)}")
            held_nodes = seen_nodes[held]
            train_nodes = np.setdiff1d(seen_nodes, held_nodes)
            pred = run_method(name, graph, targets, train_nodes, held_nodes, args.seed + f, args.epochs, log, lite0, args.device, args.bf16,
                                args.distance_lr)
            per_fold.append(metrics(pred, targets[torch.as_tensor(held_nodes)]))
            log(f"    fold {f + 1}: {figures(per_fold[-1])}")
        rows[name] = {key: float(np.mean([m[key] for m in per_fold])) for key in per_fold[0]}
        rows[name]["seconds"] = time.perf_counter() - start
        rows[name]["folds"] = len(per_fold)
        log(f"  {name}: {figures(rows[name])}")
        if args.json:  # written after every method, so a long run keeps what it has finished
            args.json.write_text(json.dumps(rows, indent=1))

    head = f"{'method':<10}{'cos':>8}{'Hit@1':>8}{'Hit@2':>8}{'Hit@5':>8}{'Hit@10':>8}{'sec':>8}"
    print(f"H1K on {graph.num_nodes}-node graph, EfficientNet-Lite0 targets, {len(folds)} fold(s) of 200 held-out classes, seed {args.seed}, device {args.device}{', bf16' if args.bf16 else ''}"
          + (f", epochs {args.epochs}" if args.epochs else "") + (f", DGP distance lr x{args.distance_lr:g}" if args.distance_lr else ""))
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(f"{name:<10}{r['cos']:>8.3f}" + "".join(f"{100 * r[f'hit@{k}']:>8.1f}" for k in (1, 2, 5, 10)) + f"{r['seconds']:>8.0f}")


if __name__ == "__main__":
    main()
