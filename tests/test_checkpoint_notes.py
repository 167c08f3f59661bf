"""A checkpoint's notes (kgzsl.vision.checkpoint_notes) let a later load of the real EfficientNet-Lite0 run from its
cached ONNX model without reading the checkpoint, with the same features and description; notes that no longer
hold (the file changed) or are garbled are ignored and written again; notes that cannot be written cost a warning."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from kgzsl.vision import backbones, checkpoint_notes, onnx_backend
from kgzsl.vision.backbones.weights import efficientnet_lite_checkpoint
from kgzsl.vision.samples import foolbox_imagenet_images

needs_onnx = pytest.mark.skipif(not onnx_backend.onnx_available(), reason="onnxruntime / onnx are not installed")


@pytest.fixture()
def checkpoint(tmp_path, monkeypatch):
    """A copy of the real Lite0 checkpoint that the backbone loads from, and an empty kgzsl cache."""
    copy = tmp_path / "weights" / "lite0.pth"
    copy.parent.mkdir()
    shutil.copyfile(efficientnet_lite_checkpoint("efficientnet-lite0"), copy)
    monkeypatch.setattr(backbones, "efficientnet_lite_checkpoint", lambda variant: copy)
    monkeypatch.setenv("KGZSL_CACHE", str(tmp_path / "cache"))
    return copy


@pytest.fixture(scope="module")
def photos() -> list:
    return [path for path, _ in foolbox_imagenet_images()][:4]


def _load():
    return backbones.load_backbone("efficientnet-lite0", precision="fp32", engine="onnx")


@needs_onnx
def test_a_second_load_runs_without_the_checkpoint(checkpoint, photos, monkeypatch):
    first = _load()
    assert first._model is not None  # no notes yet: the network is built to learn its size
    features, described = first.embed_files(photos)[0], first.describe()

    def unread(path):
        raise AssertionError(f"the checkpoint {path} was read")

    with monkeypatch.context() as patched:
        patched.setattr(backbones, "load_state_dict", unread)
        second = _load()
        assert second.dim == 1280 and second.describe() == described
        assert torch.equal(second.embed_files(photos)[0], features)
        assert second._model is None  # never built: the cached ONNX model was found through the notes
    assert torch.equal(second.classifier[0], first.classifier[0])  # what needs the weights still loads them


@needs_onnx
def test_notes_that_no_longer_hold_are_ignored_and_rewritten(checkpoint, photos):
    features = _load().embed_files(photos[:2])[0]
    notes = checkpoint_notes.notes_file(checkpoint)
    assert checkpoint_notes.read_notes(checkpoint)["fingerprint"]
    os.utime(checkpoint, ns=(1, 1))  # the file changed (as far as its stamp tells): its notes no longer hold
    assert checkpoint_notes.read_notes(checkpoint) == {}
    touched = _load()
    assert touched._model is not None and torch.equal(touched.embed_files(photos[:2])[0], features)
    assert checkpoint_notes.read_notes(checkpoint)["onnx"]  # written again for the new stamp
    stamp = checkpoint_notes.file_stamp(checkpoint)
    unreadable = ["{", "[]", json.dumps({"format": 1, "stamp": "x", "notes": 3})]
    wrong_values = [{"fingerprint": "not hex", "dim": 1280}, {"fingerprint": "de5b470009dc7501", "dim": True},
                    {"fingerprint": "de5b470009dc7501", "dim": -5}]
    for garbled in [*unreadable, *(json.dumps({"format": 1, "stamp": stamp, "notes": n}) for n in wrong_values)]:
        notes.write_text(garbled)
        if garbled in unreadable:
            assert checkpoint_notes.read_notes(checkpoint) == {}
        again = _load()
        assert again._model is not None and again.dim == 1280  # not taken from the note: built
        assert again.describe()["fingerprint"] == touched.describe()["fingerprint"]


@needs_onnx
def test_notes_that_cannot_be_written_cost_a_warning(checkpoint, photos, monkeypatch, caplog):
    def refuse(path, record):
        raise OSError("read-only file system")

    monkeypatch.setattr(checkpoint_notes, "write_json", refuse)
    backbone = _load()
    assert backbone.embed_files(photos[:1])[0].shape == (1, 1280)
    assert "cannot keep notes on checkpoint" in caplog.text
    assert not checkpoint_notes.notes_file(checkpoint).exists()


@needs_onnx
def test_loading_and_describing_write_no_notes(checkpoint):
    """A command may refuse its input after loading the backbone and comparing its description: nothing is written
    then, not even to the cache; the notes come with the first image, as the cached model does."""
    backbone = _load()
    assert backbone.describe()["fingerprint"] and backbone.dim == 1280
    assert not checkpoint_notes.notes_file(checkpoint).exists()
