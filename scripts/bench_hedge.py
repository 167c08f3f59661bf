#!/usr/bin/env python3
"""Real-image benchmark of hedged, hierarchy-aware answers (kgzsl.hedge, DARTS after Deng et al. 2012).

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

from kgzsl.graph import load_graph  # noqa: E402
from kgzsl.hedge import (Hierarchy, calibration_error, fit_temperature, plot_reliability,  # noqa: E402
                         search_lambda, softmax, top1)
from kgzsl.recognize import class_scores  # noqa: E402

TARGETS = (0.5, 0.7, 0.9)


class Task:
    """One candidate set with its images: raw scores, true columns, the hierarchy."""

    def __init__(self, name: str, hierarchy: Hierarchy, scores: np.ndarray, truth: np.ndarray) -> None:
        self.name, self.hierarchy, self.scores, self.truth = name, hierarchy, scores, truth
        self.post: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> "Task":
        return Task(self.name, self.hierarchy, self.scores[rows], self.truth[rows])

    def calibrate(self, temperature: float) -> None:
        self.probs = softmax(self.scores, temperature)
        self.post = self.hierarchy.posteriors(self.probs)

    def answers(self, lam: float) -> np.ndarray:
        return self.hierarchy.choose(self.post, lam)

    def stats(self, cols: np.ndarray) -> dict[str, np.ndarray]:
        h = self.hierarchy
        return {"correct": h.correct(cols, self.truth), "gain": h.gain[cols], "depth": h.depth[cols],
                "root": h.root_like[cols], "prob": self.post[np.arange(len(cols)), cols]}


def pooled(tasks: list[Task], cols: list[np.ndarray]) -> dict[str, float]:
    parts = [t.stats(c) for t, c in zip(tasks, cols)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {"acc": cat["correct"].mean(), "depth": cat["depth"].mean(), "gain": cat["gain"].mean(),
            "root": cat["root"].mean(), "prob": cat["prob"].mean(), "n": len(cat["correct"])}


def task_for(graph, predictions, candidate_ids: list[str], x: torch.Tensor, labels: list[str], name: str) -> Task:
    column = {c: j for j, c in enumerate(candidate_ids)}
    scores = class_scores(x, predictions.rows(candidate_ids)).numpy().astype(np.float64)
    return Task(name, Hierarchy(graph, candidate_ids), scores, np.array([column[w] for w in labels]))


def build_tasks(args) -> tuple[list[Task], list[Task], Task]:
    from kgzsl.targets import load_targets

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


def row(label: str, s: dict[str, float]) -> str:
    return (f"{label:<24}{100 * s['acc']:>7.1f}{100 * s['prob']:>7.1f}{s['depth']:>7.2f}{s['gain']:>8.2f}"
            f"{100 * s['root']:>7.1f}{s['n']:>6}")


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
    head = f"{'answer':<24}{'acc%':>7}{'conf%':>7}{'depth':>7}{'gain':>8}{'root%':>7}{'imgs':>6}"
    lambdas = {}
    for target in TARGETS:
        lam = search_lambda(lambda l: pooled(calib, [t.answers(l) for t in calib])["acc"], target)
        lambdas[target] = lam
    for label, tasks in (("held-out test half", test), ("unseen", [unseen]), ("held-out calibration half", calib)):
        print(f"\n{label}:\n{head}\n{'-' * len(head)}")
        for target in TARGETS:
            lam = lambdas[target]
            print(row(f"hedged {target:.1f} (lam {lam:.3g})", pooled(tasks, [t.answers(lam) for t in tasks])))
        print(row("flat top-1", pooled(tasks, [t.hierarchy.flat_answers(t.probs) for t in tasks])))
        print(row("always root", pooled(tasks, [np.full(len(t.truth), int(np.flatnonzero(t.hierarchy.root_like)[0])) for t in tasks])))
    plot_curve(test, unseen, lambdas, out / "accuracy-specificity.png")
    curves = {"flat top-1, T=1": top1_pairs(test, 1.0), f"flat top-1, T={temperature:.3g}": top1_pairs(test, temperature)}
    for target in TARGETS:
        cols = [t.answers(lambdas[target]) for t in test]
        stats = [t.stats(c) for t, c in zip(test, cols)]
        curves[f"hedged {target:.1f}"] = (np.concatenate([x["prob"] for x in stats]), np.concatenate([x["correct"] for x in stats]))
        print(f"  hedged {target:.1f} answers, held-out test half: ECE of the answer's probability {calibration_error(*curves[f'hedged {target:.1f}']):.3f}")
    plot_reliability(curves, out / "reliability.png", title="Reliability, held-out test half")
    print(f"\nwrote {out / 'accuracy-specificity.png'} and {out / 'reliability.png'}")


def plot_curve(test: list[Task], unseen: Task, lambdas: dict[float, float], path: Path) -> None:
    from kgzsl.io import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    grid = [0.0] + list(np.logspace(-3, 3, 49))
    for label, tasks, color in (("held-out test half", test, "C0"), ("unseen", [unseen], "C1")):
        pts = [pooled(tasks, [t.answers(l) for t in tasks]) for l in grid]
        ax.plot([p["gain"] for p in pts], [100 * p["acc"] for p in pts], color=color, label=f"DARTS, {label}")
        for target, lam in lambdas.items():
            p = pooled(tasks, [t.answers(lam) for t in tasks])
            ax.plot(p["gain"], 100 * p["acc"], "o", color=color)
            ax.annotate(f"{target:.1f}", (p["gain"], 100 * p["acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        flat = pooled(tasks, [t.hierarchy.flat_answers(t.probs) for t in tasks])
        ax.plot(flat["gain"], 100 * flat["acc"], "x", color=color, markersize=9, label=f"flat top-1, {label}")
    ax.plot(0, 100, "s", color="black", label="always root")
    ax.set(xlabel="mean information gain (bits)", ylabel="hierarchical accuracy (%)", ylim=(0, 102),
           title="Accuracy-specificity trade-off (dots: calibrated targets)")
    ax.legend(fontsize=7, loc="lower left")
    save_png(fig, path)


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
