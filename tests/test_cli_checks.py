"""Bad CLI input ends in one line ``kgzsl: error: ...`` and exit 2 (issue 10: defects 5, 6, 10, 11, 12),
on a small real WordNet graph, real EfficientNet-Lite0 targets and real ImageNet images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kgzsl.cli import main, steps
from kgzsl.errors import KgzslError
from kgzsl.propagation.predictions import load_predictions
from kgzsl.propagation.run import save_run
from kgzsl.propagation.targets import load_targets
from kgzsl.propagation.training import train
from kgzsl.vision.samples import foolbox_imagenet_images

UNSEEN = ["n02084071", "n02121808"]  # dog, domestic cat: unseen nodes of the small graph


@pytest.fixture(scope="module")
def lite0():
    return load_targets()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_graph, lite0):
    """A saved small graph, a DGP run on it (Lite0 targets) and Lite0 / Lite2 features of two real images."""
    from kgzsl.graph.class_graph import load_graph

    root = tmp_path_factory.mktemp("checks")
    graph = load_graph(small_graph.save(root / "graph"))
    run = root / "run"
    save_run(train(graph, lite0, model="dgp", epochs=5, seed=0, progress=False), graph, run)
    memory_run = root / "memory-run"  # trained on a graph that was never saved: it records no folder
    save_run(train(small_graph, lite0, model="dgp", epochs=5, seed=0, progress=False), small_graph, memory_run)
    tree = root / "tree"
    for (path, _), wnid in zip(foolbox_imagenet_images()[:2], UNSEEN):
        (tree / wnid).mkdir(parents=True)
        shutil.copy(path, tree / wnid / path.name)
    for variant in ("lite0", "lite2"):
        assert main(["features", str(tree), "--backbone", f"efficientnet-{variant}", "--out", str(root / variant), "--json"]) == 0
    split = root / "split.txt"
    split.write_text("\n".join(UNSEEN) + "\n")
    return {"root": root, "graph": root / "graph", "run": run, "memory_run": memory_run, "split": split,
            "image": str(foolbox_imagenet_images()[0][0])}


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``kgzsl argv``; assert exit 2 and one stderr line ``kgzsl: error: ...`` holding ``fragments``."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("kgzsl: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def listing(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ defect 10: bad numbers
@pytest.mark.parametrize("top", ["-1", "0"])
def test_predict_and_inspect_top_below_one(setup, capsys, top):
    refused(capsys, ["predict", setup["image"], "--predictions", str(setup["run"]), "--top", top], "--top must be at least 1")
    refused(capsys, ["inspect", "dog", "--predictions", str(setup["run"]), "--top", top], "--top must be at least 1")


def test_splits_hops_and_out_file(setup, capsys, tmp_path):
    refused(capsys, ["splits", "--graph", str(setup["graph"]), "--hops", "0", "-1"], "--hops must be at least 1")
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    before = listing(tmp_path)
    refused(capsys, ["splits", "--graph", str(setup["graph"]), "--out", str(target)], "is a file", "split-K-hops.txt")
    assert listing(tmp_path) == before
    assert main(["splits", "--graph", str(setup["graph"]), "--hops", "1", "--out", str(tmp_path / "splits"), "--json"]) == 0
    assert (tmp_path / "splits" / "split-1-hops.txt").is_file()


def test_train_negative_patience_is_refused_before_any_work(setup, capsys, tmp_path):
    refused(capsys, ["train", "--graph", str(setup["graph"]), "--patience", "-1", "--out", str(tmp_path / "run")],
            "--patience must be at least 0")
    assert not (tmp_path / "run").exists()
    from kgzsl.graph.class_graph import load_graph

    with pytest.raises(KgzslError, match="patience must be 0"):
        train(load_graph(setup["graph"]), load_targets(), model="gcnz", epochs=3, patience=-1, progress=False)


def test_evaluate_plot_needs_gzsl(setup, capsys, tmp_path):
    refused(capsys, ["evaluate", "--features", str(setup["root"] / "lite0"), "--predictions", str(setup["run"]),
                     "--split", str(setup["split"]), "--plot", str(tmp_path / "curve.png")], "--plot", "--gzsl")
    assert not (tmp_path / "curve.png").exists()


# ------------------------------------------------------------------------------ defect 5: backbones
def test_predict_with_another_backbone(setup, capsys):
    refused(capsys, ["predict", setup["image"], "--predictions", str(setup["run"]), "--backbone", "efficientnet-lite1"],
            "efficientnet-lite0", "efficientnet-lite1", "--allow-backbone-mismatch")
    code = main(["predict", setup["image"], "--predictions", str(setup["run"]), "--backbone", "efficientnet-lite1",
                 "--allow-backbone-mismatch", "--top", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and len(json.loads(captured.out)["images"][0]["top"]) == 2
    assert "warning" in captured.err and "efficientnet-lite1" in captured.err


def test_evaluate_with_features_of_another_backbone(setup, capsys):
    argv = ["evaluate", "--features", str(setup["root"] / "lite2"), "--predictions", str(setup["run"]),
            "--split", str(setup["split"]), "--json"]
    refused(capsys, argv, "efficientnet-lite0", "efficientnet-lite2")
    assert main(argv + ["--allow-backbone-mismatch"]) == 0
    captured = capsys.readouterr()
    assert "efficientnet-lite2" in captured.err and json.loads(captured.out)["splits"][0]["images"] == 2
    argv[2] = str(setup["root"] / "lite0")  # the run's own backbone: no word
    assert main(argv) == 0 and capsys.readouterr().err == ""


def test_runs_record_the_backbone_fingerprint(setup, lite0):
    from kgzsl.vision.backbones import load_backbone

    meta = load_predictions(setup["run"]).meta
    assert meta["backbone"] == "efficientnet-lite0"
    assert meta["backbone_fingerprint"] == lite0.fingerprint == load_backbone("efficientnet-lite0").fingerprint


def test_safetensors_state_dicts_record_which_backbone(tmp_path):
    import torch

    from kgzsl.core.files import save_tensors
    from kgzsl.vision.backbone_identity import BackboneIdentity

    prints = []
    for seed in (0, 1):
        generator = torch.Generator().manual_seed(seed)
        path = tmp_path / f"net{seed}.safetensors"
        save_tensors(path, {"fc.weight": torch.randn(1000, 8, generator=generator), "fc.bias": torch.randn(1000, generator=generator)})
        targets = load_targets(path)
        assert targets.backbone == str(path.resolve()) and targets.assumed == ""
        prints.append(targets.fingerprint)
    assert prints[0] != prints[1]
    recorded = BackboneIdentity.from_record({"backbone": str(tmp_path / "net0.safetensors"), "backbone_fingerprint": prints[0]})
    assert recorded.mismatch(BackboneIdentity(str(tmp_path / "net0.safetensors"), prints[0])) is None
    trained, given = recorded.mismatch(BackboneIdentity(str(tmp_path / "net1.safetensors"), prints[1]))
    assert "net0.safetensors" in trained and prints[0][:8] in trained and prints[1][:8] in given


# ------------------------------------------------------------------------------ defect 6: bias column
def test_matrix_without_bias_column_is_told_from_its_width(tmp_path, lite0, caplog):
    wnids = tmp_path / "wnids.txt"
    wnids.write_text("\n".join(lite0.wnids) + "\n")
    np.save(tmp_path / "nobias.npy", lite0.weights[:, :-1].numpy())
    np.save(tmp_path / "bias.npy", lite0.weights.numpy())
    with caplog.at_level("WARNING", logger="kgzsl"):
        told = load_targets(tmp_path / "nobias.npy", wnids)
    assert told.dim == 1281 and not told.weights[:, -1].any() and "no" in told.assumed and "bias" in caplog.text
    assert told.backbone is None
    kept = load_targets(tmp_path / "bias.npy", wnids)
    assert kept.dim == 1281 and kept.weights.equal(lite0.weights) and "bias column" in kept.assumed
    assert load_targets(tmp_path / "bias.npy", wnids, bias=False).dim == 1282  # as told, even where the width says otherwise
    assert load_targets(tmp_path / "nobias.npy", wnids, bias=True).dim == 1280


def test_train_on_a_matrix_without_bias_says_so_and_predicts(setup, capsys, tmp_path, lite0):
    wnids = tmp_path / "wnids.txt"
    wnids.write_text("\n".join(lite0.wnids) + "\n")
    np.save(tmp_path / "nobias.npy", lite0.weights[:, :-1].numpy())
    argv = ["train", "--graph", str(setup["graph"]), "--backbone", str(tmp_path / "nobias.npy"), "--wnids", str(wnids),
            "--epochs", "3", "--json"]
    assert main(argv + ["--out", str(tmp_path / "run")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "without a bias column" in summary["targets_assumed"]
    assert load_predictions(tmp_path / "run").pred.shape[1] == 1281
    assert main(argv + ["--no-bias", "--out", str(tmp_path / "told")]) == 0
    assert "as told" in json.loads(capsys.readouterr().out)["targets_assumed"]
    assert main(["predict", setup["image"], "--predictions", str(tmp_path / "run"), "--top", "1", "--json"]) == 0
    assert "record no backbone" in capsys.readouterr().err
    assert main(["inspect", "dog", "--predictions", str(tmp_path / "run"), "--top", "2", "--json"]) == 0  # graph from the run
    assert "cannot be loaded again" in capsys.readouterr().err
    refused(capsys, ["train", "--graph", str(setup["graph"]), "--no-bias", "--out", str(tmp_path / "x")], "plain matrix")


# ------------------------------------------------------------------------------ defect 11: graphs and run folders
def test_run_folder_and_recorded_graph(setup, capsys):
    assert main(["predict", setup["image"], "--predictions", str(setup["run"]), "--top", "1", "--json"]) == 0
    assert main(["inspect", "dog", "--predictions", str(setup["run"]), "--top", "2", "--json"]) == 0  # no --graph
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["id"] == "n02084071"
    assert load_predictions(setup["run"]).meta["graph"] == str(setup["graph"].resolve())
    refused(capsys, ["inspect", "dog", "--predictions", str(setup["memory_run"])], "record no graph", "--graph")
    refused(capsys, ["inspect", "dog", "--predictions", str(setup["root"])], "no predictions.safetensors")


def test_default_graph_is_the_shipped_one(setup, capsys, monkeypatch, tmp_path):
    assert steps.DEFAULT_GRAPH == Path(steps.__file__).resolve().parents[2] / "graphs" / "imagenet21k"
    monkeypatch.setattr(steps, "DEFAULT_GRAPH", tmp_path / "absent")
    refused(capsys, ["splits"], "shipped graph", "--graph")
    refused(capsys, ["train", "--out", str(tmp_path / "run")], "shipped graph")
    monkeypatch.setattr(steps, "DEFAULT_GRAPH", setup["graph"])
    monkeypatch.chdir(tmp_path)
    assert main(["splits", "--hops", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["graph"] == str(setup["graph"])


# ------------------------------------------------------------------------------ defect 12: messages
def test_misleading_messages(setup, capsys, tmp_path):
    image = tmp_path / "picture.png"
    shutil.copy(setup["image"], image)
    refused(capsys, ["build-graph", "--vectors", str(image), "--out", str(tmp_path / "g")], "not a text vector file")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    refused(capsys, ["train", "--graph", str(setup["graph"]), "--backbone", str(text), "--out", str(tmp_path / "r")],
            "notes.pth is not a torch state-dict file")
    refused(capsys, ["train", "--graph", str(setup["graph"] / "graph.json"), "--out", str(tmp_path / "r")],
            "is a file, not a graph folder")
    seen = tmp_path / "seen.txt"
    seen.write_text("n02084071\n")
    line = refused(capsys, ["build-graph", "--seen", str(seen), "--vectors", "glove-6b-50d", "--out", str(tmp_path / "g")],
                   "n02084071", "default unseen", "--unseen")
    assert "both as seen and unseen" not in line
    assert not (tmp_path / "g").exists() and not (tmp_path / "r").exists()
