#!/usr/bin/env python3
"""Write the stored rankings that ``tests/test_recognition_path.py`` checks every recognition option against.

A small real run, trained deterministically: DGP (seed 0, 30 epochs) on a 45-node WordNet graph closed up to
``entity`` (GloVe 50-d node features) over EfficientNet-Lite0's real ImageNet-1k classifiers, with five
classes of the foolbox photos held out (bull mastiff, dalmatian, spoonbill, bald eagle, leafhopper) and two
of them trained (goose, dung beetle). Its inputs are stored under ``tests/data/ranking-run/`` so that the test
neither trains nor reads images (and a later change to the image path cannot change its input):

* ``graph/``: the graph folder; ``predictions.safetensors``: the run's predictions (real seen rows included);
* ``features.npy``: float32 Lite0 features ``[20, 1280]`` of the 20 foolbox ImageNet photos, and their
  names and classes in ``rankings-regression.json``;
* ``hedge.json`` / ``hedge-all.json``: hedging calibrations fitted on the photos of the graph's classes
  (unseen candidates: the five held-out photos; all candidates: those and the two trained ones, gamma fitted).

Then ``tests/data/rankings-regression.json``: the top 5 (ids, scores) of every photo for every option
combination (candidates unseen / all / a list, seen rows real / predicted, gamma 0 / 0.5, transductive off /
on) and the hedged answers of every calibrated candidate set, rule and target, all computed with the
scoring functions the recognition path is built from. Run it from the checkout root:

    .venv/bin/python scripts/make_ranking_fixture.py
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from kgzsl.graph.class_graph import build_wordnet_graph, load_graph
from kgzsl.graph.embeddings import GLOVE_50D, load_vectors
from kgzsl.propagation.predictions import save_predictions
from kgzsl.propagation.run import load_run, predictions_meta
from kgzsl.propagation.targets import load_targets
from kgzsl.propagation.training import train
from kgzsl.recognition.hedge.calibration import calibrate_run, run_hedger
from kgzsl.recognition.hedge.hierarchy import RULES
from kgzsl.recognition.hedge.storage import DEFAULT_TARGETS
from kgzsl.recognition.scoring import candidate_scores, top_predictions
from kgzsl.vision.backbones import load_backbone
from kgzsl.vision.features import image_list_features
from kgzsl.vision.samples import foolbox_imagenet_images

DATA = Path("tests/data")
RUN = DATA / "ranking-run"
GRAPH = RUN / "graph"
OUT = DATA / "rankings-regression.json"

HELD = ["n02108422", "n02110341", "n02006656", "n01614925", "n02259212"]  # held out: their classifiers unused
SEEN = ["n01855672", "n02172182", "n02099601", "n02165456", "n02106662"]  # goose, dung beetle, golden retriever, ladybug, German shepherd
UNSEEN = ["n02084071", "n01503061", "n02109047"]  # dog, bird, Great Dane
#: an explicit candidate list: held-out, seen, unseen and one structure-only node (canine)
LISTED = ["n02110341", "n01855672", "n02084071", "n02099601", "n02109047", "n02006656", "n02083346"]
EPOCHS, SEED, TOP = 30, 0, 5


def main() -> None:
    if RUN.exists():
        shutil.rmtree(RUN)
    RUN.mkdir(parents=True)
    build_wordnet_graph(SEEN + HELD, UNSEEN, vectors=load_vectors(GLOVE_50D)).save(GRAPH)
    graph = load_graph(GRAPH)
    result = train(graph, load_targets("efficientnet-lite0"), model="dgp", epochs=EPOCHS, seed=SEED, exclude=HELD,
                   progress=False)
    meta = {**predictions_meta(result, graph), "graph": str(GRAPH)}  # relative: found from the checkout root
    save_predictions(RUN / "predictions.safetensors", list(graph.ids), result.predictions, result.seen,
                     meta=meta, seen_true=result.seen_targets)
    run = load_run(RUN / "predictions.safetensors")

    photos = foolbox_imagenet_images()
    features, good, bad = image_list_features([p for p, _ in photos], load_backbone(run.backbone))
    assert not bad and len(good) == len(photos), bad
    features = features.float().contiguous()
    np.save(RUN / "features.npy", features.numpy().astype(np.float32))
    features = torch.from_numpy(np.load(RUN / "features.npy"))  # exactly what the test reads
    names = [Path(p).name for p in good]
    labels = [w for _, w in photos]

    for candidates, wanted in (("unseen", set(HELD)), ("all", set(HELD) | set(SEEN))):
        rows = [i for i, w in enumerate(labels) if w in wanted]
        calibrate_run(run, graph, features[rows], [labels[i] for i in rows], candidates=candidates)

    rankings = []
    for candidates, seen_rows, gamma, transductive in itertools.product(
            ("unseen", "all", "listed"), ("real", "predicted"), (0.0, 0.5), (False, True)):
        wanted = LISTED if candidates == "listed" else candidates
        scores, columns = candidate_scores(features, run.predictions, wanted, gamma, transductive, seen_rows)
        rankings.append({"candidates": candidates, "seen_rows": seen_rows, "gamma": gamma, "transductive": transductive,
                         "hedge": None, "rule": None, "images": _images(scores, columns, names, run, None)})
    for candidates, seen_rows, rule, target in itertools.product(("unseen", "all"), ("real", "predicted"), RULES, DEFAULT_TARGETS):
        hedger = run_hedger(run, graph, target, candidates, rule)
        scores, columns = candidate_scores(features, run.predictions, candidates, hedger.gamma, False, seen_rows)
        rankings.append({"candidates": candidates, "seen_rows": seen_rows, "gamma": hedger.gamma, "transductive": False,
                         "hedge": target, "rule": rule, "images": _images(scores, columns, names, run, hedger)})
    record = {
        "about": "top-5 rankings of the 20 foolbox photos by a small DGP run, every recognition option "
                 "(scripts/make_ranking_fixture.py)",
        "run": str(RUN), "graph": str(GRAPH), "features": str(RUN / "features.npy"), "top": TOP,
        "names": names, "labels": labels, "listed": LISTED, "rankings": rankings,
    }
    head = json.dumps({k: v for k, v in record.items() if k != "rankings"}, indent=1)[:-2]  # one ranking a line
    OUT.write_text(head + ',\n "rankings": [\n' + ",\n".join(json.dumps(r) for r in rankings) + "\n ]\n}\n")
    for path in sorted(DATA.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size:>8}  {path}")


def _images(scores: torch.Tensor, columns: torch.Tensor, names: list[str], run, hedger) -> list[dict]:
    """Each photo's top ids and scores (and hedged answer) as today's scoring functions give them."""
    rows = top_predictions(scores, columns, names, run.predictions, TOP)
    hedged = hedger.predict(scores) if hedger is not None else [None] * len(rows)
    out = []
    for row, answer in zip(rows, hedged):
        entry = {"image": row.image, "ids": [t[0] for t in row.top], "scores": [t[2] for t in row.top]}
        if answer is not None:
            entry["hedged"] = {"id": answer.id, "probability": answer.probability, "info_gain": answer.info_gain,
                               "depth": answer.depth}
        out.append(entry)
    return out


if __name__ == "__main__":
    main()
