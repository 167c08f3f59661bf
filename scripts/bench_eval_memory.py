#!/usr/bin/env python3
"""Peak memory of ``kgzsl evaluate`` (and with ``--calibrate`` of ``kgzsl calibrate``) against the number of images:
both stream the feature folder a shard at a time, so the peak RSS over 200k images should stay within 10 % of that
over 50k.

Writes synthetic feature folders in the on-disk format of ``kgzsl features`` (random float32 1280-d features, shards
of 1024, labels drawn from ``--classes`` of a real run's unseen classes, images grouped by class as in an ImageFolder
tree), trains that run on a miss (DGP, 3 epochs, seed 0, on the shipped graphs/imagenet21k), runs ``kgzsl evaluate``
on each folder in a child process with the drawn classes as the split, and prints the child's peak RSS
(``ru_maxrss`` from ``wait4``) for each and their ratio. ``--in-memory`` also measures what evaluating after loading
every feature (:func:`kgzsl.vision.feature_folder.load_features`) costs, for comparison. ``--calibrate`` also runs
``kgzsl calibrate`` on each folder (the run's every unseen class a candidate, ~20k: a few scoring passes over the
folder, minutes a 50k-row folder on 2 cores).

    .venv/bin/python scripts/bench_eval_memory.py --work /tmp/evalmem            # 50k and 200k rows
    .venv/bin/python scripts/bench_eval_memory.py --rows 50000 200000 --in-memory --gzsl
    .venv/bin/python scripts/bench_eval_memory.py --calibrate                    # evaluate and calibrate
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IN_MEMORY = """
import sys
from kgzsl.propagation.run import load_run
from kgzsl.recognition.evaluate import evaluate_splits
from kgzsl.vision.feature_folder import load_features
feats, run = load_features(sys.argv[1]), load_run(sys.argv[2])
split = open(sys.argv[3]).read().split()
evaluate_splits(feats.features, feats.labels, run.predictions, [("split", split)], graph=run.load_graph(None))
"""


def train_run(work: Path) -> Path:
    """The small real run (DGP, 3 epochs, seed 0, graphs/imagenet21k), trained on a miss."""
    run = work / "run"
    if not (run / "predictions.safetensors").is_file():
        cmd = [sys.executable, "-m", "kgzsl", "train", "--epochs", "3", "--seed", "0", "--out", str(run), "--force", "--json"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return run


def unseen_classes(run: Path) -> list[str]:
    from kgzsl.propagation.run import load_run

    predictions = load_run(run).predictions
    return [i for i, role in zip(predictions.ids, predictions.meta["roles"]) if role == "unseen"]


def write_folder(out: Path, rows: int, classes: list[str], shard_size: int, seed: int) -> Path:
    """A finished feature folder of ``rows`` random features labelled with ``classes`` (kept when already there)."""
    import numpy as np
    import torch

    from kgzsl.vision import backbones
    from kgzsl.vision.feature_folder import (
        MANIFEST_FILE,
        read_manifest,
        run_config,
        write_manifest,
        write_shard,
    )
    from kgzsl.vision.images import ImageItem

    if (out / MANIFEST_FILE).is_file() and read_manifest(out)["features"] == rows:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = sorted(rng.choice(classes, size=rows).tolist())  # grouped by class, as an ImageFolder tree lists them
    items = [ImageItem(out / "images" / label / f"{i:08d}.JPEG", f"{label}/{i:08d}.JPEG", label) for i, label in enumerate(labels)]
    backbone = backbones.load_backbone("efficientnet-lite0").describe()
    config = run_config(out / "images", items, shard_size, backbone)
    generator = torch.Generator().manual_seed(seed)
    for k in range(config["shards"]):
        first = k * shard_size
        chunk = items[first:first + shard_size]
        features = torch.randn(len(chunk), backbone["dim"], generator=generator).abs_()  # post-ReLU-pooling-like
        write_shard(out, k, first, chunk, {first + i: features[i] for i in range(len(chunk))}, {},
                    dim=backbone["dim"], rank=0, world_size=1)
    (out / "run.json").write_text(json.dumps(config))
    write_manifest(out, config, items)
    return out


def peak_rss(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; its peak RSS in MiB (``ru_maxrss`` of this very child), wall seconds, and its stdout."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = child.stdout.read(), child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{err[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start, out


def measure(work: Path, rows: list[int], classes: int = 1000, shard_size: int = 1024, gzsl: bool = False,
            in_memory: bool = False, echo: bool = True, calibrate: bool = False) -> dict[int, dict[str, float]]:
    """For each row count: ``kgzsl evaluate``'s peak RSS in MiB (``rss``), seconds, with ``in_memory`` the peak RSS of
    evaluating after loading every feature (``rss_in_memory``), and with ``calibrate`` ``kgzsl calibrate``'s peak RSS
    (``rss_calibrate``) and seconds (``seconds_calibrate``). Printed as it goes with ``echo``."""
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    run = train_run(work)
    drawn = unseen_classes(run)
    if classes:
        drawn = sorted(np.random.default_rng(0).choice(drawn, size=min(classes, len(drawn)), replace=False).tolist())
    split = work / f"split-{len(drawn)}.txt"
    split.write_text("\n".join(drawn) + "\n")
    say = print if echo else (lambda *a, **k: None)
    say(f"run {run}: {len(drawn)} unseen classes as labels and split; shards of {shard_size}")
    results: dict[int, dict[str, float]] = {}
    for count in rows:
        folder = write_folder(work / f"feats-{count}-{len(drawn)}", count, drawn, shard_size, seed=count)
        cmd = [sys.executable, "-m", "kgzsl", "evaluate", "--features", str(folder), "--predictions", str(run),
               "--split", str(split), "--json"] + (["--with-seen"] if gzsl else [])
        rss, seconds, out = peak_rss(cmd)
        entry = json.loads(out)["splits"][0]
        results[count] = {"rss": rss, "seconds": seconds}
        say(f"{count:>9,} rows: kgzsl evaluate peak RSS {rss:8.1f} MiB  ({seconds:.0f} s; {entry['images']} images, "
            f"{entry['candidates']} candidates, hit@1 {entry['hit@1']})", flush=True)
        if in_memory:
            rss_mem, seconds, _ = peak_rss([sys.executable, "-c", IN_MEMORY, str(folder), str(run), str(split)])
            results[count]["rss_in_memory"] = rss_mem
            say(f"{'':>9}       in memory (load_features + evaluate_splits) peak RSS {rss_mem:8.1f} MiB  ({seconds:.0f} s)",
                flush=True)
        if calibrate:
            rss_cal, seconds, out = peak_rss([sys.executable, "-m", "kgzsl", "calibrate", "--features", str(folder),
                                              "--predictions", str(run), "--json"])
            record = json.loads(out)
            results[count].update(rss_calibrate=rss_cal, seconds_calibrate=seconds)
            say(f"{'':>9}       kgzsl calibrate peak RSS {rss_cal:8.1f} MiB  ({seconds:.0f} s; {record['images']} images, "
                f"{record['candidate_count']} candidates, T {record['temperature']:.4g})", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kgzsl-eval-memory"), help="run, folders and split go here")
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000], help="images of each feature folder")
    parser.add_argument("--classes", type=int, default=1000, help="unseen classes drawn (the labels and the split; 0: all)")
    parser.add_argument("--shard-size", type=int, default=1024, help="images a shard (kgzsl features' default)")
    parser.add_argument("--gzsl", action="store_true", help="evaluate with --with-seen")
    parser.add_argument("--in-memory", action="store_true", help="also measure evaluating with every feature loaded")
    parser.add_argument("--calibrate", action="store_true", help="also measure kgzsl calibrate on each folder")
    args = parser.parse_args()
    results = measure(args.work, args.rows, args.classes, args.shard_size, args.gzsl, args.in_memory,
                      calibrate=args.calibrate)
    if len(results) > 1:
        small, large = min(results), max(results)
        print(f"ratio {large:,} / {small:,} rows: evaluate {results[large]['rss'] / results[small]['rss']:.3f}"
              + (f", calibrate {results[large]['rss_calibrate'] / results[small]['rss_calibrate']:.3f}"
                 if args.calibrate else ""))


if __name__ == "__main__":
    main()
