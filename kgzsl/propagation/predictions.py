"""Predicted classifiers for every graph node, in one pickle-free ``predictions.safetensors`` file.

DGP saves ``{"wnids": [...], "pred": tensor}`` with ``torch.save`` (pickle); kgzsl keeps the same idea
in safetensors. Tensors: ``pred`` float32 ``[N, D + 1]`` (weight row with the bias as last column, one
row a node, unit L2 norm as the model outputs them) and ``seen`` bool ``[N]`` (the classes whose real
classifier rows were used in training, i.e. not held out); optionally ``seen_true`` float32 ``[S, D + 1]``,
the real classifier rows of the ``seen`` classes (in row order, unit L2 norm like the predictions),
which generalized zero-shot scores seen classes with. String metadata: ``format``, ``version``,
``ids`` (JSON list, node order), and whatever else the writer records (model, targets source, graph
fingerprint, ...; each value JSON-encoded).
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgzsl.core.files import check_format, load_tensors, save_tensors
from kgzsl.errors import KgzslError
from kgzsl.propagation.run_files import predictions_file

FORMAT_NAME = "kgzsl.predictions"
FORMAT_VERSION = 1
RESERVED = ("format", "version", "ids")

#: how seen classes are scored: with their real classifiers, or with the GCN's predicted ones
SEEN_ROWS = ("real", "predicted")


@dataclass
class Predictions:
    """Loaded predictions: ``pred[i]`` is the classifier of node ``ids[i]``; ``index`` maps id -> row."""

    ids: list[str]
    pred: torch.Tensor
    seen: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)
    seen_true: torch.Tensor | None = None
    #: derived matrices kept for reuse (a candidate set's classifier rows): predictions are never modified in place
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {node_id: i for i, node_id in enumerate(self.ids)}

    def classifiers(self, seen_rows: str = "real") -> torch.Tensor:
        """Every row's classifier: the predicted one, except that seen classes keep their real (unit-norm)
        classifier with ``seen_rows="real"``, where the file has them; ``"predicted"`` uses the GCN's rows."""
        _check_seen_rows(seen_rows)
        if seen_rows == "predicted" or self.seen_true is None or not bool(self.seen.any()):
            return self.pred
        if "real" not in self.cache:
            weights = self.pred.clone()
            weights[self.seen] = self.seen_true
            self.cache["real"] = weights
        return self.cache["real"]

    def candidate_rows(self, columns: torch.Tensor, seen_rows: str = "real", keep: bool = True) -> torch.Tensor:
        """The classifier rows of candidate ``columns`` (see :meth:`classifiers`), gathered straight from the
        (memory-mapped) file, once per candidate set (``keep``: cached for the next call): the same floats as
        ``classifiers(seen_rows)[columns]`` without first copying every row, so one photo against 20k candidates
        copies only their rows."""
        _check_seen_rows(seen_rows)
        columns = torch.as_tensor(columns, dtype=torch.long)
        key = (seen_rows, columns.numpy().tobytes())
        if key not in self.cache or not keep:
            weights = torch.index_select(self.pred, 0, columns, out=_empty_rows(len(columns), self.pred.shape[1]))
            if seen_rows == "real" and self.seen_true is not None:
                seen = self.seen.index_select(0, columns)
                if bool(seen.any()):  # the real classifier of each seen candidate: its rank among the seen rows
                    rank = torch.cumsum(self.seen.long(), 0) - 1
                    weights[seen] = self.seen_true.index_select(0, rank.index_select(0, columns[seen]))
            if not keep:
                return weights
            self.cache[key] = weights
        return self.cache[key]

    def rows(self, ids: list[str]) -> torch.Tensor:
        """Prediction rows of ``ids``, in that order (KgzslError naming the first unknown id)."""
        missing = [i for i in ids if i not in self.index]
        if missing:
            raise KgzslError(f"{len(missing)} ids have no prediction (first: {missing[0]})")
        return self.pred[torch.tensor([self.index[i] for i in ids], dtype=torch.long)]


def _check_seen_rows(seen_rows: str) -> None:
    if seen_rows not in SEEN_ROWS:
        raise KgzslError(f"seen_rows must be 'real' or 'predicted', got {seen_rows!r}")


def _empty_rows(rows: int, width: int) -> torch.Tensor:
    """A float32 ``[rows, width]`` matrix in new memory whose pages the kernel maps in one call (``MAP_POPULATE``), not
    one fault at a time. Gathering 20k classifier rows (104 MB) takes 0.045-0.055 s into this here; into numpy's
    memory it took 0.025 s or 0.24 s (the kernel must first compact memory for the huge pages numpy asks for), into
    torch's 0.07 s. Page-aligned, so a BLAS's float32 rounding is that of a torch-allocated matrix."""
    size = rows * width
    buffer = mmap.mmap(-1, max(4 * size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0))
    return torch.from_numpy(np.frombuffer(buffer, dtype=np.float32, count=size).reshape(rows, width))


def _encode(value: Any) -> str:
    return json.dumps(value)  # strings too, so "7" and 7 stay apart on reading


def save_predictions(
    path: str | Path,
    ids: list[str],
    pred: torch.Tensor | np.ndarray,
    seen_mask: torch.Tensor | np.ndarray,
    meta: dict[str, Any] | None = None,
    seen_true: torch.Tensor | np.ndarray | None = None,
) -> Path:
    """Write ``predictions.safetensors`` atomically (see the module docstring for the layout)."""
    pred = torch.as_tensor(pred).detach().to(torch.float32).contiguous()
    seen = torch.as_tensor(seen_mask).detach().to(torch.bool).reshape(-1).contiguous()
    ids = [str(i) for i in ids]
    if pred.dim() != 2 or pred.size(0) != len(ids):
        raise KgzslError(f"predictions for {path}: pred must be [{len(ids)}, D], got {list(pred.shape)}")
    if seen.numel() != len(ids):
        raise KgzslError(f"predictions for {path}: seen mask has {seen.numel()} entries for {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise KgzslError(f"predictions for {path}: node ids are not unique")
    metadata = {k: _encode(v) for k, v in (meta or {}).items() if k not in RESERVED}
    metadata.update({"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "ids": json.dumps(ids)})
    tensors = {"pred": pred, "seen": seen}
    if seen_true is not None:
        seen_true = torch.as_tensor(seen_true).detach().to(torch.float32).contiguous()
        if list(seen_true.shape) != [int(seen.sum()), pred.size(1)]:
            raise KgzslError(f"predictions for {path}: seen_true must be [{int(seen.sum())}, {pred.size(1)}], got {list(seen_true.shape)}")
        tensors["seen_true"] = seen_true
    save_tensors(path, tensors, metadata=metadata)
    return Path(path)


def load_predictions(path: str | Path) -> Predictions:
    """Read a file written by :func:`save_predictions` (or a run folder's), checking format, version and shapes.
    The tensors stay memory-mapped (safetensors): only the rows that are used are read, when first used."""
    path = predictions_file(path)
    tensors, metadata = load_tensors(path, "predictions file")
    check_format(metadata, FORMAT_NAME, str(FORMAT_VERSION), path, "predictions file")
    try:
        ids = json.loads(metadata["ids"])
    except (KeyError, json.JSONDecodeError, RecursionError):
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        raise KgzslError(f"predictions file {path} has no readable id list in its metadata")
    pred, seen = tensors.get("pred"), tensors.get("seen")
    if pred is None or seen is None:
        raise KgzslError(f"predictions file {path} lacks the 'pred' or 'seen' tensor")
    if pred.dim() != 2 or pred.size(0) != len(ids) or seen.numel() != len(ids):
        raise KgzslError(
            f"predictions file {path} is inconsistent: {len(ids)} ids, pred {list(pred.shape)}, seen {list(seen.shape)}"
        )
    meta: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in RESERVED:
            continue
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    seen_true = tensors.get("seen_true")
    if seen_true is not None and list(seen_true.shape) != [int(seen.bool().sum()), pred.size(1)]:
        raise KgzslError(f"predictions file {path} is inconsistent: seen_true {list(seen_true.shape)} for {int(seen.bool().sum())} seen rows")
    return Predictions(ids=ids, pred=pred.float(), seen=seen.bool(), meta=meta,
                       seen_true=None if seen_true is None else seen_true.float())
