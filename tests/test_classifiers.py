"""Seen-class classifiers fitted from labelled images (kgzsl.propagation.classifiers, `kgzsl targets`, `kgzsl train --targets`),
on a tiny real image tree: the foolbox ImageNet validation photos and Debian darknet's sample photos grouped into
four classes (dog, bird, insect, jeep) of a small real taxonomy graph (WordNet-pinned and free names)."""

from __future__ import annotations

import json
import logging
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.graph.names import match_class_folders
from kgzsl.propagation.classifiers import (
    DEFAULT_C,
    fit_classifiers,
    save_fitted_targets,
    targets_from_images,
)
from kgzsl.propagation.targets import load_fitted_targets

LITE0 = "efficientnet-lite0"
JEEP_WNID = "n03594945"
TAXONOMY = """child,parent,synset,description
animal,,animal.n.01
dog,animal,dog.n.01
bird,animal,bird.n.01
crane (bird),bird,crane.n.05
insect,animal,insect.n.01
giraffe,animal,giraffe.n.01
vehicle,,,a thing that carries people or goods
jeep,vehicle,jeep.n.01
crane (machine),vehicle,crane.n.04
sports car,vehicle,,a fast low car
Straßenbahn,vehicle,,a tram
café crème,,,coffee with cream
"""
SEEN = ["dog", "bird", "insect", "jeep"]
UNSEEN = ["giraffe", "sports car", "Straßenbahn", "café crème", "crane (bird)", "crane (machine)"]
#: class folder of the image tree -> (foolbox image numbers, darknet photos); folder names exercise the matching
TREE = {
    "Dog": ([0, 16], ["dog.jpg"]),  # bull mastiff, dalmatian + darknet's dog: matched by name, any case
    "bird": ([14, 15, 17], ["eagle.jpg"]),  # spoonbill, goose, bald eagle + darknet's eagle: by id
    "insect": ([18, 19], []),  # leafhopper, dung beetle: two images, fewer than --min-images 3
    JEEP_WNID: ([6, 7], []),  # two jeeps: by the wnid the taxonomy pins 'jeep' to
}
NODE_OF = {"Dog": "dog", "bird": "bird", "insect": "insect", JEEP_WNID: "jeep"}


# ------------------------------------------------------------------------------------ fixtures
def _photos() -> tuple[list, Path]:
    from kgzsl.vision.samples import darknet_photo, foolbox_imagenet_images

    try:
        return foolbox_imagenet_images(), darknet_photo("dog.jpg").parent
    except KgzslError as exc:
        pytest.skip(f"sample photos absent ({exc})")


@pytest.fixture(scope="module")
def work(tmp_path_factory, glove):
    """The image tree, the taxonomy graph (saved), and its Lite0 features written by `kgzsl features`."""
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

    foolbox, darknet = _photos()
    root = tmp_path_factory.mktemp("classifiers")
    tree = root / "images"
    for folder, (numbers, extra) in TREE.items():
        (tree / folder).mkdir(parents=True)
        for n in numbers:
            shutil.copy(foolbox[n][0], tree / folder / foolbox[n][0].name)
        for name in extra:
            shutil.copy(darknet / name, tree / folder / name)
    (root / "taxonomy.csv").write_text(TAXONOMY, encoding="utf-8")
    taxonomy = load_taxonomy(root / "taxonomy.csv")
    build_taxonomy_graph(taxonomy, seen=SEEN, unseen=UNSEEN, vectors=glove).save(root / "graph")
    assert main(["features", str(tree), "--backbone", LITE0, "--out", str(root / "feats"), "--device", "cpu", "--json"]) == 0
    return {"root": root, "tree": tree, "graph": load_graph(root / "graph"), "feats": root / "feats"}


@pytest.fixture(scope="module")
def features(work):
    """The tree's Lite0 features with their node labels."""
    from kgzsl.vision.features import load_features

    feats = load_features(work["feats"])
    return feats.features, [NODE_OF[label] for label in feats.labels]


@pytest.fixture(scope="module")
def fitted(work):
    """Classifiers fitted with seed 0 from the tree's Lite0 feature folder (the CLI test fits the tree itself)."""
    return targets_from_images(work["feats"], work["graph"], LITE0, progress=False)


@pytest.fixture(scope="module")
def lite0_fingerprint():
    from kgzsl.vision.backbones import load_backbone

    return load_backbone(LITE0).fingerprint


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys, *argv: str) -> str:
    """Run a command that must fail on bad input: exit 2, one `kgzsl: error:` line; returns that line."""
    code, _, err = _cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("kgzsl: error: "), err
    return lines[0]


# ------------------------------------------------------------------------------------ fitting
def test_fitted_classifiers_classify_their_training_images(fitted, features):
    from kgzsl.recognition.scoring import class_scores

    targets = fitted.targets
    assert targets.wnids == sorted(NODE_OF.values()) and targets.dim == 1281
    assert {r.id: r.images for r in fitted.report} == {"bird": 4, "dog": 3, "insect": 2, "jeep": 2}
    assert all(r.train_accuracy == 1.0 for r in fitted.report)
    assert fitted.folds == 2 and fitted.C in fitted.cv_scores and all(r.cv_accuracy is not None for r in fitted.report)
    assert fitted.mapping == NODE_OF
    x, labels = features  # the rows score raw features exactly as `kgzsl predict` does
    predicted = class_scores(x, targets.weights).argmax(1).tolist()
    assert [targets.wnids[i] for i in predicted] == labels


def test_rows_fold_the_scaling_back_onto_raw_features(features):
    """The rows are fitted on centred, scaled features; on raw features they give the fitted model's logits."""
    from sklearn.linear_model import LogisticRegression

    from kgzsl.recognition.scoring import class_scores

    x, labels = features
    fitted = fit_classifiers(x, labels, Cs=[0.5])
    raw = x.double().numpy()
    mean = raw.mean(0)
    z = (raw - mean) / np.sqrt(np.mean((raw - mean) ** 2))
    model = LogisticRegression(C=0.5, class_weight="balanced", max_iter=1000).fit(z, labels)
    assert list(model.classes_) == fitted.targets.wnids
    expected = model.decision_function(z)
    got = class_scores(x, fitted.targets.weights).double().numpy()
    assert np.allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    assert np.allclose(torch.softmax(torch.from_numpy(got), 1).numpy(), model.predict_proba(z), atol=1e-4)


def test_two_classes_give_two_rows(features):
    x, labels = features
    keep = [i for i, label in enumerate(labels) if label in ("dog", "bird")]
    fitted = fit_classifiers(x[keep], [labels[i] for i in keep])
    assert fitted.targets.wnids == ["bird", "dog"] and fitted.targets.weights.shape[0] == 2
    assert all(r.train_accuracy == 1.0 for r in fitted.report)


def test_fitting_is_reproducible(features):
    x, labels = features
    first, second = fit_classifiers(x, labels, seed=3), fit_classifiers(x, labels, seed=3)
    assert torch.equal(first.targets.weights, second.targets.weights)
    assert first.C == second.C and first.cv_scores == second.cv_scores


def test_classes_with_few_images_are_warned_about(features, caplog):
    x, labels = features
    with caplog.at_level(logging.WARNING, logger="kgzsl"):
        fitted = fit_classifiers(x, labels, min_images=3)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "fewer than 3 images" in warned and "insect (2)" in warned and "jeep (2)" in warned and "dog" not in warned
    assert any("fewer than 3" in note for note in fitted.notes)


def test_one_image_a_class_means_no_cross_validation(features, caplog):
    x, labels = features
    first = sorted({label: i for i, label in reversed(list(enumerate(labels)))}.values())
    with caplog.at_level(logging.WARNING, logger="kgzsl"):
        fitted = fit_classifiers(x[first], [labels[i] for i in first])
    assert fitted.folds == 0 and fitted.C == DEFAULT_C and not fitted.cv_scores
    assert all(r.cv_accuracy is None and r.train_accuracy == 1.0 for r in fitted.report)
    assert "no cross-validation" in caplog.text


def test_fit_refuses_bad_input(features):
    x, labels = features
    with pytest.raises(KgzslError, match="at least 2 classes"):
        fit_classifiers(x[:2], ["dog", "dog"])
    with pytest.raises(KgzslError, match="labels for"):
        fit_classifiers(x, labels[:-1])
    with pytest.raises(KgzslError, match="Cs"):
        fit_classifiers(x, labels, Cs=[0.0])


# ------------------------------------------------------------------------------------ matching
def test_folders_match_by_wnid_id_and_loose_name(work, small_graph):
    graph = work["graph"]
    nfd = unicodedata.normalize("NFD", "Café_Crème")
    assert nfd != "Café_Crème"
    folders = ["Dog", JEEP_WNID, "bird", "Sports_Car", "STRASSENBAHN", nfd]
    with pytest.raises(KgzslError, match="all name sports car"):  # two folders for one node: refused, not half matched
        match_class_folders(folders + ["sports  car"], graph)
    mapping = match_class_folders(folders, graph)
    assert mapping == {"Dog": "dog", JEEP_WNID: "jeep", "bird": "bird", "Sports_Car": "sports car",
                       "STRASSENBAHN": "Straßenbahn", nfd: "café crème"}
    assert match_class_folders(["landrover"], graph) == {"landrover": "jeep"}  # a lemma name of a pinned class
    wordnet = match_class_folders(["n02085620", "golden retriever", "Tiger", "Labrador_Retriever"], small_graph)
    assert wordnet == {"n02085620": "n02085620", "golden retriever": "n02099601", "Tiger": "n02129604",
                       "Labrador_Retriever": "n02099712"}


def test_unknown_ambiguous_and_structure_only_folders_are_all_listed(work):
    with pytest.raises(KgzslError) as caught:
        match_class_folders(["dgo", "crane", "animal", "zebra-ish", "bird"], work["graph"], where="IMAGES")
    text = str(caught.value)
    assert text.startswith("the class folders of IMAGES do not name classes of") and "(4 problems)" in text
    assert "'dgo' names no node (close: dog" in text
    assert "'crane' is ambiguous" in text and "crane (bird)" in text and "crane (machine)" in text
    assert "'animal' names a structure-only node" in text
    assert "'zebra-ish' names no node" in text


# ------------------------------------------------------------------------------------ the file
def test_saved_targets_load_with_backbone_and_fingerprint(fitted, tmp_path, lite0_fingerprint):
    from kgzsl.propagation.targets import load_targets

    path = save_fitted_targets(fitted, tmp_path / "targets.safetensors")
    targets = load_targets(path)
    assert targets.wnids == fitted.targets.wnids and torch.equal(targets.weights, fitted.targets.weights)
    assert targets.backbone == LITE0 and targets.fingerprint == lite0_fingerprint
    assert load_fitted_targets(path).fingerprint == lite0_fingerprint
    with pytest.raises(KgzslError, match="already exists"):
        save_fitted_targets(fitted, path)
    with pytest.raises(KgzslError, match="drop --wnids"):
        load_targets(path, wnids=["a", "b", "c", "d"])
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "kgzsl.targets" and meta["version"] == "1"
    assert json.loads(meta["mapping"]) == NODE_OF and json.loads(meta["C"]) == fitted.C
    assert [r["id"] for r in json.loads(meta["report"])] == fitted.targets.wnids


def test_the_matrix_routes_still_load(tmp_path):
    from kgzsl.propagation.targets import load_targets

    np.save(tmp_path / "m.npy", np.ones((2, 5), dtype=np.float32))
    (tmp_path / "ids.txt").write_text("dog\nbird\n")
    targets = load_targets(tmp_path / "m.npy", tmp_path / "ids.txt")
    assert targets.dim == 5 and targets.backbone is None
    lite = load_targets()
    assert lite.backbone == LITE0 and lite.backbone_fingerprint is None and len(lite.fingerprint) == 16


# ------------------------------------------------------------------------------------ the commands
def test_targets_command_on_the_tree_and_on_a_features_folder(work, fitted, capsys, tmp_path):
    tree, out = tmp_path / "tree", tmp_path / "tree.safetensors"
    shutil.copytree(work["tree"], tree)
    (tree / "Dog" / "broken.jpg").write_bytes(b"<html>not found</html>")  # listed as a bad file and skipped
    code, stdout, _ = _cli(capsys, "targets", tree, "--graph", work["root"] / "graph", "--out", out, "--json")
    assert code == 0 and out.is_file()
    summary = json.loads(stdout)
    assert summary["mapping"] == NODE_OF and summary["backbone"] == LITE0 and summary["C"] == fitted.C
    assert [bad["path"] for bad in summary["bad_files"]] == ["Dog/broken.jpg"]
    assert {c["id"]: (c["images"], c["folder"]) for c in summary["classes"]}["jeep"] == (2, JEEP_WNID)
    from_feats = tmp_path / "feats.safetensors"
    code, stdout, _ = _cli(capsys, "targets", work["feats"], "--graph", work["root"] / "graph", "--out", from_feats)
    assert code == 0 and "train acc" in stdout and "C = " in stdout and f"{JEEP_WNID} -> jeep" in stdout
    assert torch.allclose(load_fitted_targets(from_feats).weights, load_fitted_targets(out).weights, atol=1e-5)


def test_targets_command_refuses_bad_input(work, capsys, tmp_path):
    graph = work["root"] / "graph"
    bad_tree = tmp_path / "bad-tree"
    shutil.copytree(work["tree"], bad_tree)
    (bad_tree / "bird").rename(bad_tree / "birb")
    out = tmp_path / "t.safetensors"
    line = _refused(capsys, "targets", bad_tree, "--graph", graph, "--out", out)
    assert "'birb' names no node (close: bird" in line
    line = _refused(capsys, "targets", work["feats"], "--graph", graph, "--backbone", "efficientnet-lite2", "--out", out)
    assert "holds features of backbone efficientnet-lite0" in line
    _refused(capsys, "targets", tmp_path / "missing", "--graph", graph, "--out", out)
    _refused(capsys, "targets", work["tree"], "--graph", graph, "--out", tmp_path / "t.npy")
    _refused(capsys, "targets", work["tree"], "--graph", graph, "--out", out, "--folds", "1")
    _refused(capsys, "targets", work["tree"], "--graph", tmp_path / "no-graph", "--out", out)
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    out.write_bytes(b"precious")
    assert "already exists" in _refused(capsys, "targets", work["tree"], "--graph", graph, "--out", out)
    assert out.read_bytes() == b"precious"


def test_train_with_targets_writes_a_run_predict_accepts(work, fitted, capsys, tmp_path, lite0_fingerprint):
    from kgzsl.propagation.run import load_run
    from kgzsl.vision.samples import darknet_photo

    targets = save_fitted_targets(fitted, tmp_path / "targets.safetensors")
    graph, run = work["root"] / "graph", tmp_path / "run"
    code, stdout, err = _cli(capsys, "train", "--graph", graph, "--targets", targets, "--model", "dgp", "--epochs", "5",
                             "--out", run, "--json")
    assert code == 0, err
    assert json.loads(stdout)["train_classes"] == 4
    loaded = load_run(run)
    assert loaded.backbone == LITE0 and loaded.backbone_fingerprint == lite0_fingerprint
    assert loaded.predictions.meta["targets"] == str(targets) and loaded.predictions.pred.shape[1] == 1281
    assert set(loaded.predictions.ids) == set(work["graph"].ids)
    code, stdout, err = _cli(capsys, "predict", darknet_photo("giraffe.jpg"), "--predictions", run, "--json")
    assert code == 0, err
    assert json.loads(stdout)["images"][0]["top"]
    assert "trained for efficientnet-lite0" in _refused(capsys, "predict", darknet_photo("giraffe.jpg"), "--predictions", run,
                                                        "--backbone", "efficientnet-lite2")


def test_train_targets_refuses_other_target_flags_and_other_files(work, fitted, capsys, tmp_path):
    targets = save_fitted_targets(fitted, tmp_path / "targets.safetensors")
    graph, run = work["root"] / "graph", tmp_path / "run"
    line = _refused(capsys, "train", "--graph", graph, "--targets", targets, "--backbone", LITE0, "--out", run)
    assert "drop --backbone" in line
    np.save(tmp_path / "m.npy", np.ones((2, 5), dtype=np.float32))
    assert "not a kgzsl targets file" in _refused(capsys, "train", "--graph", graph, "--targets", tmp_path / "m.npy", "--out", run)
    _refused(capsys, "train", "--graph", graph, "--targets", tmp_path / "missing.safetensors", "--out", run)
    assert not run.exists()
