"""``kgzsl features``: CNN features of an ImageFolder tree -> a sharded, resumable feature folder (torchrun scales it out)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    from kgzsl.vision.features import (  # lazy: torch
        ExtractionOptions,
        extract_features_distributed,
    )

    options = ExtractionOptions(batch_size=args.batch_size, shard_size=args.shard_size, workers=args.workers,
                                force=args.force, progress=not args.json)
    ranks, summary = extract_features_distributed(args.image_dir, args.out, args.backbone, arch=args.arch,
                                                  device=args.device, options=options,
                                                  precision=args.precision)
    if ranks.rank == 0:  # one summary per run, from rank 0
        emit(args, summary, _text)


def _text(s: dict[str, Any]) -> str:
    lines = [
        f"features {s['out']}: {s['features']} of {s['images']} images, {s['dim']}-d ({s['backbone']}), "
        f"{s['shards']} shards ({s['shards_written']} written now, {s['shards_resumed']} resumed), "
        f"{s['ranks']} rank(s) on {s['device']}, {s['seconds']} s ({s['images_per_second']} images/s)"
    ]
    if s["bad_files"]:
        lines.append(f"{len(s['bad_files'])} bad files skipped:")
        lines.extend(f"  {bad['path']}: {bad['reason']}" for bad in s["bad_files"][:20])
        if len(s["bad_files"]) > 20:
            lines.append(f"  ... and {len(s['bad_files']) - 20} more (see manifest.json)")
    return "\n".join(lines)
