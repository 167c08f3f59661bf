#!/usr/bin/env python3
"""Real-image benchmark of hedged, hierarchy-aware answers (kgzsl.recognition.hedge, DARTS after Deng et al. 2012).

Uses the runs and image features of ``scripts/bench_images.py`` (cached under ``--work``, trained
there on a miss). Protocol:

* *held-out* images (5 seeded folds of ImageNet-1k classes, each fold's run trained without them;
  candidates = the graph's unseen classes + the fold's classes): a seeded half of the images
  calibrates the softmax temperature (NLL) and, per target accuracy, the DARTS multiplier lambda;
  the other half is the test set.
* *unseen* images (run trained on all 1k; candidates = every unseen class): a second test set, with
  the temperature and lambdas from the held-out calibration half.

An answer is correct iff the image's true class is in its subtree (itself or a descendant); conf% is
the mean posterior of the answers (calibrated: close to acc%).
Information gain = log2(#candidates) - log2(#candidates under the answer) bits; depth = hops from
the root. Baselines: flat top-1 (answer = the top candidate) and always answering the root.

    .venv/bin/python scripts/bench_hedge.py --work /work/bench/work --graph /work/bench/g-glove-6b-50d+minilm
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_images as bi  # noqa: E402

from kgzsl.graph.class_graph import load_graph  # noqa: E402
from kgzsl.inspection.plots import plot_accuracy_specificity, plot_reliability
from kgzsl.recognition.hedge.calibration import HedgeTask
from kgzsl.recognition.hedge.hierarchy import DEFAULT_RULE, RULES, Hierarchy
from kgzsl.recognition.hedge.reporting import (
    format_hedge_table,
    hedge_rows,
    pooled_stats,
)
from kgzsl.recognition.hedge.rules import SEARCHES
from kgzsl.recognition.hedge.temperature import (
    calibration_error,
    fit_temperature,
    softmax,
    top1,
)
from kgzsl.recognition.scoring import class_scores  # noqa: E402

TARGETS = (0.5, 0.7, 0.9)


Task = HedgeTask  # one candidate set with its images (kgzsl.recognition.hedge.calibration.HedgeTask)


def task_for(graph, predictions, candidate_ids: list[str], x: torch.Tensor, labels: list[str], name: str) -> Task:
    column = {c: j for j, c in enumerate(candidate_ids)}
    scores = class_scores(x, predictions.rows(candidate_ids)).numpy().astype(np.float64)
    return Task(name, Hierarchy(graph, candidate_ids), scores, np.array([column[w] for w in labels]))


def build_tasks(args) -> tuple[list[Task], list[Task], Task]:
    from kgzsl.propagation.targets import load_targets

    root = bi.images_root(args.images)
    if root is None:
        sys.exit("bench_hedge: skipped: no image tree with unseen/ and heldout/")
    feats = bi.image_features(root, args.work, "efficientnet-lite0")
    targets = load_targets("efficientnet-lite0")
    graph = load_graph(args.graph)
    unseen_ids = [graph.ids[i] for i, r in enumerate(graph.roles) if r == "unseen"]
    calib, test, unseen = [], [], None
    rng = np.random.default_rng(args.seed)
    for name, held, rows in bi.protocol_sets(graph, feats, args):
        part = feats["unseen" if name == "unseen" else "heldout"]
        predictions = bi.trained(args.graph, graph, targets, args.model, held, args)
        task = task_for(graph, predictions, unseen_ids + held, part.features[rows], [part.labels[i] for i in rows], name)
        bi.log(f"  {name}: {len(rows)} images, {len(unseen_ids) + len(held)} candidates, {len(task.hierarchy.nodes)} answer nodes")
        if name == "unseen":
            unseen = task
        else:
            order = rng.permutation(len(rows))
            half = len(rows) // 2
            calib.append(task.subset(np.sort(order[:half])))
            test.append(task.subset(np.sort(order[half:])))
    return calib, test, unseen


def fit_temperature_pooled(tasks: list[Task]) -> float:
    widths = {t.scores.shape[1] for t in tasks}
    if len(widths) != 1:
        sys.exit(f"bench_hedge: folds have different candidate counts {sorted(widths)}; cannot pool")
    return fit_temperature(np.concatenate([t.scores for t in tasks]), np.concatenate([t.truth for t in tasks]))


def nll_rows(task: Task, temperature: float) -> np.ndarray:
    p = softmax(task.scores, temperature)[np.arange(len(task.truth)), task.truth]
    return -np.log(np.maximum(p, 1e-300))


def top1_pairs(tasks: list[Task], temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 confidence and correctness of every image of ``tasks``."""
    pairs = [top1(softmax(t.scores, temperature), t.truth) for t in tasks]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def ece(tasks: list[Task], temperature: float) -> float:
    return calibration_error(*top1_pairs(tasks, temperature))


def report(calib: list[Task], test: list[Task], unseen: Task, out: Path) -> None:
    t_raw = 1.0
    temperature = fit_temperature_pooled(calib)
    print(f"temperature fitted on {sum(len(t.truth) for t in calib)} held-out calibration images: T = {temperature:.4g}")
    for label, tasks in (("held-out calibration half", calib), ("held-out test half", test), ("unseen", [unseen])):
        before = np.mean(np.concatenate([nll_rows(t, t_raw) for t in tasks]))
        after = np.mean(np.concatenate([nll_rows(t, temperature) for t in tasks]))
        print(f"  NLL of the true class      {label:<26}: before {before:.3f}  after {after:.3f}")
        print(f"  flat top-1 ECE (15 bins) {label:<26}: before {ece(tasks, t_raw):.3f}  after {ece(tasks, temperature):.3f}")
    for t in calib + test + [unseen]:
        t.calibrate(temperature)
    rules = {}
    for rule in RULES:
        rules[rule] = {target: SEARCHES[rule](lambda x: pooled_stats(calib, [t.answers(x, rule) for t in calib])["acc"], target)
                       for target in TARGETS}
    for label, tasks in (("held-out test half", test), ("unseen", [unseen]), ("held-out calibration half", calib)):
        print("\n" + format_hedge_table(hedge_rows(tasks, rules), f"{label}:"))
    plot_accuracy_specificity({"held-out test half": test, "unseen": [unseen]}, rules, out / "accuracy-specificity.png")
    curves = {"flat top-1, T=1": top1_pairs(test, 1.0), f"flat top-1, T={temperature:.3g}": top1_pairs(test, temperature)}
    for target in TARGETS:
        cols = [t.answers(rules[DEFAULT_RULE][target], DEFAULT_RULE) for t in test]
        stats = [t.stats(c) for t, c in zip(test, cols)]
        curves[f"hedged {target:.1f}"] = (np.concatenate([x["prob"] for x in stats]), np.concatenate([x["correct"] for x in stats]))
        print(f"  {DEFAULT_RULE} {target:.1f} answers, held-out test half: ECE of the answer's probability "
              f"{calibration_error(*curves[f'hedged {target:.1f}']):.3f}")
    plot_reliability(curves, out / "reliability.png", title="Reliability, held-out test half")
    print(f"\nwrote {out / 'accuracy-specificity.png'} and {out / 'reliability.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", type=Path, default=bi.ROOT / "graphs" / "imagenet21k")
    parser.add_argument("--model", default="dgp", choices=list(bi.GNN_MODELS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-refit", dest="refit", action="store_false")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=Path)
    parser.add_argument("--work", type=Path, default=bi.ROOT / "runs" / "bench-images")
    parser.add_argument("--out", type=Path, default=bi.ROOT / "runs" / "bench-hedge")
    args = parser.parse_args()
    args.protocols = ["unseen", "heldout"]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    calib, test, unseen = build_tasks(args)
    print(f"Hedging benchmark: {args.graph.name}, {args.model}, seed {args.seed}, refit {args.refit}")
    report(calib, test, unseen, args.out)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
