"""Every figure kgzsl writes: PNG files drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F

from kgzsl.core.atomic import atomic_file
from kgzsl.graph.class_graph import ClassGraph
from kgzsl.inspection.explain import neighbourhood, weight_map
from kgzsl.propagation.models._base import DistanceWeights, PropagationModel
from kgzsl.propagation.predictions import Predictions
from kgzsl.propagation.targets import Targets, align_targets
from kgzsl.recognition.hedge.calibration import HedgeTask
from kgzsl.recognition.hedge.hierarchy import DEFAULT_RULE
from kgzsl.recognition.hedge.reporting import SWEEPS, pooled_stats
from kgzsl.recognition.hedge.temperature import binned_reliability, calibration_error
from kgzsl.recognition.scoring import GZSLResult


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display is needed or used)."""
    import matplotlib  # lazy: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib

    return plt


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write a matplotlib figure as a PNG atomically, then free it."""
    import matplotlib.pyplot as plt  # lazy: matplotlib

    try:
        with atomic_file(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=dpi)
    finally:
        plt.close(fig)


def plot_seen_unseen(result: GZSLResult, path: str, title: str = "Generalized zero-shot: seen vs unseen accuracy") -> None:
    """Write the seen-unseen accuracy curve (calibrated stacking sweep) as a PNG, marking the chosen gamma."""
    plt = pyplot()

    points = sorted((u, s) for _, s, u in result.curve)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], "-", color="tab:blue", label=f"curve (AUSUC {result.auc:.3f})")
    ax.plot([result.unseen_accuracy], [result.seen_accuracy], "o", color="tab:red",
            label=f"gamma={result.gamma:.3g}: H={result.harmonic_mean:.3f}")
    zero = min(result.curve, key=lambda c: abs(c[0]))
    ax.plot([zero[2]], [zero[1]], "s", color="gray", label="no calibration (gamma=0)")
    ax.set_xlabel("unseen-class accuracy")
    ax.set_ylabel("seen-class accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


def plot_reliability(curves: dict[str, tuple[Any, Any]], path: str | Path, bins: int = 15, title: str = "") -> None:
    """Reliability diagram PNG (written atomically): per curve label, ``(confidence, correct)`` per
    answer (see :func:`top1`): accuracy against mean confidence per bin, the diagonal, each curve's ECE."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, (conf, hit) in curves.items():
        table = [row for row in binned_reliability(conf, hit, bins) if row["count"]]
        ax.plot([r["confidence"] for r in table], [r["accuracy"] for r in table], marker="o",
                label=f"{label} (ECE {calibration_error(conf, hit, bins):.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left", fontsize=8)
    save_png(fig, path)


def plot_accuracy_specificity(sets: dict[str, Sequence[HedgeTask]], rules: dict[str, dict[Any, float]], path: str | Path,
                              title: str = "Accuracy-specificity trade-off (dots: calibrated targets)") -> None:
    """PNG (atomic) of hierarchical accuracy against mean information gain over each rule's parameter sweep,
    per set of calibrated tasks, with the calibrated targets as dots, flat top-1 as a cross and "always root"."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, (label, tasks) in enumerate(sets.items()):
        for rule, values in rules.items():
            color, style = f"C{k}", "-" if rule == DEFAULT_RULE else ":"
            pts = [pooled_stats(tasks, [t.answers(x, rule) for t in tasks]) for x in SWEEPS[rule]]
            ax.plot([p["gain"] for p in pts], [100 * p["acc"] for p in pts], style, color=color, label=f"{rule}, {label}")
            for target, value in sorted(values.items(), key=lambda kv: float(kv[0])):
                p = pooled_stats(tasks, [t.answers(value, rule) for t in tasks])
                ax.plot(p["gain"], 100 * p["acc"], "o", color=color, fillstyle="full" if rule == DEFAULT_RULE else "none")
                ax.annotate(f"{float(target):g}", (p["gain"], 100 * p["acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        flat = pooled_stats(tasks, [t.flat() for t in tasks])
        ax.plot(flat["gain"], 100 * flat["acc"], "x", color=f"C{k}", markersize=9, label=f"flat top-1, {label}")
    ax.plot(0, 100, "s", color="black", label="always root")
    ax.set(xlabel="mean information gain (bits)", ylabel="hierarchical accuracy (%)", ylim=(0, 102), title=title)
    ax.legend(fontsize=7, loc="lower left")
    save_png(fig, path)


# ----------------------------------------------------------------------------------------- plots
def plot_inspection(
    graph: ClassGraph,
    predictions: Predictions,
    node: int,
    out: str,
    model: PropagationModel | None = None,
    targets: Targets | None = None,
    method: str = "pca",
    max_points: int = 4000,
    seed: int = 0,
) -> None:
    """Write :func:`inspection_figure` as a PNG (atomically)."""
    fig = inspection_figure(graph, predictions, node, model, targets, method, max_points, seed)
    save_png(fig, out, dpi=110)


def inspection_figure(
    graph: ClassGraph,
    predictions: Predictions,
    node: int,
    model: PropagationModel | None = None,
    targets: Targets | None = None,
    method: str = "pca",
    max_points: int = 4000,
    seed: int = 0,
) -> Any:
    """A figure with up to three panels: the 2-D map of predicted weights (seen / unseen coloured, the
    inspected node's subtree labelled where a label finds room, the rest listed below the map), the DGP
    distance-group weights, and the predicted-vs-true cosine histogram of held-out classes (classes with a
    real classifier not used in training; whole-number counts)."""
    plt = pyplot()
    rng = np.random.default_rng(seed)
    is_class = np.array([r != "internal" for r in graph.roles])
    seen_mask = predictions.seen.numpy()
    hood = neighbourhood(graph, node)
    index = graph.index()
    parent = hood["ancestors"][0][0] if hood["ancestors"] else graph.ids[node]
    subtree = {index[parent], node} | {index[d] for d, _ in neighbourhood(graph, index[parent])["descendants"]}
    subtree = {i for i in subtree if is_class[i] or i == index[parent]}
    pool = np.flatnonzero(is_class)
    if len(pool) > max_points:
        pool = rng.choice(pool, max_points, replace=False)
    nodes = np.unique(np.concatenate([pool, np.array(sorted(subtree), dtype=np.int64)]))
    held_rows = None
    if targets is not None:
        t_nodes, t_rows = align_targets(graph, targets)
        held = ~predictions.seen[t_nodes]
        if held.any():
            held_rows = F.cosine_similarity(predictions.pred[t_nodes[held]], t_rows[held], dim=1).numpy()
    weights = model.distance_weights() if model is not None else None
    panels = 1 + (weights is not None) + (held_rows is not None)
    fig, axes = plt.subplots(1, panels, figsize=(7 + 4.5 * (panels - 1), 6.5), squeeze=False, gridspec_kw={"width_ratios": [1.6] + [1] * (panels - 1)})
    ax = axes[0, 0]
    proj = weight_map(predictions.pred, nodes, method=method, seed=seed)
    pos = {int(n): proj.coords[i] for i, n in enumerate(nodes)}
    for mask, colour, label in ((seen_mask[nodes], "tab:blue", "trained (seen)"), (~seen_mask[nodes], "tab:orange", "predicted (unseen)")):
        pts = proj.coords[mask]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.35, c=colour, label=label, linewidths=0)
    order = sorted(subtree, key=lambda i: (i != node, i != index[parent], i))  # the node, its parent, then by index
    for i in order:
        x, y = pos[i]
        ax.scatter([x], [y], s=40 if i == node else 18, c="red" if i == node else "black", zorder=4 if i == node else 3)
    ax.set_title(f"{proj.method} of predicted classifiers; labelled: the subtree of '{graph.names[index[parent]][0]}'", fontsize=9)
    ax.legend(loc="best", fontsize=8, markerscale=3)
    col = 1
    if weights is not None:
        _plot_distance_weights(axes[0, col], weights, model.name)
        col += 1
    if held_rows is not None:
        _plot_held_out(axes[0, col], held_rows)
    labels = [(graph.names[i][0][:22] if graph.names[i] else graph.ids[i], tuple(pos[i])) for i in order]
    _label_without_overlap(fig, ax, labels)
    return fig


def _plot_held_out(ax: Any, cosines: np.ndarray) -> None:
    """The histogram of held-out classes' predicted-vs-true cosines; class counts are whole numbers."""
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib

    ax.hist(cosines, bins=30, color="tab:green")
    ax.axvline(float(np.mean(cosines)), color="black", linestyle="--", label=f"mean {np.mean(cosines):.3f}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cosine(predicted, true classifier)")
    ax.set_ylabel("held-out classes")
    ax.set_title(f"{len(cosines)} held-out classes", fontsize=9)
    ax.legend(fontsize=8)


#: where a point's label may go, in points from the point (text anchor, alignment), nearest first
_LABEL_SPOTS = [((dx * r, dy * r), ha, va) for r in (1, 2.5, 4) for dx, dy, ha, va in (
    (3, 3, "left", "bottom"), (3, -3, "left", "top"), (-3, 3, "right", "bottom"), (-3, -3, "right", "top"),
    (0, 4, "center", "bottom"), (0, -4, "center", "top"), (4, 0, "left", "center"), (-4, 0, "right", "center"))]
#: at most this many labels are tried; the names of the rest are listed below the map
MAX_LABELS = 25


def _label_without_overlap(fig: Any, ax: Any, labels: list[tuple[str, tuple[float, float]]]) -> list[str]:
    """Label points of ``ax`` (name, data position; the first ones first) where a label overlaps no other label
    and stays inside the axes, trying spots round the point (:data:`_LABEL_SPOTS`); the names that found no
    room (or came after :data:`MAX_LABELS`) are listed as the axes' x label. Lays the figure out; returns those names.

    Placement is measured in display space, so it is done after the layout, and repeated while listing the
    left-out names changes the layout (the list below the map takes room)."""
    ax.set_xlim(ax.get_xlim())  # freeze the autoscaled view: later texts must not move the points
    ax.set_ylim(ax.get_ylim())
    fig.tight_layout()
    note = None
    for _ in range(3):
        left = _place_labels(fig, ax, labels)
        text = _left_out_note(left)
        if text == note:
            break
        note = text
        ax.set_xlabel(text, fontsize=7, loc="left")
        fig.tight_layout()
    else:
        left = _place_labels(fig, ax, labels)
    return left


def _place_labels(fig: Any, ax: Any, labels: list[tuple[str, tuple[float, float]]]) -> list[str]:
    """One greedy pass of :func:`_label_without_overlap` (removing the labels of an earlier pass first)."""
    for text in [t for t in ax.texts if t.get_gid() == "subtree-label"]:
        text.remove()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    placed: list[Any] = [legend.get_window_extent(renderer)] if legend is not None else []  # labels keep off the legend
    left: list[str] = []
    for k, (name, xy) in enumerate(labels):
        spot = None
        if k < MAX_LABELS:
            for offset, ha, va in _LABEL_SPOTS:
                label = ax.annotate(name, xy, fontsize=7, xytext=offset, textcoords="offset points", ha=ha, va=va,
                                    gid="subtree-label", zorder=5, bbox={"boxstyle": "square,pad=0.1", "fc": "white",
                                                                         "alpha": 0.75, "lw": 0})
                box = label.get_window_extent(renderer).padded(1)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(box.overlaps(other) for other in placed):
                    spot = box
                    break
                label.remove()
        if spot is None:
            left.append(name)
        else:
            placed.append(spot)
    return left


def _left_out_note(names: list[str], shown: int = 12) -> str:
    """The x label listing subtree members without a label on the map ("" when every one has one)."""
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return textwrap.fill("not labelled (no room): " + ", ".join(names[:shown]) + more, 110)


def _plot_distance_weights(ax: Any, weights: DistanceWeights, model_name: str) -> None:
    """Bars of the learned weight of each hop-distance group, one colour a phase."""
    width = 0.8 / len(weights.phases)
    xs = np.arange(len(weights.labels()))
    for i, (phase, w) in enumerate(weights.phases.items()):
        ax.bar(xs + (i - (len(weights.phases) - 1) / 2) * width, w.numpy(), width, label=f"{phase} phase")
    ax.set_xticks(xs, weights.labels(at_least="≥"))
    ax.set_xlabel("hop distance group")
    ax.set_ylabel("learned weight (softmax)")
    ax.set_title(f"{model_name.upper()} distance-group weights", fontsize=9)
    ax.legend(fontsize=8)
