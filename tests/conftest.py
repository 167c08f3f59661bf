"""Shared test fixtures: real WordNet, real GloVe vectors, a small real WordNet subgraph."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgzsl.core.resources import reference_dir

# A small real WordNet neighbourhood: dogs, cats, big cats and a few other animals.
SMALL_SEEN = [
    "n02085620",  # Chihuahua
    "n02099601",  # golden retriever
    "n02110958",  # pug
    "n02123045",  # tabby cat
    "n02129165",  # lion
    "n02129604",  # tiger
    "n01503061",  # bird
    "n02504458",  # African elephant
]
SMALL_UNSEEN = [
    "n02084071",  # dog
    "n02121808",  # domestic cat
    "n02128925",  # jaguar
    "n02504013",  # Indian elephant
    "n02099712",  # Labrador retriever
]


@pytest.fixture(scope="session")
def reference() -> Path:
    """The standard ImageNet wnid/split lists of ../shared/reference (skipped where absent)."""
    path = reference_dir()
    if path is None:
        pytest.skip("reference lists absent: set KGZSL_REFERENCE or put them at ../shared/reference")
    return path


@pytest.fixture(scope="session")
def glove():
    """The embedded real GloVe 6B 50-d vectors."""
    from kgzsl.graph.embeddings import GLOVE_50D, load_vectors

    return load_vectors(GLOVE_50D)


@pytest.fixture(scope="session")
def small_graph(glove):
    """A small real WordNet graph (closed upward to entity) over a few animal classes."""
    from kgzsl.graph.class_graph import build_wordnet_graph

    return build_wordnet_graph(SMALL_SEEN, SMALL_UNSEEN, vectors=glove)


@pytest.fixture(scope="session")
def photo_run(tmp_path_factory, glove):
    """A small DGP run folder over a saved real WordNet graph that can name real photos: seen ImageNet-1k/20
    plus the 20 foolbox photos' classes, held out; unseen the giraffe and ImageNet-21k/400 (421 nodes).
    Lite0 targets, 8 epochs, 256 hidden units. A dict: run and graph folders, held-out wnids, TrainResult."""
    from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids
    from kgzsl.graph.class_graph import build_wordnet_graph, load_graph
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train
    from kgzsl.vision.samples import GIRAFFE_WNID, foolbox_imagenet_images

    held = sorted({wnid for _, wnid in foolbox_imagenet_images()})
    root = tmp_path_factory.mktemp("photo-run")
    seen = sorted(set(imagenet1k_wnids()[::20]) | set(held))
    build_wordnet_graph(seen, [GIRAFFE_WNID] + imagenet21k_unseen_wnids()[::400], vectors=glove).save(root / "graph")
    graph = load_graph(root / "graph")
    result = train(graph, load_targets(), model="dgp", epochs=8, seed=0, exclude=held, progress=False, hidden_channels=256)
    save_run(result, graph, root / "run")
    return {"run": root / "run", "graph": root / "graph", "held": held, "result": result}


@pytest.fixture(scope="session")
def half_seen_photo_run(photo_run):
    """``photo_run`` for the generalized setting: half its held-out foolbox classes played as seen ones (scored by
    their predicted rows: no real rows). A ``(run-like namespace with predictions, graph)`` pair."""
    from dataclasses import replace
    from types import SimpleNamespace

    from kgzsl.propagation.run import load_run

    loaded = load_run(photo_run["run"])
    held = photo_run["held"]
    seen = loaded.predictions.seen.clone()
    seen[[loaded.predictions.index[w] for w in held[len(held) // 2:]]] = True
    return SimpleNamespace(predictions=replace(loaded.predictions, seen=seen, seen_true=None)), loaded.load_graph()


@pytest.fixture(scope="session")
def foolbox_shards(tmp_path_factory):
    """A real feature folder: EfficientNet-Lite0 features of the 20 foolbox photos in shards of 6 (4 shards),
    labelled by wnid folder (`kgzsl features`)."""
    import shutil

    from kgzsl.cli import main
    from kgzsl.vision.samples import foolbox_imagenet_images

    root = tmp_path_factory.mktemp("foolbox-shards")
    for path, label in foolbox_imagenet_images():
        (root / "tree" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "tree" / label / path.name)
    assert main(["features", str(root / "tree"), "--backbone", "efficientnet-lite0", "--out", str(root / "feats"),
                 "--shard-size", "6", "--json"]) == 0
    return root / "feats"
