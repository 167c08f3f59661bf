"""Stage 2: train a weight-propagation model to regress the seen classes' real classifier rows.

Full-batch training as in GCNZ/DGP: node features are the graph's word vectors, L2-normalised row-wise
(as DGP does; GCNZ's code divided them by their sum); the loss on the seen training classes ``S`` is
DGP's ``l2_loss`` between L2-normalised prediction rows and L2-normalised target rows::

    loss = 1 / (2 |S|) * sum_{i in S} || p_i / |p_i| - t_i / |t_i| ||^2     (= mean over S of 1 - cos)

Adam with weight decay 5e-4 on every parameter, as both papers' code. The schedule is the model's
:data:`SCHEDULES` entry. GCNZ and SGCN keep the papers' 3000 epochs at lr 1e-3 (DGP's
``train_gcn_basic.py`` ``--max-epoch 3000``), with a seeded validation slice of the seen classes
(``val_fraction``, 5 %) for model choice: the epoch with the lowest validation loss is kept, training stops
after ``patience`` epochs without improvement, and the model is then refit from the same seed on every
seen class for the chosen number of epochs (``refit``). DGP trains on every seen class for a fixed 500
epochs at lr 3e-3 instead. The reason is measured: the seen classes' validation loss stops falling at
about epoch 120, but accuracy on real photos of unseen classes keeps rising for hundreds of epochs
after that (Hit@5 over 20,844 candidates: 35 % at the validation choice, 46 % after 500 epochs at
lr 1e-3 or 300 at lr 3e-3, 52 % after 500 at lr 3e-3; ``scripts/bench_images.py``), so the validation
slice chose too early and cost the slice's classifiers too. DGP's own code trained its fixed 3000
epochs and kept the last. Everything is seeded (``torch.manual_seed`` before the model is
built, a seeded split, deterministic node orders), so two runs with one seed give equal results.

Speed: the loss only reads the training classes, so each step runs the model's ``forward_plan`` on
their receptive field (see :mod:`kgzsl.models._base`); all nodes are predicted once at the end, in
eval mode, with the all-nodes ``forward``.

Checkpoint folder: ``model.safetensors`` (state dict), ``train.json`` (configuration, seed, losses,
best epoch, graph fingerprint, targets source) and ``predictions.safetensors``
(:mod:`kgzsl.predictions`), written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kgzsl.errors import KgzslError
from kgzsl.io import atomic_dir, load_tensors, read_json, save_tensors, write_json
from kgzsl.models import MODELS, PropagationModel, build_model
from kgzsl.targets import Targets, align_targets

log = logging.getLogger("kgzsl")

FORMAT_NAME = "kgzsl.train"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Schedule:
    """A model's default training schedule: epochs, learning rate and the validation share for model choice."""

    epochs: int
    lr: float
    val_fraction: float


#: default schedules (see the module docstring for why DGP's differs from the papers')
SCHEDULES = {
    "gcnz": Schedule(epochs=3000, lr=1e-3, val_fraction=0.05),
    "sgcn": Schedule(epochs=3000, lr=1e-3, val_fraction=0.05),
    "dgp": Schedule(epochs=500, lr=3e-3, val_fraction=0.0),
}
#: epochs without a lower validation loss before training stops. The validation loss of the default graph
#: is flat within 0.2 % from about epoch 120 on (50 classes: its wiggles are noise), so waiting 300 epochs,
#: DGP's checkpoint interval, only cost time: 612 + 312 refit epochs (4 min) against 166 + 116 now.
DEFAULT_PATIENCE = 50


def graph_fingerprint(ids: Iterable[str], edge_index: Any) -> str:
    """sha256 over the node ids (in order) and the set of ``[2, E]`` edges: a graph's identity.

    The edge columns are sorted (by child, then parent) first, so the fingerprint follows what the
    edges are, not the order a build happened to list them in.
    """
    digest = hashlib.sha256()
    for node_id in ids:
        digest.update(str(node_id).encode("utf-8"))
        digest.update(b"\n")
    edges = np.asarray(edge_index, dtype="<i8").reshape(2, -1)
    edges = np.ascontiguousarray(edges[:, np.lexsort((edges[1], edges[0]))])
    digest.update(f"edges {list(edges.shape)}\n".encode())
    digest.update(edges.tobytes())
    return digest.hexdigest()


def node_features(graph: Any) -> torch.Tensor:
    """The graph's word vectors as float32, each row L2-normalised (rows without a vector stay zero)."""
    return F.normalize(torch.as_tensor(np.asarray(graph.features), dtype=torch.float32), dim=1)


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DGP's loss: ``sum ||normalize(pred) - normalize(target)||^2 / (2 n)`` over the ``n`` rows, in float32."""
    pred = F.normalize(pred.float(), dim=1)
    target = F.normalize(target.float(), dim=1)
    return (pred - target).pow(2).sum() / (2 * pred.size(0))


def _unit_loss(pred: torch.Tensor, target_unit: torch.Tensor) -> torch.Tensor:
    """:func:`l2_loss` for rows already of unit norm: ``||p - t||^2 / 2 = 1 - p.t`` (one pass, not five)."""
    return 1.0 - (pred.float() * target_unit).sum() / pred.size(0)


def _device(device: str | torch.device) -> torch.device:
    """Validate ``device`` (``cpu``, ``cuda``, ``cuda:1``...) with an error that says what is wrong."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise KgzslError(f"device {device!r} is not a torch device name (try 'cpu' or 'cuda'): {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KgzslError(f"device {str(device)!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU: use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise KgzslError(f"device {str(device)!r}: only cpu and cuda are supported")
    return device


def _adam(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam (L2 weight decay added to the gradient, as the papers' code); the fused CPU kernel when available."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch: no fused CPU Adam
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@dataclass
class TrainResult:
    """What :func:`train` returns; :func:`save_run` writes it as a checkpoint folder."""

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
    plan_train: Any,
    t_train: torch.Tensor,
    plan_val: Any | None,
    t_val: torch.Tensor | None,
    epochs: int,
    lr: float,
    weight_decay: float,
    patience: int | None,
    bf16: bool,
    device: torch.device,
    progress: bool,
    desc: str,
) -> FitLog:
    """The training loop: full-batch Adam on the unit-row loss over ``plan_train``; with a validation plan,
    keeps the state of the epoch with the lowest validation loss and stops after ``patience`` epochs without one."""
    from tqdm import tqdm

    optimizer = _adam(net.parameters(), lr, weight_decay)
    losses: list[float] = []
    val_losses: list[float] = []
    best, best_epoch, best_state = math.inf, 0, None
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", file=sys.stderr, disable=not progress, mininterval=0.5)
    start = time.perf_counter()
    for epoch in bar:
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


def select_targets(graph: Any, targets: Targets, exclude: Iterable[str] | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[str, int]]:
    """The seen nodes whose real classifier rows are used (role ``seen``, not excluded), their rows by
    node, and counts that say what was dropped and why.

    Every ``exclude`` entry must be a node id or wnid of the graph (an :class:`~kgzsl.io.IdList` error
    names its line). Seen classes without a target row are named in a warning, or in the error when
    none has one: they are the classes a user expects to be trained on.
    """
    _check_exclude(graph, exclude)
    excluded = set(exclude or [])
    no_target = seen_without_target(graph, targets, excluded)
    seen_count = sum(r == "seen" and graph.ids[i] not in excluded and graph.wnids[i] not in excluded
                     for i, r in enumerate(graph.roles))
    where = getattr(graph, "meta", {}).get("folder") or "the graph"
    if no_target:
        listed = _class_names(graph, no_target)
        if len(no_target) == seen_count:
            raise KgzslError(
                f"none of the {seen_count} seen classes of {where} has a target row in {targets.source}: {listed}; "
                "pin each to the synset (wnid) of its classifier's class, or give targets (--backbone/--wnids) that name them"
            )
        log.warning(
            "%d of the %d seen classes of %s have no target row in %s and are not trained on: %s "
            "(pin each to the synset of its classifier's class to use it)",
            len(no_target), seen_count, where, targets.source, listed,
        )
    nodes, rows = align_targets(graph, targets, report_missing=False)
    role_ok = torch.tensor([graph.roles[i] == "seen" for i in nodes.tolist()], dtype=torch.bool)
    not_excluded = torch.tensor(
        [graph.ids[i] not in excluded and graph.wnids[i] not in excluded for i in nodes.tolist()], dtype=torch.bool
    )
    use = role_ok & not_excluded
    if not bool(use.any()):
        raise KgzslError(
            f"no targets left to train on: {len(nodes)} target classes are in the graph, {int((~role_ok).sum())} of them "
            f"are not 'seen' nodes and {int((~not_excluded).sum())} are excluded"
        )
    counts = {
        "targets": len(targets.wnids),
        "in_graph": int(nodes.numel()),
        "not_seen_role": int((~role_ok).sum()),
        "excluded": int((role_ok & ~not_excluded).sum()),
        "seen_without_target": len(no_target),
    }
    return nodes[use], {int(n): r for n, r in zip(nodes[use].tolist(), rows[use])}, counts


def seen_without_target(graph: Any, targets: Targets, exclude: Iterable[str] | None = None) -> list[int]:
    """Indices of the graph's seen nodes (not excluded) that no target row names, by id or wnid."""
    excluded = set(exclude or [])
    named = set(targets.wnids)
    return [
        i for i, role in enumerate(graph.roles)
        if role == "seen" and graph.ids[i] not in excluded and graph.wnids[i] not in excluded
        and graph.ids[i] not in named and graph.wnids[i] not in named
    ]


def _class_names(graph: Any, nodes: list[int], most: int = 20) -> str:
    """``id (name), ...`` of ``nodes`` (the id alone where it is the name), at most ``most`` of them."""
    shown = []
    for i in nodes[:most]:
        name = graph.names[i][0] if graph.names[i] else graph.ids[i]
        shown.append(graph.ids[i] if name == graph.ids[i] else f"{graph.ids[i]} ({name})")
    return ", ".join(shown) + (f" and {len(nodes) - most} more" if len(nodes) > most else "")


def _check_exclude(graph: Any, exclude: Iterable[str] | None) -> None:
    """Refuse exclude entries that are no node id or wnid of ``graph`` (a typo would train on the class)."""
    if not exclude:
        return
    from kgzsl.io import IdList

    known = set(graph.ids) | {w for w in graph.wnids if w}
    where = getattr(graph, "meta", {}).get("folder") or "the graph"

    def hint(entry: str) -> str:
        ids = [graph.ids[i] for i, names in enumerate(graph.names) if entry in names][:3]
        return f" (it is a name of {', '.join(ids)}: list node ids)" if ids else ""

    if isinstance(exclude, IdList):
        exclude.require_known(known, f"a node id or wnid of {where}", hint)
        return
    unknown = [e for e in exclude if e not in known]
    if unknown:
        raise KgzslError(
            f"exclude: {len(unknown)} entries are no node id or wnid of {where} (first: {unknown[0]!r}{hint(unknown[0])})"
        )


def _unit_rows(target_of: dict[int, torch.Tensor], nodes: torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.stack([target_of[int(n)] for n in nodes]), dim=1)


def train(
    graph: Any,
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
    **model_kw: Any,
) -> TrainResult:
    """Train ``model`` (gcnz, sgcn, dgp) on ``graph`` to regress ``targets``; see the module docstring.

    ``exclude``: wnids whose targets must not be used at all (held-out classes; they count as unseen).
    ``epochs``, ``lr`` and ``val_fraction`` left None take the model's :data:`SCHEDULES` entry.
    Only nodes with role ``seen`` take part; ``patience`` None or 0 disables early stopping;
    ``refit`` (default): once the epoch count is chosen on the validation slice, the model is trained
    again from the same seed on every seen class, validation slice included, for that many epochs, so
    no real classifier is thrown away. ``bf16`` runs the training forward under bfloat16 autocast (the
    loss and the final predictions stay float32); ``model_kw`` go to the model's constructor.
    ``device`` runs the training steps there (e.g. ``"cuda"``); the model is built and seeded on the
    CPU first, so the initial weights do not depend on the device, and the final all-nodes prediction
    is made on the CPU. A seeded run repeats bitwise on either device; the two devices differ (their
    dropout masks come from different random streams).
    """
    start = time.perf_counter()
    name = str(model).lower()
    if name not in MODELS:
        raise KgzslError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    schedule = SCHEDULES[name]
    epochs = schedule.epochs if epochs is None else int(epochs)
    lr = schedule.lr if lr is None else float(lr)
    val_fraction = schedule.val_fraction if val_fraction is None else float(val_fraction)
    if epochs < 1:
        raise KgzslError(f"epochs must be at least 1, got {epochs}")
    if patience is not None and patience < 0:
        raise KgzslError(f"patience must be 0 (never stop early) or more epochs, got {patience}")
    if not (math.isfinite(lr) and lr > 0) or not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise KgzslError(f"need lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    device = _device(device)

    used, target_of, counts = select_targets(graph, targets, exclude)
    train_nodes, val_nodes = _split(used, val_fraction, seed)
    counts.update(train=int(train_nodes.numel()), val=int(val_nodes.numel()))
    x = node_features(graph)
    num_nodes = x.size(0)
    t_train = _unit_rows(target_of, train_nodes)
    t_val = _unit_rows(target_of, val_nodes) if val_nodes.numel() else None

    def seeded_model() -> PropagationModel:
        torch.manual_seed(seed)
        return build_model(name, x.size(1), targets.dim, **model_kw)

    net = seeded_model()
    inputs = net.graph_inputs(graph)
    x_dev = x.to(device)

    def on_device(plan: Any, rows: torch.Tensor | None) -> tuple[Any, torch.Tensor | None]:
        if plan is None or device.type == "cpu":
            return plan, rows
        return plan.to(device), rows.to(device)

    plan_train, t_train_dev = on_device(net.plan(train_nodes, *inputs, num_nodes=num_nodes), t_train)
    plan_val, t_val_dev = on_device(net.plan(val_nodes, *inputs, num_nodes=num_nodes) if t_val is not None else None, t_val)
    net.to(device)
    hyper = dict(lr=lr, weight_decay=weight_decay, bf16=bf16, device=device, progress=progress)
    log = fit(net, x_dev, plan_train, t_train_dev, plan_val, t_val_dev, epochs, patience=patience, desc=f"train {name}", **hyper)
    if log.best_state is not None:
        net.load_state_dict(log.best_state)
    refit_record = None
    if refit and val_nodes.numel():
        all_nodes = torch.sort(torch.cat([train_nodes, val_nodes])).values
        net = seeded_model()
        plan_all, t_all = on_device(net.plan(all_nodes, *inputs, num_nodes=num_nodes), _unit_rows(target_of, all_nodes))
        net.to(device)
        refit_log = fit(net, x_dev, plan_all, t_all, None, None, log.best_epoch, patience=None,
                        desc=f"refit {name} on all {all_nodes.numel()} seen", **hyper)
        refit_record = {"epochs": log.best_epoch, "classes": int(all_nodes.numel()), "seconds": round(refit_log.seconds, 3),
                        "final_loss": refit_log.losses[-1]}
    net.cpu()
    net.eval()
    with torch.no_grad():
        predictions = net(x, *inputs).float()
    seen = torch.zeros(num_nodes, dtype=torch.bool)
    seen[train_nodes] = True
    seen[val_nodes] = True
    seen_loss = float(l2_loss(predictions[train_nodes], t_train))
    # after a refit the validation classes were trained on: report the loss that chose the epoch instead
    val_loss = min(log.val_losses) if refit_record else float(l2_loss(predictions[val_nodes], t_val)) if t_val is not None else None
    seen_nodes = seen.nonzero().view(-1)
    config = {
        "model": name,
        "model_config": net.config(),
        "seed": int(seed),
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "val_fraction": val_fraction,
        "patience": patience,
        "bf16": bool(bf16),
        "device": str(device),
        "loss": "sum ||normalize(pred) - normalize(target)||^2 / (2 n) over the training classes",
        "features": "node features (graph build: " + str(getattr(graph, "meta", {}).get("vectors")) + "), L2-normalised rows",
        "targets": targets.source,
        "targets_dim": targets.dim,
        "targets_assumed": getattr(targets, "assumed", "") or None,
        "backbone": getattr(targets, "backbone", None) or backbone_of(targets.source),
        "backbone_fingerprint": targets.fingerprint if getattr(targets, "backbone", None) else None,
        "graph": _graph_folder(graph),
        "graph_nodes": num_nodes,
        "graph_fingerprint": graph_fingerprint(graph.ids, graph.edge_index),
        "counts": counts,
        "excluded": sorted(set(exclude or [])),
        "seen_without_target": [graph.ids[i] for i in seen_without_target(graph, targets, exclude)],
        "val_ids": [graph.ids[i] for i in val_nodes.tolist()],
        "selection_val_loss": min(log.val_losses) if log.val_losses else None,
        "refit": refit_record,
        "train_loop_seconds": round(log.seconds, 3),
        "seconds_per_epoch": round(log.seconds / max(len(log.losses), 1), 5),
        "plan_rows": {"train": plan_train.rows, "val": plan_val.rows if plan_val is not None else []},
    }
    return TrainResult(
        model=net,
        model_name=name,
        predictions=predictions,
        seen=seen,
        best_epoch=log.best_epoch,
        epochs_run=len(log.losses),
        losses=log.losses,
        val_losses=log.val_losses,
        seen_loss=seen_loss,
        val_loss=val_loss,
        seconds=time.perf_counter() - start,
        config=config,
        seen_targets=_unit_rows(target_of, seen_nodes),
    )


def save_checkpoint(result: TrainResult, folder: str | Path) -> Path:
    """Write ``model.safetensors`` and ``train.json`` into ``folder`` (each file atomically)."""
    folder = Path(folder)
    state = {k: v.detach().float().contiguous() for k, v in result.model.state_dict().items()}
    save_tensors(folder / "model.safetensors", state, metadata={"format": FORMAT_NAME, "model": result.model_name})
    info = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        **result.config,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seen_loss": result.seen_loss,
        "val_loss": result.val_loss,
        "seconds": round(result.seconds, 3),
        "losses": result.losses,
        "val_losses": result.val_losses,
    }
    write_json(folder / "train.json", info)
    return folder


def backbone_of(targets_source: str) -> str | None:
    """The feature extractor matching a targets source: a backbone name or state-dict file; None for a bare matrix."""
    from kgzsl.backbones.weights import EFFICIENTNET_LITE_VARIANTS
    from kgzsl.targets import STATE_DICT_SUFFIXES

    if targets_source in EFFICIENTNET_LITE_VARIANTS or Path(targets_source).suffix in STATE_DICT_SUFFIXES:
        return targets_source
    return None


def _graph_folder(graph: Any) -> str:
    """The absolute folder a graph was loaded from ("" for a graph built in memory), as runs record it."""
    folder = str(getattr(graph, "meta", {}).get("folder", "") or "")
    return str(Path(folder).resolve()) if folder else ""


def save_run(result: TrainResult, graph: Any, out: str | Path, force: bool = False) -> Path:
    """Write a whole run folder atomically: checkpoint + ``predictions.safetensors`` for every node."""
    from kgzsl.predictions import save_predictions

    with atomic_dir(out, force=force, kind="train") as tmp:
        save_checkpoint(result, tmp)
        save_predictions(
            tmp / "predictions.safetensors",
            list(graph.ids),
            result.predictions,
            result.seen,
            seen_true=result.seen_targets,
            meta={
                "model": result.model_name,
                "targets": result.config["targets"],
                "graph_fingerprint": result.config["graph_fingerprint"],
                "graph": result.config["graph"],
                "best_epoch": result.best_epoch,
                "seed": result.config["seed"],
                "backbone": result.config.get("backbone", backbone_of(result.config["targets"])),
                "backbone_fingerprint": result.config.get("backbone_fingerprint"),
                "roles": list(graph.roles),  # recognition excludes structure-only nodes from the candidates
                "names": [names[0] if names else node_id for names, node_id in zip(graph.names, graph.ids)],
            },
        )
    return Path(out)


def load_checkpoint(folder: str | Path, graph: Any, targets: Targets | None = None) -> tuple[PropagationModel, dict[str, Any]]:
    """Rebuild the trained model of a checkpoint folder for ``graph`` (eval mode) and its ``train.json``.

    Refused with a KgzslError: a checkpoint trained on another graph (fingerprint mismatch), feature
    or ``targets`` widths that do not match the model, a damaged state dict.
    """
    folder = Path(folder)
    info = read_json(folder / "train.json", "training record")
    if info.get("format") != FORMAT_NAME:
        raise KgzslError(f"{folder}/train.json is not a kgzsl training record (format {info.get('format')!r})")
    if info.get("version") != FORMAT_VERSION:
        raise KgzslError(f"{folder} is checkpoint version {info.get('version')}; this kgzsl reads {FORMAT_VERSION}")
    fingerprint = graph_fingerprint(graph.ids, graph.edge_index)
    if info.get("graph_fingerprint") != fingerprint:
        where = getattr(graph, "meta", {}).get("folder", "the given graph")
        raise KgzslError(
            f"checkpoint {folder} was trained on another graph ({info.get('graph', '?')}, fingerprint "
            f"{str(info.get('graph_fingerprint'))[:12]}), not on {where} ({fingerprint[:12]})"
        )
    config = dict(info["model_config"])
    in_channels, out_channels = config.pop("in_channels"), config.pop("out_channels")
    feature_dim = int(np.asarray(graph.features).shape[1])
    if feature_dim != in_channels:
        raise KgzslError(f"checkpoint {folder} expects {in_channels}-d node features; the graph has {feature_dim}-d")
    if targets is not None and targets.dim != out_channels:
        raise KgzslError(
            f"checkpoint {folder} predicts {out_channels}-d classifiers but the targets from {targets.source} are {targets.dim}-d"
        )
    model = build_model(info["model"], in_channels, out_channels, **config)
    state, _ = load_tensors(folder / "model.safetensors", "model weights")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KgzslError(f"{folder}/model.safetensors does not fit a {info['model']} model: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, info


def predict(model: PropagationModel, graph: Any) -> torch.Tensor:
    """Classifier vectors ``[N, D+1]`` for every node of ``graph`` (eval mode, unit rows)."""
    model.eval()
    with torch.no_grad():
        return model(node_features(graph), *model.graph_inputs(graph)).float()
