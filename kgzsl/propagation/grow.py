"""Grow without retraining: a trained run's model run on another graph, new classes included.

The graph networks are inductive: their weights act on node features and on the graph's structure,
never on a fixed node list. :func:`propagate` rebuilds a run's model, runs it on another graph (the
run's graph plus new classes, say) exactly as training predicts every node at its end
(:func:`kgzsl.propagation.training.predict`: the node features L2-normalised row by row, the model's own
``graph_inputs``, so GCNZ's symmetric normalisation, SGCN's mean aggregation and DGP's hop-distance
groups of the dense ancestor relation are all computed from the new graph), and keeps what belongs to
the run: the classes whose real classifier rows were used in training stay ``seen``, with those real
rows (matched by node id), and held-out classes stay unseen. On the run's own graph it reproduces the
run's predictions exactly.

Refused with a :class:`~kgzsl.errors.KgzslError`: a folder without the trained model (a predictions
file alone), and a graph whose node features are of another source (``build-graph --vectors``) or
width than the run's graph, since the model's first layer reads them.

The output is a run folder (:mod:`kgzsl.propagation.run`) that every command takes as a run: the same model, the
run's ``train.json`` with the new graph's folder and fingerprint and a ``propagated`` entry (from
which run and graph, which nodes are new), and the predictions for every node of the new graph.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kgzsl.core.outputs import check_output_dir
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph, graph_fingerprint, load_graph
from kgzsl.propagation.predictions import Predictions
from kgzsl.propagation.run import (
    HEDGE_FILES,
    MODEL_FILE,
    RECORD_FILE,
    Run,
    load_checkpoint,
    load_run,
    predictions_meta,
    save_run,
)
from kgzsl.propagation.training import TrainResult, _graph_folder, predict

log = logging.getLogger("kgzsl")

#: the ``train.json`` fields that describe the training loop rather than the configuration (TrainResult's own)
_LOOP_FIELDS = ("format", "version", "best_epoch", "epochs_run", "seen_loss", "val_loss", "seconds", "losses", "val_losses")
#: how :func:`kgzsl.propagation.training.train` records the graph's feature source in ``train.json``'s ``features``
_FEATURES_RECORD = re.compile(r"node features \(graph build: (.*)\), L2-normalised rows")


@dataclass
class Propagation:
    """What :func:`propagate` made: every node's classifiers on the new graph, and how it relates to the run's."""

    run: Path
    graph: str
    out: Path | None
    result: TrainResult
    predictions: Predictions
    new_nodes: list[int]
    removed: list[str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The figures ``kgzsl propagate --json`` prints."""
        graph_names = self.predictions.meta["names"]
        return {
            "run": str(self.run),
            "graph": self.graph,
            "out": None if self.out is None else str(self.out),
            "model": self.result.model_name,
            "nodes": len(self.predictions.ids),
            "run_nodes": len(self.predictions.ids) - len(self.new_nodes) + len(self.removed),
            "new_count": len(self.new_nodes),
            "new": [{"id": self.predictions.ids[i], "name": graph_names[i]} for i in self.new_nodes],
            "removed_count": len(self.removed),
            "removed": self.removed,
            "seen": int(self.predictions.seen.sum()),
            "graph_fingerprint": self.result.config["graph_fingerprint"],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def propagate(run: Run | str | Path, graph: ClassGraph | str | Path, out: str | Path | None = None,
              force: bool = False) -> Propagation:
    """Run the trained model of ``run`` (a run folder or :class:`~kgzsl.propagation.run.Run`) on ``graph`` (a folder or a
    :class:`~kgzsl.graph.class_graph.ClassGraph`) and, with ``out``, write the result as a run folder (atomically; an
    existing ``out`` only with ``force``, checked before any work). See the module docstring."""
    start = time.perf_counter()
    if out is not None:
        out = check_output_dir(out, "train", force)
    run = _load_run(run)
    if out is not None and Path(out).resolve() == run.folder.resolve():
        raise KgzslError(f"output folder {out} is the run being propagated ({run.source}): choose another --out")
    graph = _load_graph(graph)
    _check_features(run, graph)
    _check_shared_classes(run, graph)
    model, info = load_checkpoint(run.folder, graph, same_graph=False)
    pred = predict(model, graph)
    seen, seen_true = _seen_rows(run.predictions, graph)
    old = run.predictions.index
    new_nodes = [i for i, node_id in enumerate(graph.ids) if node_id not in old]
    kept = set(graph.ids)
    removed = [node_id for node_id in run.predictions.ids if node_id not in kept]
    result = _result(info, model, pred, seen, seen_true, _record(run, graph, info, new_nodes, removed))
    notes = _notes(run, graph, new_nodes, removed)
    for note in notes:
        log.warning("%s", note)
    if out is not None:
        save_run(result, graph, out, force=force, meta=_extra_meta(result))
    predictions = _as_predictions(result, graph)
    return Propagation(run.source, _where(graph), None if out is None else Path(out), result, predictions,
                       new_nodes, removed, notes, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ inputs
def _load_run(run: Run | str | Path) -> Run:
    """The run, read from its folder where a path is given; refused unless it holds the trained model."""
    if not isinstance(run, Run):
        if not Path(run).exists():
            raise KgzslError(f"run {run} does not exist: pass a run folder written by `kgzsl train --out`")
        run = load_run(run)
    if not run.has_model:
        raise KgzslError(
            f"{run.source} holds predictions only, no trained model ({MODEL_FILE} and {RECORD_FILE} beside them): "
            "propagate needs the whole run folder `kgzsl train --out` wrote"
        )
    return run


def _load_graph(graph: ClassGraph | str | Path) -> ClassGraph:
    return load_graph(graph) if isinstance(graph, (str, Path)) else graph


def _where(graph: ClassGraph) -> str:
    """The graph's folder as messages and records name it ("a graph built in memory" without one)."""
    return _graph_folder(graph) or "a graph built in memory"


def run_vectors(run: Run) -> str | None:
    """The feature source (``build-graph --vectors``) of the graph ``run`` was trained on: from its record,
    else from that graph's folder where it still is; None where neither says."""
    match = _FEATURES_RECORD.fullmatch(str((run.record or {}).get("features", "")))
    if match and match.group(1) != "None":
        return match.group(1)
    try:
        return run.load_graph().meta.get("vectors")
    except KgzslError:
        return None


def _check_features(run: Run, graph: ClassGraph) -> None:
    """Refuse a graph whose node features are of another source or width than those the model was trained on."""
    record = run.record or {}
    config = record.get("model_config")
    run_dim = config.get("in_channels") if isinstance(config, dict) else None
    if not isinstance(run_dim, int):
        return  # a damaged record: load_checkpoint refuses it, naming the file
    trained = run_vectors(run)
    dim = int(graph.features.shape[1])
    vectors = graph.meta.get("vectors")
    type_differs = trained is not None and vectors is not None and vectors != trained
    if dim == run_dim and not type_differs:
        return
    what = "feature source and width differ" if type_differs and dim != run_dim else (
        "feature source differs" if type_differs else "feature width differs")
    raise KgzslError(
        f"cannot propagate run {run.source} onto graph {_where(graph)}: {what} (the run's graph "
        f"{record.get('graph') or '?'} has {trained or 'unrecorded'} node features, {run_dim}-d; graph "
        f"{_where(graph)} has {vectors or 'unrecorded'}, {dim}-d): build the graph with "
        f"`kgzsl build-graph --vectors {trained or '...'}`, or train a run on it"
    )


def _check_shared_classes(run: Run, graph: ClassGraph) -> None:
    """Refuse a graph that holds none of the classes the run trained on (matched by node id): it is not a grown
    copy of the run's graph, so no trained class would keep its real classifier (another domain's graph, say)."""
    trained = [run.predictions.ids[i] for i in run.predictions.seen.nonzero().view(-1).tolist()]
    if not trained or set(trained) & set(graph.ids):
        return
    shown = ", ".join(repr(node_id) for node_id in trained[:3]) + (" ..." if len(trained) > 3 else "")
    recorded = (run.record or {}).get("graph")
    raise KgzslError(
        f"cannot propagate run {run.source} onto graph {_where(graph)}: the graph holds none of the {len(trained)} "
        f"classes the run trained on ({shown}, by node id): propagate needs the run's graph"
        f"{f' ({recorded})' if recorded else ''} grown with new classes; build it from the same taxonomy or wnid lists"
    )


# ------------------------------------------------------------------------------------------ output
def _seen_rows(predictions: Predictions, graph: ClassGraph) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The run's trained classes on the new graph (by node id) and their real unit rows in the new node order
    (None where the run kept no real rows): they stay the run's, as :func:`kgzsl.propagation.training.train` stores them."""
    trained = predictions.seen.nonzero().view(-1).tolist()
    row_of = {predictions.ids[i]: k for k, i in enumerate(trained)}
    seen = torch.tensor([node_id in row_of for node_id in graph.ids], dtype=torch.bool)
    if predictions.seen_true is None:
        return seen, None
    order = [row_of[node_id] for node_id in graph.ids if node_id in row_of]
    return seen, predictions.seen_true[torch.tensor(order, dtype=torch.long)].reshape(len(order), -1)


def _record(run: Run, graph: ClassGraph, info: dict[str, Any], new_nodes: list[int], removed: list[str]) -> dict[str, Any]:
    """The run's configuration record with the new graph's identity, and where it was propagated from."""
    config = {k: v for k, v in info.items() if k not in _LOOP_FIELDS}
    earlier = info.get("propagated") or {}
    fingerprint = graph_fingerprint(graph.ids, graph.edge_index)
    config.update(
        graph=_graph_folder(graph),
        graph_nodes=len(graph.ids),
        graph_fingerprint=fingerprint,
        propagated={
            "from_run": str(run.folder.resolve()),
            "from_graph": info.get("graph"),
            "from_graph_fingerprint": info.get("graph_fingerprint"),
            "trained_graph": earlier.get("trained_graph", info.get("graph")),
            "trained_graph_fingerprint": earlier.get("trained_graph_fingerprint", info.get("graph_fingerprint")),
            "graph": _where(graph),
            "graph_fingerprint": fingerprint,
            "vectors": graph.meta.get("vectors"),
            "new_nodes": [graph.ids[i] for i in new_nodes],
            "removed_nodes": removed,
        },
    )
    return config


def _result(info: dict[str, Any], model: Any, pred: torch.Tensor, seen: torch.Tensor, seen_true: torch.Tensor | None,
            config: dict[str, Any]) -> TrainResult:
    """A :class:`~kgzsl.propagation.training.TrainResult` of the same training on the new graph, for :func:`kgzsl.propagation.run.save_run`."""
    return TrainResult(
        model=model, model_name=info["model"], predictions=pred, seen=seen, best_epoch=info["best_epoch"],
        epochs_run=info["epochs_run"], losses=info["losses"], val_losses=info["val_losses"], seen_loss=info["seen_loss"],
        val_loss=info["val_loss"], seconds=info["seconds"], config=config, seen_targets=seen_true,
    )


def _notes(run: Run, graph: ClassGraph, new_nodes: list[int], removed: list[str]) -> list[str]:
    """What a user should know about the propagated run: new classes without a feature vector, trained
    classes the new graph dropped, a calibration that is not carried over."""
    notes = []
    blind = [graph.ids[i] for i in new_nodes if not bool(graph.has_vector[i])]
    if blind:
        notes.append(f"{len(blind)} new nodes have no feature vector (their classifiers come from the graph alone): "
                     + ", ".join(blind[:20]))
    gone = [node_id for node_id in removed if bool(run.predictions.seen[run.predictions.index[node_id]])]
    if gone:
        notes.append(f"{len(gone)} classes the run trained on are not in graph {_where(graph)}: " + ", ".join(gone[:20]))
    for name in HEDGE_FILES.values():
        if (run.folder / name).is_file():
            notes.append(f"the run's {name} is not carried over (the candidates changed): run `kgzsl calibrate` on the output")
    return notes


def _extra_meta(result: TrainResult) -> dict[str, Any]:
    """What the propagated predictions file adds to a run's metadata: where they were propagated from."""
    propagated = result.config["propagated"]
    return {"propagated_from": {key: propagated[key] for key in ("from_run", "from_graph", "from_graph_fingerprint")}}


def _as_predictions(result: TrainResult, graph: ClassGraph) -> Predictions:
    """The propagated classifiers as :class:`~kgzsl.propagation.predictions.Predictions`, with the metadata the saved file has."""
    return Predictions(ids=list(graph.ids), pred=result.predictions, seen=result.seen,
                       meta={**predictions_meta(result, graph), **_extra_meta(result)}, seen_true=result.seen_targets)
