#!/usr/bin/env python3
"""Training schedules judged over several seeds: time and real-photo quality of DGP, paired with the default.

One seed's unseen Hit@5 over the 125 unseen photos moves by several points from seed to seed, more than the
differences worth telling apart, so each variant is trained with every ``--seeds`` seed and compared seed by seed
with the first variant (the default schedule unless told otherwise). For each training: the loop's seconds, flat
Hit@1/5/10 and the true class's mean reciprocal rank (MRR, a finer measure than Hit@k) on the *unseen* protocol
of ``scripts/bench_images.py`` (all 1,000 seen classes trained; candidates: every unseen class of the graph; ties
count against), with the default feature precision. ``--h1k-folds`` adds, per variant and fold, the held-out
classes' mean cosine and Hit@1 of ``scripts/h1k.py`` (seed 0 + fold, as there).

Photos: ``../shared/images`` (or ``$KGZSL_IMAGES``, or ``--images``); without them it says so and exits 0.

    .venv/bin/python scripts/bench_schedules.py --seeds 0 1 2 3 4 --work runs/bench-schedules
    .venv/bin/python scripts/bench_schedules.py --variant default: --variant half:epochs=250,distance_lr=4 --h1k-folds 0 1

A variant is ``NAME:KEY=VALUE,...`` with keys ``epochs``, ``lr``, ``distance_lr``, ``weight_decay`` (the
arguments of :func:`kgzsl.propagation.training.train`) and ``bf16`` (``bf16=1``); an empty list is the default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_images  # sibling script: photo features, ranks
import h1k  # sibling script: the held-out-class metrics and folds

from kgzsl.graph.class_graph import load_graph
from kgzsl.propagation.targets import load_targets
from kgzsl.propagation.training import train
from kgzsl.recognition.scoring import class_scores

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"epochs": int, "lr": float, "distance_lr": float, "weight_decay": float, "bf16": lambda v: bool(int(v))}
DEFAULT_VARIANTS = ["default:", "half:epochs=250,distance_lr=4"]


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,...`` -> (name, train() keyword arguments); a clear SystemExit on a bad one."""
    name, _, spec = text.partition(":")
    if not name:
        raise SystemExit(f"--variant {text!r}: give it a name, as NAME:KEY=VALUE,...")
    kwargs = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in KEYS:
            raise SystemExit(f"--variant {text!r}: unknown key {key!r} (known: {', '.join(KEYS)})")
        try:
            kwargs[key] = KEYS[key](value)
        except ValueError:
            raise SystemExit(f"--variant {text!r}: {key}={value!r} is not a number") from None
    return name, kwargs


def photo_figures(predictions: torch.Tensor, graph, feats) -> dict[str, float]:
    """Flat Hit@1/5/10 (percent) and MRR of the unseen photos among the graph's unseen classes."""
    candidates = [graph.ids[i] for i, role in enumerate(graph.roles) if role == "unseen"]
    index = graph.index()
    scores = class_scores(feats.features, predictions[torch.tensor([index[c] for c in candidates])])
    ranks = bench_images.measure(scores, list(feats.labels), candidates, graph)["flat"].double()
    out = {f"hit@{k}": round(100 * float((ranks <= k).double().mean()), 2) for k in (1, 5, 10)}
    out["mrr"] = round(float((1 / ranks).mean()), 4)
    return out


def h1k_figures(graph, targets, fold: int, kwargs: dict) -> dict[str, float]:
    """Held-out cosine and Hit@1 (percent) of one H1K fold: the fold's 200 ImageNet-1k classes excluded from training."""
    index = graph.index()
    seen_nodes = np.array([index[w] for w in targets.wnids])
    held = h1k.fold_classes(len(targets.wnids), 0)[fold]
    result = train(graph, targets, model="dgp", exclude=[targets.wnids[i] for i in held], seed=fold, progress=False, **kwargs)
    m = h1k.metrics(result.predictions[torch.as_tensor(seen_nodes[held])], targets.weights[torch.as_tensor(held)])
    return {"cos": round(m["cos"], 4), "hit@1": round(100 * m["hit@1"], 1), "loop_seconds": result.config["train_loop_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", help=f"NAME:KEY=VALUE,... (repeatable; default {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--h1k-folds", type=int, nargs="*", default=[], help="also these H1K folds (0-4), one training each per variant")
    parser.add_argument("--graph", type=Path, default=ROOT / "graphs" / "imagenet21k")
    parser.add_argument("--images", type=Path, help="ImageFolder with unseen/ and heldout/ (default ../shared/images)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-schedules", help="where photo features are cached")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    if any(f not in range(5) for f in args.h1k_folds):
        raise SystemExit(f"--h1k-folds: folds are 0-4, got {args.h1k_folds}")
    root = bench_images.images_root(args.images)
    if root is None:
        print("skipped: no photos (../shared/images, $KGZSL_IMAGES or --images with unseen/ and heldout/)")
        return
    graph = load_graph(args.graph)
    targets = load_targets()
    feats = bench_images.image_features(root, args.work, "efficientnet-lite0")["unseen"]
    rows: dict[str, dict] = {}
    for name, kwargs in variants:
        runs = []
        for seed in args.seeds:
            start = time.perf_counter()
            result = train(graph, targets, model="dgp", seed=seed, progress=False, **kwargs)
            runs.append({"seed": seed, "loop_seconds": result.config["train_loop_seconds"], **photo_figures(result.predictions, graph, feats)})
            print(f"{name} seed {seed}: {json.dumps(runs[-1])} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        folds = [{"fold": f, **h1k_figures(graph, targets, f, kwargs)} for f in args.h1k_folds]
        rows[name] = {"kwargs": kwargs, "runs": runs, "h1k": folds}
        if args.json:  # written after every variant, so a long run keeps what it has finished
            args.json.write_text(json.dumps(rows, indent=1))
    print_table(rows, args.seeds)


def print_table(rows: dict[str, dict], seeds: list[int]) -> None:
    """Means over the seeds, and each variant's seed-by-seed differences from the first one."""
    first = next(iter(rows.values()))
    mean = lambda runs, key: statistics.fmean(r[key] for r in runs)  # noqa: E731
    print(f"DGP schedules over seeds {' '.join(map(str, seeds))} (unseen protocol, 125 photos; means; [per seed])")
    head = f"{'variant':<10}{'loop s':>8}{'time':>7}{'Hit@1':>8}{'Hit@5':>8}{'Hit@10':>8}{'MRR':>8}   d Hit@5 / d MRR against {next(iter(rows))}"
    print(head)
    print("-" * len(head))
    for name, row in rows.items():
        runs = row["runs"]
        diffs = [(r["hit@5"] - b["hit@5"], r["mrr"] - b["mrr"]) for r, b in zip(runs, first["runs"])]
        per_seed = " ".join(f"{d5:+.1f}/{dm:+.3f}" for d5, dm in diffs)
        print(f"{name:<10}{mean(runs, 'loop_seconds'):>8.1f}{mean(runs, 'loop_seconds') / mean(first['runs'], 'loop_seconds'):>6.2f}x"
              f"{mean(runs, 'hit@1'):>8.1f}{mean(runs, 'hit@5'):>8.1f}{mean(runs, 'hit@10'):>8.1f}{mean(runs, 'mrr'):>8.3f}   [{per_seed}]")
        for fold in row["h1k"]:
            print(f"{'':<10}H1K fold {fold['fold']}: cos {fold['cos']:.4f}, Hit@1 {fold['hit@1']:.1f} ({fold['loop_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
