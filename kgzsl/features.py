"""CNN feature extraction over an ImageFolder tree: batched, sharded, resumable, and scaled out with torchrun.

Layout of an output folder::

    run.json                  what is being extracted (file list digest, shard size, backbone): written first
    shard-000000.safetensors  features float32 [n, D] of images 0..S-1, metadata: their paths, labels, bad files
    shard-000001.safetensors  ... one file per ``shard_size`` images of the sorted file list
    manifest.json             written last, by rank 0, once every shard exists: the run is complete

Shard ``k`` always holds images ``k*S .. (k+1)*S-1`` of the sorted list, whatever the number of ranks,
and each shard file is written atomically (temp file + rename). So a restart after a crash or a kill
skips the shards already on disk and redoes only the missing ones - nothing is lost or duplicated -
and may even use a different number of ranks. Under ``torchrun`` rank ``r`` of ``W`` takes shards
``r, r+W, r+2W, ...``; after a barrier rank 0 checks all shards and writes the manifest. All ranks
must see the same image tree and output folder (a shared filesystem across machines).

Images that cannot be read (corrupt, not an image, too small, missing) are recorded with the reason in
their shard's ``bad_files`` and in the manifest; the run carries on with the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from kgzsl.errors import KgzslError
from kgzsl.images import ImageItem, list_image_folder, load_image

if TYPE_CHECKING:
    from kgzsl.backbones import Backbone

FORMAT = 1
RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
SHARD_NAME = "shard-{:06d}.safetensors"


class FeatureSet(NamedTuple):
    """Merged features of an extraction run: ``features`` [n, D] float32, one label and relative path a row."""

    features: torch.Tensor
    labels: list[str]
    paths: list[str]


# ------------------------------------------------------------------------------------ distribution
@dataclass(frozen=True)
class Ranks:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        import torch.distributed as dist

        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` where a GPU exists, else the CPU; otherwise ``device`` as given."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise KgzslError(f"device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise KgzslError(f"device {device!r} asked for, but this torch build sees no GPU")
    return resolved


def setup_distributed(device: str = "auto") -> Ranks:
    """Join the process group torchrun describes (``WORLD_SIZE``/``RANK`` env): nccl on GPU, gloo on CPU.

    Without those variables (a plain run) this is a single rank and nothing is initialised.
    """
    import torch.distributed as dist

    resolved = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(0, 1, resolved)
    if not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), resolved)


def teardown_distributed() -> None:
    """Leave the process group, if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _current_ranks(device: torch.device) -> Ranks:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), device)
    return Ranks(0, 1, device)


def _reduce(ranks: Ranks, values: Sequence[int], op: str = "sum") -> list[int]:
    """All-reduce a few integers across ranks (identity on a single rank)."""
    if not ranks.distributed:
        return list(values)
    import torch.distributed as dist

    device = ranks.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(list(values), dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return [int(v) for v in tensor.cpu()]


def _agree(ranks: Ranks, error: str | None, what: str) -> None:
    """Raise on every rank if any rank failed a check, so no rank is left waiting at a barrier."""
    failed = _reduce(ranks, [1 if error else 0], "max")[0]
    if error:
        raise KgzslError(error)
    if failed:
        raise KgzslError(f"another rank failed while {what} (see its error)")


def _barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[ranks.device.index])
        else:
            dist.barrier()


def tune_cpu_allocator() -> bool:
    """Stop glibc from returning big freed blocks to the OS after every CNN layer (a CPU-speed fix).

    By default each large activation is a fresh ``mmap`` that is unmapped when freed, so every
    forward pass page-faults its whole working set again: on CPU this made EfficientNet-Lite 2-10x
    slower here, most of the time spent in the kernel. Raising the mmap and trim thresholds keeps
    those pages in the heap for reuse. Process-wide, so the CLI calls it, not the library; returns
    whether it applied (glibc on Linux only).
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False


# ------------------------------------------------------------------------------------ data loading
class _ImageDataset(torch.utils.data.Dataset):
    """Item ``i`` -> ``(i, tensor or None, reason or None)``: a bad file becomes a reason, never an exception."""

    def __init__(self, items: Sequence[ImageItem], transform: Callable) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        item = self.items[index]
        try:
            return index, self.transform(load_image(item.path)), None
        except KgzslError as exc:
            return index, None, str(exc)
        except Exception as exc:  # one odd file must not end a run over a million images
            return index, None, f"image {item.path} failed in preprocessing ({type(exc).__name__}: {exc})"


def _collate(batch: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, x) for i, x, _ in batch if x is not None]
    bad = [(i, reason) for i, x, reason in batch if x is None]
    stacked = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], stacked, bad


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # loader workers only decode/resize: leave the cores to the network


# ------------------------------------------------------------------------------------ shard files
def _files_digest(items: Sequence[ImageItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.relpath}\t{item.label}\n".encode())
    return digest.hexdigest()


def _shard_meta(path: Path) -> dict | None:
    """The kgzsl metadata of a shard file, or ``None`` if it is not a readable shard."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("kgzsl", "null"))
            rows = handle.get_slice("features").get_shape()[0]
    except Exception:
        return None
    if not isinstance(meta, dict) or rows != len(meta.get("paths", ())):
        return None
    return meta


def _shard_done(path: Path, shard: int, items: Sequence[ImageItem]) -> bool:
    """Whether ``path`` is a complete shard ``shard`` covering exactly ``items``."""
    if not path.is_file():
        return False
    meta = _shard_meta(path)
    if meta is None or meta.get("shard") != shard:
        return False
    covered = sorted(list(meta["paths"]) + [bad["path"] for bad in meta.get("bad_files", [])])
    return covered == sorted(item.relpath for item in items)


def _write_shard(
    out: Path, shard: int, items: Sequence[ImageItem], rows: dict[int, torch.Tensor], bad: dict[int, str], dim: int, first: int,
    ranks: Ranks,
) -> None:
    from kgzsl.io import save_tensors

    order = sorted(rows)
    features = torch.stack([rows[i] for i in order]) if order else torch.zeros((0, dim), dtype=torch.float32)
    meta = {
        "format": FORMAT,
        "shard": shard,
        "first": first,
        "images": len(items),
        "rank": ranks.rank,
        "world_size": ranks.world_size,
        "paths": [items[i - first].relpath for i in order],
        "labels": [items[i - first].label for i in order],
        "bad_files": [
            {"path": items[i - first].relpath, "label": items[i - first].label, "reason": bad[i]} for i in sorted(bad)
        ],
    }
    path = out / SHARD_NAME.format(shard)
    save_tensors(path, {"features": features.contiguous()}, metadata={"kgzsl": json.dumps(meta)})


def _clear_outputs(out: Path) -> None:
    """Remove what an extraction run writes in ``out`` (and nothing else)."""
    for path in list(out.glob("shard-*.safetensors")) + [out / RUN_FILE, out / MANIFEST_FILE]:
        path.unlink(missing_ok=True)


def _clear_temporaries(out: Path) -> None:
    """Remove temp files a killed run left behind (atomic writes never leave a half-written shard)."""
    for path in out.glob(".*.tmp"):
        if path.name.startswith((".shard-", f".{RUN_FILE}.", f".{MANIFEST_FILE}.")):
            path.unlink(missing_ok=True)


def _comparable(config: dict) -> dict:
    """The parts of a run config that must match for a resume (not machine-specific paths)."""
    backbone = {k: v for k, v in config.get("backbone", {}).items() if k != "source"}
    return {**{k: v for k, v in config.items() if k not in ("image_dir", "backbone")}, "backbone": backbone}


# ------------------------------------------------------------------------------------ extraction
def extract_features(
    image_dir: str | os.PathLike,
    backbone: Backbone,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    shard_size: int = 1024,
    workers: int = 0,
    force: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Extract ``backbone`` features of every image under ``image_dir`` (ImageFolder tree) into ``out``.

    Resumes an unfinished run in ``out`` (same images, shard size and backbone), skipping its
    complete shards; ``force`` starts over instead. Runs as one rank of a ``torch.distributed``
    group when one is initialised (see :func:`setup_distributed`). ``on_shard(k)`` is called after
    shard ``k`` is on disk. Returns a JSON-able summary (the same on every rank).
    """
    if batch_size < 1 or shard_size < 1 or workers < 0:
        raise KgzslError(f"batch size ({batch_size}) and shard size ({shard_size}) must be >= 1 and workers ({workers}) >= 0")
    start = time.perf_counter()
    out = Path(out)
    ranks = _current_ranks(backbone.device)
    items = list_image_folder(image_dir)
    n_shards = (len(items) + shard_size - 1) // shard_size
    config = {
        "format": FORMAT,
        "image_dir": str(Path(image_dir).resolve()),
        "images": len(items),
        "files_sha256": _files_digest(items),
        "shard_size": shard_size,
        "shards": n_shards,
        "backbone": backbone.describe(),
    }
    # Every rank must list the same images (same tree on every machine).
    digest = int(config["files_sha256"][:15], 16)
    low, high = _reduce(ranks, [digest, -digest], "min")
    _agree(ranks, None if (low, -high) == (digest, digest) else
           f"image folder {image_dir} lists different files on different ranks: every rank must see the same tree", "listing images")

    # Rank 0 checks (or starts) the output folder; the others wait, then check they can see it.
    error = None
    if ranks.rank == 0:
        try:
            error = _prepare_out(out, config, force)
        except KgzslError as exc:  # e.g. an unreadable run.json
            error = str(exc)
        except OSError as exc:
            error = f"output folder {out} cannot be written ({exc})"
    _agree(ranks, error, "preparing the output folder")
    _barrier(ranks)
    error = None if (out / RUN_FILE).is_file() else (
        f"output folder {out} is not visible from rank {ranks.rank}: use a folder on a filesystem every machine shares")
    _agree(ranks, error, "opening the output folder")

    mine = [k for k in range(n_shards) if k % ranks.world_size == ranks.rank]
    pending = [k for k in mine if not _shard_done(out / SHARD_NAME.format(k), k, items[k * shard_size:(k + 1) * shard_size])]
    extracted = _extract_shards(items, pending, backbone, out, batch_size, shard_size, workers, ranks, progress, on_shard)
    skipped = len(mine) - len(pending)

    _barrier(ranks)
    error, manifest = None, None
    if ranks.rank == 0:
        try:
            manifest = _write_manifest(out, config, items, shard_size)
        except KgzslError as exc:
            error = str(exc)
    _agree(ranks, error, "writing the manifest")
    _barrier(ranks)
    if manifest is None:
        manifest = read_manifest(out)
    written, skipped, extracted = _reduce(ranks, [len(pending), skipped, extracted], "sum")
    seconds = time.perf_counter() - start
    return {
        "out": str(out),
        "image_dir": str(image_dir),
        "backbone": backbone.name,
        "dim": backbone.dim,
        "images": len(items),
        "features": manifest["features"],
        "bad_files": manifest["bad_files"],
        "shards": n_shards,
        "shards_written": written,
        "shards_resumed": skipped,
        "images_extracted_now": extracted,
        "ranks": ranks.world_size,
        "device": str(ranks.device),
        "seconds": round(seconds, 2),
        "images_per_second": round(extracted / seconds, 1) if seconds > 0 else None,
    }


def _prepare_out(out: Path, config: dict, force: bool) -> str | None:
    """Rank 0: refuse a folder of another run, clear it with ``force``, write ``run.json``."""
    from kgzsl.io import check_output_dir, read_json, write_json

    check_output_dir(out, "features", force)  # only a feature folder (or an empty one) is ever cleared
    out.mkdir(parents=True, exist_ok=True)
    if force:
        _clear_outputs(out)
    _clear_temporaries(out)
    run_file = out / RUN_FILE
    if run_file.is_file():
        previous = read_json(run_file, "run file")
        old, new = _comparable(previous if isinstance(previous, dict) else {}), _comparable(config)
        changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
        if changed:
            return (f"output folder {out} holds a different extraction (differs in: {', '.join(changed)}): "
                    "pass --force to start over there, or choose another --out")
    else:
        stray = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if stray:
            return f"output folder {out} is not empty and holds no {RUN_FILE} (e.g. {stray[0]}): choose an empty or new folder"
        write_json(run_file, config)
    return None


def _extract_shards(
    items: Sequence[ImageItem], pending: list[int], backbone: Backbone, out: Path, batch_size: int, shard_size: int,
    workers: int, ranks: Ranks, progress: bool, on_shard: Callable[[int], None] | None,
) -> int:
    """Run the network over the images of ``pending`` shards, writing each shard as it completes."""
    from tqdm import tqdm

    if not pending:
        return 0
    batches: list[list[int]] = []
    for k in pending:
        indices = list(range(k * shard_size, min((k + 1) * shard_size, len(items))))
        batches.extend(indices[i:i + batch_size] for i in range(0, len(indices), batch_size))
    total = sum(len(b) for b in batches)
    loader = torch.utils.data.DataLoader(
        _ImageDataset(items, backbone.transform), batch_sampler=batches, num_workers=workers, collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None, pin_memory=backbone.device.type == "cuda",
        persistent_workers=False,
    )
    desc = "features" if ranks.world_size == 1 else f"features rank {ranks.rank}/{ranks.world_size}"
    bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True, smoothing=0.1)
    rows: dict[int, torch.Tensor] = {}
    bad: dict[int, str] = {}
    queue = list(pending)
    done = failed = 0
    try:
        for indices, batch, failures in loader:
            if batch is not None:
                for i, row in zip(indices, backbone.features(batch)):
                    rows[i] = row
            bad.update(failures)
            bar.update(len(indices) + len(failures))
            if failures:
                failed += len(failures)
                bar.set_postfix(bad=failed, refresh=False)
            k = queue[0]
            first, last = k * shard_size, min((k + 1) * shard_size, len(items))
            if len(rows) + len(bad) == last - first:  # batches never straddle shards
                _write_shard(out, k, items[first:last], rows, bad, backbone.dim, first, ranks)
                done += len(rows)
                rows, bad = {}, {}
                queue.pop(0)
                if on_shard is not None:
                    on_shard(k)
    finally:
        bar.close()
    return done


def _write_manifest(out: Path, config: dict, items: Sequence[ImageItem], shard_size: int) -> dict:
    """Rank 0, after every rank is done: check all shards and write ``manifest.json`` (the completion mark)."""
    from kgzsl.io import write_json

    shards, bad_files, labels, features = [], [], set(), 0
    for k in range(config["shards"]):
        path = out / SHARD_NAME.format(k)
        chunk = items[k * shard_size:(k + 1) * shard_size]
        if not _shard_done(path, k, chunk):
            raise KgzslError(f"shard {path} is missing or incomplete after extraction: rerun to resume")
        meta = _shard_meta(path)
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
    from kgzsl.io import read_json

    folder = Path(folder)
    if not folder.is_dir():
        raise KgzslError(f"feature folder {folder} does not exist")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        from kgzsl.io import output_kind

        if output_kind(folder) == "features":  # kgzsl's own run.json, not any file of that name
            raise KgzslError(f"feature folder {folder} holds an unfinished extraction (no {MANIFEST_FILE}): "
                             "rerun `kgzsl features` with the same arguments to resume it")
        raise KgzslError(f"feature folder {folder} has no {MANIFEST_FILE}: it is not the output of `kgzsl features`")
    manifest = read_json(path, "feature manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("shards"), list):
        raise KgzslError(f"feature manifest {path} is not a kgzsl format-{FORMAT} manifest")
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


def load_features(folder: str | os.PathLike) -> FeatureSet:
    """Merge the shards of a finished extraction into ``(features [n, D], labels, paths)``, in file-list order.

    Checks every shard's dimension and row count against the manifest and that no image appears twice.
    """
    from kgzsl.io import load_tensors

    folder = Path(folder)
    manifest = read_manifest(folder)
    dim = int(manifest["dim"])
    blocks, labels, paths = [], [], []
    for entry in manifest["shards"]:
        path = _shard_path(folder, entry)
        tensors, metadata = load_tensors(path, "feature shard")
        features = tensors.get("features")
        try:
            meta = json.loads(metadata.get("kgzsl", "null"))
        except json.JSONDecodeError:
            meta = None
        if features is None or not isinstance(meta, dict):
            raise KgzslError(f"feature shard {path} lacks its features tensor or its kgzsl metadata")
        if features.dim() != 2 or features.shape[1] != dim:
            raise KgzslError(f"feature shard {path} has features of shape {list(features.shape)}, expected [n, {dim}]")
        if not features.shape[0] == len(meta["paths"]) == len(meta["labels"]) == entry["rows"]:
            raise KgzslError(f"feature shard {path} has {features.shape[0]} rows but lists {len(meta['paths'])} paths "
                             f"and the manifest {entry['rows']}")
        blocks.append(features.float())
        labels.extend(meta["labels"])
        paths.extend(meta["paths"])
    if len(set(paths)) != len(paths):
        raise KgzslError(f"feature folder {folder} lists some images twice: re-extract it with --force")
    if len(paths) != manifest["features"]:
        raise KgzslError(f"feature folder {folder} has {len(paths)} rows, its manifest says {manifest['features']}")
    features = torch.cat(blocks) if blocks else torch.zeros((0, dim), dtype=torch.float32)
    return FeatureSet(features, labels, paths)


def image_list_features(
    paths: Sequence[str | os.PathLike], backbone: Backbone, batch_size: int = 32, progress: bool = False
) -> tuple[torch.Tensor, list[str], list[dict[str, str]]]:
    """Features of a few loose image files, in memory: (features [n, D], the paths that loaded, bad files).

    A file that is missing, corrupt, not an image or too small is reported in ``bad`` (path and reason)
    and skipped; the others are still processed.
    """
    good: list[str] = []
    bad: list[dict[str, str]] = []
    tensors: list[torch.Tensor] = []
    for path in paths:
        try:
            tensors.append(backbone.transform(load_image(path)))
            good.append(str(path))
        except KgzslError as exc:
            bad.append({"path": str(path), "reason": str(exc)})
    chunks = []
    iterator = range(0, len(tensors), batch_size)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="features", unit="batch", leave=False)
    for start in iterator:
        chunks.append(backbone.features(torch.stack(tensors[start:start + batch_size])))
    features = torch.cat(chunks) if chunks else torch.zeros(0, backbone.dim)
    return features, good, bad
