"""Benchmark feature extraction and check the backbones' accuracy on real ImageNet photos.

1. Top-1/top-5 of each EfficientNet-Lite on the 20 ImageNet validation photos of the foolbox wheel,
   with its own preprocessing ((x - 127) / 128) and, for contrast, the ImageNet mean/std one.
2. Throughput (images/s) of ``kgzsl.vision.features.extract_features`` over those photos repeated into a
   tree of ``--images`` files, for each backbone (a random ResNet-50 state dict stands in for real
   ResNet weights, which are not available offline) and each ``--workers`` setting.

    .venv/bin/python scripts/extract_features_bench.py [--images 160] [--workers 0 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from kgzsl.core.devices import tune_cpu_allocator
from kgzsl.core.imagenet import imagenet1k_wnids
from kgzsl.vision.backbones import load_backbone
from kgzsl.vision.backbones.resnet import ResNet, resnet_transform
from kgzsl.vision.features import extract_features, load_features
from kgzsl.vision.images import load_image
from kgzsl.vision.samples import foolbox_imagenet_images


def photos() -> list[tuple[Path, int]]:
    """The foolbox wheel's 20 ImageNet validation photos (:mod:`kgzsl.vision.samples`) with their ImageNet-1k index."""
    index = {wnid: i for i, wnid in enumerate(imagenet1k_wnids())}
    return [(path, index[wnid]) for path, wnid in foolbox_imagenet_images()]


def accuracy(backbone, transform, items) -> tuple[float, float]:
    batch = torch.stack([transform(load_image(path)) for path, _ in items])
    logits = backbone.logits(backbone.features(batch))
    labels = torch.tensor([label for _, label in items])
    top5 = logits.topk(5, dim=1).indices
    return (top5[:, 0] == labels).float().mean().item(), (top5 == labels[:, None]).any(1).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160, help="images in the throughput tree (the 20 photos repeated)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default allocator thresholds")
    args = parser.parse_args()
    tuned = False if args.no_malloc_tuning else tune_cpu_allocator()
    items = photos()
    wnids = imagenet1k_wnids()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, malloc tuning {'on' if tuned else 'off'}")

    print("\naccuracy on the 20 foolbox ImageNet val photos (top-1 / top-5)")
    for variant in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
        try:
            backbone = load_backbone(variant)
        except Exception as exc:  # weights package not installed
            print(f"  {variant}: skipped ({exc})")
            continue
        own = accuracy(backbone, backbone.transform, items)
        imagenet = replace(backbone.transform, mean=resnet_transform().mean, std=resnet_transform().std)
        other = accuracy(backbone, imagenet, items)
        print(f"  {variant}: (x-127)/128 {own[0]:.2f} / {own[1]:.2f};  ImageNet mean/std {other[0]:.2f} / {other[1]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(args.images):
            path, label = items[i % len(items)]
            folder = tmp / "images" / wnids[label]
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / f"{i:06d}.jpg")
        torch.manual_seed(0)
        torch.save(ResNet("resnet50").state_dict(), tmp / "resnet50-random.pth")
        print(f"\nthroughput over {args.images} images, batch {args.batch_size}, shard 64")
        for name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", str(tmp / "resnet50-random.pth")):
            try:
                backbone = load_backbone(name)
            except Exception:
                continue
            for workers in args.workers:
                out = tmp / f"out-{backbone.name}-{workers}"
                start = time.perf_counter()
                summary = extract_features(tmp / "images", backbone, out, batch_size=args.batch_size, shard_size=64,
                                           workers=workers, progress=False)
                seconds = time.perf_counter() - start
                assert load_features(out).features.shape == (args.images, backbone.dim)
                print(f"  {backbone.name:<20} workers {workers}: {summary['features'] / seconds:7.1f} images/s")


if __name__ == "__main__":
    main()
