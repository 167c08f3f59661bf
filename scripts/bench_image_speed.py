#!/usr/bin/env python3
"""Speed of the image path at the point of use, and what each precision mode costs in feature agreement.

Over the photos of ``../shared/images`` (or ``--images``; skips with a reason where there are none) it prints, for
each mode (``fp32/torch``: the torch engine, the previous default; ``fp32``: the default, ONNX Runtime where
installed; ``bf16``; ``int8``):

1. img/s of ``kgzsl features`` end to end over all the photos (one subprocess, as a user runs it; start-up
   included, and the run's own rate beside it), the fp32 compute bound measured in this run (a 1280x1280 fp32
   matmul's GFLOP/s / 0.77 GFLOP an EfficientNet-Lite0 image) and their ratio;
2. :class:`~kgzsl.vision.backbones.Backbone` img/s (``embed_files``, batch 32) and warm single-photo ms;
   ``Recognizer`` (over ``--run``) batch img/s and warm single-photo ms; ``--hog`` repeats them beside one
   busy-loop process per core;
3. the mean / min cosine of each mode's features against plain fp32 eager features (the reference).

    .venv/bin/python scripts/bench_image_speed.py [--hog] [--images DIR] [--limit N] [--modes fp32 int8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
GFLOP_PER_IMAGE = 0.77  # EfficientNet-Lite0 at 224x224
MODES = {"fp32/torch": ("fp32", "torch"), "fp32": ("fp32", "auto"), "bf16": ("bf16", "auto"), "int8": ("int8", "auto")}


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


def cli_speed(root: Path, mode: str, reps: int) -> tuple[float, float, int, float]:
    """(img/s of one ``kgzsl features`` over every photo under ``root``, start-up included; the run's own img/s;
    images; CPU seconds of the process), fastest of ``reps``."""
    precision, engine = MODES[mode]
    env = {**os.environ, "KGZSL_ENGINE": engine if engine != "auto" else ""}
    best: tuple[float, float, int, float] = (0.0, 0.0, 0, 0.0)
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "kgzsl", "features", str(root), "--backbone", "efficientnet-lite0",
                   "--out", f"{tmp}/features", "--precision", precision, "--json"]
            before = _children_cpu()
            start = time.perf_counter()
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, env=env)
            seconds = time.perf_counter() - start
            cpu = _children_cpu() - before
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
        summary = json.loads(done.stdout)
        rate = summary["features"] / seconds
        if rate > best[0]:
            best = (rate, summary["images_per_second"], summary["features"], cpu)
    return best


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def backbone_speed(paths: list[Path], mode: str) -> tuple[float, float, float, torch.Tensor]:
    """(embed_files img/s at batch 32, CPU ms an image (all threads), warm single-photo ms (median of 15), the features)."""
    from kgzsl.vision.backbones import load_backbone  # lazy: torch-heavy

    precision, engine = MODES[mode]
    backbone = load_backbone("efficientnet-lite0", precision=precision, engine=engine)
    backbone.embed_files(paths[:32], 32)
    start, cpu = time.perf_counter(), time.process_time()
    features, good, _ = backbone.embed_files(paths, 32)
    rate, cpu_ms = len(good) / (time.perf_counter() - start), (time.process_time() - cpu) / len(good) * 1000
    one = [paths[0]]
    backbone.embed_files(one, 1)
    single = sorted(_timed(lambda: backbone.embed_files(one, 1)) for _ in range(15))[7]
    return rate, cpu_ms, single * 1000, features


def recognizer_speed(run: Path, paths: list[Path], mode: str) -> tuple[float, float]:
    """(``Recognizer.predict`` img/s over ``paths``, warm single-photo ms (median of 15))."""
    from kgzsl.api import Recognizer  # lazy: torch-heavy

    precision, engine = MODES[mode]
    os.environ["KGZSL_ENGINE"] = engine if engine != "auto" else ""  # the library reads it when it loads the backbone
    try:
        recognizer = Recognizer.from_run(run, precision=precision, progress=False)
        recognizer.predict([str(p) for p in paths[:32]])
        start = time.perf_counter()
        recognizer.predict([str(p) for p in paths])
        rate = len(paths) / (time.perf_counter() - start)
        one = str(paths[0])
        recognizer.predict(one)
        single = sorted(_timed(lambda: recognizer.predict(one)) for _ in range(15))[7]
    finally:
        os.environ.pop("KGZSL_ENGINE", None)
    return rate, single * 1000


def reference(paths: list[Path]) -> torch.Tensor:
    """Plain fp32 eager features (the unfolded network, NCHW, per-image transform): what the fast path must match."""
    from kgzsl.vision.backbones import load_backbone  # lazy: torch-heavy
    from kgzsl.vision.images import load_image  # lazy: torch-heavy

    backbone = load_backbone("efficientnet-lite0", engine="torch")
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
    parser.add_argument("--limit", type=int, help="use only the first N photos in the library measures (a quick run)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--reps", type=int, default=1, help="kgzsl features runs per mode (the fastest counts)")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo" / "run", help="a trained run for Recognizer")
    parser.add_argument("--hog", action="store_true", help="also measure beside one busy loop per core")
    parser.add_argument("--no-cli", action="store_true", help="skip the kgzsl features subprocesses")
    args = parser.parse_args()
    if not ((args.images / "unseen").is_dir() and (args.images / "heldout").is_dir()):
        print(f"bench_image_speed: skipped: no image tree with unseen/ and heldout/ at {args.images}")
        return
    paths = photos(args.images, args.limit)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"{len(paths)} photos, {cores} cores, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}", flush=True)
    gflops, bound = matmul_bound()
    print(f"fp32 compute bound {bound:.0f} img/s ({gflops:.0f} GFLOP/s / {GFLOP_PER_IMAGE} GFLOP)", flush=True)
    for mode in [] if args.no_cli else args.modes:
        try:
            rate, own, count, cpu = cli_speed(args.images, mode, args.reps)
        except RuntimeError as exc:
            print(f"kgzsl features {mode:<10} failed: {exc}", flush=True)
            continue
        print(f"kgzsl features {mode:<10} {count} photos: {rate:6.1f} img/s end to end ({own:6.1f} without start-up), "
              f"ratio to the fp32 bound {rate / bound:.2f}; {cpu:.1f} CPU s", flush=True)
    ref = reference(paths)
    settings = [("idle", 0)] + ([("hog", cores)] if args.hog else [])
    for label, hog_count in settings:
        procs = hogs(hog_count)
        try:
            for mode in args.modes:
                rate, cpu_ms, single, features = backbone_speed(paths, mode)
                cos = torch.nn.functional.cosine_similarity(features, ref)
                line = (f"[{label}] {mode:<10} Backbone {rate:6.1f} img/s ({cpu_ms:.1f} CPU ms/img), one photo {single:6.1f} ms; "
                        f"cosine vs fp32 eager mean {cos.mean():.5f} min {cos.min():.5f}")
                if args.run.exists():
                    rec_rate, rec_single = recognizer_speed(args.run, paths[:160], mode)
                    line += f"; Recognizer {rec_rate:6.1f} img/s, one photo {rec_single:6.1f} ms"
                print(line, flush=True)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
