"""CNN feature extraction over an ImageFolder tree: batched, sharded, resumable, and scaled out with torchrun.

The output folder's format (``run.json``, shards, ``manifest.json``) and reading it back live in
:mod:`kgzsl.vision.feature_folder`; ``load_features`` and ``read_manifest`` are re-exported here.

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

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from kgzsl.core.devices import tune_cpu_allocator
from kgzsl.core.files import read_json, write_json
from kgzsl.core.outputs import check_output_dir
from kgzsl.errors import KgzslError
from kgzsl.vision import backbones  # load_backbone read at call time (tests swap it)
from kgzsl.vision.distributed import (
    Ranks,
    agree,
    all_reduce_ints,
    barrier,
    current_ranks,
    setup_distributed,
    teardown_distributed,
)
from kgzsl.vision.feature_folder import (
    FORMAT,
    MANIFEST_FILE,
    RUN_FILE,
    SHARD_NAME,
    FeatureSet,
    clear_outputs,
    clear_temporaries,
    comparable,
    load_features,
    read_manifest,
    run_config,
    shard_done,
    write_manifest,
    write_shard,
)
from kgzsl.vision.images import DRAFT_FACTOR, ImageItem, ImageTransform, list_image_folder, load_image

if TYPE_CHECKING:
    import torch

    from kgzsl.vision.backbones import Backbone

__all__ = [
    "FORMAT", "MANIFEST_FILE", "RUN_FILE", "SHARD_NAME", "ExtractionOptions", "FeatureSet", "extract_features",
    "extract_features_distributed", "image_list_features", "load_features", "read_manifest",
]


@dataclass(frozen=True)
class ExtractionOptions:
    """How an extraction runs (what it extracts is the image folder, the backbone and the output folder).

    ``force`` starts over in an output folder holding another run instead of refusing it; ``on_shard(k)``
    is called after shard ``k`` is on disk (progress reports, tests that simulate a crash). ``ahead``: images
    whose decoding started before torch was imported (:class:`kgzsl.cli.features.DecodeAhead`: ``transform``,
    ``draft``, ``take(path) -> Future | None``, ``settle()``), used where its transform and draft are the backbone's.
    """

    batch_size: int = 32
    shard_size: int = 1024
    workers: int = 0
    force: bool = False
    progress: bool = True
    on_shard: Callable[[int], None] | None = None
    ahead: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1 or self.workers < 0:
            raise KgzslError(f"batch size ({self.batch_size}) and shard size ({self.shard_size}) must be >= 1 "
                             f"and workers ({self.workers}) >= 0")


@dataclass(frozen=True)
class _Job:
    """One rank's share of an extraction: the sorted file list and where and how to write it."""

    items: list[ImageItem]
    backbone: Backbone
    out: Path
    options: ExtractionOptions
    ranks: Ranks

    def span(self, shard: int) -> tuple[int, int]:
        """First and one-past-last image index of ``shard``."""
        size = self.options.shard_size
        return shard * size, min((shard + 1) * size, len(self.items))


# ------------------------------------------------------------------------------------ data loading
class _ImageDataset:
    """Item ``i`` -> ``(i, 8-bit pixels or None, reason or None)``: a bad file becomes a reason, never an exception
    (a map-style dataset, as torch's DataLoader takes)."""

    def __init__(self, items: Sequence[ImageItem], transform: ImageTransform, draft: int | None = None,
                 ahead: Any = None) -> None:
        self.items = items
        self.transform = transform
        self.draft = draft
        self.ahead = ahead

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        item = self.items[index]
        try:
            started = self.ahead.take(item.path) if self.ahead is not None else None
            if started is not None:  # the same call, begun earlier: its pixels or its exception
                return index, started.result(), None
            return index, self.transform.pixels(load_image(item.path, draft=self.draft)), None
        except KgzslError as exc:
            return index, None, str(exc)
        except Exception as exc:  # one odd file must not end a run over a million images
            return index, None, f"image {item.path} failed in preprocessing ({type(exc).__name__}: {exc})"


@dataclass(frozen=True)
class _Collate:
    """A batch of dataset items -> ``(good indices, 8-bit pixels [B, H, W, 3] or None, [(index, reason)])``; the
    backbone normalises them in its forward threads (:meth:`~kgzsl.vision.backbones.Backbone.pixel_features`)."""

    transform: ImageTransform

    def __call__(self, batch: list) -> tuple[list[int], np.ndarray | None, list[tuple[int, str]]]:
        good = [(i, x) for i, x, _ in batch if x is not None]
        bad = [(i, reason) for i, x, reason in batch if x is None]
        stacked = np.stack([x for _, x in good]) if good else None
        return [i for i, _ in good], stacked, bad


def _worker_init(_: int) -> None:
    import torch  # lazy: torch

    torch.set_num_threads(1)  # a loader worker process only decodes and resizes: leave the cores to the network


def _loader(job: _Job, batches: list[list[int]]) -> Iterable[tuple[list[int], np.ndarray | None, list[tuple[int, str]]]]:
    """Batches of image indices -> ``(good indices, stacked 8-bit pixels or None, [(index, reason)])``.

    With ``workers`` > 0, DataLoader worker processes decode; with 0, threads of this process decode the next
    batch while the network runs the current one (Pillow releases the GIL while it decodes and resizes).
    """
    workers = job.options.workers
    backbone = job.backbone
    draft, ahead = _draft_side(backbone), job.options.ahead
    usable = ahead is not None and workers == 0 and (ahead.transform, ahead.draft) == (backbone.transform, draft)
    if ahead is not None:
        if usable:  # the network's set-up (importing torch, a first run's export) overlaps the decoding begun early
            _ = backbone.runner
        ahead.settle()  # then its queue stops: from here the loader's threads decode faster than its one thread
    dataset = _ImageDataset(job.items, backbone.transform, draft, ahead if usable else None)
    collate = _Collate(backbone.transform)
    if workers == 0:
        return _threaded(dataset, batches, collate)
    from torch.utils.data import DataLoader  # lazy: torch

    return DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
        worker_init_fn=_worker_init, pin_memory=backbone.device_type == "cuda", persistent_workers=False,
    )


def _draft_side(backbone: Backbone) -> int | None:
    """The short side a JPEG may be draft-decoded down to for ``backbone`` (None: decode in full)."""
    return DRAFT_FACTOR * backbone.transform.resize if getattr(backbone, "draft", False) else None


def _threaded(dataset: _ImageDataset, batches: list[list[int]], collate: _Collate, threads: int = 2) -> Iterator[Any]:
    """``collate`` of each batch of ``dataset``, decoded one batch ahead by ``threads`` threads, in order."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kgzsl-decode") as pool:
        pending = [pool.submit(dataset.__getitem__, i) for i in batches[0]] if batches else []
        for index in range(len(batches)):
            results = [future.result() for future in pending]
            pending = [pool.submit(dataset.__getitem__, i) for i in batches[index + 1]] if index + 1 < len(batches) else []
            yield collate(results)


# ------------------------------------------------------------------------------------ extraction
def extract_features(
    image_dir: str | os.PathLike,
    backbone: Backbone,
    out: str | os.PathLike,
    options: ExtractionOptions | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Extract ``backbone`` features of every image under ``image_dir`` (ImageFolder tree) into ``out``.

    ``options`` says how (batch and shard size, loader workers, ...); ``overrides`` set single fields of
    it (``batch_size=64``). Resumes an unfinished run in ``out`` (same images, shard size and backbone),
    skipping its complete shards; ``force`` starts over instead. Runs as one rank of a
    ``torch.distributed`` group when one is initialised (see :func:`kgzsl.vision.distributed.setup_distributed`).
    Returns a JSON-able summary (the same on every rank).
    """
    options = replace(options if options is not None else ExtractionOptions(), **overrides)
    start = time.perf_counter()
    ranks = current_ranks(backbone.device_name)
    job = _Job(list_image_folder(image_dir), backbone, Path(out), options, ranks)
    config = run_config(image_dir, job.items, options.shard_size, backbone.describe())
    _check_same_images(ranks, config["files_sha256"], image_dir)
    _open_out(job, config)
    mine = list(range(ranks.rank, config["shards"], ranks.world_size))
    pending = [k for k in mine if not shard_done(job.out / SHARD_NAME.format(k), k, job.items[slice(*job.span(k))])]
    extracted = _extract_shards(job, pending)
    manifest = _finish(job, config)
    counts = all_reduce_ints(ranks, [len(pending), len(mine) - len(pending), extracted], "sum")
    return _summary(job, image_dir, manifest, counts, time.perf_counter() - start)


def _check_same_images(ranks: Ranks, files_sha256: str, image_dir: str | os.PathLike) -> None:
    """Every rank must list the same images (the same tree on every machine)."""
    digest = int(files_sha256[:15], 16)
    low, high = all_reduce_ints(ranks, [digest, -digest], "min")
    agree(ranks, None if (low, -high) == (digest, digest) else
          f"image folder {image_dir} lists different files on different ranks: every rank must see the same tree", "listing images")


def _open_out(job: _Job, config: dict) -> None:
    """Rank 0 checks (or starts) the output folder; the others wait, then check they can see it."""
    out, ranks = job.out, job.ranks
    error = None
    if ranks.rank == 0:
        try:
            error = _prepare_out(out, config, job.options.force)
        except KgzslError as exc:  # e.g. an unreadable run.json
            error = str(exc)
        except OSError as exc:
            error = f"output folder {out} cannot be written ({exc})"
    agree(ranks, error, "preparing the output folder")
    barrier(ranks)
    error = None if (out / RUN_FILE).is_file() else (
        f"output folder {out} is not visible from rank {ranks.rank}: use a folder on a filesystem every machine shares")
    agree(ranks, error, "opening the output folder")


def _prepare_out(out: Path, config: dict, force: bool) -> str | None:
    """Rank 0: refuse a folder of another run, clear it with ``force``, write ``run.json``."""
    check_output_dir(out, "features", force)  # only a feature folder (or an empty one) is ever cleared
    out.mkdir(parents=True, exist_ok=True)
    if force:
        clear_outputs(out)
    clear_temporaries(out)
    run_file = out / RUN_FILE
    if run_file.is_file():
        previous = read_json(run_file, "run file")
        old, new = comparable(previous if isinstance(previous, dict) else {}), comparable(config)
        changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
        if changed:
            return (f"output folder {out} holds a different extraction (differs in: {', '.join(changed)}"
                    f"{_precision_hint(old, new)}): pass --force to start over there, or choose another --out")
    else:
        stray = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if stray:
            return f"output folder {out} is not empty and holds no {RUN_FILE} (e.g. {stray[0]}): choose an empty or new folder"
        write_json(run_file, config)
    return None


def _precision_hint(old: dict, new: dict) -> str:
    """Where only the backbone's precision differs: which, and the flag that resumes the folder as it was made."""
    before, now = old.get("backbone", {}), new.get("backbone", {})
    if {k: v for k, v in before.items() if k != "precision"} != {k: v for k, v in now.items() if k != "precision"}:
        return ""
    was, is_ = before.get("precision", "fp32"), now.get("precision", "fp32")
    return f"; its features are {was}, these would be {is_}: pass --precision {was} to resume it"


def _extract_shards(job: _Job, pending: list[int]) -> int:
    """Run the network over the images of ``pending`` shards, writing each shard as it completes."""
    if not pending:
        return 0
    batch_size = job.options.batch_size
    batches: list[list[int]] = []
    for k in pending:
        indices = list(range(*job.span(k)))
        batches.extend(indices[i:i + batch_size] for i in range(0, len(indices), batch_size))
    bar = _progress_bar(job, sum(len(b) for b in batches))
    rows: dict[int, np.ndarray] = {}
    bad: dict[int, str] = {}
    queue = list(pending)
    done = failed = 0
    try:
        for indices, batch, failures in _loader(job, batches):
            if batch is not None:
                rows.update(zip(indices, job.backbone.pixel_features_array(batch)))
            bad.update(failures)
            bar.update(len(indices) + len(failures))
            if failures:
                failed += len(failures)
                bar.set_postfix(bad=failed, refresh=False)
            first, last = job.span(queue[0])
            if len(rows) + len(bad) == last - first:  # batches never straddle shards
                _write(job, queue.pop(0), rows, bad)
                done += len(rows)
                rows, bad = {}, {}
    finally:
        bar.close()
    return done


def _progress_bar(job: _Job, total: int) -> Any:
    """A tqdm bar over ``total`` images on stderr (disabled without ``progress``)."""
    ranks = job.ranks
    desc = "features" if ranks.world_size == 1 else f"features rank {ranks.rank}/{ranks.world_size}"
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not job.options.progress,
                dynamic_ncols=True, smoothing=0.1)


def _write(job: _Job, shard: int, rows: dict[int, np.ndarray], bad: dict[int, str]) -> None:
    """Write the completed ``shard`` and tell ``on_shard``."""
    first, last = job.span(shard)
    write_shard(job.out, shard, first, job.items[first:last], rows, bad, dim=job.backbone.dim,
                rank=job.ranks.rank, world_size=job.ranks.world_size)
    if job.options.on_shard is not None:
        job.options.on_shard(shard)


def _finish(job: _Job, config: dict) -> dict:
    """After every rank is done, rank 0 checks all shards and writes the manifest; every rank returns it."""
    barrier(job.ranks)
    error, manifest = None, None
    if job.ranks.rank == 0:
        try:
            manifest = write_manifest(job.out, config, job.items)
        except KgzslError as exc:
            error = str(exc)
    agree(job.ranks, error, "writing the manifest")
    barrier(job.ranks)
    return manifest if manifest is not None else read_manifest(job.out)


def _summary(job: _Job, image_dir: str | os.PathLike, manifest: dict, counts: list[int], seconds: float) -> dict[str, Any]:
    """The JSON-able result of a run; ``counts`` = shards written, shards resumed, images extracted (all ranks)."""
    written, skipped, extracted = counts
    return {
        "out": str(job.out),
        "image_dir": str(image_dir),
        "backbone": job.backbone.name,
        "precision": job.backbone.precision,
        "dim": job.backbone.dim,
        "images": len(job.items),
        "features": manifest["features"],
        "bad_files": manifest["bad_files"],
        "shards": len(manifest["shards"]),
        "shards_written": written,
        "shards_resumed": skipped,
        "images_extracted_now": extracted,
        "ranks": job.ranks.world_size,
        "device": str(job.ranks.device),
        "seconds": round(seconds, 2),
        "images_per_second": round(extracted / seconds, 1) if seconds > 0 else None,
    }


def extract_features_distributed(
    image_dir: str | os.PathLike,
    out: str | os.PathLike,
    backbone: str | os.PathLike,
    *,
    arch: str | None = None,
    device: str = "auto",
    options: ExtractionOptions | None = None,
    precision: str = "auto",
) -> tuple[Ranks, dict[str, Any]]:
    """A whole extraction process, as ``kgzsl features`` runs it, alone or as one torchrun rank.

    Checks ``out`` before loading a network, joins the torchrun group if there is one, tunes the CPU
    allocator on CPU ranks, loads ``backbone`` (a name or a weights file) on this rank's device,
    extracts, and leaves the group. Returns this process's ranks and the run summary.
    """
    options = options if options is not None else ExtractionOptions()
    check_output_dir(out, "features", options.force)  # before loading a network; rank 0 checks again
    try:
        ranks = setup_distributed(device)
        if ranks.device_type == "cpu":
            tune_cpu_allocator()
        network = backbones.load_backbone(backbone, arch=arch, device=ranks.device, precision=precision)
        summary = extract_features(image_dir, network, out, options)
    finally:
        teardown_distributed()
    return ranks, summary


# ------------------------------------------------------------------------------------ loose images
def image_list_features(
    paths: Sequence[str | os.PathLike], backbone: Backbone, batch_size: int = 32, progress: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, list[str], list[dict[str, str]]]:
    """Features of a few loose image files, in memory: (features [n, D], the paths that loaded, bad files).

    A file that is missing, corrupt, not an image or too small is reported in ``bad`` (path and reason)
    and skipped; the others are still processed. ``progress``: a bar over the images (``desc`` names it).
    """
    import torch  # lazy: torch

    if not progress:
        return backbone.embed_files(list(paths), batch_size)
    chunk = 8 * batch_size  # a few batches a call: decoding still runs one batch ahead, the bar moves
    features, good, bad = [], [], []
    with tqdm(total=len(paths), desc=desc, unit="image", file=sys.stderr, leave=False) as bar:
        for start in range(0, len(paths), chunk):
            part = backbone.embed_files(list(paths[start:start + chunk]), batch_size)
            features.append(part[0])
            good += part[1]
            bad += part[2]
            bar.update(len(paths[start:start + chunk]))
    return (torch.cat(features) if features else torch.zeros(0, backbone.dim)), good, bad
