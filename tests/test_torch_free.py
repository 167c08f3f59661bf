"""`kgzsl features` on a cached ONNX model needs no torch: a warm run imports none and writes the same bytes as the
run that exported the model, and the numpy forward path (``normalise_array``, ``run_split_array``, session calls of ``RUN_CHUNK`` images) gives the
torch path's features bit for bit - all on the real foolbox photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kgzsl.core import devices
from kgzsl.errors import KgzslError
from kgzsl.vision import backbones, speed
from kgzsl.vision.feature_folder import load_features
from kgzsl.vision.images import DRAFT_FACTOR, load_image
from kgzsl.vision.onnx_backend import INPUT, OUTPUT, RUN_CHUNK, onnx_available
from kgzsl.vision.samples import foolbox_imagenet_images

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="onnxruntime / onnx are not installed")

#: runs ``kgzsl features`` in this process and says whether torch was imported
PROBE = """
import json, sys
from kgzsl.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _features(env: dict, tree: Path, out: Path) -> dict:
    args = ["features", str(tree), "--backbone", "efficientnet-lite0", "--precision", "fp32", "--device", "cpu",
            "--out", str(out), "--json"]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A tree of the foolbox photos, an empty kgzsl cache, and a first `kgzsl features` run (fp32 on ONNX Runtime)
    that exports the model into that cache and notes the checkpoint."""
    try:
        photos = foolbox_imagenet_images()
    except KgzslError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("torch-free")
    for path, label in photos:
        (root / "tree" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / "tree" / label / path.name)
    env = {key: value for key, value in os.environ.items() if key not in ("KGZSL_ENGINE", "KGZSL_THREADS")}
    env["KGZSL_CACHE"] = str(root / "cache")
    first = _features(env, root / "tree", root / "first")
    assert first["code"] == 0
    return root, env


@needs_onnx
def test_a_warm_run_imports_no_torch_and_writes_the_same_bytes(warm):
    root, env = warm
    second = _features(env, root / "tree", root / "second")
    assert second == {"code": 0, "torch": False}
    shards = sorted(p.name for p in (root / "first").glob("shard-*.safetensors"))
    assert shards and shards == sorted(p.name for p in (root / "second").glob("shard-*.safetensors"))
    for name in shards:
        assert (root / "first" / name).read_bytes() == (root / "second" / name).read_bytes(), name


@needs_onnx
def test_the_numpy_forward_path_gives_the_torch_paths_features(warm, monkeypatch):
    root, _ = warm
    monkeypatch.setenv("KGZSL_CACHE", str(root / "cache"))
    monkeypatch.delenv("KGZSL_ENGINE", raising=False)
    backbone = backbones.load_backbone("efficientnet-lite0", precision="fp32", engine="onnx")
    draft = DRAFT_FACTOR * backbone.transform.resize
    photos = sorted(foolbox_imagenet_images(), key=lambda pair: f"{pair[1]}/{pair[0].name}")
    pixels = np.stack([backbone.transform.pixels(load_image(path, draft=draft)) for path, _ in photos])
    numpy_path = backbone.pixel_features_array(pixels)
    torch_path = backbone.features(backbone.prepare(pixels))  # torch normalise, tensor_split, the runner on tensors
    assert numpy_path.dtype == np.float32 and numpy_path.shape == (len(photos), backbone.dim)
    assert np.array_equal(numpy_path, torch_path.numpy())
    assert torch.equal(backbone.pixel_features(torch.from_numpy(pixels)), torch_path)
    assert np.array_equal(load_features(root / "first").features.numpy(), numpy_path)  # the CLI's own run
    runner = backbone.runner  # session calls of RUN_CHUNK images: the same as one call over the batch
    batch = backbone.transform.normalise_array(pixels[:2 * RUN_CHUNK + 1])
    assert np.array_equal(runner.run(batch), runner.session.run([OUTPUT], {INPUT: batch})[0])
    assert runner.run(batch[:0]).shape == (0, backbone.dim)


def test_normalise_array_equals_the_torch_normalisation():
    from kgzsl.vision.images import ImageTransform, lite_preprocessing

    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    imagenet = ImageTransform(resize=46, crop=40, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    for transform in (lite_preprocessing(40), imagenet):
        array = transform.normalise_array(pixels)
        assert array.flags.c_contiguous and array.shape == (3, 3, 40, 40)
        assert np.array_equal(array, transform.normalise(pixels).contiguous().numpy())


def test_run_split_array_cuts_the_batch_as_run_split_does():
    for rows in range(1, 10):
        batch = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
        for workers in range(1, 5):
            seen: list[int] = []
            out = speed.run_split_array(lambda part: seen.append(len(part)) or part * 2, batch, workers)
            assert np.array_equal(out, batch * 2)
            expected = [len(part) for part in torch.from_numpy(batch).tensor_split(min(workers, rows))]
            assert sorted(seen) == sorted(expected)


def test_the_cpu_is_named_without_torch(tmp_path):
    probe = ("import sys\nfrom kgzsl.core import devices\ndevices.gpu_driver_present = lambda files=(): False\n"
             "print(devices.device_name('auto'), devices.device_name('cpu'), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["cpu", "cpu", "False"]
    driver = tmp_path / "nvidiactl"
    assert not devices.gpu_driver_present((str(driver),))
    driver.write_text("")
    assert devices.gpu_driver_present((str(driver),))
    assert devices.device_type("cuda:1") == "cuda" and devices.device_type("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(KgzslError, match="sees no CUDA GPU"):
            devices.device_name("cuda")


def test_tensor_files_from_numpy_are_the_bytes_torch_writes(tmp_path):
    from kgzsl.core.files import save_tensors

    for rows in (0, 5):
        array = np.random.default_rng(rows).standard_normal((rows, 7)).astype(np.float32)
        save_tensors(tmp_path / "numpy.safetensors", {"features": array}, metadata={"kgzsl": "{}", "b": "c"})
        save_tensors(tmp_path / "torch.safetensors", {"features": torch.from_numpy(array)}, metadata={"kgzsl": "{}", "b": "c"})
        assert (tmp_path / "numpy.safetensors").read_bytes() == (tmp_path / "torch.safetensors").read_bytes()
