"""``kgzsl predict``: name images, the top-k classes by [feature, 1] . predicted classifier, optionally with a hedged answer."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kgzsl.cli.flags import (
    DEFAULT_BACKBONE,
    add_arch,
    add_graph,
    add_hedge,
    add_hedge_rule,
    add_json,
    add_number,
    add_precision,
    add_predictions,
    add_seen_rows,
    subparser,
)
from kgzsl.cli.steps import check_backbone, emit, note
from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    from kgzsl.propagation.predictions import Predictions
    from kgzsl.propagation.run import Run


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "predict", help="name images: top-k classes by [feature, 1] . predicted classifier",
        description=(
            "Rank candidate classes for each image. --candidates unseen (default): standard zero-shot over every "
            "class whose real classifier was not used in training; all: generalized zero-shot over seen and unseen "
            "classes (use --gamma from a calibration to offset the bias toward seen classes); or a file of wnids."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_predictions(p)
    p.add_argument("--candidates", default="unseen", help="unseen, all, or a file of candidate wnids")
    add_number(p, "--top", int, default=5, at_least=1, help="how many classes to print per image")
    add_number(p, "--gamma", float, help="calibrated stacking: subtracted from seen classes' scores "
               "(default 0; with --hedge and --candidates all, the calibrated one)")
    p.add_argument("--transductive", action="store_true", help="refine the images' scores together by label propagation over their nearest neighbours")
    add_seen_rows(p, help="with seen candidates: score seen classes with their real classifiers (default) or the predicted ones")
    p.add_argument("--backbone", help="feature extractor (default: the one the predictions were trained for)")
    add_arch(p, help="architecture of a ResNet state dict")
    add_precision(p)
    add_hedge(p, help="also print the hedged answer (the most specific graph node meeting this target accuracy, "
                      "and its probability), calibrated by `kgzsl calibrate`")
    add_hedge_rule(p)
    add_graph(p, help="with --hedge: graph folder the predictions were trained on (default: the one the run records)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.propagation.run import load_run  # lazy: startup
    from kgzsl.recognition.recognize import RecognitionOptions, recognize  # lazy: torch
    from kgzsl.vision.backbones import load_backbone  # lazy: torch
    from kgzsl.vision.features import image_list_features  # lazy: torch

    run = load_run(args.predictions)
    candidates = _candidates(args, run.predictions)
    hedger = _hedger(args, run)
    options = RecognitionOptions(candidates, args.top, args.gamma, args.transductive, args.seen_rows, hedger)
    backbone = load_backbone(_backbone_name(args, run), arch=args.arch, precision=args.precision)
    check_backbone(args, run.predictions, backbone.describe(), "--backbone is")
    features, good, bad = image_list_features(args.images, backbone)
    rows = recognize(features, good, run.predictions, options) if good else []
    summary = {
        "predictions": str(args.predictions), "backbone": backbone.name, "candidates": args.candidates,
        "gamma": options.effective_gamma, "transductive": args.transductive, "hedge": args.hedge,
        "hedge_rule": hedger.rule if hedger is not None else None,
        "images": [{"image": r.image, "top": [{"rank": k + 1, "id": i, "name": n, "score": round(v, 4)}
                                              for k, (i, n, v) in enumerate(r.top)]} for r in rows],
        "bad_files": bad,
    }
    for entry, row in zip(summary["images"], rows):
        if row.hedged is not None:
            answer = row.hedged
            entry["hedged"] = {**answer.as_dict(), "probability": round(answer.probability, 4), "info_gain": round(answer.info_gain, 4)}
    emit(args, summary, _text)
    if bad and not good:
        raise KgzslError(f"none of the {len(bad)} images could be read")


def _hedger(args: argparse.Namespace, run: Run) -> Any:
    """With ``--hedge``: the run's calibrated :class:`kgzsl.recognition.hedge.rules.Hedger` for that target and candidate set
    (checked before any image is read); None without it."""
    from kgzsl.propagation.run import HEDGE_FILES  # lazy: startup
    from kgzsl.recognition.hedge.calibration import run_hedger  # lazy: torch

    if args.hedge is None:
        if args.hedge_rule is not None:
            raise KgzslError("--hedge-rule chooses how --hedge answers: give --hedge TARGET too")
        return None
    if args.candidates not in HEDGE_FILES or args.transductive:
        raise KgzslError(f"--hedge is calibrated for --candidates {' or '.join(HEDGE_FILES)} without --transductive "
                         f"(got --candidates {args.candidates}{' --transductive' if args.transductive else ''})")
    hedger = run_hedger(run, run.load_graph(args.graph), args.hedge, args.candidates, args.hedge_rule)
    if args.gamma is not None and args.gamma != hedger.gamma:
        raise KgzslError(f"--gamma {args.gamma:g} differs from the gamma {hedger.gamma:.4g} the run's hedging was calibrated "
                         "with: leave --gamma out (it is taken from the calibration)")
    return hedger


def _candidates(args: argparse.Namespace, predictions: Predictions) -> str | list[str]:
    """``--candidates``: unseen, all, or the ids of its file (each one a class of the predictions)."""
    from kgzsl.core.idlists import read_id_list  # lazy: startup

    if args.candidates in ("unseen", "all"):
        return args.candidates
    candidates = read_id_list(args.candidates, "candidates")
    names = dict(zip(predictions.meta.get("names") or [], predictions.ids))
    candidates.require_known(
        predictions.index, f"a class of the predictions {args.predictions}",
        hint=lambda entry: f" (it is the name of {names[entry]}: list ids)" if entry in names else "",
    )
    return candidates


def _backbone_name(args: argparse.Namespace, run: Run) -> str:
    """``--backbone``, else the run's; the default one (with a note) where the run records none."""
    if args.backbone or run.backbone:
        return args.backbone or run.backbone
    name = DEFAULT_BACKBONE
    note(f"predictions {args.predictions} record no backbone (targets from a plain matrix): using {name}; "
         "pass --backbone to choose")
    return name


def _text(s: dict[str, Any]) -> str:
    lines = []
    for image in s["images"]:
        lines.append(image["image"])
        lines.extend(f"  {t['rank']:>2}. {t['id']}  {t['name']:<40} {t['score']:.4f}" for t in image["top"])
        if "hedged" in image:
            h = image["hedged"]
            lines.append(f"  hedged at {s['hedge']:g} ({s['hedge_rule']}): {h['id']}  {h['name']:<27} probability {h['probability']:.3f} "
                         f"(depth {h['depth']}, {h['info_gain']:.2f} bits)")
    lines.extend(f"skipped {b['path']}: {b['reason']}" for b in s["bad_files"])
    return "\n".join(lines)
