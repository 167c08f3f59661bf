#!/usr/bin/env python3
"""A new domain, end to end and measured: the 175 photo classes of ``../shared/images`` known by name only.

The domain is ``data/taxonomies/imagenet-photos.csv`` (175 named leaves under a WordNet-derived
hierarchy, made by ``scripts/make_photo_taxonomy.py``); no ImageNet classifier row is used. One class
(``--left-out``, default *domestic cat*) is left out of the taxonomy entirely; of the other 174 a seeded,
stratified third is unseen. Then, with the kgzsl CLI, as a user would:

1. ``kgzsl features`` of all 875 photos once (folders named by class name: symlinks in ``--work``);
2. ``kgzsl build-graph --taxonomy`` on the taxonomy without the left-out class;
3. ``kgzsl targets`` fits the seen classes' classifiers on 3 photos each (the other 2 are not used);
4. ``kgzsl train --targets``: DGP and SGCN (``--models``);
5. scores every photo of the unseen classes among the unseen classes: Hit@1/5 and median rank, overall
   and for classes inside / outside ImageNet-1k, against ConSE and nearest-name baselines built from
   the same fitted classifiers and node features;
6. ``kgzsl propagate`` onto the whole taxonomy (the left-out class added), with no retraining: where
   its 5 photos rank among the unseen classes and it, and which classifiers its new one is nearest;
7. (row "dgp grown", ``--no-grow-unseen`` skips it) the same at scale: DGP trained on the taxonomy without
   any unseen class, all of them added afterwards by ``kgzsl propagate``, scored as in 5.

Photos come from ``--images``, ``$KGZSL_IMAGES`` or ``../shared/images`` (skipped with a reason when
absent); everything is written under ``--work`` (features are reused across runs and seeds).

    .venv/bin/python scripts/new_domain.py --work runs/new-domain [--seeds 0 1 2] [--models dgp sgcn]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from bench_images import images_root, log

from kgzsl.recognition.evaluate import rank_metrics
from kgzsl.recognition.scoring import class_scores, ranks_of_true

if TYPE_CHECKING:
    from kgzsl.propagation.predictions import Predictions
    from kgzsl.vision.feature_folder import FeatureSet

ROOT = Path(__file__).resolve().parent.parent
TAXONOMY = ROOT / "data" / "taxonomies" / "imagenet-photos.csv"
KGZSL = [sys.executable, "-m", "kgzsl"]
BACKBONE = "efficientnet-lite0"
GROUPS = ("outside", "inside")  # outside / inside ImageNet-1k
KS = (1, 5)
COMMANDS: list[str] = []
TIMES: dict[str, float] = {}


@dataclass
class Domain:
    """The photo classes of a taxonomy: leaf names, pinned wnids, ImageNet-1k group and photo files."""

    taxonomy: Path
    names: list[str]
    wnid: dict[str, str]
    group: dict[str, str]
    photos: dict[str, list[Path]] = field(default_factory=dict)
    graph_taxonomy: Path | None = None  # the file graphs are built from (default: ``taxonomy``)

    @property
    def graph_file(self) -> Path:
        return self.graph_taxonomy or self.taxonomy


def load_domain(taxonomy: Path, images: Path) -> Domain:
    """Each leaf of ``taxonomy`` with its pinned wnid's photo folder (``unseen/`` = outside ImageNet-1k)."""
    from kgzsl.core.imagenet import imagenet1k_wnids
    from kgzsl.graph.taxonomy import load_taxonomy

    tax = load_taxonomy(taxonomy)
    inside = set(imagenet1k_wnids())
    domain = Domain(taxonomy, tax.leaves(), {}, {})
    for name in domain.names:
        wnid = tax.synsets[name]
        part = "heldout" if wnid in inside else "unseen"
        folder = images / part / wnid
        if not folder.is_dir():
            raise SystemExit(f"new_domain: no photo folder {folder} for class {name!r}")
        domain.wnid[name], domain.group[name] = wnid, "inside" if wnid in inside else "outside"
        domain.photos[name] = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return domain


# ------------------------------------------------------------------------------------ commands
def shown(path: object) -> str:
    """A path as the printed commands show it: relative to the working directory where that is shorter."""
    text = str(path)
    try:
        return os.path.relpath(text) if os.path.isabs(text) and not os.path.relpath(text).startswith("../..") else text
    except ValueError:
        return text


def kgzsl(*args: object, step: str, parse: bool = True) -> dict:
    """Run one ``kgzsl`` command (recorded for the printout, timed under ``step``); its ``--json`` summary."""
    argv = [str(a) for a in args] + (["--json"] if parse else [])
    COMMANDS.append("kgzsl " + " ".join(shlex.quote(shown(a)) for a in argv))
    start = time.perf_counter()
    done = subprocess.run(KGZSL + argv, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    TIMES[step] = TIMES.get(step, 0.0) + time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"new_domain: `{COMMANDS[-1]}` failed (exit {done.returncode}): see its error above")
    if not parse:
        print(done.stdout.strip(), file=sys.stderr)
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_list(path: Path, names: list[str]) -> Path:
    """One class name a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return path


def link_view(folder: Path, files: dict[str, list[Path]]) -> Path:
    """An ImageFolder tree of symlinks, ``folder/<class name>/<file>``: the photos stay where they are."""
    if folder.exists():
        shutil.rmtree(folder)  # only links and the folders holding them (rmtree never follows links)
    for name, paths in files.items():
        (folder / name).mkdir(parents=True)
        for path in paths:
            (folder / name / path.name).symlink_to(path.resolve())
    return folder


# ------------------------------------------------------------------------------------ data
def photo_features(domain: Domain, work: Path) -> FeatureSet:
    """Features of every photo, extracted once with ``kgzsl features`` into ``work`` (labels = class names)."""
    from kgzsl.vision.feature_folder import load_features

    out = work / f"features-{BACKBONE}"
    if not (out / "manifest.json").is_file():
        view = link_view(work / "photos", domain.photos)
        kgzsl("features", view, "--backbone", BACKBONE, "--out", out, step="features (875 photos, once)", parse=False)
    else:
        COMMANDS.append(f"# reused {shown(out)} (kgzsl features {shown(work / 'photos')} --backbone {BACKBONE} --out {shown(out)})")
    return load_features(out)


def without_classes(taxonomy: Path, names: set[str], out: Path) -> Path:
    """``taxonomy`` minus the rows that declare ``names`` (what ``grep -v '^NAME,'`` does for one class)."""
    with open(taxonomy, newline="", encoding="utf-8") as handle:
        lines = handle.read().splitlines(keepends=True)
    kept = [line for line in lines if next(csv.reader([line]), [""])[0].strip() not in names]
    if len(kept) == len(lines):
        raise SystemExit(f"new_domain: none of {sorted(names)[:3]} is a class of {taxonomy}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(kept), encoding="utf-8")
    return out


def without_pins(taxonomy: Path, out: Path) -> Path:
    """``taxonomy`` with its synset column emptied: every class known by its name alone (``--names-only``)."""
    with open(taxonomy, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for row in rows:
            writer.writerow(row[:2] + [""] + row[3:] if len(row) > 2 and not row[0].startswith("#") and row[0] != "child" else row)
    return out


def split(domain: Domain, classes: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(seen, unseen): a seeded third of each group (outside / inside ImageNet-1k), rounded, is unseen."""
    rng = np.random.default_rng(seed)
    unseen: set[str] = set()
    for group in GROUPS:
        members = sorted(c for c in classes if domain.group[c] == group)
        order = rng.permutation(len(members))
        unseen.update(members[i] for i in order[: round(len(members) / 3)])
    return [c for c in classes if c not in unseen], [c for c in classes if c in unseen]


# ------------------------------------------------------------------------------------ scoring
def image_rows(features: FeatureSet, classes: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Features and labels of every photo of ``classes`` (all 5 of each)."""
    wanted = set(classes)
    rows = [i for i, label in enumerate(features.labels) if label in wanted]
    return features.features[rows], [features.labels[i] for i in rows]


def ranks(scores: torch.Tensor, labels: list[str], candidates: list[str]) -> torch.Tensor:
    """1-based rank of each photo's true class among ``candidates`` (ties count against)."""
    column = {c: j for j, c in enumerate(candidates)}
    return ranks_of_true(scores, torch.tensor([column[label] for label in labels]))


def summarise(rank: torch.Tensor, labels: list[str], domain: Domain) -> dict[str, dict[str, float]]:
    """Hit@1, Hit@5 and median rank over all photos and per group (outside / inside ImageNet-1k)."""
    out = {}
    for group in ("all", *GROUPS):
        keep = torch.tensor([group == "all" or domain.group[label] == group for label in labels])
        metrics = rank_metrics(rank[keep], KS)
        out[group] = {**{f"hit@{k}": metrics["hit"][k] for k in KS}, "median_rank": metrics["median_rank"],
                      "images": int(keep.sum())}
    return out


def baseline_scores(graph_dir: Path, targets_file: Path, unseen: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """ConSE and nearest-name scores of ``x`` against ``unseen``, from the fitted seen classifiers and the node features."""
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.targets import load_fitted_targets
    from kgzsl.recognition.baselines import conse_scores, knn_predict

    graph, targets = load_graph(graph_dir), load_fitted_targets(targets_file)
    index = graph.index()
    seen_nodes = [index[name] for name in targets.wnids]
    unseen_nodes = [index[name] for name in unseen]
    vectors = torch.as_tensor(graph.features, dtype=torch.float32)
    nearest = knn_predict(graph.features, np.array(seen_nodes), targets.weights, k=1)  # the nearest seen class's row
    return {
        "conse": conse_scores(x, targets.weights, vectors[seen_nodes], vectors[unseen_nodes], top=10),
        "nearest-name": class_scores(x, nearest[unseen_nodes]),
    }


def model_scores(run: Path, unseen: list[str], x: torch.Tensor) -> torch.Tensor:
    """Scores of ``x`` against the unseen classes' predicted classifiers of a run."""
    from kgzsl.propagation.run import load_run

    return class_scores(x, load_run(run).predictions.rows(unseen))


# ------------------------------------------------------------------------------------ growing
def nearest_classifiers(predictions: Predictions, name: str, most: int = 5) -> list[tuple[str, str, float]]:
    """The classes whose classifiers are nearest (cosine) to ``name``'s: (name, role, cosine), best first
    (:func:`kgzsl.inspection.explain.nearest_by_weight` over the classes, structure-only nodes left out)."""
    from kgzsl.inspection.explain import nearest_by_weight

    roles = predictions.meta["roles"]
    classes = np.flatnonzero([role != "internal" for role in roles])
    return [(predictions.ids[i], roles[i], c) for i, c in nearest_by_weight(predictions.pred, predictions.index[name], classes, most)]


def grow(run: Path, bigger: Path, out: Path, new: str, unseen: list[str], features: FeatureSet, domain: Domain) -> dict:
    """``kgzsl propagate`` the run onto the whole taxonomy; how the new class's photos rank, and its nearest classifiers."""
    from kgzsl.propagation.run import load_run

    summary = kgzsl("propagate", "--run", run, "--graph", bigger, "--out", out, "--force", step="propagate")
    before, after = load_run(run).predictions, load_run(out).predictions
    candidates = unseen + [new]
    x, labels = image_rows(features, [new])
    new_rank = ranks(class_scores(x, after.rows(candidates)), labels, candidates)
    xu, labels_u = image_rows(features, unseen)
    unseen_rank = ranks(class_scores(xu, after.rows(candidates)), labels_u, candidates)
    common = [i for i in before.ids if i in after.index]
    moved = (before.rows(common) - after.rows(common)).norm(dim=1)
    return {
        "class": new, "group": domain.group[new], "new_nodes": summary.get("new", []), "candidates": len(candidates),
        "photo_ranks": new_rank.tolist(), "unseen_with_new": summarise(unseen_rank, labels_u, domain)["all"],
        "nearest": nearest_classifiers(after, new),
        "old_rows_changed": int((moved > 1e-6).sum()), "old_rows": len(common), "largest_change": float(moved.max()),
    }


def show_predict(out: Path, new: str, candidates: list[str], work: Path) -> list[dict]:
    """``kgzsl predict`` on the new class's photos among ``candidates``, as a user would name them."""
    files = sorted((work / "photos" / new).iterdir())
    cand = write_list(out.parent / "candidates-with-new.txt", candidates)
    result = kgzsl("predict", *files, "--predictions", out, "--candidates", cand, "--top", 3, step="predict (new class)")
    return [{"image": Path(i["image"]).name, "top": [t["name"] for t in i["top"]]} for i in result["images"]]


# ------------------------------------------------------------------------------------ one split
def build_graphs(domain: Domain, seen: list[str], unseen: list[str], new: str, folder: Path) -> tuple[Path, Path]:
    """The domain's graph without ``new`` (to train on) and the whole taxonomy's (to propagate onto)."""
    smaller = without_classes(domain.graph_file, {new}, folder / f"taxonomy-without-{new.replace(' ', '-')}.csv")
    seen_file = write_list(folder / "seen.txt", seen)
    graph, bigger = folder / "graph", folder / "graph-bigger"
    kgzsl("build-graph", "--taxonomy", smaller, "--seen", seen_file, "--unseen", write_list(folder / "unseen.txt", unseen),
          "--out", graph, "--force", step="build-graph (x2)")
    kgzsl("build-graph", "--taxonomy", domain.graph_file, "--seen", seen_file,
          "--unseen", write_list(folder / "unseen-with-new.txt", unseen + [new]), "--out", bigger, "--force", step="build-graph (x2)")
    return graph, bigger


def fit_targets(domain: Domain, seen: list[str], graph: Path, folder: Path, per_class: int, seed: int) -> tuple[Path, dict]:
    """``kgzsl targets`` on the first ``per_class`` photos (by file name) of each seen class."""
    view = link_view(folder / "targets-images", {name: domain.photos[name][:per_class] for name in seen})
    out = folder / "targets.safetensors"
    summary = kgzsl("targets", view, "--graph", graph, "--backbone", BACKBONE, "--out", out, "--seed", seed, "--force",
                    step="targets")
    return out, summary


def train_model(model: str, graph: Path, targets: Path, folder: Path, seed: int, epochs: int | None, seen: list[str],
                suffix: str = "", step: str = "") -> Path:
    """``kgzsl train --targets``; checks that it trained on every seen class and on the fitted rows alone."""
    run = folder / f"run-{model}{suffix}"
    extra = ["--epochs", epochs] if epochs else []
    summary = kgzsl("train", "--graph", graph, "--targets", targets, "--model", model, "--seed", seed, *extra,
                    "--out", run, "--force", step=step or f"train {model}")
    trained = summary["train_classes"] + summary["val_classes"]
    if trained != len(seen):
        raise SystemExit(f"new_domain: {model} trained on {trained} classes, not the {len(seen)} seen ones")
    return run


def grow_unseen(domain: Domain, split_: tuple[list[str], list[str]], graph: Path, targets: Path, folder: Path,
                images: tuple[torch.Tensor, list[str]], seed: int, args: argparse.Namespace) -> torch.Tensor:
    """Ranks of the unseen photos when the unseen classes are added after training: DGP trained on the taxonomy
    without them (and the left-out class), then ``kgzsl propagate`` onto the domain graph."""
    seen, unseen = split_
    small = without_classes(domain.graph_file, set(unseen) | {args.left_out}, folder / "taxonomy-seen-only.csv")
    seen_only = folder / "graph-seen-only"
    kgzsl("build-graph", "--taxonomy", small, "--seen", folder / "seen.txt", "--out", seen_only, "--force",
          step="grow unseen: build, train, propagate")
    run = train_model(args.models[0], seen_only, targets, folder, seed, args.epochs, seen, suffix="-seen-only",
                      step="grow unseen: build, train, propagate")
    out = folder / f"propagated-{args.models[0]}-seen-only"
    kgzsl("propagate", "--run", run, "--graph", graph, "--out", out, "--force", step="grow unseen: build, train, propagate")
    return ranks(model_scores(out, unseen, images[0]), images[1], unseen)


def hedge_check(run: Path, unseen: list[str], features: FeatureSet, seed: int) -> dict[str, dict[str, float]]:
    """Hedged answers over the user's taxonomy (kgzsl.recognition.hedge): temperature and parameters calibrated on the
    photos of a seeded half of the unseen classes, answers on the other half's photos, per rule and target."""
    from kgzsl.propagation.run import load_run
    from kgzsl.recognition.hedge.calibration import calibrate_run
    from kgzsl.recognition.hedge.reporting import evaluate_hedging

    loaded = load_run(run)
    graph = loaded.load_graph()
    order = np.random.default_rng(seed).permutation(len(unseen))
    calibration = sorted(unseen[i] for i in order[: len(unseen) // 2])
    test = [name for name in unseen if name not in set(calibration)]
    calibrate_run(loaded, graph, *image_rows(features, calibration))
    _, summary = evaluate_hedging(load_run(run), graph, *image_rows(features, test), name="other half")
    return {row["answer"]: {k: row[k] for k in ("acc", "prob", "depth", "gain", "root", "n")} for row in summary["rows"]}


def run_split(domain: Domain, features: FeatureSet, seed: int, args: argparse.Namespace) -> dict:
    """Every step for one seeded split; the figures of every method, and the propagation."""
    folder = args.work / (f"seed-{seed}" + ("-names-only" if args.names_only else ""))
    folder.mkdir(parents=True, exist_ok=True)
    seen, unseen = split(domain, [n for n in domain.names if n != args.left_out], seed)
    graph, bigger = build_graphs(domain, seen, unseen, args.left_out, folder)
    targets, fitted = fit_targets(domain, seen, graph, folder, args.per_class, seed)
    x, labels = image_rows(features, unseen)
    rank = {}
    for model in args.models:
        run = train_model(model, graph, targets, folder, seed, args.epochs, seen)
        rank[model] = ranks(model_scores(run, unseen, x), labels, unseen)
    for method, scores in baseline_scores(graph, targets, unseen, x).items():
        rank[method] = ranks(scores, labels, unseen)
    if args.grow_unseen:
        rank[f"{args.models[0]} grown"] = grow_unseen(domain, (seen, unseen), graph, targets, folder, (x, labels), seed, args)
    main_run = folder / f"run-{args.models[0]}"
    grown = grow(main_run, bigger, folder / f"propagated-{args.models[0]}", args.left_out, unseen, features, domain)
    if seed == args.seeds[0]:
        grown["predict"] = show_predict(folder / f"propagated-{args.models[0]}", args.left_out, unseen + [args.left_out], args.work)
    hedged = hedge_check(main_run, unseen, features, seed) if args.hedge else None
    return {
        "hedge": hedged,
        "seed": seed, "seen": len(seen), "unseen": len(unseen), "candidates": len(unseen),
        "unseen_by_group": {g: sum(domain.group[n] == g for n in unseen) for g in GROUPS},
        "targets": {k: v for k, v in fitted.items() if k in ("images", "C", "folds", "cv_scores", "notes")},
        "methods": {m: summarise(r, labels, domain) for m, r in rank.items()}, "propagate": grown,
    }


# ------------------------------------------------------------------------------------ report
def cell(values: list[float], percent: bool) -> str:
    """A mean over seeds, with its spread (sample standard deviation) when there are several."""
    scale = 100.0 if percent else 1.0
    mean = scale * statistics.fmean(values)
    text = f"{mean:.1f}" if percent else f"{mean:.0f}"
    return text + (f"±{scale * statistics.stdev(values):.1f}" if len(values) > 1 else "")


def chance(candidates: int) -> dict[str, float]:
    """What ranking the candidates at random scores on average."""
    return {**{f"hit@{k}": k / candidates for k in KS}, "median_rank": (candidates + 1) / 2}


def print_table(splits: list[dict], domain: Domain, args: argparse.Namespace) -> None:
    """One row per method: Hit@1 / Hit@5 / median rank over all unseen photos, outside and inside ImageNet-1k."""
    first = splits[0]
    per = {g: first["methods"][args.models[0]][g]["images"] for g in ("all", *GROUPS)}
    pins = " without its synset pins (names alone)" if args.names_only else ""
    print(f"New domain: {len(domain.names)} photo classes by name ({shown(domain.taxonomy)}{pins}), {args.left_out!r} left out; "
          f"seeds {' '.join(map(str, args.seeds))}; {first['seen']} seen classes fitted on {args.per_class} photos each; "
          f"{first['unseen']} unseen ({first['unseen_by_group']['outside']} outside ImageNet-1k, "
          f"{first['unseen_by_group']['inside']} inside): {per['all']} photos ranked among {first['candidates']} candidates")
    groups = {"all": f"all ({per['all']} photos)", "outside": f"outside 1k ({per['outside']})", "inside": f"inside 1k ({per['inside']})"}
    width = 8 if len(splits) == 1 else 11
    print(f"{'method':<14}" + "".join(f"| {groups[g]:<{3 * width}}" for g in groups))
    print(f"{'':<14}" + f"| {'Hit@1':<{width}}{'Hit@5':<{width}}{'median':<{width}}" * 3)
    rows = [(m, [s["methods"][m] for s in splits]) for m in first["methods"]]
    rows.append(("chance", [{g: chance(first["candidates"]) for g in groups}]))
    for method, results in rows:
        print(f"{method:<14}" + "".join(
            "| " + "".join(f"{cell([r[g][key] for r in results], key != 'median_rank'):<{width}}" for key in ("hit@1", "hit@5", "median_rank"))
            for g in groups))
    if len(splits) > 1:
        print(f"(mean ± standard deviation over the {len(splits)} splits)")
    if args.grow_unseen:
        print(f"{args.models[0]} grown: trained on the taxonomy without the unseen classes, which `kgzsl propagate` added after training")


def print_growth(splits: list[dict], args: argparse.Namespace) -> None:
    """Where the class added by ``kgzsl propagate`` ranks, per seed, and its nearest classifiers."""
    for s in splits:
        g = s["propagate"]
        ranks_text = ", ".join(map(str, g["photo_ranks"]))
        near = ", ".join(f"{n} ({r}, {c:.2f})" for n, r, c in g["nearest"])
        print(f"seed {s['seed']}: propagate ({args.models[0]}) added {g['class']!r} ({g['group']} ImageNet-1k): its 5 photos rank "
              f"{ranks_text} among {g['candidates']} candidates; unseen photos' Hit@5 with it among the candidates "
              f"{100 * g['unseen_with_new']['hit@5']:.1f}; {g['old_rows_changed']} of {g['old_rows']} old nodes' rows moved "
              f"(largest {g['largest_change']:.3f}); nearest classifiers: {near}")
        for p in g.get("predict", []):
            print(f"    kgzsl predict {p['image']}: {', '.join(p['top'])}")


def print_hedging(splits: list[dict], args: argparse.Namespace) -> None:
    """Hedged answers over the taxonomy, per rule and target: mean over the splits."""
    if not args.hedge:
        return
    print(f"hedged answers ({args.models[0]}, calibrated on half the unseen classes' photos, answering the other half's; "
          "acc: the true class is in the answer's subtree):")
    print(f"  {'answer':<16}{'acc %':<14}{'mean P %':<14}{'depth':<12}{'gain (bits)':<14}{'root %':<12}")
    for answer in splits[0]["hedge"]:
        cells = []
        for key, scale, width in (("acc", 100, 14), ("prob", 100, 14), ("depth", 1, 12), ("gain", 1, 14), ("root", 100, 12)):
            values = [scale * s["hedge"][answer][key] for s in splits]
            text = f"{statistics.fmean(values):.1f}" + (f"±{statistics.stdev(values):.1f}" if len(values) > 1 else "")
            cells.append(f"{text:<{width}}")
        print(f"  {answer:<16}" + "".join(cells))


def print_commands_and_times(total: float) -> None:
    """The exact commands run, and where the time went."""
    print("commands run:")
    for command in COMMANDS:
        print(f"  {command}")
    print("time: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in TIMES.items()) + f"; total {total:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="photo tree with unseen/ and heldout/ wnid folders")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "new-domain", help="features, graphs and runs go here")
    parser.add_argument("--taxonomy", type=Path, default=TAXONOMY)
    parser.add_argument("--left-out", default="domestic cat", help="the class left out of the taxonomy, added by propagate")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="splits to run (mean and spread over them)")
    parser.add_argument("--models", nargs="+", default=["dgp", "sgcn"], choices=["dgp", "sgcn", "gcnz"])
    parser.add_argument("--per-class", type=int, default=3, help="photos per seen class that kgzsl targets fits on")
    parser.add_argument("--epochs", type=int, help="override the models' default schedules (kgzsl.propagation.schedules.SCHEDULES)")
    parser.add_argument("--no-grow-unseen", dest="grow_unseen", action="store_false",
                        help="skip training without the unseen classes and adding them all by propagate")
    parser.add_argument("--names-only", action="store_true",
                        help="build the graphs from the taxonomy without its synset pins (names alone; the pins still find the photos)")
    parser.add_argument("--hedge", action="store_true",
                        help="also calibrate hedged answers over the taxonomy on half the unseen classes and test on the others")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    root = images_root(args.images)
    if root is None:
        print("new_domain: skipped: no photo tree with unseen/ and heldout/ (looked at --images, $KGZSL_IMAGES, ../shared/images)")
        return
    start = time.perf_counter()
    args.work = args.work.resolve()
    domain = load_domain(args.taxonomy.resolve(), root)
    if args.names_only:
        args.work.mkdir(parents=True, exist_ok=True)
        domain.graph_taxonomy = without_pins(domain.taxonomy, args.work / f"{domain.taxonomy.stem}-names-only.csv")
    features = photo_features(domain, args.work)
    splits = []
    for seed in args.seeds:
        log(f"split seed {seed}")
        splits.append(run_split(domain, features, seed, args))
    if args.json:
        args.json.write_text(json.dumps({"splits": splits, "commands": COMMANDS, "seconds": TIMES}, indent=1))
    print_table(splits, domain, args)
    print_growth(splits, args)
    print_hedging(splits, args)
    print_commands_and_times(time.perf_counter() - start)


if __name__ == "__main__":
    main()
