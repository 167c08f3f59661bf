#!/usr/bin/env python3
"""Speed of the image path at the point of use, and what each precision mode costs in feature agreement.

Over the photos of ``../shared/images`` (or ``--images``; skips with a reason where there are none) it prints:

1. img/s of ``kgzsl features`` end to end (a subprocess, as a user runs it), the fp32 compute bound measured in
   this run (a 1280x1280 fp32 matmul's GFLOP/s / 0.77 GFLOP an EfficientNet-Lite0 image) and their ratio;
2. :class:`~kgzsl.vision.backbones.Backbone` img/s (``embed_files``, batch 32) and warm single-photo ms, for
   each precision mode; ``--hog`` repeats them beside one busy-loop process per core;
3. the mean / min cosine of each mode's features against plain fp32 eager features (the reference).

    .venv/bin/python scripts/bench_image_speed.py [--hog] [--images DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
GFLOP_PER_IMAGE = 0.77  # EfficientNet-Lite0 at 224x224
MODES = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def photos(root: Path, limit: int | None) -> list[Path]:
    """The .jpg files of ``root``'s class folders (``unseen/<wnid>``, ``heldout/<wnid>``), sorted."""
    found = sorted(root.glob("*/*/*.jpg"))
    return found[:limit] if limit else found


def matmul_bound() -> tuple[float, float]:
    """(fp32 GFLOP/s of a 1280x1280 matmul on all cores, the img/s that would give EfficientNet-Lite0)."""
    a, b = torch.randn(1280, 1280), torch.randn(1280, 1280)
    for _ in range(3):
        a @ b
    best = min(_timed(lambda: a @ b) for _ in range(10))
    gflops = 2 * 1280 ** 3 / best / 1e9
    return gflops, gflops / GFLOP_PER_IMAGE


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def cli_speed(root: Path) -> float:
    """img/s of ``kgzsl features`` over both folders of ``root`` (fresh output folders, end to end)."""
    images = 0
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("unseen", "heldout"):
            images += len(list((root / part).glob("*/*.jpg")))
            cmd = [sys.executable, "-c", "import sys; from kgzsl.cli import main; sys.exit(main())", "features",
                   str(root / part), "--backbone", "efficientnet-lite0", "--out", f"{tmp}/{part}", "--json"]
            seconds += _timed(lambda: subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT))
    return images / seconds


def backbone_speed(paths: list[Path], precision: str, draft: bool) -> tuple[float, float, torch.Tensor]:
    """(embed_files img/s at batch 32, warm single-photo ms (median of 15), the features)."""
    from kgzsl.vision.backbones import load_backbone  # lazy: torch-heavy

    backbone = load_backbone("efficientnet-lite0", precision=precision, draft=draft)
    backbone.embed_files(paths[:32], 32)
    start = time.perf_counter()
    features, good, _ = backbone.embed_files(paths, 32)
    rate = len(good) / (time.perf_counter() - start)
    one = [paths[0]]
    backbone.embed_files(one, 1)
    single = sorted(_timed(lambda: backbone.embed_files(one, 1)) for _ in range(15))[7]
    return rate, single * 1000, features


def reference(paths: list[Path]) -> torch.Tensor:
    """Plain fp32 eager features (the unfolded network, NCHW, per-image transform): what the fast path must match."""
    from kgzsl.vision.backbones import load_backbone  # lazy: torch-heavy
    from kgzsl.vision.images import load_image  # lazy: torch-heavy

    backbone = load_backbone("efficientnet-lite0")
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(paths), 32):
            batch = torch.stack([backbone.transform(load_image(p)) for p in paths[start:start + 32]])
            chunks.append(backbone.model.eval()(batch))
    return torch.cat(chunks)


def hogs(count: int) -> list[subprocess.Popen]:
    """``count`` busy-loop processes (one per core), to measure on a shared machine."""
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "images")
    parser.add_argument("--limit", type=int, help="use only the first N photos (a quick run)")
    parser.add_argument("--hog", action="store_true", help="also measure beside one busy loop per core")
    parser.add_argument("--no-cli", action="store_true", help="skip the kgzsl features subprocess")
    args = parser.parse_args()
    if not ((args.images / "unseen").is_dir() and (args.images / "heldout").is_dir()):
        print(f"bench_image_speed: skipped: no image tree with unseen/ and heldout/ at {args.images}")
        return
    paths = photos(args.images, args.limit)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"{len(paths)} photos, {cores} cores, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    gflops, bound = matmul_bound()
    if not args.no_cli:
        rate = cli_speed(args.images)
        print(f"kgzsl features: {rate:.1f} img/s end to end; fp32 compute bound {bound:.0f} img/s ({gflops:.0f} GFLOP/s "
              f"/ {GFLOP_PER_IMAGE} GFLOP); ratio {rate / bound:.2f}")
    ref = reference(paths)
    settings = [("idle", 0)] + ([("hog", cores)] if args.hog else [])
    for label, hog_count in settings:
        procs = hogs(hog_count)
        try:
            for precision, draft in MODES:
                rate, single, features = backbone_speed(paths, precision, draft)
                cos = torch.nn.functional.cosine_similarity(features, ref)
                name = precision + (" +draft" if draft else "")
                print(f"[{label}] {name:<12} Backbone {rate:6.1f} img/s, one photo {single:6.1f} ms; "
                      f"cosine vs fp32 eager mean {cos.mean():.5f} min {cos.min():.5f}", flush=True)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
