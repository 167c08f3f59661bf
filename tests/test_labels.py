"""Labels by name (kgzsl.graph.labels, kgzsl.recognition.labels): WordNet names resolved to the sense a photo can
show, synsets pinned, free text as new nodes whose classifier the trained model propagates (cached, the run folder
untouched), probabilities over the labels, and the Hugging Face pipeline's shape (Recognizer.__call__)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch

from kgzsl import KgzslError, Recognizer
from kgzsl.core.resources import default_graph_dir
from kgzsl.graph.labels import parse_label, resolve_labels
from kgzsl.graph.wordnet import reader
from kgzsl.vision.samples import darknet_photo, foolbox_imagenet_images

#: two-word descriptions (none a WordNet lemma) of foolbox photo classes, the photo_run's held-out classes
DESCRIPTIONS = {
    "n02110341": "spotted dog",        # dalmatian
    "n07745940": "red berry",          # strawberry
    "n03594945": "army car",           # jeep
    "n04613696": "round tent",         # yurt
    "n02877765": "bottle lid",         # bottlecap
    "n04417672": "straw roof",         # thatch
    "n02006656": "pink wading bird",   # spoonbill
    "n01614925": "white headed eagle",  # bald eagle
}


@pytest.fixture(scope="module")
def shipped_graph():
    """The shipped ImageNet-21k graph, its ImageNet-1k classes as the trained ones."""
    from kgzsl.graph.class_graph import load_graph

    folder = default_graph_dir()
    if not (folder / "graph.json").is_file():
        pytest.skip(f"the shipped graph {folder} is absent")
    graph = load_graph(folder)
    return graph, [node_id for node_id, role in zip(graph.ids, graph.roles) if role == "seen"]


@pytest.fixture(scope="module")
def label_run(photo_run, tmp_path_factory):
    """photo_run's graph and held-out classes, trained for 100 epochs (photo_run's 8 name only 1 in 9 of its photos):
    {"run": folder, "graph": folder}."""
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train

    graph = load_graph(photo_run["graph"])
    result = train(graph, load_targets(), model="dgp", epochs=100, seed=0, exclude=photo_run["held"], progress=False,
                   hidden_channels=256)
    folder = tmp_path_factory.mktemp("label-run") / "run"
    save_run(result, graph, folder)
    return {"run": folder, "graph": photo_run["graph"]}


@pytest.fixture(scope="module")
def rec(label_run, tmp_path_factory):
    """A recognizer over label_run; new nodes' classifiers cached in a folder of its own (the kgzsl cache's
    label-classifiers), never in the run folder."""
    import kgzsl.recognition.labels

    cache = tmp_path_factory.mktemp("label-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kgzsl.recognition.labels, "cache_dir", lambda: cache)
        yield Recognizer.from_run(label_run["run"], progress=False)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("name, visual", [("ray", "ray.n.07"), ("seal", "seal.n.09"), ("mug", "mug.n.04")])
def test_a_name_whose_first_sense_is_not_visual_gets_the_visual_one(shipped_graph, name, visual, caplog):
    graph, trained = shipped_graph
    first = reader().synsets(name, pos="n")[0]
    assert first.name() != visual  # the point of the test: WordNet's first sense is a line, a wax, a mugful
    with caplog.at_level(logging.WARNING, logger="kgzsl"):
        [label] = resolve_labels([name], graph, trained)
    assert label.synset == visual and label.ambiguous and first.name() in label.senses
    assert label.node_id in graph.index() and not label.new and label.label == name
    assert visual in caplog.text and f"'{name}'" in caplog.text  # the chosen sense is reported
    assert label.as_dict()["synset"] == visual and label.as_dict()["ambiguous"]


def test_bowl_pins_and_synsets(shipped_graph):
    graph, trained = shipped_graph
    bowl, pinned, by_synset, by_wnid, outside = resolve_labels(
        ["bowl", "ray=beam.n.04", "ray.n.07", "n02084071", "domestic cat=n02121808"], graph, trained)
    index = graph.index()
    assert bowl.ambiguous and graph.roles[index[bowl.node_id]] != "internal"  # a class of the graph, with a classifier
    assert "dish" in bowl.gloss or "vessel" in bowl.gloss
    assert pinned.label == "ray=beam.n.04" and pinned.synset == "beam.n.04" and pinned.how == "pinned"
    assert pinned.new and pinned.parents and all(p in index for p in pinned.parents)  # outside the graph: under its hypernyms
    assert by_synset.node_id == "n01495701" and by_wnid.name == "dog" and outside.node_id == "n02121808"
    with pytest.raises(KgzslError, match="given more than once"):
        resolve_labels(["dog", "dog"], graph, trained)
    with pytest.raises(KgzslError, match="neither a wnid nor"):
        resolve_labels(["ray=nothing.n.99"], graph, trained)
    assert parse_label(" red panda cub < lesser_panda.n.01 ") == ("red panda cub", None, "lesser_panda.n.01")


def test_free_text_labels_become_new_nodes_that_name_their_photos(rec, label_run, monkeypatch):
    before = _digest(label_run["run"])
    labels = list(DESCRIPTIONS.values())
    chosen = rec.labels(labels)
    assert all(label.new and label.how == "text" and label.parents for label in chosen.labels)
    photos = [(path, wnid) for path, wnid in foolbox_imagenet_images() if wnid in DESCRIPTIONS]
    found = rec.predict([p for p, _ in photos], labels=labels)
    hits = sum(p.labels[0] == DESCRIPTIONS[wnid] for p, (_, wnid) in zip(found, photos))
    assert hits / len(photos) > 2 / len(labels)  # better than twice chance (1 in 8)
    assert _digest(label_run["run"]) == before  # the run folder is not modified
    # a fresh recognizer takes the new nodes' classifiers from the cache, without the model
    import kgzsl.recognition.labels as module

    monkeypatch.setattr(module._NewNodes, "_row", lambda *a: pytest.fail("computed again"))
    again = Recognizer.from_run(label_run["run"], progress=False).labels(labels)
    assert torch.equal(again.predictions.pred, chosen.predictions.pred)


def test_a_new_node_gets_the_classifier_propagate_gives_it(rec):
    from kgzsl.graph.labels import grown_graph
    from kgzsl.propagation.grow import propagate

    [label] = rec.labels(["spotted dog"]).labels
    row = rec.labels(["spotted dog"]).predictions.pred[0]
    source = rec.labels(["spotted dog"])
    import kgzsl.recognition.labels as module

    feature = module._NewNodes(rec.run, rec.graph, None)._feature(label)
    grown = grown_graph(rec.graph, label.node_id, label.names, label.gloss, feature, label.parents)
    full = propagate(rec.run, grown).predictions.rows([label.node_id])[0]
    assert torch.allclose(row, full, atol=1e-5) and source.labels[0].parents == label.parents


def test_probabilities_and_the_pipeline_shape(rec):
    photo = darknet_photo("giraffe.jpg")
    labels = ["giraffe", "zebra", "Labrador retriever", "spotted dog"]
    out = rec(photo, candidate_labels=labels)
    assert [set(entry) for entry in out] == [{"label", "score"}] * len(labels)
    assert sorted(entry["label"] for entry in out) == sorted(labels)  # each label exactly as given
    scores = [entry["score"] for entry in out]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-6
    many = rec([photo, photo], candidate_labels=labels, top_k=2)
    assert len(many) == 2 and [len(m) for m in many] == [2, 2]
    assert [e["label"] for e in many[1]] == [e["label"] for e in out[:2]]
    assert [e["score"] for e in many[1]] == pytest.approx(scores[:2], abs=1e-5)
    best = rec.predict(photo, labels=labels)
    assert best.labels == [e["label"] for e in out] and best.probabilities == pytest.approx(scores, abs=1e-5)
    assert best.scores[0] >= min(best.scores)  # raw scores stay
    with pytest.raises(KgzslError, match="labels"):
        rec.predict(photo, labels=[])
    with pytest.raises(KgzslError, match="not both"):
        rec.predict(photo, labels=labels, candidates="all")


def test_flat_probabilities_are_the_softmax_over_every_candidate(rec):
    from PIL import Image

    from kgzsl.recognition.recognize import RecognitionOptions, recognize

    features = rec.backbone.embed([Image.open(darknet_photo("giraffe.jpg")).convert("RGB")])
    every = recognize(features, ["giraffe"], rec.run.predictions, RecognitionOptions("unseen", 10**6, temperature=0.5))[0]
    assert abs(sum(every.probabilities) - 1) < 1e-6 and len(every.ids) > 50
    top = recognize(features, ["giraffe"], rec.run.predictions, RecognitionOptions("unseen", 5, temperature=0.5))[0]
    assert top.probabilities == pytest.approx(every.probabilities[:5], abs=1e-9) and top.ids == every.ids[:5]
    with pytest.raises(KgzslError, match="temperature must be above 0"):
        RecognitionOptions("unseen", 5, temperature=0.0)
