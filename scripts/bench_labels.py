#!/usr/bin/env python3
"""Labels by name against labels by id: how often real photos are named right among their classes' plain names.

Reads ``../shared/images`` (or ``$KGZSL_IMAGES``, or ``--images``; skips with a reason where there is none):

* ``unseen/`` (25 ImageNet-21k classes outside ImageNet-1k, 5 photos each), with the default run (``--run``, the
  demo's ``runs/demo/run``; ``--pretrained`` for ``Recognizer.pretrained()``'s): Hit@1 among the 25 classes given as
  their plain first WordNet lemma (``dog``, ``bench``, ``bowl``, ``mug``, ``vessel``, ``helmet`` ...: each resolved
  by :mod:`kgzsl.graph.labels` to the sense a photo can show) against Hit@1 among the 25 wnids, through the same
  path (:func:`kgzsl.recognition.labels.rank_labels`); the ECE of the label probabilities where the run is
  calibrated; which sense each name got.
* ``heldout/`` (ImageNet-1k classes): fold ``--fold`` of the 5 seeded folds of ``scripts/bench_images.py`` (30
  classes), a DGP trained on the shipped graph with those classes held out (cached under ``--work``): the same two
  Hit@1 among the fold's 30 classes.

    .venv/bin/python scripts/bench_labels.py [--work /tmp/kgzsl-bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import bench_images as bi  # noqa: E402  (the photos' root and their features, one definition)

from kgzsl.cli.flags import add_precision  # noqa: E402


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def plain_name(wnid: str) -> str:
    """A class's plain name: the first lemma of its synset, as a person would type it."""
    from kgzsl.graph.wordnet import synset

    return synset(wnid).lemma_names()[0].replace("_", " ")


def compare(run, graph, feats, classes: list[str]) -> dict:
    """Hit@1 among ``classes`` as names and as wnids, the names' senses, and the probabilities' ECE (calibrated runs)."""
    from kgzsl.recognition.hedge.temperature import expected_calibration_error
    from kgzsl.recognition.labels import label_set, rank_labels

    rows = [i for i, label in enumerate(feats.labels) if label in set(classes)]
    x, truth = feats.features[rows], [feats.labels[i] for i in rows]
    names = [plain_name(w) for w in classes]
    out = {"classes": len(classes), "images": len(rows)}
    for kind, labels in (("names", names), ("wnids", list(classes))):
        chosen = label_set(run, graph, labels)
        ranked = rank_labels(x, [f"{t}/{i}" for i, t in enumerate(truth)], chosen)
        right = {label: wnid for label, wnid in zip(labels, classes)}
        hits = [r.labels[0] == next(k for k, v in right.items() if v == t) for r, t in zip(ranked, truth)]
        out[f"hit@1_{kind}"] = float(np.mean(hits))
        column = {label: k for k, label in enumerate(labels)}
        probs = np.zeros((len(ranked), len(labels)))
        for i, r in enumerate(ranked):
            probs[i, [column[label] for label in r.labels]] = r.probabilities
        out[f"ece_{kind}"] = expected_calibration_error(probs, np.array([classes.index(t) for t in truth]))
        out["calibration"] = chosen.temperature.as_dict()
        if kind == "names":
            out["senses"] = [{"name": label.label, "synset": label.synset, "id": label.node_id, "right": label.node_id == w,
                              "senses": len(label.senses)} for label, w in zip(chosen.labels, classes)]
    return out


def heldout_run(graph_dir: Path, held: list[str], work: Path, epochs: int | None):
    """A DGP run on the shipped graph with ``held`` excluded, trained once into ``work/runs``."""
    import hashlib

    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.run import load_run, save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train

    tag = hashlib.sha256("\n".join(held).encode()).hexdigest()[:8]
    folder = work / "runs" / f"labels-dgp-{tag}-e{epochs or 'default'}"
    if not (folder / "predictions.safetensors").is_file():
        start = time.perf_counter()
        graph = load_graph(graph_dir)
        result = train(graph, load_targets("efficientnet-lite0"), model="dgp", exclude=held, seed=0, epochs=epochs,
                       progress=True)
        save_run(result, graph, folder, force=True)
        log(f"trained the held-out fold's run in {time.perf_counter() - start:.0f} s: {folder}")
    return load_run(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo" / "run")
    parser.add_argument("--pretrained", action="store_true", help="use Recognizer.pretrained()'s run instead of --run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kgzsl-bench"), help="features and the held-out run")
    add_precision(parser)  # kgzsl's own --precision: the same choices and default as the commands
    parser.add_argument("--fold", type=int, default=1, help="which of bench_images.py's 5 held-out folds (1-5)")
    parser.add_argument("--epochs", type=int, help="the held-out run's epochs (default: DGP's schedule)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    root = bi.images_root(args.images)
    if root is None:
        print("skipped: no ../shared/images (unseen/ and heldout/): set KGZSL_IMAGES or pass --images")
        return
    from kgzsl import Recognizer
    from kgzsl.core.resources import default_graph_dir

    rec = Recognizer.pretrained(progress=True) if args.pretrained else Recognizer.from_run(args.run)
    report = {"run": str(rec.run.folder)}
    feats = bi.image_features(root, args.work, "efficientnet-lite0", args.precision)
    unseen = feats["unseen"]
    report["unseen"] = compare(rec.run, rec.graph, unseen, sorted(set(unseen.labels)))
    heldout = feats["heldout"]
    classes = sorted(set(heldout.labels))
    fold = np.array_split(np.random.default_rng(0).permutation(len(classes)), 5)[args.fold - 1]
    held = sorted(classes[i] for i in fold)
    run = heldout_run(default_graph_dir(), held, args.work, args.epochs)
    report["heldout"] = {"fold": args.fold, "run": str(run.folder), **compare(run, run.load_graph(), heldout, held)}
    for part in ("unseen", "heldout"):
        r = report[part]
        wrong = [f"{s['name']} -> {s['synset']}" for s in r["senses"] if not s["right"]]
        print(f"{part:<8} {r['images']:>4} photos, {r['classes']} classes: Hit@1 names {100 * r['hit@1_names']:.1f}  "
              f"wnids {100 * r['hit@1_wnids']:.1f}  ECE names {r['ece_names']:.3f} wnids {r['ece_wnids']:.3f} "
              f"(T {r['calibration']['temperature']:.3g}, {r['calibration']['calibration'] or 'uncalibrated'}); "
              f"another sense than the photos': {', '.join(wrong) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
