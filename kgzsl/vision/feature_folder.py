"""The on-disk feature folder that ``kgzsl features`` writes: its run file, shards and manifest, and reading it back.

Layout::

    run.json                  what is being extracted (file list digest, shard size, backbone): written first
    shard-000000.safetensors  features float32 [n, D] of images 0..S-1, metadata: their paths, labels, bad files
    shard-000001.safetensors  ... one file per ``shard_size`` images of the sorted file list
    manifest.json             written last, once every shard exists: the run is complete

Shard ``k`` always holds images ``k*S .. (k+1)*S-1`` of the sorted list and each file is written
atomically, so a shard on disk is either complete or absent (see :mod:`kgzsl.vision.features` for the writer).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from safetensors import safe_open

from kgzsl.core.devices import release_free_heap
from kgzsl.core.files import (
    check_format,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from kgzsl.core.outputs import output_kind
from kgzsl.errors import KgzslError
from kgzsl.vision.images import ImageItem

if TYPE_CHECKING:
    import torch

FORMAT = 1
RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
SHARD_NAME = "shard-{:06d}.safetensors"


class FeatureSet(NamedTuple):
    """Merged features of an extraction run: ``features`` [n, D] float32, one label and relative path a row."""

    features: torch.Tensor
    labels: list[str]
    paths: list[str]


# ------------------------------------------------------------------------------------ run file
def files_digest(items: Sequence[ImageItem]) -> str:
    """SHA-256 of the sorted file list (relative path and label of every image): which images a run covers."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.relpath}\t{item.label}\n".encode())
    return digest.hexdigest()


def run_config(image_dir: str | os.PathLike, items: Sequence[ImageItem], shard_size: int, backbone: dict) -> dict:
    """The content of ``run.json``: what an extraction of ``items`` with ``backbone`` (its description) writes."""
    return {
        "format": FORMAT,
        "image_dir": str(Path(image_dir).resolve()),
        "images": len(items),
        "files_sha256": files_digest(items),
        "shard_size": shard_size,
        "shards": (len(items) + shard_size - 1) // shard_size,
        "backbone": backbone,
    }


def comparable(config: dict) -> dict:
    """The parts of a run config that must match for a resume (not machine-specific paths)."""
    backbone = {k: v for k, v in config.get("backbone", {}).items() if k != "source"}
    return {**{k: v for k, v in config.items() if k not in ("image_dir", "backbone")}, "backbone": backbone}


def clear_outputs(out: Path) -> None:
    """Remove what an extraction run writes in ``out`` (and nothing else)."""
    for path in list(out.glob("shard-*.safetensors")) + [out / RUN_FILE, out / MANIFEST_FILE]:
        path.unlink(missing_ok=True)


def clear_temporaries(out: Path) -> None:
    """Remove temp files a killed run left behind (atomic writes never leave a half-written shard)."""
    for path in out.glob(".*.tmp"):
        if path.name.startswith((".shard-", f".{RUN_FILE}.", f".{MANIFEST_FILE}.")):
            path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ shards
def shard_meta(path: Path) -> dict | None:
    """The kgzsl metadata of a shard file, or ``None`` if it is not a readable shard."""
    try:
        with safe_open(str(path), framework="numpy") as handle:  # the header only: no torch needed
            meta = json.loads((handle.metadata() or {}).get("kgzsl", "null"))
            rows = handle.get_slice("features").get_shape()[0]
    except Exception:
        return None
    if not isinstance(meta, dict) or rows != len(meta.get("paths", ())):
        return None
    return meta


def shard_done(path: Path, shard: int, items: Sequence[ImageItem]) -> bool:
    """Whether ``path`` is a complete shard ``shard`` covering exactly ``items``."""
    if not path.is_file():
        return False
    meta = shard_meta(path)
    if meta is None or meta.get("shard") != shard:
        return False
    covered = sorted(list(meta["paths"]) + [bad["path"] for bad in meta.get("bad_files", [])])
    return covered == sorted(item.relpath for item in items)


def write_shard(
    out: Path, shard: int, first: int, items: Sequence[ImageItem], rows: dict[int, np.ndarray], bad: dict[int, str],
    *, dim: int, rank: int, world_size: int,
) -> None:
    """Write shard ``shard`` (images ``first..``, ``items``): the feature ``rows`` (float32 arrays or tensors) and
    ``bad`` reasons by image index."""
    order = sorted(rows)
    features = (np.stack([np.asarray(rows[i], dtype=np.float32) for i in order]) if order
                else np.zeros((0, dim), dtype=np.float32))
    meta = {
        "format": FORMAT,
        "shard": shard,
        "first": first,
        "images": len(items),
        "rank": rank,
        "world_size": world_size,
        "paths": [items[i - first].relpath for i in order],
        "labels": [items[i - first].label for i in order],
        "bad_files": [
            {"path": items[i - first].relpath, "label": items[i - first].label, "reason": bad[i]} for i in sorted(bad)
        ],
    }
    path = out / SHARD_NAME.format(shard)
    save_tensors(path, {"features": features}, metadata={"kgzsl": json.dumps(meta)})


# ------------------------------------------------------------------------------------ manifest
def write_manifest(out: Path, config: dict, items: Sequence[ImageItem]) -> dict:
    """Check that every shard of the run ``config`` is complete, then write ``manifest.json`` (the completion mark)."""
    shard_size = config["shard_size"]
    shards, bad_files, labels, features = [], [], set(), 0
    for k in range(config["shards"]):
        path = out / SHARD_NAME.format(k)
        chunk = items[k * shard_size:(k + 1) * shard_size]
        if not shard_done(path, k, chunk):
            raise KgzslError(f"shard {path} is missing or incomplete after extraction: rerun to resume")
        meta = shard_meta(path)
        shards.append({"file": path.name, "rows": len(meta["paths"]), "images": len(chunk)})
        bad_files.extend(meta["bad_files"])
        labels.update(meta["labels"])
        features += len(meta["paths"])
    manifest = {
        "format": FORMAT,
        "complete": True,
        "backbone": config["backbone"],
        "dim": config["backbone"]["dim"],
        "image_dir": config["image_dir"],
        "images": config["images"],
        "features": features,
        "files_sha256": config["files_sha256"],
        "shard_size": shard_size,
        "labels": sorted(labels),
        "shards": shards,
        "bad_files": bad_files,
    }
    write_json(out / MANIFEST_FILE, manifest)
    return manifest


# ------------------------------------------------------------------------------------ reading back
def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a finished extraction; a clear error for an unfinished or foreign folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KgzslError(f"feature folder {folder} does not exist")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        if output_kind(folder) == "features":  # kgzsl's own run.json, not any file of that name
            raise KgzslError(f"feature folder {folder} holds an unfinished extraction (no {MANIFEST_FILE}): "
                             "rerun `kgzsl features` with the same arguments to resume it")
        raise KgzslError(f"feature folder {folder} has no {MANIFEST_FILE}: it is not the output of `kgzsl features`")
    manifest = check_format(read_json(path, "feature manifest"), FORMAT, None, path, "feature manifest")
    if not isinstance(manifest.get("shards"), list):
        raise KgzslError(f"feature manifest {path} lists no shards: it is not a kgzsl feature manifest")
    for key in ("dim", "features"):
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "dim" else 0):
            raise KgzslError(f"feature manifest {path}: {key!r} is {value!r}, not a count: re-extract the features with --force")
    return manifest


def _shard_path(folder: Path, entry: Any) -> Path:
    """The shard file a manifest entry names, refused unless it is a plain file name inside ``folder``.

    The writer only records names (``shard-000000.safetensors``); a path such as ``../x.safetensors``, an
    absolute path or a link out of the folder would make a copied or edited manifest read other files.
    """
    manifest = folder / MANIFEST_FILE
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not isinstance(entry.get("rows"), int):
        raise KgzslError(f"feature manifest {manifest} has a shard entry without a file name and row count: {entry!r}")
    path = folder / name
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name or Path(name).is_absolute():
        raise KgzslError(
            f"feature manifest {manifest} names shard {name!r}, which is not a file inside {folder}: "
            "only files inside the feature folder are read; re-extract the features"
        )
    if path.is_symlink() or (path.exists() and path.resolve().parent != folder.resolve()):
        raise KgzslError(f"feature manifest {manifest}: shard {name!r} is a link out of {folder}: only files inside the feature folder are read")
    return path


def _read_shard(path: Path, entry: dict, dim: int) -> tuple[torch.Tensor, dict]:
    """One shard's features [rows, dim] and metadata, checked against its manifest ``entry``."""
    tensors, metadata = load_tensors(path, "feature shard")
    features = tensors.get("features")
    try:
        meta = json.loads(metadata.get("kgzsl", "null"))
    except (json.JSONDecodeError, RecursionError):
        meta = None
    if features is None or not isinstance(meta, dict):
        raise KgzslError(f"feature shard {path} lacks its features tensor or its kgzsl metadata")
    if not all(isinstance(meta.get(key), list) and all(isinstance(v, str) for v in meta[key]) for key in ("paths", "labels")):
        raise KgzslError(f"feature shard {path}: its kgzsl metadata has no list of image paths and labels: re-extract it with --force")
    if features.dim() != 2 or features.shape[1] != dim:
        raise KgzslError(f"feature shard {path} has features of shape {list(features.shape)}, expected [n, {dim}]")
    if not features.shape[0] == len(meta["paths"]) == len(meta["labels"]) == entry["rows"]:
        raise KgzslError(f"feature shard {path} has {features.shape[0]} rows but lists {len(meta['paths'])} paths "
                         f"and the manifest {entry['rows']}")
    return features, meta


def _shard_entries(folder: Path, manifest: dict) -> list[tuple[dict, Path]]:
    """Each manifest shard entry with its checked file path; the row counts must add up to the manifest's."""
    entries = [(entry, _shard_path(folder, entry)) for entry in manifest["shards"]]
    names = [path.name for _, path in entries]
    if len(set(names)) != len(names):
        raise KgzslError(f"feature folder {folder} lists some shards twice in its {MANIFEST_FILE}: re-extract it with --force")
    rows = sum(entry["rows"] for entry, _ in entries)
    if rows != manifest["features"]:
        raise KgzslError(f"feature folder {folder} has {rows} rows, its manifest says {manifest['features']}")
    return entries


def iter_feature_shards(folder: str | os.PathLike, rows: Collection[int] | None = None) -> Iterator[FeatureSet]:
    """The features of a finished extraction one shard at a time, in file-list order: a :class:`FeatureSet` a shard,
    each read only when reached, so memory holds one shard whatever the number of images.

    ``rows`` (row numbers of the whole folder, as in :func:`load_features`) keeps only those rows; a shard holding
    none of them is not read. Between shards the heap's free pages go back to the OS (:func:`release_free_heap`). Every shard is checked as :func:`load_features` checks it; an image listed twice is
    caught within a shard and across shard files (the writer gives each shard its own slice of the file list).
    """
    import torch  # lazy: torch

    folder = Path(folder)
    manifest = read_manifest(folder)
    dim = int(manifest["dim"])
    wanted = None if rows is None else np.unique(np.asarray(list(rows), dtype=np.int64))
    first = 0
    for entry, path in _shard_entries(folder, manifest):
        end = first + entry["rows"]
        pick = None
        if wanted is not None:
            pick = wanted[np.searchsorted(wanted, first):np.searchsorted(wanted, end)] - first
            if not len(pick):
                first = end
                continue
        features, meta = _read_shard(path, entry, dim)
        if len(set(meta["paths"])) != len(meta["paths"]):
            raise KgzslError(f"feature folder {folder} lists some images twice (shard {path.name}): re-extract it with --force")
        labels, paths = list(meta["labels"]), list(meta["paths"])
        if pick is not None:
            features = features[torch.from_numpy(pick)]
            labels, paths = [labels[i] for i in pick.tolist()], [paths[i] for i in pick.tolist()]
        yield FeatureSet(features.float(), labels, paths)
        del features
        release_free_heap()  # what the caller freed scoring this shard
        first = end


def load_features(folder: str | os.PathLike) -> FeatureSet:
    """Merge the shards of a finished extraction into ``(features [n, D], labels, paths)``, in file-list order.

    Checks every shard's dimension and row count against the manifest and that no image appears twice.
    Holds every feature: :func:`iter_feature_shards` reads one shard at a time.
    """
    import torch  # lazy: torch

    folder = Path(folder)
    dim = int(read_manifest(folder)["dim"])
    blocks, labels, paths = [], [], []
    for shard in iter_feature_shards(folder):
        blocks.append(shard.features)
        labels.extend(shard.labels)
        paths.extend(shard.paths)
    if len(set(paths)) != len(paths):
        raise KgzslError(f"feature folder {folder} lists some images twice: re-extract it with --force")
    features = torch.cat(blocks) if blocks else torch.zeros((0, dim), dtype=torch.float32)
    return FeatureSet(features, labels, paths)
