#!/usr/bin/env python3
"""Speed at the point of use (issue 21, item 6), every figure in one run, printed as a markdown table:

1. img/s of ``kgzsl features`` end to end over the photos of ``../shared/images`` (one subprocess over all of them;
   skipped with a reason where they are absent), the fp32 compute bound measured in this run (matmul GFLOP/s / GFLOP
   an EfficientNet-Lite0 image, :func:`bench_image_speed.matmul_bound`) and their ratio;
2. ``Recognizer.predict`` img/s over a batch of those photos and its warm single-photo ms (median of 15);
3. cold ``kgzsl predict PHOTO --predictions RUN`` seconds beside ``python -c "import torch"`` (fastest of ``--reps``
   each, interleaved) and ``kgzsl predict --help`` seconds;
4. the peak RSS of ``kgzsl evaluate`` over synthetic feature folders of ``--rows`` rows (:mod:`bench_eval_memory`);
5. with ``--train``: the seconds of a default ``kgzsl train --model dgp`` (fp32 and ``--bf16``) and its unseen Hit@5,
   through ``scripts/bench_speed.py --full-dgp-only --quality --json`` (slow: minutes);
6. with ``--hog``: the ``Recognizer`` batch img/s again beside one busy loop per core, and its ratio to idle.

    .venv/bin/python scripts/bench_point_of_use.py [--train] [--hog] [--json OUT]
    .venv/bin/python scripts/bench_point_of_use.py --limit 48 --rows 2000 8000 --reps 1 --no-features   # quick check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kgzsl.cli.flags import add_precision

ROOT = Path(__file__).resolve().parent.parent
KGZSL = [sys.executable, "-m", "kgzsl"]
#: issue 21's targets, by figure (text: how a figure is judged)
TARGETS = {
    "features": ">= 150 img/s and >= 0.7 of the bound", "recognizer_batch": ">= 120 img/s",
    "recognizer_one": "<= 20 ms", "cold_predict": "<= 1.05x import torch", "predict_help": "<= 0.25x cold predict",
    "evaluate_rss": "200k within 10 % of 50k", "train": "<= 0.5x today's (131 s)", "hog": "within 3x of idle",
}


def script(name: str) -> Any:
    """A module of ``scripts/`` (they are not a package), imported by file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(cmd: list[str], **kwargs: Any) -> float:
    """Wall seconds of a subprocess (which must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, **kwargs)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def photos(root: Path, limit: int | None) -> list[Path]:
    """The .jpg photos of ``root``'s class folders (``unseen/<wnid>``, ``heldout/<wnid>``), sorted."""
    found = sorted(root.glob("*/*/*.jpg"))
    return found[:limit] if limit else found


def features_speed(paths: list[Path], work: Path, precision: str = "auto") -> float:
    """img/s of one ``kgzsl features`` over ``paths`` (linked into a class-folder tree), end to end."""
    tree = work / "tree"
    for path in paths:
        (tree / path.parent.name).mkdir(parents=True, exist_ok=True)
        link = tree / path.parent.name / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    seconds = timed([*KGZSL, "features", str(tree), "--backbone", "efficientnet-lite0", "--out", str(work / "feats"),
                     "--precision", precision, "--force", "--json"])
    return len(paths) / seconds


def recognizer_speed(run: Path, paths: list[Path], batch: int, precision: str = "auto") -> tuple[float, float]:
    """``Recognizer.predict`` img/s over ``batch`` photos (after a warm-up) and its warm single-photo ms (median of 15)."""
    from kgzsl import Recognizer  # lazy: torch

    rec = Recognizer.from_run(run, progress=False, precision=precision)
    chosen = [str(p) for p in paths[:batch]]
    rec.predict(chosen[:8])
    start = time.perf_counter()
    rec.predict(chosen)
    rate = len(chosen) / (time.perf_counter() - start)
    rec.predict(chosen[0])
    single = []
    for _ in range(15):
        start = time.perf_counter()
        rec.predict(chosen[0])
        single.append(time.perf_counter() - start)
    return rate, 1000 * statistics.median(single)


def cold_start(run: Path, photo: Path, reps: int, precision: str = "auto") -> dict[str, float]:
    """Fastest of ``reps`` (interleaved) of a cold ``kgzsl predict``, ``import torch`` and ``kgzsl predict --help``;
    also ``import torch`` under the collector settings the kgzsl program runs with (:mod:`kgzsl.core.collector`), so
    that ``predict - torch_as_kgzsl`` is the work after the import, whatever the settings save."""
    settings = "import gc; from kgzsl.core.collector import THRESHOLD; gc.set_threshold(THRESHOLD); import torch; gc.freeze()"
    cmds = {"predict": [*KGZSL, "predict", str(photo), "--predictions", str(run), "--precision", precision],
            "torch": [sys.executable, "-c", "import torch"], "torch_as_kgzsl": [sys.executable, "-c", settings],
            "help": [*KGZSL, "predict", "--help"]}
    best = {name: float("inf") for name in cmds}
    for _ in range(reps):
        for name, cmd in cmds.items():
            best[name] = min(best[name], timed(cmd))
    return best


def training(work: Path, images: Path) -> dict[str, Any]:
    """The full default DGP trainings of ``scripts/bench_speed.py --full-dgp-only --quality`` (fp32 and ``--bf16``):
    per mode the wall seconds and the unseen-protocol Hit@5 (None where the photos are absent)."""
    out = work / "bench_speed.json"
    timed([sys.executable, str(ROOT / "scripts" / "bench_speed.py"), "--graph", str(ROOT / "graphs" / "imagenet21k"),
           "--full-dgp-only", "--quality", "--images", str(images), "--work", str(work / "train"), "--json", str(out)])
    full = json.loads(out.read_text())["full_dgp"]
    quality = full.get("quality") if isinstance(full.get("quality"), dict) else {}
    return {mode: {"seconds": best["wall_seconds"], "hit5": quality.get(mode, {}).get("unseen_hit@5")}
            for mode, best in full["best"].items()}


def hogs(count: int) -> list[subprocess.Popen]:
    """``count`` busy-loop processes (one a core)."""
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(count)]


def table(f: dict[str, Any]) -> str:
    """The figures as a markdown table: figure, value, issue 21's target."""
    rows = []

    def row(name: str, value: str, target: str) -> None:
        rows.append(f"| {name} | {value} | {TARGETS.get(target, '')} |")

    if "features" in f:
        row("`kgzsl features`, img/s end to end", f"{f['features']:.1f} ({f['photos']} photos; "
            f"{f['features'] / f['bound']:.2f} of the fp32 bound)", "features")
    elif "features_skipped" in f:
        row("`kgzsl features`, img/s end to end", f"skipped: {f['features_skipped']}", "features")
    row("fp32 compute bound", f"{f['bound']:.0f} img/s ({f['gflops']:.0f} GFLOP/s / {f['gflop_per_image']} GFLOP)", "")
    if "recognizer_batch" in f:
        row(f"`Recognizer.predict`, batch of {f['batch']}", f"{f['recognizer_batch']:.1f} img/s", "recognizer_batch")
        row("`Recognizer.predict`, one photo warm", f"{f['recognizer_one']:.1f} ms", "recognizer_one")
    c = f["cold"]
    row("cold `kgzsl predict`, one photo", f"{c['predict']:.2f} s = {c['predict'] / c['torch']:.2f}x "
        f"`import torch` ({c['torch']:.2f} s); {c['predict'] - c['torch_as_kgzsl']:.2f} s after importing torch "
        f"({c['torch_as_kgzsl']:.2f} s with kgzsl's collector settings)", "cold_predict")
    row("`kgzsl predict --help`", f"{c['help']:.2f} s = {c['help'] / c['predict']:.2f}x cold predict", "predict_help")
    rss = f.get("evaluate_rss") or {}
    if rss:
        small, large = min(rss), max(rss)
        values = " / ".join(f"{rss[n]['rss']:.0f}" for n in sorted(rss))
        row(f"`kgzsl evaluate` peak RSS, {' / '.join(f'{n:,}' for n in sorted(rss))} rows",
            f"{values} MiB (ratio {rss[large]['rss'] / rss[small]['rss']:.3f})", "evaluate_rss")
    for mode, t in (f.get("train") or {}).items():
        hit = "photos absent" if t["hit5"] is None else f"{100 * t['hit5']:.1f}"
        row(f"default `kgzsl train --model dgp`, {mode}", f"{t['seconds']} s, unseen Hit@5 {hit}", "train")
    if "hog" in f:
        row("`Recognizer.predict` batch beside a busy loop a core", f"{f['hog']:.1f} img/s ("
            f"{f['recognizer_batch'] / f['hog']:.2f}x slower than idle)", "hog")
    return "\n".join([f"precision: {f.get('precision', 'auto')}", "", "| figure | measured | issue 21 target |",
                      "|---|---|---|", *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "images")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo" / "run", help="trained run to name photos with")
    parser.add_argument("--limit", type=int, help="use only the first N photos (a quick run)")
    parser.add_argument("--batch", type=int, default=160, help="photos of the Recognizer batch")
    parser.add_argument("--reps", type=int, default=3, help="cold starts of each command (the fastest counts)")
    parser.add_argument("--rows", type=int, nargs="*", default=[50_000, 200_000],
                        help="rows of the synthetic feature folders for evaluate's peak RSS (none: skip)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kgzsl-point-of-use")
    parser.add_argument("--no-features", action="store_true", help="skip the kgzsl features subprocess")
    parser.add_argument("--train", action="store_true", help="also time the default DGP training (minutes)")
    parser.add_argument("--hog", action="store_true", help="also measure the Recognizer beside one busy loop a core")
    add_precision(parser)  # kgzsl's own --precision: the same choices and default as the commands
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not (args.run / "predictions.safetensors").is_file():
        raise SystemExit(f"bench_point_of_use: no trained run at {args.run} (run `kgzsl demo` or pass --run)")
    args.work.mkdir(parents=True, exist_ok=True)
    image_speed = script("bench_image_speed")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    figures: dict[str, Any] = {"cores": cores, "load": os.getloadavg()[0], "gflop_per_image": image_speed.GFLOP_PER_IMAGE,
                               "precision": args.precision}
    figures["gflops"], figures["bound"] = image_speed.matmul_bound()
    paths = photos(args.images, args.limit) if args.images.is_dir() else []
    if not paths:
        figures["features_skipped"] = f"no photos under {args.images}"
    elif not args.no_features:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            figures["features"], figures["photos"] = features_speed(paths, Path(tmp), args.precision), len(paths)
    if paths:
        figures["batch"] = min(args.batch, len(paths))
        figures["recognizer_batch"], figures["recognizer_one"] = recognizer_speed(args.run, paths, args.batch, args.precision)
    if paths:
        photo = paths[0]
    else:
        from kgzsl.vision.samples import darknet_photo  # lazy: no photos

        photo = darknet_photo()
    figures["cold"] = cold_start(args.run, photo, args.reps, args.precision)
    if args.rows:
        figures["evaluate_rss"] = script("bench_eval_memory").measure(args.work / "evalmem", sorted(args.rows), echo=False)
    if args.train:
        figures["train"] = training(args.work, args.images)
    if args.hog and paths:
        procs = hogs(cores)
        try:
            figures["hog"] = recognizer_speed(args.run, paths, args.batch, args.precision)[0]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    print(f"{cores} cores, load {figures['load']:.2f} at the start; run {args.run}")
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
