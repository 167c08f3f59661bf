"""Stage 2: train a weight-propagation model to regress the seen classes' real classifier rows.

Full-batch training as in GCNZ/DGP: node features are the graph's word vectors, L2-normalised row-wise
(as DGP does; GCNZ's code divided them by their sum); the loss on the seen training classes ``S`` is
DGP's ``l2_loss`` between L2-normalised prediction rows and L2-normalised target rows::

    loss = 1 / (2 |S|) * sum_{i in S} || p_i / |p_i| - t_i / |t_i| ||^2     (= mean over S of 1 - cos)

Adam with weight decay 5e-4 on every parameter, as both papers' code, for the model's schedule
(:mod:`kgzsl.propagation.schedules`: epochs, lr and its shape, validation slice and refit; why DGP's differs). Everything
is seeded (``torch.manual_seed`` before the model is built, a seeded split, deterministic node orders), so two
runs with one seed give equal results.

Speed: the loss only reads the training classes, so each step runs the model's ``forward_plan`` on their receptive
field (see :mod:`kgzsl.propagation.models._base`); all nodes are predicted once at the end, in eval mode, with the
all-nodes ``forward``. A DGP step also keeps its input rows (and their dropout scaling) on the plan, draws each dropout
mask as booleans and puts the hidden layer's dropout scale on the sparse values: bitwise the same step, fewer passes
over memory. ``bf16=True`` runs DGP's two dense
products and their gradients with bfloat16 operands (the rest float32, :func:`~kgzsl.propagation.models._base.bf16_linear`):
a step in 0.5-0.7 of the time on CPUs with AVX-512 BF16, each close to float32's, but over 500 epochs another run
(unseen predictions at cosine 0.9 to float32's; Hit@5 49.6, MRR 0.327), so an option, not the default. Other
models run their forward under bf16 autocast.

A result is saved as a run folder by :func:`kgzsl.propagation.run.save_run` (model, training record, predictions).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kgzsl.core.devices import resolve_device
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import graph_fingerprint, node_features
from kgzsl.propagation.models import MODELS, PropagationModel, build_model
from kgzsl.propagation.schedules import DECAYS, DEFAULT_PATIENCE, DEFAULT_SCHEDULE, SCHEDULES, lr_factor
from kgzsl.propagation.supervision import (
    seen_without_target,
    select_targets,
    unit_targets,
)
from kgzsl.propagation.targets import Targets

if TYPE_CHECKING:
    from kgzsl.graph.class_graph import ClassGraph
    from kgzsl.propagation.models._base import Plan

log = logging.getLogger("kgzsl")


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DGP's loss: ``sum ||normalize(pred) - normalize(target)||^2 / (2 n)`` over the ``n`` rows, in float32."""
    pred = F.normalize(pred.float(), dim=1)
    target = F.normalize(target.float(), dim=1)
    return (pred - target).pow(2).sum() / (2 * pred.size(0))


def _unit_loss(pred: torch.Tensor, target_unit: torch.Tensor) -> torch.Tensor:
    """:func:`l2_loss` for rows already of unit norm: ``||p - t||^2 / 2 = 1 - p.t`` (one pass, not five)."""
    return 1.0 - (pred.float() * target_unit).sum() / pred.size(0)


def _adam(net: PropagationModel, lr: float, weight_decay: float, distance_lr: float = 1.0) -> torch.optim.Optimizer:
    """Adam (L2 weight decay added to the gradient, as the papers' code); the fused CPU kernel when available.

    With ``distance_lr`` other than 1, ``net``'s distance parameters are a second group at ``lr * distance_lr``;
    each group keeps that multiple as ``lr_scale`` for :func:`fit`'s schedule.
    """
    distance = net.distance_parameters() if distance_lr != 1.0 else []
    rest = [p for p in net.parameters() if not any(p is d for d in distance)]
    groups = [{"params": rest, "lr_scale": 1.0}] + ([{"params": distance, "lr_scale": float(distance_lr)}] if distance else [])
    try:
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch: no fused CPU Adam
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)


@dataclass
class TrainResult:
    """What :func:`train` returns; :func:`kgzsl.propagation.run.save_run` writes it as a run folder."""

    model: PropagationModel
    model_name: str
    predictions: torch.Tensor  # [N, D+1], every node, eval mode, best weights
    seen: torch.Tensor  # bool [N]: nodes whose real targets were used (training + validation)
    best_epoch: int
    epochs_run: int
    losses: list[float]
    val_losses: list[float]
    seen_loss: float  # eval-mode loss of the final predictions on the training classes
    val_loss: float | None
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    seen_targets: torch.Tensor | None = None  # [S, D+1] unit rows of the real classifiers of the ``seen`` nodes, in node order

    def summary(self) -> dict[str, Any]:
        """The figures ``kgzsl train --json`` prints."""
        return {
            "model": self.model_name,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "seen_loss": round(self.seen_loss, 6),
            "val_loss": None if self.val_loss is None else round(self.val_loss, 6),
            "seconds": round(self.seconds, 2),
            "train_classes": self.config["counts"]["train"],
            "val_classes": self.config["counts"]["val"],
            "seed": self.config["seed"],
            "refit_classes": (self.config.get("refit") or {}).get("classes"),
        }


def _split(nodes: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train/validation split of the target nodes (sorted first: independent of input order)."""
    if not 0.0 <= val_fraction < 1.0:
        raise KgzslError(f"val_fraction must be in [0, 1), got {val_fraction}")
    nodes = torch.sort(nodes).values
    n = nodes.numel()
    n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(val_fraction * n)))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    val = torch.sort(nodes[order[:n_val]]).values
    train = torch.sort(nodes[order[n_val:]]).values
    return train, val


@dataclass
class FitLog:
    """What one run of the training loop produced: losses per epoch, the chosen epoch and its weights."""

    losses: list[float]
    val_losses: list[float]
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None
    seconds: float


def fit(
    net: PropagationModel,
    x: torch.Tensor,
    plan_train: Plan,
    t_train: torch.Tensor,
    plan_val: Plan | None = None,
    t_val: torch.Tensor | None = None,
    epochs: int = SCHEDULES["dgp"].epochs,
    lr: float = SCHEDULES["dgp"].lr,
    weight_decay: float = 5e-4,
    patience: int | None = None,
    bf16: bool = False,
    device: torch.device | None = None,
    progress: bool = False,
    desc: str = "train",
    decay: str = "constant",
    warmup: int = 0,
    distance_lr: float = 1.0,
) -> FitLog:
    """The training loop: full-batch Adam on the unit-row loss over ``plan_train``; with a validation plan,
    keeps the state of the epoch with the lowest validation loss and stops after ``patience`` epochs without one.

    Stands alone: ``net`` (a :class:`~kgzsl.propagation.models.PropagationModel`, already on ``device``), node features
    ``x`` (:func:`node_features`, on ``device``), a plan ``net.plan(nodes, *net.graph_inputs(graph),
    num_nodes=N)`` and the unit target rows of those nodes (:func:`unit_targets`); ``device`` defaults to
    ``x``'s. Returns the losses per epoch and, with a validation plan, the best epoch's weights (not loaded
    into ``net``). Seed before building ``net`` for a repeatable run. ``decay``, ``warmup``: ``lr``'s shape (:func:`lr_factor`);
    ``distance_lr``: the distance weights' lr as a multiple of ``lr`` (:func:`train`).
    """
    device = x.device if device is None else device

    optimizer = _adam(net, lr, weight_decay, distance_lr)
    losses: list[float] = []
    val_losses: list[float] = []
    best, best_epoch, best_state = math.inf, 0, None
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", file=sys.stderr, disable=not progress, mininterval=0.5)
    start = time.perf_counter()
    for epoch in bar:
        factor = lr_factor(epoch, epochs, decay, warmup)  # constant: 1.0, the lr unchanged
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"] * factor
        net.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net.forward_plan(x, plan_train)
        loss = _unit_loss(out, t_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise KgzslError(f"{desc} diverged at epoch {epoch} (loss {losses[-1]}): try a smaller lr")
        if plan_val is None:
            best_epoch = epoch
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            continue
        net.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            val = float(_unit_loss(net.forward_plan(x, plan_val), t_val))
        val_losses.append(val)
        if val < best:
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        bar.set_postfix(loss=f"{losses[-1]:.4f}", val=f"{val:.4f}", best=best_epoch, refresh=False)
        if patience and epoch - best_epoch >= patience:
            break
    bar.close()
    return FitLog(losses, val_losses, best_epoch, best_state, time.perf_counter() - start)


@dataclass(frozen=True)
class TrainOptions:
    """The checked settings of one :func:`train` run (``None`` arguments resolved from :data:`SCHEDULES`)."""

    model: str
    epochs: int
    lr: float
    weight_decay: float
    val_fraction: float
    patience: int | None
    seed: int
    bf16: bool
    device: torch.device
    refit: bool
    progress: bool
    decay: str = "constant"
    warmup: int = 0
    distance_lr: float = 1.0

    @classmethod
    def resolve(
        cls,
        model: str,
        epochs: int | None,
        lr: float | None,
        weight_decay: float,
        val_fraction: float | None,
        patience: int | None,
        seed: int,
        bf16: bool,
        device: str | torch.device,
        refit: bool,
        progress: bool,
        distance_lr: float | None = None,
    ) -> TrainOptions:
        """Fill the model's schedule into the unset values and refuse impossible ones (KgzslError)."""
        name = str(model).lower()
        if name not in MODELS:
            raise KgzslError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
        schedule = SCHEDULES.get(name, DEFAULT_SCHEDULE)
        epochs = schedule.epochs if epochs is None else int(epochs)
        lr = schedule.lr if lr is None else float(lr)
        val_fraction = schedule.val_fraction if val_fraction is None else float(val_fraction)
        distance_lr = schedule.distance_lr if distance_lr is None else float(distance_lr)
        if not (math.isfinite(distance_lr) and distance_lr > 0):
            raise KgzslError(f"distance_lr must be a positive multiple of lr, got {distance_lr}")
        if distance_lr != 1.0 and name not in _with_distance_weights():
            raise KgzslError(f"{name} has no distance weights: distance_lr applies to {', '.join(_with_distance_weights())} only")
        if epochs < 1:
            raise KgzslError(f"epochs must be at least 1, got {epochs}")
        if patience is not None and patience < 0:
            raise KgzslError(f"patience must be 0 (never stop early) or more epochs, got {patience}")
        if not (math.isfinite(lr) and lr > 0) or not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise KgzslError(f"need lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
        if schedule.decay not in DECAYS or schedule.warmup < 0:
            raise KgzslError(f"{name}'s schedule: decay must be one of {', '.join(DECAYS)} and warmup >= 0, got {schedule.decay!r}, {schedule.warmup}")
        device = resolve_device(device)
        return cls(name, epochs, lr, weight_decay, val_fraction, patience, seed, bf16, device, refit, progress, schedule.decay, schedule.warmup,
                   distance_lr)


def _with_distance_weights() -> list[str]:
    """The models that have distance weights (:meth:`PropagationModel.distance_parameters`)."""
    return [name for name, cls in MODELS.items() if cls.distance_parameters is not PropagationModel.distance_parameters]


@dataclass
class _Fitted:
    """What :func:`_fit_and_refit` leaves: the final model (CPU, eval mode), its graph inputs and the loop records."""

    net: PropagationModel
    inputs: tuple[torch.Tensor, ...]
    log: FitLog
    refit: dict[str, Any] | None
    plan_rows: dict[str, list[int]]


def _to_device(plan: Plan, rows: torch.Tensor, device: torch.device) -> tuple[Plan, torch.Tensor]:
    """``plan`` and its target ``rows`` on ``device`` (unchanged on the CPU)."""
    if device.type == "cpu":
        return plan, rows
    return plan.to(device), rows.to(device)


def _fit_and_refit(
    opts: TrainOptions,
    graph: ClassGraph,
    x: torch.Tensor,
    out_channels: int,
    target_of: dict[int, torch.Tensor],
    train_nodes: torch.Tensor,
    val_nodes: torch.Tensor,
    model_kw: dict[str, Any],
) -> _Fitted:
    """Build the seeded model and :func:`fit` it on ``train_nodes``, choosing the epoch on ``val_nodes``;
    with ``opts.refit`` and a validation slice, fit it again from the same seed on both for that many epochs."""

    def seeded_model() -> PropagationModel:
        torch.manual_seed(opts.seed)
        return build_model(opts.model, x.size(1), out_channels, **model_kw)

    def plan_for(model: PropagationModel, nodes: torch.Tensor) -> tuple[Plan, torch.Tensor]:
        return _to_device(model.plan(nodes, *inputs, num_nodes=x.size(0)), unit_targets(target_of, nodes), opts.device)

    net = seeded_model()
    inputs = net.graph_inputs(graph)
    x_dev = x.to(opts.device)
    plan_train, t_train = plan_for(net, train_nodes)
    plan_val, t_val = plan_for(net, val_nodes) if val_nodes.numel() else (None, None)
    net.to(opts.device)
    hyper = dict(lr=opts.lr, weight_decay=opts.weight_decay, bf16=opts.bf16, device=opts.device, progress=opts.progress, decay=opts.decay, warmup=opts.warmup,
                 distance_lr=opts.distance_lr)
    log = fit(net, x_dev, plan_train, t_train, plan_val, t_val, opts.epochs, patience=opts.patience, desc=f"train {opts.model}", **hyper)
    if log.best_state is not None:
        net.load_state_dict(log.best_state)
    refit_record = None
    if opts.refit and val_nodes.numel():
        all_nodes = torch.sort(torch.cat([train_nodes, val_nodes])).values
        net = seeded_model()
        plan_all, t_all = plan_for(net, all_nodes)
        net.to(opts.device)
        refit_log = fit(net, x_dev, plan_all, t_all, None, None, log.best_epoch, patience=None,
                        desc=f"refit {opts.model} on all {all_nodes.numel()} seen", **hyper)
        refit_record = {"epochs": log.best_epoch, "classes": int(all_nodes.numel()), "seconds": round(refit_log.seconds, 3),
                        "final_loss": refit_log.losses[-1]}
    net.cpu()
    net.eval()
    plan_rows = {"train": plan_train.rows, "val": plan_val.rows if plan_val is not None else []}
    return _Fitted(net, inputs, log, refit_record, plan_rows)


def _run_record(
    opts: TrainOptions,
    fitted: _Fitted,
    graph: ClassGraph,
    targets: Targets,
    counts: dict[str, int],
    exclude: Iterable[str] | None,
    val_nodes: torch.Tensor,
) -> dict[str, Any]:
    """The configuration, data and timing record of a run: :attr:`TrainResult.config`, saved in ``train.json``."""
    net, log = fitted.net, fitted.log
    return {
        "model": opts.model,
        "model_config": net.config(),
        "seed": int(opts.seed),
        "epochs": opts.epochs,
        "lr": opts.lr,
        "lr_decay": opts.decay,
        "lr_warmup": opts.warmup,
        "distance_lr": opts.distance_lr,
        "weight_decay": opts.weight_decay,
        "val_fraction": opts.val_fraction,
        "patience": opts.patience,
        "bf16": bool(opts.bf16),
        "device": str(opts.device),
        "loss": "sum ||normalize(pred) - normalize(target)||^2 / (2 n) over the training classes",
        "features": "node features (graph build: " + str(getattr(graph, "meta", {}).get("vectors")) + "), L2-normalised rows",
        "targets": targets.source,
        "targets_dim": targets.dim,
        "targets_assumed": getattr(targets, "assumed", "") or None,
        "backbone": targets.backbone,
        "backbone_fingerprint": targets.fingerprint if getattr(targets, "backbone", None) else None,
        "graph": _graph_folder(graph),
        "graph_nodes": len(graph.ids),
        "graph_fingerprint": graph_fingerprint(graph.ids, graph.edge_index),
        "counts": counts,
        "excluded": sorted(set(exclude or [])),
        "seen_without_target": [graph.ids[i] for i in seen_without_target(graph, targets, exclude)],
        "val_ids": [graph.ids[i] for i in val_nodes.tolist()],
        "selection_val_loss": min(log.val_losses) if log.val_losses else None,
        "refit": fitted.refit,
        "train_loop_seconds": round(log.seconds, 3),
        "seconds_per_epoch": round(log.seconds / max(len(log.losses), 1), 5),
        "plan_rows": fitted.plan_rows,
    }


def train(
    graph: ClassGraph,
    targets: Targets,
    model: str = "dgp",
    epochs: int | None = None,
    lr: float | None = None,
    weight_decay: float = 5e-4,
    seed: int = 0,
    val_fraction: float | None = None,
    patience: int | None = DEFAULT_PATIENCE,
    bf16: bool = False,
    progress: bool = True,
    exclude: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    refit: bool = True,
    distance_lr: float | None = None,
    **model_kw: Any,
) -> TrainResult:
    """Train ``model`` (gcnz, sgcn, dgp) on ``graph`` to regress ``targets``; see the module docstring.

    ``exclude``: wnids whose targets must not be used at all (held-out classes; they count as unseen).
    ``epochs``, ``lr`` and ``val_fraction`` left None take the model's :data:`SCHEDULES` entry.
    Only nodes with role ``seen`` take part; ``patience`` None or 0 disables early stopping;
    ``refit`` (default): once the epoch count is chosen on the validation slice, the model is trained
    again from the same seed on every seen class, validation slice included, for that many epochs, so
    no real classifier is thrown away. ``bf16`` runs the training forward under bfloat16 autocast (DGP: its
    dense products only; the loss and the final predictions stay float32); ``distance_lr`` (None: the schedule's, 1)
    trains the model's distance weights (:meth:`~kgzsl.propagation.models.PropagationModel.distance_parameters`, DGP's
    group logits) at that multiple of ``lr``; ``model_kw`` go to the model's constructor.
    ``device`` runs the training steps there (e.g. ``"cuda"``); the model is built and seeded on the
    CPU first, so the initial weights do not depend on the device, and the final all-nodes prediction
    is made on the CPU. A seeded run repeats bitwise on either device; the two devices differ (their
    dropout masks come from different random streams).

    The stages are separate functions: :func:`select_targets` (which seen classes and rows), :func:`fit`
    (the training loop), and the run record (:attr:`TrainResult.config`).
    """
    start = time.perf_counter()
    opts = TrainOptions.resolve(model, epochs, lr, weight_decay, val_fraction, patience, seed, bf16, device, refit, progress, distance_lr)
    used, target_of, counts = select_targets(graph, targets, exclude)
    train_nodes, val_nodes = _split(used, opts.val_fraction, opts.seed)
    counts.update(train=int(train_nodes.numel()), val=int(val_nodes.numel()))
    x = node_features(graph)
    fitted = _fit_and_refit(opts, graph, x, targets.dim, target_of, train_nodes, val_nodes, model_kw)
    with torch.no_grad():
        predictions = fitted.net(x, *fitted.inputs).float()
    seen = torch.zeros(x.size(0), dtype=torch.bool)
    seen[train_nodes] = True
    seen[val_nodes] = True
    seen_loss = float(l2_loss(predictions[train_nodes], unit_targets(target_of, train_nodes)))
    # after a refit the validation classes were trained on: report the loss that chose the epoch instead
    if fitted.refit:
        val_loss = min(fitted.log.val_losses)
    else:
        val_loss = float(l2_loss(predictions[val_nodes], unit_targets(target_of, val_nodes))) if val_nodes.numel() else None
    return TrainResult(
        model=fitted.net,
        model_name=opts.model,
        predictions=predictions,
        seen=seen,
        best_epoch=fitted.log.best_epoch,
        epochs_run=len(fitted.log.losses),
        losses=fitted.log.losses,
        val_losses=fitted.log.val_losses,
        seen_loss=seen_loss,
        val_loss=val_loss,
        seconds=time.perf_counter() - start,
        config=_run_record(opts, fitted, graph, targets, counts, exclude, val_nodes),
        seen_targets=unit_targets(target_of, seen.nonzero().view(-1)),
    )


def _graph_folder(graph: ClassGraph) -> str:
    """The absolute folder a graph was loaded from ("" for a graph built in memory), as runs record it."""
    folder = str(getattr(graph, "meta", {}).get("folder", "") or "")
    return str(Path(folder).resolve()) if folder else ""


def predict(model: PropagationModel, graph: ClassGraph) -> torch.Tensor:
    """Classifier vectors ``[N, D+1]`` for every node of ``graph`` (eval mode, unit rows)."""
    model.eval()
    with torch.no_grad():
        return model(node_features(graph), *model.graph_inputs(graph)).float()

