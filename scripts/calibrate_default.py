#!/usr/bin/env python3
"""Fit the hedging calibrations shipped in ``data/calibration/`` for the default runs, and check them.

The default runs are the ones kgzsl trains itself, deterministically: ``Recognizer.pretrained()`` (DGP on
the shipped graph, every ImageNet-1k classifier used) and ``kgzsl demo``'s (the same, with the classes of
its 19 foolbox photos held out). Calibration images: the real photos of ``../shared/images`` (or
``$KGZSL_IMAGES``), never shipped:

* unseen candidates (``hedge.json``): the 125 photos of ``unseen/`` (25 ImageNet-21k classes outside
  ImageNet-1k: no real classifier of theirs exists, so they are zero-shot for both runs);
* all candidates (``hedge-all.json``, generalized setting): those 125 plus the 750 photos of ``heldout/``
  (150 ImageNet-1k classes, seen by these runs: scored by their real classifiers). Caveat: they are
  ILSVRC training-set photos, which the backbone may have been trained on, so seen accuracy is optimistic.

Before writing, each calibration is checked by 5-fold cross-validation over classes (calibrate on four
fifths of the classes, answer the photos of the others), per rule and target; the figures are printed
and stored. Each calibration also keeps its curves on those photos (reliability diagram at T=1 and the fitted T,
each rule's accuracy-specificity sweep: :mod:`kgzsl.recognition.hedge.curves`), which ``kgzsl explore`` draws
for a default run without its photos.

    .venv/bin/python scripts/calibrate_default.py --work /work/bench/work
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_images as bi  # noqa: E402

from kgzsl.core.files import write_json  # noqa: E402
from kgzsl.recognition.hedge.calibration import (
    calibrate_run,
    fit_hedging,
    run_candidates,
    run_task,
)
from kgzsl.recognition.hedge.hierarchy import RULES
from kgzsl.recognition.hedge.storage import (
    DEFAULT_TARGETS,
    SHIPPED_DIR,
    SHIPPED_FORMAT,
    hedge_file,
)


def cross_validated(run, graph, feats, candidates: str = "unseen", folds: int = 5, seed: int = 0
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """Class-wise k-fold check of a calibration: per rule and target, the accuracy, mean depth and root share
    of the answers on the held-out fold's photos (gamma for ``all``, temperature and parameters fitted on the
    others by :func:`kgzsl.recognition.hedge.calibration.fit_hedging`, as ``kgzsl calibrate`` fits them)."""
    task = run_task(run, graph, feats.features, feats.labels, candidates=candidates)
    seen = run.predictions.seen[run_candidates(run.predictions, candidates)[1]].numpy()
    classes = sorted(set(feats.labels))
    order = np.random.default_rng(seed).permutation(len(classes))
    stats: dict[str, dict[str, list]] = {rule: {f"{t:g}": [] for t in DEFAULT_TARGETS} for rule in RULES}
    for k in range(folds):
        test_classes = {classes[i] for i in order[k::folds]}
        in_test = np.array([label in test_classes for label in feats.labels])
        calib, test = task.subset(np.flatnonzero(~in_test)), task.subset(np.flatnonzero(in_test))
        fitted = fit_hedging(calib, DEFAULT_TARGETS, seen if candidates == "all" else None)
        if candidates == "all":
            test = test.stacked(fitted["gamma"], seen)
        test.calibrate(fitted["temperature"])
        for rule, values in fitted["rules"].items():
            for target, value in values.items():
                stats[rule][target].append(test.stats(test.answers(value, rule)))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for rule, per_target in stats.items():
        out[rule] = {}
        for target, parts in per_target.items():
            cat = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            out[rule][target] = {"accuracy": float(cat["correct"].mean()), "depth": float(cat["depth"].mean()),
                                 "gain": float(cat["gain"].mean()), "root": float(cat["root"].mean())}
    return out


def print_check(name: str, what: str, check: dict) -> None:
    for rule, per_target in check.items():
        for target, s in per_target.items():
            print(f"{name}: 5-fold class CV, {what}, {rule} {target}: accuracy {100 * s['accuracy']:.1f}%, "
                  f"depth {s['depth']:.2f}, gain {s['gain']:.2f} bits, root {100 * s['root']:.0f}%")


def calibrate_default(name: str, exclude: list[str], feats: dict, work: Path, graph, precision: str = "fp32") -> None:
    """Train (or reuse) one default run in ``work``, calibrate it, check it and write the shipped file."""
    from kgzsl.demo import reusable_run, reuse_key
    from kgzsl.vision.feature_folder import FeatureSet

    folder = work / f"default-{name}"
    for stale in ("unseen", "all"):  # calibrate afresh, never from an installed copy
        (folder / hedge_file(stale)).unlink(missing_ok=True)
    run, _ = reusable_run(graph, folder, "dgp", exclude, None, 0, True, bi.log)
    for stale in ("unseen", "all"):
        (folder / hedge_file(stale)).unlink(missing_ok=True)
    unseen = feats["unseen"]
    both = FeatureSet(torch.cat([unseen.features, feats["heldout"].features]), unseen.labels + feats["heldout"].labels,
                      unseen.paths + feats["heldout"].paths)
    check = cross_validated(run, graph, unseen)
    print_check(name, "unseen photos, unseen candidates", check)
    check_all = cross_validated(run, graph, both, "all")
    print_check(name, "all 875 photos, all candidates (generalized)", check_all)
    records = {"unseen": calibrate_run(run, graph, unseen.features, unseen.labels, feature_folder="shared/images/unseen")}
    records["all"] = calibrate_run(run, graph, both.features, both.labels, feature_folder="shared/images/unseen+heldout",
                                   candidates="all")
    for candidates, r in records.items():
        print(f"{name}: {candidates}: T {r['temperature']:.4g}, gamma {r['gamma']:.4g}, "
              + ", ".join(f"{rule} {t}: {v:.4g}" for rule, values in r["rules"].items() for t, v in values.items()))
        flat_gain, flat_accuracy = r["curves"]["accuracy_specificity"]["flat"]  # stored with the record, for kgzsl explore
        print(f"{name}: {candidates}: curves on {r['curves']['images']} photos, ECE {r['ece_before']:.3f} -> "
              f"{r['ece_after']:.3f}, flat top-1 {100 * flat_accuracy:.1f}% at {flat_gain:.2f} bits")
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    write_json(SHIPPED_DIR / f"dgp-{name}.json", {
        "format": SHIPPED_FORMAT, "run": reuse_key(graph, "dgp", exclude, None, 0),
        "about": __doc__.split("\n\n")[1].replace("\n", " "),
        "features": {"backbone": "efficientnet-lite0", "precision": precision},
        "cross_validation_unseen": check, "cross_validation_all": check_all,
        "calibrations": records})
    print(f"wrote {SHIPPED_DIR / f'dgp-{name}.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--work", type=Path, default=bi.ROOT / "runs" / "calibrate-default")
    args = parser.parse_args()
    from kgzsl.demo import DEFAULT_GRAPH, load_or_build_graph
    from kgzsl.vision.backbones import resolve_precision
    from kgzsl.vision.samples import foolbox_imagenet_images

    root = bi.images_root(args.images)
    if root is None:
        sys.exit("calibrate_default: skipped: no ../shared/images (or $KGZSL_IMAGES) with unseen/ and heldout/")
    args.work.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision("auto", "efficientnet-lite0")  # the features the default runs are used with
    feats = bi.image_features(root, args.work, "efficientnet-lite0", precision)
    graph = load_or_build_graph(DEFAULT_GRAPH)
    calibrate_default("pretrained", [], feats, args.work, graph, precision)
    calibrate_default("demo", sorted({w for _, w in foolbox_imagenet_images()}), feats, args.work, graph, precision)


if __name__ == "__main__":
    main()
