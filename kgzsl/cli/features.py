"""``kgzsl features``: CNN features of an ImageFolder tree -> a sharded, resumable feature folder (torchrun scales it out)."""

from __future__ import annotations

import argparse
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.cli.flags import (
    JSON_HELP,
    RawEpilogDefaultsFormatter,
    add_arch,
    add_device,
    add_force,
    add_json,
    add_precision,
    subparser,
)
from kgzsl.cli.steps import emit
from kgzsl.errors import KgzslError
from kgzsl.vision.backbone_identity import known_backbone

if TYPE_CHECKING:
    from kgzsl.vision.images import ImageTransform

#: how many of a run's first images are decoded while torch and the backbone load (about 2.5 s: ~600 photos on one
#: core; 150 KB each at 224x224, 200 KB at 260x260)
AHEAD_IMAGES = 768

EPILOG = (
    "scale-out with torchrun (each rank takes every N-th shard; rank 0 writes manifest.json):\n"
    "  one machine, 4 processes (GPUs or CPU ranks):\n"
    "    torchrun --nproc_per_node 4 -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
    "  two machines (run on each; IMAGES and FEATS on a filesystem both share):\n"
    "    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST0 --master_port 29500 \\\n"
    "      -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
    "    torchrun --nnodes 2 --node_rank 1 --nproc_per_node 8 --master_addr HOST0 --master_port 29500 \\\n"
    "      -m kgzsl features IMAGES --backbone efficientnet-lite0 --out FEATS\n"
    "backend: nccl on GPUs, gloo on CPUs; a restart may use a different number of ranks.\n"
    "engine: on the CPU the backbone runs on ONNX Runtime (fp32: the same features as torch to ~1e-6, about 2x\n"
    "faster; int8 only there), exported once into the kgzsl cache; KGZSL_ENGINE=torch runs it in torch instead."
)


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "features",
        help="CNN features of an ImageFolder tree (one sub-folder per class) -> sharded feature folder",
        description=(
            "Extract pooled CNN features of every image under IMAGE_DIR/<class>/... into sharded safetensors "
            "files in --out. A rerun with the same arguments resumes an interrupted run, skipping finished "
            "shards; unreadable images are listed as bad files and skipped."
        ),
        epilog=EPILOG, formatter=RawEpilogDefaultsFormatter,
    )
    p.add_argument("image_dir", type=Path, metavar="IMAGE_DIR", help="ImageFolder tree: one sub-folder per class (e.g. wnid), images inside")
    p.add_argument(
        "--backbone", required=True, metavar="NAME-or-FILE",
        help="efficientnet-lite0|1|2 (real ImageNet-1k weights) or a torchvision ResNet-50/101/152 state dict file",
    )
    add_arch(p, help="architecture of a ResNet state dict; omitted: told from its keys")
    add_precision(p)
    p.add_argument("--out", type=Path, required=True, help="feature folder to write (or to resume)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard file (the unit of resumption)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes per rank (0: decode in the main process)")
    add_device(p, "auto", help="auto (cuda:LOCAL_RANK if a GPU exists, else cpu), cpu, cuda, cuda:N")
    add_force(p, help="discard the shards of an earlier run in --out and start over")
    add_json(p, help=JSON_HELP + " (rank 0 only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    ahead = start_decoding(args)  # before torch: decoding overlaps the imports and the backbone load
    try:
        from kgzsl.vision.features import (  # lazy: torch
            ExtractionOptions,
            extract_features_distributed,
        )

        options = ExtractionOptions(batch_size=args.batch_size, shard_size=args.shard_size, workers=args.workers,
                                    force=args.force, progress=not args.json, ahead=ahead)
        ranks, summary = extract_features_distributed(args.image_dir, args.out, args.backbone, arch=args.arch,
                                                      device=args.device, options=options,
                                                      precision=args.precision)
    finally:
        if ahead is not None:
            ahead.close()
    if ranks.rank == 0:  # one summary per run, from rank 0
        emit(args, summary, _text)


@dataclass
class DecodeAhead:
    """The first images of a run, decoded and resized (``transform.pixels(load_image(path, draft=draft))``, the
    loader's own call) by threads started before torch is imported: Pillow releases the GIL, so they use the core
    the imports leave idle. The loader takes a path's future (its pixels, or the exception the call raised) only
    where its transform and draft are these; the features are the same either way."""

    transform: ImageTransform
    draft: int
    pool: ThreadPoolExecutor
    futures: dict[Path, Future] = field(default_factory=dict)

    def take(self, path: Path) -> Future | None:
        """The decoding of ``path`` started here (handed out once), or None (never started, or dropped by :meth:`settle`)."""
        future = self.futures.pop(path, None)
        return None if future is None or future.cancelled() else future

    def settle(self) -> None:
        """Drop the images not begun yet, once the network is ready: the loader's own threads decode them, faster
        than this one thread (whose in-order queue held them up: 4.6 s instead of 4.2 s over 875 photos here)."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Drop what was not taken and stop the threads without waiting for them."""
        self.futures.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)


def start_decoding(args: argparse.Namespace, limit: int = AHEAD_IMAGES) -> DecodeAhead | None:
    """Start decoding the first ``limit`` images of a fresh single-process CPU run of a known backbone (None
    otherwise, or where the image folder cannot be listed: the run itself then says why)."""
    from kgzsl.vision.images import DRAFT_FACTOR, lite_preprocessing, list_image_folder  # lazy: numpy

    known = known_backbone(args.backbone)
    if known is None or not _fresh(args.out, args.force) or args.workers or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    try:
        items = list_image_folder(args.image_dir)
    except KgzslError:
        return None
    transform = lite_preprocessing(known.resolution)  # the loader checks it is the backbone's before taking any
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ahead = DecodeAhead(transform, DRAFT_FACTOR * transform.resize,
                        ThreadPoolExecutor(max_workers=max(1, cores - 1), thread_name_prefix="kgzsl-ahead"))
    for item in items[:limit]:
        ahead.futures[item.path] = ahead.pool.submit(_pixels, item.path, transform, ahead.draft)
    return ahead


def _fresh(out: Path, force: bool) -> bool:
    """Whether a run into ``out`` extracts every image (not a resume: a resume's first images are on disk)."""
    try:
        return force or not out.exists() or (out.is_dir() and not any(out.iterdir()))
    except OSError:
        return False


def _pixels(path: Path, transform: ImageTransform, draft: int) -> Any:
    from kgzsl.vision.images import load_image  # lazy: numpy

    return transform.pixels(load_image(path, draft=draft))


def _text(s: dict[str, Any]) -> str:
    lines = [
        f"features {s['out']}: {s['features']} of {s['images']} images, {s['dim']}-d ({s['backbone']}, {s['precision']}), "
        f"{s['shards']} shards ({s['shards_written']} written now, {s['shards_resumed']} resumed), "
        f"{s['ranks']} rank(s) on {s['device']}, {s['seconds']} s ({s['images_per_second']} images/s)"
    ]
    if s["bad_files"]:
        lines.append(f"{len(s['bad_files'])} bad files skipped:")
        lines.extend(f"  {bad['path']}: {bad['reason']}" for bad in s["bad_files"][:20])
        if len(s["bad_files"]) > 20:
            lines.append(f"  ... and {len(s['bad_files']) - 20} more (see manifest.json)")
    return "\n".join(lines)
