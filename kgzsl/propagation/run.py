"""A run folder, as ``kgzsl train --out`` writes it, and the :class:`Run` that reads it back.

::

    model.safetensors        the trained model's state dict (metadata: format, model)
    train.json               the training record: configuration, seed, losses, graph folder and
                             fingerprint, targets source, backbone and its classifier fingerprint
    predictions.safetensors  every node's predicted classifier (:mod:`kgzsl.propagation.predictions`)
    hedge.json               (after ``kgzsl calibrate``) temperature, thresholds and DARTS multipliers (:mod:`kgzsl.recognition.hedge`)
    hedge-all.json           the same for the generalized setting (``--candidates all``), with its gamma

``kgzsl propagate`` (:mod:`kgzsl.propagation.grow`) writes the same folder for a trained model run on another
graph: ``train.json`` then names that graph and says, under ``propagated``, where it came from.

:func:`save_run` writes the three files atomically; :func:`load_run` reads a run folder (or a bare
predictions file) into a :class:`Run`, which knows the graph it was trained on, the backbone whose
features it needs and, where the folder has it, the model. Everything but the predictions is read
on demand, so a command that only ranks classes never opens the other files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgzsl.core.files import (
    check_format,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from kgzsl.core.outputs import atomic_dir
from kgzsl.core.resources import project_root
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph, graph_fingerprint, load_graph
from kgzsl.propagation.run_files import (  # noqa: F401 - a run's file names are importable from here too
    HEDGE_FILE,
    HEDGE_FILES,
    MODEL_FILE,
    PREDICTIONS_FILE,
    RECORD_FILE,
    REUSE_FILE,
    predictions_file,
)

if TYPE_CHECKING:
    from kgzsl.propagation.models import PropagationModel
    from kgzsl.propagation.predictions import Predictions
    from kgzsl.propagation.targets import Targets
    from kgzsl.propagation.training import TrainResult

log = logging.getLogger("kgzsl")

FORMAT_NAME = "kgzsl.train"
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------ writing
def save_checkpoint(result: TrainResult, folder: str | Path) -> Path:
    """Write ``model.safetensors`` and ``train.json`` into ``folder`` (each file atomically)."""
    folder = Path(folder)
    state = {k: v.detach().float().contiguous() for k, v in result.model.state_dict().items()}
    save_tensors(folder / MODEL_FILE, state, metadata={"format": FORMAT_NAME, "model": result.model_name})
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
    write_json(folder / RECORD_FILE, info)
    return folder


def save_run(result: TrainResult, graph: ClassGraph, out: str | Path, force: bool = False,
             meta: dict[str, Any] | None = None) -> Path:
    """Write a whole run folder atomically: checkpoint + ``predictions.safetensors`` for every node
    (``meta``: more metadata for the predictions file, e.g. where a propagated run came from)."""
    from kgzsl.propagation.predictions import save_predictions  # lazy: torch

    with atomic_dir(out, force=force, kind="train") as tmp:
        save_checkpoint(result, tmp)
        save_predictions(
            tmp / PREDICTIONS_FILE,
            list(graph.ids),
            result.predictions,
            result.seen,
            seen_true=result.seen_targets,
            meta={**predictions_meta(result, graph), **(meta or {})},
        )
    return Path(out)


def predictions_meta(result: TrainResult, graph: ClassGraph) -> dict[str, Any]:
    """The metadata :func:`save_run` gives a run's predictions: where they come from, and each node's role and name."""
    return {
        "model": result.model_name,
        "targets": result.config["targets"],
        "graph_fingerprint": result.config["graph_fingerprint"],
        "graph": result.config["graph"],
        "best_epoch": result.best_epoch,
        "seed": result.config["seed"],
        "backbone": result.config.get("backbone"),
        "backbone_fingerprint": result.config.get("backbone_fingerprint"),
        "roles": list(graph.roles),  # recognition excludes structure-only nodes from the candidates
        "names": [names[0] if names else node_id for names, node_id in zip(graph.names, graph.ids)],
    }


# ------------------------------------------------------------------------------------------ reading
def read_record(folder: str | Path) -> dict[str, Any]:
    """The ``train.json`` of a run folder, its format and version checked (KgzslError naming the file)."""
    path = Path(folder) / RECORD_FILE
    return check_format(read_json(path, "training record"), FORMAT_NAME, FORMAT_VERSION, path, "training record")


def load_checkpoint(folder: str | Path, graph: ClassGraph, targets: Targets | None = None,
                    same_graph: bool = True) -> tuple[PropagationModel, dict[str, Any]]:
    """Rebuild the trained model of a checkpoint folder for ``graph`` (eval mode) and its ``train.json``.

    Refused with a KgzslError: a checkpoint trained on another graph (fingerprint mismatch; not checked
    with ``same_graph=False``, as :mod:`kgzsl.propagation.grow` runs a model on a grown graph), feature or
    ``targets`` widths that do not match the model, a damaged state dict.
    """
    from kgzsl.propagation.models import build_model  # lazy: torch

    folder = Path(folder)
    info = read_record(folder)
    fingerprint = graph_fingerprint(graph.ids, graph.edge_index)
    if same_graph and info.get("graph_fingerprint") != fingerprint:
        where = getattr(graph, "meta", {}).get("folder", "the given graph")
        raise KgzslError(
            f"checkpoint {folder} was trained on another graph ({info.get('graph', '?')}, fingerprint "
            f"{str(info.get('graph_fingerprint'))[:12]}), not on {where} ({fingerprint[:12]})"
        )
    record = folder / RECORD_FILE
    config = info.get("model_config")
    if (not isinstance(config, dict) or not isinstance(info.get("model"), str)
            or not all(isinstance(config.get(k), int) and config[k] > 0 for k in ("in_channels", "out_channels"))):
        raise KgzslError(f"training record {record} does not say which model it trained (model, and model_config with "
                         "in_channels and out_channels): the run folder is damaged; train it again")
    config = dict(config)
    in_channels, out_channels = config.pop("in_channels"), config.pop("out_channels")
    feature_dim = int(np.asarray(graph.features).shape[1])
    if feature_dim != in_channels:
        raise KgzslError(f"checkpoint {folder} expects {in_channels}-d node features; the graph has {feature_dim}-d")
    if targets is not None and targets.dim != out_channels:
        raise KgzslError(
            f"checkpoint {folder} predicts {out_channels}-d classifiers but the targets from {targets.source} are {targets.dim}-d"
        )
    try:
        model = build_model(info["model"], in_channels, out_channels, **config)
    except KgzslError as exc:
        raise KgzslError(f"training record {record}: {exc}") from None
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:  # a damaged value of model_config
        raise KgzslError(f"training record {record}: its model_config does not build a {info['model']} model "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): train the run again") from None
    state, _ = load_tensors(folder / MODEL_FILE, "model weights")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KgzslError(f"{folder}/{MODEL_FILE} does not fit a {info['model']} model: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, info


@dataclass
class Run:
    """A trained run read back: its predictions, and on demand its record, graph, model and targets.

    ``source`` is the path given (a run folder or a predictions file, named in messages); ``folder``
    the folder holding the predictions file, whose ``train.json`` and ``model.safetensors`` belong to it.
    """

    source: Path
    folder: Path
    predictions: Predictions

    @cached_property
    def record(self) -> dict[str, Any] | None:
        """The run's ``train.json`` (None for a predictions file without one beside it)."""
        return read_record(self.folder) if (self.folder / RECORD_FILE).is_file() else None

    def _recorded(self, key: str) -> Any:
        """``key`` from the predictions' metadata, else from ``train.json`` (read only if needed)."""
        value = self.predictions.meta.get(key)
        if not value and (self.folder / RECORD_FILE).is_file():
            value = (self.record or {}).get(key)
        return value

    @property
    def model_name(self) -> str | None:
        """The propagation model the run trained (gcnz, sgcn, dgp), if recorded."""
        return self._recorded("model")

    @property
    def backbone(self) -> str | None:
        """The backbone whose features the classifiers take (a name or a state-dict file); None for
        targets from a plain matrix, which do not say."""
        return self._recorded("backbone")

    @property
    def backbone_fingerprint(self) -> str | None:
        """The hash of that backbone's classifier (:attr:`kgzsl.vision.backbones.Backbone.fingerprint`), if recorded."""
        return self._recorded("backbone_fingerprint")

    @property
    def has_model(self) -> bool:
        """Whether the folder holds the trained model (``model.safetensors`` and ``train.json``)."""
        return (self.folder / MODEL_FILE).is_file() and (self.folder / RECORD_FILE).is_file()

    def graph_folder(self) -> Path:
        """The graph folder the run records, where it still is (KgzslError saying to pass the graph otherwise)."""
        recorded = str(self._recorded("graph") or "")
        if not recorded:
            raise KgzslError(f"predictions {self.source} record no graph folder (trained on a graph built in memory): pass --graph")
        path = Path(recorded)
        for place in [path] if path.is_absolute() or project_root() is None else [path, project_root() / path]:  # older runs: relative to the project
            if (place / "graph.json").is_file():
                return place
        raise KgzslError(f"the graph {recorded} that predictions {self.source} were trained on is not there: pass --graph")

    def trained_on(self, graph: ClassGraph) -> bool:
        """Whether ``graph`` is the graph the run was trained on (True where the run records no fingerprint)."""
        recorded = self._recorded("graph_fingerprint")
        return not recorded or recorded == graph_fingerprint(graph.ids, graph.edge_index)

    def load_graph(self, folder: str | Path | None = None) -> ClassGraph:
        """The graph in ``folder``, else the one the run records; refused unless it is the run's graph."""
        where = Path(folder) if folder is not None else self.graph_folder()
        graph = load_graph(where)
        if not self.trained_on(graph):
            given = "given with --graph" if folder is not None else "where the run says its graph is"
            raise KgzslError(f"graph {where} ({given}) is not the graph the predictions {self.source} were trained on "
                             "(fingerprints differ): pass the run's graph with --graph")
        return graph

    def load_model(self, graph: ClassGraph) -> PropagationModel | None:
        """The trained model rebuilt for ``graph`` (eval mode), or None where the folder has no model."""
        return load_checkpoint(self.folder, graph)[0] if self.has_model else None

    def load_targets(self) -> Targets | None:
        """The targets the run regressed, loaded again from the recorded source (None if none is recorded)."""
        from kgzsl.propagation.targets import load_targets  # lazy: torch

        source = self._recorded("targets")
        return load_targets(source) if source else None


def load_run(path: str | Path) -> Run:
    """Read a run folder (or a predictions file, whose folder is taken for its run) into a :class:`Run`."""
    from kgzsl.propagation.predictions import load_predictions  # lazy: torch

    file = predictions_file(path)
    return Run(source=Path(path), folder=file.parent, predictions=load_predictions(file))


