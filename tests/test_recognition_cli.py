"""predict / evaluate end to end on real data: a trained DGP over a real WordNet subgraph, real
EfficientNet-Lite0 features of real ImageNet images, and the bad inputs a user may pass."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from kgzsl.cli import main
from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids
from kgzsl.graph.class_graph import build_wordnet_graph
from kgzsl.propagation.predictions import load_predictions
from kgzsl.propagation.run import save_run
from kgzsl.propagation.targets import load_targets
from kgzsl.propagation.training import train
from kgzsl.vision.samples import foolbox_imagenet_images


@pytest.fixture(scope="module")
def images():
    return foolbox_imagenet_images()


@pytest.fixture(scope="module")
def run(tmp_path_factory, glove, images):
    """DGP trained with the foolbox images' classes held out, over 1k/5 + those classes + some 21k classes."""
    held = sorted({w for _, w in images})
    seen = sorted(set(imagenet1k_wnids()[::5]) | set(held))
    graph = build_wordnet_graph(seen, imagenet21k_unseen_wnids()[::50], vectors=glove)
    folder = tmp_path_factory.mktemp("run") / "dgp"
    result = train(graph, load_targets(), model="dgp", epochs=40, seed=0, exclude=held, progress=False)
    save_run(result, graph, folder)
    return folder, held


def test_predictions_carry_roles_and_names(run):
    folder, held = run
    pred = load_predictions(folder / "predictions.safetensors")
    assert len(pred.meta["roles"]) == len(pred.ids) == len(pred.meta["names"])
    assert pred.meta["backbone"] == "efficientnet-lite0"
    assert not any(pred.seen[pred.index[w]] for w in held)  # held-out classes count as unseen


def test_predict_reports_bad_files_and_carries_on(run, images, tmp_path, capsys):
    folder, held = run
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(images[0][0].read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    good = [str(p) for p, _ in images[:3]]
    code = main(["predict", *good, str(corrupt), str(text), str(tiny), "--predictions", str(folder / "predictions.safetensors"),
                 "--top", "3", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in summary["images"]] == good
    assert {b["path"] for b in summary["bad_files"]} == {str(corrupt), str(text), str(tiny)}
    assert all(str(b["path"]) in b["reason"] for b in summary["bad_files"])
    pred = load_predictions(folder / "predictions.safetensors")
    for row in summary["images"]:
        assert len(row["top"]) == 3
        for t in row["top"]:  # standard zero-shot: only classes whose real classifier was not used
            i = pred.index[t["id"]]
            assert not pred.seen[i] and pred.meta["roles"][i] != "internal"
        assert row["top"][0]["score"] >= row["top"][1]["score"]


def test_predict_scores_are_the_dot_product(run, images):
    from kgzsl.recognition.recognize import predict_features
    from kgzsl.vision.backbones import load_backbone
    from kgzsl.vision.features import image_list_features

    folder, _ = run
    pred = load_predictions(folder / "predictions.safetensors")
    features, names, bad = image_list_features([images[5][0]], load_backbone("efficientnet-lite0"))
    assert not bad
    for seen_rows in ("real", "predicted"):  # seen classes score with their real classifiers by default
        top = predict_features(features, names, pred, candidates="all", top=2, seen_rows=seen_rows)[0].top
        w = pred.classifiers(seen_rows)[pred.index[top[0][0]]]
        assert top[0][2] == pytest.approx(float(features[0] @ w[:-1] + w[-1]), rel=1e-5)


def test_predict_bad_candidates_and_all_bad(run, images, tmp_path, capsys):
    folder, _ = run
    cands = tmp_path / "cands.txt"
    cands.write_text("n02084071\nn99999999\n")
    code = main(["predict", str(images[0][0]), "--predictions", str(folder / "predictions.safetensors"), "--candidates", str(cands)])
    err = capsys.readouterr().err
    assert code == 2 and "n99999999" in err and len(err.strip().splitlines()) == 1
    text = tmp_path / "a.jpg"
    text.write_text("nope")
    assert main(["predict", str(text), "--predictions", str(folder / "predictions.safetensors")]) == 2


def test_evaluate_hits_and_dim_mismatch(run, images, tmp_path, capsys):
    folder, held = run
    tree = tmp_path / "tree"
    for path, wnid in images:
        (tree / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tree / wnid / path.name)
    assert main(["features", str(tree), "--backbone", "efficientnet-lite0", "--out", str(tmp_path / "feats"), "--json"]) == 0
    capsys.readouterr()
    split = tmp_path / "held.txt"
    split.write_text("\n".join(held) + "\n")
    code = main(["evaluate", "--features", str(tmp_path / "feats"), "--predictions", str(folder / "predictions.safetensors"),
                 "--split", str(split), "--transductive", "--json"])
    assert code == 0
    entry = json.loads(capsys.readouterr().out)["splits"][0]
    assert entry["images"] == 20 and entry["candidates"] == len(held)
    hits = [entry[f"hit@{k}"] for k in (1, 2, 5, 10, 20)]
    assert hits == sorted(hits) and hits[-1] == 1.0  # 19 candidates: everything is within the top 20
    assert "transductive_gain_hit@1" in entry
    # predictions of another width: a matrix of 33-d targets
    from kgzsl.propagation.predictions import save_predictions

    other = load_predictions(folder / "predictions.safetensors")
    save_predictions(tmp_path / "p33.safetensors", other.ids, torch.nn.functional.normalize(torch.randn(len(other.ids), 33), dim=1),
                     other.seen, other.meta)
    code = main(["evaluate", "--features", str(tmp_path / "feats"), "--predictions", str(tmp_path / "p33.safetensors"),
                 "--split", str(split)])
    err = capsys.readouterr().err
    assert code == 2 and "1280-d" in err and "32-d" in err and len(err.strip().splitlines()) == 1


def test_gzsl_evaluation_writes_curve(run, images, tmp_path, capsys):
    """GZSL over held-out (unseen) classes plus all seen classes; features of the 20 real images."""
    from kgzsl.recognition.evaluate import evaluate_gzsl_split
    from kgzsl.vision.backbones import load_backbone
    from kgzsl.vision.features import image_list_features

    folder, held = run
    pred = load_predictions(folder / "predictions.safetensors")
    features, names, _ = image_list_features([p for p, _ in images], load_backbone("efficientnet-lite0"))
    labels = [w for _, w in images]
    # half of the held-out classes play the unseen side and half join the seen side, so images of both exist
    seen_ids = [i for i, s in zip(pred.ids, pred.seen.tolist()) if s]
    test, chosen = evaluate_gzsl_split(features, labels, pred.ids, pred.pred, held[:10], held[10:] + seen_ids, seed=0)
    assert 0.0 <= test.harmonic_mean <= 1.0 and np.isfinite(chosen.gamma)
