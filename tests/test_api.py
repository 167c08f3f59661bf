"""The one-object API (kgzsl.Recognizer) on real photos: the darknet giraffe and the foolbox ImageNet images,
named by a small trained run; feature tensors, PIL images and folders; explain(); pretrained(); and the
docs/recognition.md's Python example (once the README's), executed as written."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from kgzsl import KgzslError, Recognizer
from kgzsl.api import Explanation, Prediction, RelatedClass
from kgzsl.vision.samples import GIRAFFE_WNID, darknet_photo, foolbox_imagenet_images

ROOT = Path(__file__).resolve().parent.parent
RECOGNITION_DOC = ROOT / "docs" / "recognition.md"  # where the README's Python example moved


@pytest.fixture(scope="module")
def rec(photo_run):
    return Recognizer.from_run(photo_run["run"], progress=False)


@pytest.fixture(scope="module")
def photos():
    return [darknet_photo("giraffe.jpg")] + [path for path, _ in foolbox_imagenet_images()[:4]]


def test_import_kgzsl_stays_light():
    import subprocess

    code = "import sys, kgzsl; kgzsl.Recognizer, kgzsl.load_run; assert 'torch' not in sys.modules"  # torch on first use
    subprocess.run([sys.executable, "-c", code], check=True)


def test_predict_one_photo_as_the_cli_does(rec, photo_run, capsys):
    from kgzsl.cli import main

    photo = darknet_photo("giraffe.jpg")
    best = rec.predict(photo, top=5)
    assert isinstance(best, Prediction) and best.image == str(photo)
    assert len(best.ids) == len(best.names) == len(best.scores) == 5 and best.scores == sorted(best.scores, reverse=True)
    preds = rec.run.predictions
    for node_id in best.ids:  # standard zero-shot: unseen classes only, structure-only nodes never
        row = preds.index[node_id]
        assert not preds.seen[row] and preds.meta["roles"][row] != "internal"
    assert main(["predict", str(photo), "--predictions", str(photo_run["run"]), "--top", "5", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["images"][0]["top"]
    assert [t["id"] for t in cli] == best.ids and [t["name"] for t in cli] == best.names
    assert [t["score"] for t in cli] == [round(s, 4) for s in best.scores]
    assert rec.predict(str(photo), top=2, candidates="all").ids[0] in preds.index


def test_a_batch_of_paths_pil_images_a_folder_and_features_agree(rec, photos, tmp_path, caplog):
    batch = rec.predict(photos, top=3)
    assert isinstance(batch, list) and [p.image for p in batch] == [str(p) for p in photos]
    images = [Image.open(p) for p in photos]
    as_pil = rec.predict(images, top=3)
    assert [p.ids for p in as_pil] == [p.ids for p in batch]
    assert all(torch.allclose(torch.tensor(a.scores), torch.tensor(b.scores), atol=1e-4) for a, b in zip(as_pil, batch))
    assert rec.predict(images[0], top=3).ids == batch[0].ids  # one PIL image: one Prediction
    features = rec.backbone.embed([Image.open(p).convert("RGB") for p in photos])
    by_features = rec.predict(features, top=3)
    assert [p.image for p in by_features] == [f"features[{i}]" for i in range(len(photos))]
    assert [p.ids for p in by_features] == [p.ids for p in batch]
    assert rec.predict(features[0], top=3).ids == batch[0].ids  # one feature row [D]: one Prediction
    # a folder: its images, sorted, at any depth; hidden files, other files and unreadable images skipped
    (tmp_path / "sub").mkdir()
    shutil.copy(photos[1], tmp_path / "b.jpg")
    shutil.copy(photos[0], tmp_path / "sub" / "a.jpg")
    shutil.copy(photos[2], tmp_path / ".hidden.jpg")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "broken.png").write_text("not an image either\n")
    with caplog.at_level(logging.WARNING, logger="kgzsl"):
        found = rec.predict(tmp_path, top=3)
    assert [Path(p.image).name for p in found] == ["b.jpg", "a.jpg"]
    assert [p.ids for p in found] == [batch[1].ids, batch[0].ids]
    assert "broken.png" in caplog.text


def test_bad_inputs_are_refused(rec, photos, tmp_path):
    with pytest.raises(KgzslError, match="missing.jpg does not exist"):
        rec.predict(tmp_path / "missing.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KgzslError, match="holds no image files"):
        rec.predict(tmp_path / "empty")
    with pytest.raises(KgzslError, match="none of the 1 images could be read"):
        rec.predict([tmp_path / "missing.jpg"])
    with pytest.raises(KgzslError, match="image 1 of the list is a int"):
        rec.predict([photos[0], 3])
    with pytest.raises(KgzslError, match="cannot recognize a dict"):
        rec.predict({"x": 1})
    with pytest.raises(KgzslError, match="top must be at least 1"):
        rec.predict(photos[0], top=0)
    with pytest.raises(KgzslError, match="too small"):
        rec.predict(Image.new("RGB", (2, 2)))
    with pytest.raises(KgzslError, match="features must be"):
        rec.predict(torch.zeros(1, 2, 3))
    with pytest.raises(KgzslError, match="image features are 7-d"):
        rec.predict(torch.zeros(2, 7))
    other = Recognizer.from_run(rec.run.source, backbone="efficientnet-lite1", progress=False)
    with pytest.raises(KgzslError, match="trained for efficientnet-lite0 but backbone efficientnet-lite1"):
        other.predict(photos[0])


def test_explain_is_what_inspect_reports(rec, photo_run, capsys):
    from kgzsl.cli import main
    from kgzsl.inspection.explain import format_report

    why = rec.explain("giraffe", top=4)
    assert isinstance(why, Explanation) and why.id == GIRAFFE_WNID and "giraffe" in why.names
    assert not why.trained_on_real_classifier and why.role == "unseen"
    assert why.ancestors and all(isinstance(a, RelatedClass) and a.distance >= 1 for a in why.ancestors)
    assert len(why.nearest_by_weight) == 4 and all(c.cosine is not None for c in why.nearest_by_weight)
    assert len(why.attribution) == 4 and why.attribution_faithfulness is not None  # the model is in the run folder
    assert why.distance_weights is not None and len(why.distance_weights["distances"]) > 1  # DGP's group weights
    assert main(["inspect", "giraffe", "--predictions", str(photo_run["run"]), "--top", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(why.report))
    assert main(["inspect", "giraffe", "--predictions", str(photo_run["run"]), "--top", "4"]) == 0
    assert capsys.readouterr().out.strip() == str(why) == format_report(why.report)
    held = rec.explain(photo_run["held"][0])  # a held-out class: its true classifier is known
    assert held.cosine_to_true_classifier is not None
    with pytest.raises(KgzslError, match="no class 'girafe'.*closest names: giraffe"):
        rec.explain("girafe")


def test_pretrained_trains_once_into_the_cache(photo_run, tmp_path, monkeypatch):
    import kgzsl.propagation.training

    monkeypatch.setenv("KGZSL_CACHE", str(tmp_path / "cache"))
    first = Recognizer.pretrained(epochs=2, graph=photo_run["graph"], progress=False)
    assert first.run.folder == tmp_path / "cache" / "pretrained" / "dgp"
    assert first.run.record["epochs_run"] == 2 and first.run.record["excluded"] == []  # no class held out
    monkeypatch.setattr(kgzsl.propagation.training, "train", lambda *a, **k: pytest.fail("trained again"))
    again = Recognizer.pretrained(epochs=2, graph=photo_run["graph"], progress=False)
    assert torch.equal(again.run.predictions.pred, first.run.predictions.pred)
    assert again.explain("giraffe").id == GIRAFFE_WNID


def _python_blocks(section: str, page: Path = RECOGNITION_DOC) -> list[str]:
    """The ```python blocks of the section headed ``section`` of a docs page, as written."""
    text = page.read_text(encoding="utf-8")
    start = text.index(f"\n{section}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_readme_python_example_runs_as_written(photo_run, photos, tmp_path, monkeypatch, capsys):
    """Both blocks of docs/recognition.md's "From Python", in a folder holding what they name: graphs/imagenet21k (the small photo
    graph), photo.jpg, photos/. The stage-by-stage block (first) writes runs/dgp, which the Recognizer block reads.
    Only the schedule is shortened (3 epochs), so that the training it runs is quick."""
    from dataclasses import replace

    import kgzsl.propagation.training

    blocks = _python_blocks("## From Python")
    assert len(blocks) == 2 and "Recognizer.from_run(\"runs/dgp\")" in blocks[1] and "save_run" in blocks[0]
    shutil.copytree(photo_run["graph"], tmp_path / "graphs" / "imagenet21k")
    shutil.copy(photos[0], tmp_path / "photo.jpg")
    (tmp_path / "photos").mkdir()
    for path in photos[1:3]:
        shutil.copy(path, tmp_path / "photos" / path.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(kgzsl.propagation.training.SCHEDULES, "dgp", replace(kgzsl.propagation.training.SCHEDULES["dgp"], epochs=3))
    exec(compile(blocks[0], "docs/recognition.md (stages)", "exec"), {"__name__": "readme"})
    exec(compile(blocks[1], "docs/recognition.md (Recognizer)", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert json.loads((tmp_path / "runs" / "dgp" / "train.json").read_text())["epochs_run"] == 3
    assert out[0].startswith("photo.jpg [(")  # the stages' top 5
    assert len(out) == 1 + 1 + 3 + 1 and out[2].startswith("photo.jpg [") and out[3].startswith("photos/")
