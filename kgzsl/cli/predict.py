"""``kgzsl predict``: name images, the top-k classes by [feature, 1] . predicted classifier (or the user's own labels,
with probabilities), optionally with a hedged answer; results stream as the images are read."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
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
from kgzsl.cli.steps import check_backbone, note
from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    from kgzsl.propagation.predictions import Predictions
    from kgzsl.propagation.run import Run

FORMATS = ("table", "csv", "jsonl")
#: images read, scored and printed together (results stream chunk by chunk)
CHUNK = 64


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "predict", help="name images: top-k classes by [feature, 1] . predicted classifier, or your own labels",
        description=(
            "Rank candidate classes for each image. --candidates unseen (default): standard zero-shot over every "
            "class whose real classifier was not used in training; all: generalized zero-shot over seen and unseen "
            "classes (use --gamma from a calibration to offset the bias toward seen classes); or a file of wnids. "
            "--labels ranks your own labels instead (names, synsets or free text), with probabilities."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (their images, recursively, sorted) or - (paths on stdin, one a line)")
    add_predictions(p)
    p.add_argument("--candidates", default="unseen", help="unseen, all, or a file of candidate wnids")
    p.add_argument("--labels", nargs="+", metavar="LABEL",
                   help="rank these labels: graph ids, wnids, synsets (ray.n.07), WordNet names (ray: the sense a photo "
                        "can show), NAME=SYNSET to pin a sense, or free text (red panda cub; NAME<PARENT names its parent)")
    p.add_argument("--labels-file", type=Path, metavar="FILE", help="the labels, one a line (# starts a comment line)")
    add_number(p, "--top", int, at_least=1, help="how many classes to print per image (default: 5; with --labels, all)")
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
    add_graph(p, help="with --hedge or --labels: graph folder the predictions were trained on (default: the one the run records)")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="how each image's result is printed as it comes: table, csv (one row an image) or jsonl")
    add_json(p, help="print one JSON summary on stdout at the end instead (labels, calibration, images, bad files)")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- checks before any model
def image_paths(given: list[str], stdin: Any = None) -> list[str]:
    """The image files ``given`` names: files as given, folders' images (recursively, sorted), ``-`` the paths on
    stdin (one a line). Refused here, before any model is loaded: an empty folder, and a single image that does not
    exist (among several, a missing one is skipped with its reason, as an unreadable one is)."""
    from kgzsl.vision.images import list_images  # lazy: PIL

    out: list[str] = []
    for entry in given:
        if entry == "-":
            lines = [line.strip() for line in (stdin or sys.stdin).read().splitlines()]
            out.extend(image_paths([line for line in lines if line] or _none_on_stdin(), stdin))
        elif Path(entry).is_dir():
            out.extend(str(path) for path in list_images(entry))
        else:
            out.append(entry)
    if len(out) == 1 and not Path(out[0]).exists():
        raise KgzslError(f"image {out[0]} does not exist")
    return out


def _none_on_stdin() -> list[str]:
    raise KgzslError("image list on stdin (-) is empty: give one path a line")


def _labels(args: argparse.Namespace) -> list[str] | None:
    """``--labels`` or the labels of ``--labels-file``; None without either (checked against the other flags)."""
    if args.labels and args.labels_file:
        raise KgzslError("--labels and --labels-file: give one of them")
    labels = args.labels
    if args.labels_file:
        from kgzsl.graph.labels import read_label_file  # lazy: startup

        labels = read_label_file(args.labels_file)
    if labels is not None:
        if args.hedge is not None or args.candidates != "unseen":
            raise KgzslError("--labels ranks the labels given: leave --hedge and --candidates out")
    elif args.hedge is None and args.hedge_rule is not None:
        raise KgzslError("--hedge-rule chooses how --hedge answers: give --hedge TARGET too")
    return labels


def _check_hedge_target(args: argparse.Namespace) -> None:
    """With ``--hedge``: the run is calibrated for that target and candidate set (read from its calibration file,
    before torch and the models are loaded)."""
    from kgzsl.propagation.run_files import (  # lazy: startup
        HEDGE_FILES,
        predictions_file,
    )
    from kgzsl.recognition.hedge.storage import read_hedge_record  # lazy: startup

    if args.hedge is None:
        return
    if args.candidates not in HEDGE_FILES or args.transductive:
        raise KgzslError(f"--hedge is calibrated for --candidates {' or '.join(HEDGE_FILES)} without --transductive "
                         f"(got --candidates {args.candidates}{' --transductive' if args.transductive else ''})")
    path = predictions_file(args.predictions).parent / HEDGE_FILES[args.candidates]
    if not path.is_file():
        flag = "" if args.candidates == "unseen" else f" --candidates {args.candidates}"
        raise KgzslError(f"--hedge: run {args.predictions} is not calibrated for candidates {args.candidates} (no "
                         f"{path.name}): run `kgzsl calibrate --features FEATS --predictions {args.predictions}{flag}` first")
    record = read_hedge_record(path)
    rules = record.get("rules", {})
    values = rules.get(args.hedge_rule or record.get("default_rule"), {})
    if values and f"{args.hedge:g}" not in values:
        raise KgzslError(f"--hedge: target {args.hedge:g} was not calibrated for run {args.predictions}; calibrated targets: "
                         f"{', '.join(sorted(values, key=float))} (or rerun `kgzsl calibrate --targets ...`)")


def _check_predictions(args: argparse.Namespace) -> None:
    from kgzsl.propagation.run_files import predictions_file  # lazy: startup

    if not predictions_file(args.predictions).is_file():
        raise KgzslError(f"predictions {args.predictions} do not exist: pass a run folder written by `kgzsl train`")


# ------------------------------------------------------------------------------------------ the run
def run(args: argparse.Namespace) -> None:
    paths = image_paths(args.images)
    labels = _labels(args)
    _check_predictions(args)
    _check_hedge_target(args)
    from kgzsl.propagation.run import load_run  # lazy: startup
    from kgzsl.vision.backbones import load_backbone  # lazy: torch

    run = load_run(args.predictions)
    backbone = load_backbone(_backbone_name(args, run), arch=args.arch, precision=args.precision)
    check_backbone(args, run.predictions, backbone.describe(), "--backbone is")  # before the scorer's notes
    scorer = _LabelScorer(args, run, labels) if labels is not None else _ClassScorer(args, run)
    out = _Output(args, scorer, several=len(paths) > 1)
    for chunk, features, good, bad in _chunks(paths, backbone, whole=args.transductive):
        out.bad(bad)
        if good:
            out.images(scorer.rows(features, good))
    out.finish(backbone.name, paths)


def _chunks(paths: list[str], backbone: Any, whole: bool) -> Any:
    """``(chunk, features, loaded paths, bad files)`` a chunk of :data:`CHUNK` images at a time (all at once with
    ``whole``), with a progress bar over many images."""
    from tqdm import tqdm  # lazy: startup

    from kgzsl.vision.features import image_list_features  # lazy: torch

    size = len(paths) if whole else CHUNK
    with tqdm(total=len(paths), desc="predict", unit="image", file=sys.stderr, leave=False,
              disable=True if len(paths) < 2 else None) as bar:
        for start in range(0, len(paths), size):
            chunk = paths[start:start + size]
            features, good, bad = image_list_features(chunk, backbone)
            yield chunk, features, good, bad
            bar.update(len(chunk))


class _ClassScorer:
    """Candidate classes of the run (unseen, all, a list), with the hedger and the flat probabilities."""

    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        from kgzsl.recognition.probabilities import label_temperature  # lazy: torch
        from kgzsl.recognition.recognize import RecognitionOptions  # lazy: torch

        candidates = _candidates(args, run.predictions)
        self.hedger = _hedger(args, run)
        with_seen = args.candidates != "unseen"
        self.calibration = label_temperature(run, with_seen=with_seen, warn=False)  # said with the first result
        self.options = RecognitionOptions(candidates, args.top or 5, args.gamma, args.transductive, args.seen_rows,
                                          self.hedger, temperature=self.calibration.temperature)
        self.run, self.args = run, args

    def rows(self, features: Any, names: list[str]) -> list[dict[str, Any]]:
        from kgzsl.recognition.recognize import recognize  # lazy: torch

        out = []
        for r in recognize(features, names, self.run.predictions, self.options):
            entry: dict[str, Any] = {"image": r.image, "top": [
                {"rank": k + 1, "id": i, "name": n, "score": round(v, 4), "probability": round(p, 4)}
                for k, (i, n, v, p) in enumerate(zip(r.ids, r.names, r.scores, r.probabilities or []))]}
            if r.hedged is not None:
                h = r.hedged
                entry["hedged"] = {**h.as_dict(), "probability": round(h.probability, 4), "info_gain": round(h.info_gain, 4)}
            out.append(entry)
        return out

    def summary(self) -> dict[str, Any]:
        return {"candidates": self.args.candidates, "gamma": self.options.effective_gamma, "hedge": self.args.hedge,
                "hedge_rule": self.hedger.rule if self.hedger is not None else None,
                "calibration": self.calibration.as_dict()}


class _LabelScorer:
    """The user's labels (:mod:`kgzsl.recognition.labels`), resolved once, with their probabilities."""

    def __init__(self, args: argparse.Namespace, run: Run, labels: list[str]) -> None:
        from kgzsl.recognition.labels import label_set  # lazy: torch

        self.set = label_set(run, run.load_graph(args.graph), labels, warn=False)  # said with the first result
        self.calibration, self.run, self.args = self.set.temperature, run, args

    def rows(self, features: Any, names: list[str]) -> list[dict[str, Any]]:
        from kgzsl.recognition.labels import rank_labels  # lazy: torch

        keep = self.args.top or len(self.set.labels)
        return [{"image": r.image, "top": [
            {"rank": k + 1, "label": label, "id": i, "name": n, "score": round(v, 4), "probability": round(p, 6)}
            for k, (label, i, n, v, p) in enumerate(zip(r.labels, r.ids, r.names, r.scores, r.probabilities)) if k < keep]}
            for r in rank_labels(features, names, self.set, self.args.transductive)]

    def summary(self) -> dict[str, Any]:
        return {"labels": self.set.as_dicts(), "calibration": self.set.temperature.as_dict(),
                "gamma": self.set.temperature.gamma if bool(self.set.predictions.seen.any()) else 0.0}


# ------------------------------------------------------------------------------------------ output
class _Output:
    """Prints each image's result as it comes (``--format``), or gathers the ``--json`` summary; skipped files
    are warned about on stderr as they come (one line each), and the end refuses a run where none could be read."""

    def __init__(self, args: argparse.Namespace, scorer: Any, several: bool) -> None:
        self.args, self.scorer, self.several = args, scorer, several
        self.done: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.writer = csv.writer(sys.stdout, lineterminator="\n") if args.format == "csv" and not args.json else None
        self.labels = [entry.label for entry in scorer.set.labels] if isinstance(scorer, _LabelScorer) else None
        rule = scorer.summary().get("hedge_rule")
        self.hedge = f"{args.hedge:g} ({rule})" if rule else None
        if self.writer is not None:
            self.writer.writerow(csv_header(self.labels, args.top or (len(self.labels) if self.labels else 5)))

    def bad(self, bad: list[dict[str, str]]) -> None:
        self.skipped.extend(bad)
        if self.several and not self.args.json:
            for entry in bad:
                print(f"kgzsl: warning: skipped {entry['path']}: {entry['reason']}", file=sys.stderr, flush=True)

    def images(self, rows: list[dict[str, Any]]) -> None:
        if rows and not self.done:
            from kgzsl.recognition.probabilities import warn_uncalibrated  # lazy: torch

            warn_uncalibrated(self.scorer.run, self.scorer.calibration)
        self.done.extend(rows)
        if self.args.json:
            return
        for row in rows:
            if self.writer is not None:
                self.writer.writerow(csv_row(row, self.labels))
            elif self.args.format == "jsonl":
                print(json.dumps(row))
            else:
                print(table_text(row, self.hedge))
        sys.stdout.flush()

    def finish(self, backbone: str, paths: list[str]) -> None:
        if self.args.json:
            print(json.dumps({"predictions": str(self.args.predictions), "backbone": backbone, **self.scorer.summary(),
                              "transductive": self.args.transductive, "images": self.done, "bad_files": self.skipped}))
        if not self.done:
            if len(paths) == 1 and self.skipped:
                raise KgzslError(self.skipped[0]["reason"])
            reasons = "; ".join(b["reason"] for b in self.skipped[:3])
            raise KgzslError(f"none of the {len(paths)} images could be read: {reasons}"
                             + (f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""))


def csv_header(labels: list[str] | None, top: int) -> list[str]:
    """One row an image: its best ``top`` answers side by side; with labels, also each label's probability."""
    if labels is not None:
        return ["image", "label", "id", "name", "probability", "score", *[f"probability:{label}" for label in labels]]
    return ["image"] + [f"{field}_{k}" for k in range(1, top + 1) for field in ("id", "name", "probability", "score")]


def csv_row(row: dict[str, Any], labels: list[str] | None) -> list[Any]:
    top = row["top"]
    if labels is not None:
        probability = {t["label"]: t["probability"] for t in top}
        best = top[0]
        return [row["image"], best["label"], best["id"], best["name"], best["probability"], best["score"],
                *[probability.get(label, "") for label in labels]]
    return [row["image"]] + [t[field] for t in top for field in ("id", "name", "probability", "score")]


def table_text(row: dict[str, Any], hedge: str | None = None) -> str:
    """One image's block: its name, then one aligned line an answer (the id once where it is the name too, as in
    taxonomy runs), and the hedged answer."""
    top = row["top"]
    first = [t.get("label", t["id"]) for t in top]
    second = [t["name"] if "label" not in t else (t["id"] if t["id"] != t["label"] else "") for t in top]
    if "label" not in top[0] and all(t["id"] == t["name"] for t in top):
        second = ["" for _ in top]
    w1, w2 = max(map(len, first)), max(map(len, second))
    lines = [row["image"]]
    for t, a, b in zip(top, first, second):
        middle = f"  {b:<{w2}}" if w2 else ""
        lines.append(f"  {t['rank']:>2}. {a:<{w1}}{middle}  p {t['probability']:.3f}  {t['score']:>8.4f}")
    if "hedged" in row:
        h = row["hedged"]
        lines.append(f"  hedged at {hedge}: {h['id']}  {h['name']}  probability {h['probability']:.3f} "
                     f"(depth {h['depth']}, {h['info_gain']:.2f} bits)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ run pieces
def _hedger(args: argparse.Namespace, run: Run) -> Any:
    """With ``--hedge``: the run's calibrated :class:`kgzsl.recognition.hedge.rules.Hedger` for that target and candidate
    set (checked before any image is read); None without it."""
    from kgzsl.recognition.hedge.calibration import run_hedger  # lazy: torch

    if args.hedge is None:
        return None
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
        hint=lambda entry: f" (it is the name of {names[entry]}: list ids, or rank names with --labels)" if entry in names else "",
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
