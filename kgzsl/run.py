"""A run folder, as ``kgzsl train --out`` writes it, and the :class:`Run` that reads it back.

::

    model.safetensors        the trained model's state dict (metadata: format, model)
    train.json               the training record: configuration, seed, losses, graph folder and
                             fingerprint, targets source, backbone and its classifier fingerprint
    predictions.safetensors  every node's predicted classifier (:mod:`kgzsl.predictions`)
    hedge.json               (after ``kgzsl calibrate``) temperature, thresholds and DARTS multipliers (:mod:`kgzsl.hedge`)
    hedge-all.json           the same for the generalized setting (``--candidates all``), with its gamma

``kgzsl propagate`` (:mod:`kgzsl.propagate`) writes the same folder for a trained model run on another
graph: ``train.json`` then names that graph and says, under ``propagated``, where it came from.

:func:`save_run` writes the three files atomically; :func:`load_run` reads a run folder (or a bare
predictions file) into a :class:`Run`, which knows the graph it was trained on, the backbone whose
features it needs and, where the folder has it, the model. Everything but the predictions is read
on demand, so a command that only ranks classes never opens the other files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    from kgzsl.graph import ClassGraph
    from kgzsl.models import PropagationModel
    from kgzsl.predictions import Predictions
    from kgzsl.targets import Targets
    from kgzsl.train import TrainResult

log = logging.getLogger("kgzsl")

MODEL_FILE = "model.safetensors"
RECORD_FILE = "train.json"
PREDICTIONS_FILE = "predictions.safetensors"
#: the calibration of hedged answers, written by ``kgzsl calibrate`` (:func:`kgzsl.hedge.calibrate_run`)
HEDGE_FILE = "hedge.json"  # the unseen candidates' one; kgzsl.hedge.HEDGE_FILES names both
#: what a reusable run (the demo's, ``Recognizer.pretrained``'s) was trained for; named after the demo
REUSE_FILE = "demo.json"
FORMAT_NAME = "kgzsl.train"
FORMAT_VERSION = 1
#: the project kgzsl is installed from: older runs record their graph folder relative to it
_PROJECT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ writing
def save_checkpoint(result: TrainResult, folder: str | Path) -> Path:
    """Write ``model.safetensors`` and ``train.json`` into ``folder`` (each file atomically)."""
    from kgzsl.io import save_tensors, write_json

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
    from kgzsl.io import atomic_dir
    from kgzsl.predictions import save_predictions

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
    from kgzsl.io import check_format, read_json

    path = Path(folder) / RECORD_FILE
    return check_format(read_json(path, "training record"), FORMAT_NAME, FORMAT_VERSION, path, "training record")


def load_checkpoint(folder: str | Path, graph: ClassGraph, targets: Targets | None = None,
                    same_graph: bool = True) -> tuple[PropagationModel, dict[str, Any]]:
    """Rebuild the trained model of a checkpoint folder for ``graph`` (eval mode) and its ``train.json``.

    Refused with a KgzslError: a checkpoint trained on another graph (fingerprint mismatch; not checked
    with ``same_graph=False``, as :mod:`kgzsl.propagate` runs a model on a grown graph), feature or
    ``targets`` widths that do not match the model, a damaged state dict.
    """
    import numpy as np

    from kgzsl.io import load_tensors
    from kgzsl.models import build_model
    from kgzsl.train import graph_fingerprint

    folder = Path(folder)
    info = read_record(folder)
    fingerprint = graph_fingerprint(graph.ids, graph.edge_index)
    if same_graph and info.get("graph_fingerprint") != fingerprint:
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
    state, _ = load_tensors(folder / MODEL_FILE, "model weights")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KgzslError(f"{folder}/{MODEL_FILE} does not fit a {info['model']} model: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, info


def predictions_file(path: str | Path) -> Path:
    """``path`` itself, or the ``predictions.safetensors`` inside a run folder written by ``kgzsl train``."""
    path = Path(path)
    if path.is_dir():
        inner = path / PREDICTIONS_FILE
        if not inner.is_file():
            raise KgzslError(f"folder {path} has no {PREDICTIONS_FILE}: it is not a run folder of `kgzsl train`")
        return inner
    return path


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
        """The hash of that backbone's classifier (:attr:`kgzsl.backbones.Backbone.fingerprint`), if recorded."""
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
        for place in [path] if path.is_absolute() else [path, _PROJECT / path]:  # older runs: relative to the project
            if (place / "graph.json").is_file():
                return place
        raise KgzslError(f"the graph {recorded} that predictions {self.source} were trained on is not there: pass --graph")

    def trained_on(self, graph: ClassGraph) -> bool:
        """Whether ``graph`` is the graph the run was trained on (True where the run records no fingerprint)."""
        from kgzsl.train import graph_fingerprint

        recorded = self._recorded("graph_fingerprint")
        return not recorded or recorded == graph_fingerprint(graph.ids, graph.edge_index)

    def load_graph(self, folder: str | Path | None = None) -> ClassGraph:
        """The graph in ``folder``, else the one the run records; refused unless it is the run's graph."""
        from kgzsl.graph import load_graph

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

    def hedging(self, candidates: str = "unseen") -> dict[str, Any] | None:
        """The run's calibration of hedged answers over ``candidates`` (``hedge.json`` for unseen,
        ``hedge-all.json`` for all), format checked; None where absent."""
        from kgzsl.hedge import hedge_file, read_hedge_record

        path = self.folder / hedge_file(candidates)
        return read_hedge_record(path) if path.is_file() else None

    def load_targets(self) -> Targets | None:
        """The targets the run regressed, loaded again from the recorded source (None if none is recorded)."""
        from kgzsl.targets import load_targets

        source = self._recorded("targets")
        return load_targets(source) if source else None


def load_run(path: str | Path) -> Run:
    """Read a run folder (or a predictions file, whose folder is taken for its run) into a :class:`Run`."""
    from kgzsl.predictions import load_predictions

    file = predictions_file(path)
    return Run(source=Path(path), folder=file.parent, predictions=load_predictions(file))


# ----------------------------------------------------------------------------------- reusable runs
def reusable_run(
    graph: ClassGraph,
    folder: str | Path,
    model: str = "dgp",
    exclude: Iterable[str] = (),
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> tuple[Run, TrainResult | None]:
    """The run in ``folder`` if it was trained for exactly this graph, model, seed, epochs and held-out
    set (its ``demo.json`` says); else ``model`` trained now on EfficientNet-Lite0's classifiers and
    saved there. A calibration of hedged answers shipped for exactly this run (``data/calibration``) is
    installed where the folder has none. Returns the run and the training result (None when reused)."""
    from kgzsl.hedge import install_shipped_calibration
    from kgzsl.io import read_json, write_json
    from kgzsl.targets import load_targets
    from kgzsl.train import train

    folder = Path(folder)
    want = reuse_key(graph, model, exclude, epochs, seed)
    record = folder / REUSE_FILE
    result = None
    if record.is_file() and (folder / PREDICTIONS_FILE).is_file() and read_json(record) == want:
        log(f"reusing the trained {model} in {folder} (delete it to retrain)")
    else:
        log(f"training {model} on {graph.num_nodes} nodes with {len(want['exclude'])} classes held out ...")
        result = train(graph, load_targets("efficientnet-lite0"), model=model, epochs=epochs, seed=seed,
                       exclude=want["exclude"], progress=progress)
        save_run(result, graph, folder, force=True)
        write_json(record, want)
    for name in install_shipped_calibration(folder, want):
        log(f"installed the shipped hedging calibration {name} into {folder}")
    return load_run(folder), result


def reuse_key(graph: ClassGraph, model: str = "dgp", exclude: Iterable[str] = (), epochs: int | None = None,
              seed: int = 0) -> dict[str, Any]:
    """What a reusable run is trained for (its ``demo.json``): model, seed, held-out classes, epochs, graph."""
    from kgzsl.train import graph_fingerprint

    return {"model": model, "seed": seed, "exclude": sorted(exclude), "epochs": epochs,
            "graph_fingerprint": graph_fingerprint(graph.ids, graph.edge_index)}
