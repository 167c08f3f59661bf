"""The fast image path (kgzsl.vision.speed, the ONNX Runtime engine, Backbone.embed_files, draft decoding) against
plain fp32 eager, on real photos; the ONNX model cache (atomic, rebuilt when stale)."""

from __future__ import annotations

import pytest
import torch

from kgzsl.errors import KgzslError
from kgzsl.vision import onnx_backend
from kgzsl.vision.backbones import load_backbone
from kgzsl.vision.images import ImageTransform, load_image
from kgzsl.vision.samples import foolbox_imagenet_images
from kgzsl.vision.speed import fold_batchnorms, inference_copy

needs_onnx = pytest.mark.skipif(not onnx_backend.onnx_available(), reason="onnxruntime / onnx are not installed")

COSINE_MEAN, COSINE_MIN = 0.995, 0.98


@pytest.fixture(scope="module")
def photos() -> list:
    return [path for path, _ in foolbox_imagenet_images()]


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet-lite0", precision="fp32")  # draft decoding: a no-op on these 512-pixel photos


@pytest.fixture(scope="module")
def eager(lite0, photos) -> torch.Tensor:
    """Plain fp32 eager features: the unfolded network in NCHW, images transformed one by one."""
    batch = torch.stack([lite0.transform(load_image(path)) for path in photos])
    with torch.inference_mode():
        return lite0.model.eval()(batch)


def test_default_features_equal_run_to_run(lite0, photos):
    first, good, bad = lite0.embed_files(photos, batch_size=8)
    second, _, _ = lite0.embed_files(photos, batch_size=8)
    assert torch.equal(first, second) and good == [str(p) for p in photos] and bad == []


def test_features_do_not_depend_on_batching_or_workers(lite0, photos):
    whole = lite0.embed_files(photos, batch_size=32, workers=2)[0]
    assert torch.equal(lite0.embed_files(photos, batch_size=3, workers=0)[0], whole)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.equal(lite0.embed_files(photos[:4], batch_size=1)[0], whole[:4])
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before  # the forward pass restores torch's thread count


def test_embed_files_matches_one_by_one(lite0, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"<html>not found</html>")
    features, good, bad = lite0.embed_files([photos[0], broken, *photos[1:5]], batch_size=2)
    one_by_one = torch.cat([lite0.features(lite0.transform(load_image(path))[None]) for path in photos[:5]])
    assert good == [str(p) for p in photos[:5]] and [b["path"] for b in bad] == [str(broken)]
    assert torch.equal(features, one_by_one)
    assert torch.equal(lite0.embed([load_image(p) for p in photos[:5]], batch_size=2), one_by_one)


def test_prepare_is_normalise_on_one_thread(lite0, photos):
    pixels = [lite0.transform.pixels(load_image(path)) for path in photos[:3]]
    before = torch.get_num_threads()
    prepared = lite0.prepare(pixels)
    assert torch.equal(prepared, lite0.transform.normalise(pixels)) and torch.get_num_threads() == before
    assert prepared.is_contiguous(memory_format=torch.channels_last)


def test_fast_fp32_matches_eager(lite0, photos, eager):
    fast = lite0.embed_files(photos)[0]
    assert ((fast - eager).norm(dim=1) / eager.norm(dim=1)).max() < 1e-4


def test_folding_batchnorm_changes_features_below_1e4(lite0, eager, photos):
    batch = torch.stack([lite0.transform(load_image(path)) for path in photos])
    folded = inference_copy(lite0.model)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 0
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.model.modules()) > 0  # the loaded model is untouched
    with torch.inference_mode():
        out = folded(batch)
    assert ((out - eager).norm(dim=1) / eager.norm(dim=1)).max() < 1e-4


def test_fold_resnet_batchnorms():
    from kgzsl.vision.backbones.resnet import ResNet

    torch.manual_seed(0)
    model = ResNet("resnet50").eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        expected = model(x)
        assert fold_batchnorms(model) == 53
        out = model(x)
    assert ((out - expected).norm(dim=1) / expected.norm(dim=1)).max() < 1e-4


@pytest.mark.parametrize(("precision", "draft"), [("fp32", False), ("bf16", False), ("bf16", True),
                                                pytest.param("int8", True, marks=needs_onnx)])
def test_reduced_modes_hold_the_cosine_tolerance(photos, eager, precision, draft):
    """int8 is calibrated on these photos (and darknet's); the 875 held-out photos are in docs/benchmarks.md."""
    backbone = load_backbone("efficientnet-lite0", precision=precision, draft=draft)
    features = backbone.embed_files(photos)[0]
    assert features.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(features, eager)
    assert cosine.mean() >= COSINE_MEAN and cosine.min() >= COSINE_MIN
    assert torch.equal(backbone.embed_files(photos)[0], features)  # deterministic too
    assert backbone.describe().get("precision", "fp32") == precision


def test_draft_decodes_large_jpegs_smaller(tmp_path, photos):
    from PIL import Image

    big = tmp_path / "big.jpg"
    Image.open(photos[0]).convert("RGB").resize((2400, 1800)).save(big, quality=95)
    assert load_image(big).size == (2400, 1800)
    assert load_image(big, draft=512).size == (1200, 900)  # 1/2 scale: 1/4 would leave 450 < 512
    assert load_image(photos[0], draft=512).size == load_image(photos[0]).size  # small photos decode in full
    backbone = load_backbone("efficientnet-lite0", precision="fp32")
    assert backbone.draft and backbone.describe()["transform"]["draft"] is True
    plain = load_backbone("efficientnet-lite0", precision="fp32", draft=False)
    drafted, full = backbone.embed_files([big])[0], plain.embed_files([big])[0]
    assert torch.nn.functional.cosine_similarity(drafted, full).item() > 0.995


def test_unknown_precision_is_refused():
    with pytest.raises(KgzslError, match="precision 'int4'"):
        load_backbone("efficientnet-lite0", precision="int4")


@needs_onnx
def test_onnx_fp32_is_torch_fp32_and_batch_invariant(photos, eager):
    backbone = load_backbone("efficientnet-lite0", precision="fp32", engine="onnx")
    assert isinstance(backbone.runner, onnx_backend.OnnxRunner)
    features = backbone.embed_files(photos)[0]
    assert ((features - eager).norm(dim=1) / eager.norm(dim=1)).max() < 1e-5
    assert torch.equal(backbone.embed_files(photos, batch_size=3, workers=0)[0], features)
    assert torch.equal(backbone.embed_files(photos[:2], batch_size=1)[0], features[:2])
    with pytest.raises(KgzslError, match=r"takes images \[B, 3, 224, 224\]"):
        backbone.features(torch.zeros(1, 3, 200, 200))


@needs_onnx
def test_int8_is_built_the_same_from_scratch(photos, tmp_path, monkeypatch):
    from kgzsl.core.resources import cache_dir

    cached = load_backbone("efficientnet-lite0", precision="int8").embed_files(photos[:6])[0]
    (tmp_path / "darknet").symlink_to(cache_dir() / "darknet")  # the calibration photos stay where they are
    monkeypatch.setenv("KGZSL_CACHE", str(tmp_path))  # a fresh model cache: export, calibrate and quantise again
    fresh = load_backbone("efficientnet-lite0", precision="int8")
    assert fresh.runner.path.parent == tmp_path / "models" / "onnx"
    assert torch.equal(fresh.embed_files(photos[:6])[0], cached)


@needs_onnx
def test_default_precision_is_int8_where_onnx_runs_it(photos, monkeypatch):
    """precision="auto" (the default) is int8 on the CPU with ONNX Runtime, fp32 in torch; the features folder and the
    run record which, and auto's features are int8's, bit for bit."""
    from kgzsl.core.devices import cpu_has_vnni
    from kgzsl.vision import backbones

    if cpu_has_vnni():
        auto = load_backbone("efficientnet-lite0")
        assert auto.precision == "int8" and auto.describe()["precision"] == "int8"
        int8 = load_backbone("efficientnet-lite0", precision="int8")
        assert torch.equal(auto.embed_files(photos[:4])[0], int8.embed_files(photos[:4])[0])
    monkeypatch.setattr(backbones, "cpu_has_vnni", lambda: False)  # int8 kernels may saturate without VNNI
    assert load_backbone("efficientnet-lite0").precision == "fp32"
    monkeypatch.setattr(backbones, "cpu_has_vnni", lambda: True)
    assert load_backbone("efficientnet-lite0").precision == "int8"
    assert load_backbone("efficientnet-lite0", precision="fp32").precision == "fp32"
    assert load_backbone("efficientnet-lite0", engine="torch").precision == "fp32"
    monkeypatch.setenv("KGZSL_ENGINE", "torch")
    assert load_backbone("efficientnet-lite0").precision == "fp32"
    assert "precision" not in load_backbone("efficientnet-lite0").describe()  # fp32 is recorded by omission, as before


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    from kgzsl.core.devices import cpu_has_vnni

    (tmp_path / "vnni").write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16\n")
    (tmp_path / "avx2").write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnnix\n")
    assert cpu_has_vnni(str(tmp_path / "vnni")) and not cpu_has_vnni(str(tmp_path / "avx2"))
    assert not cpu_has_vnni(str(tmp_path / "missing"))


def test_torch_engine_and_precision_checks():
    assert not isinstance(load_backbone("efficientnet-lite0", engine="torch").runner, onnx_backend.OnnxRunner)
    with pytest.raises(KgzslError, match="int8 runs on ONNX Runtime"):
        load_backbone("efficientnet-lite0", precision="int8", engine="torch")
    with pytest.raises(KgzslError, match="engine 'tensorrt'"):
        load_backbone("efficientnet-lite0", engine="tensorrt")


# ------------------------------------------------------------------------------------ the ONNX model cache
TINY = ImageTransform(resize=36, crop=32, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))  # hand-written fixture


class TinyNet(torch.nn.Module):
    """Hand-written unit fixture: conv, batch norm (folded on export), ReLU6, global pooling."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv, self.bn = torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8)
        self.bn.running_mean.uniform_(-0.2, 0.2)
        self.bn.running_var.uniform_(0.5, 1.5)
        self.eval()

    def conv_bn_pairs(self) -> list:
        return [(self, "conv", "bn")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KGZSL_CACHE", str(tmp_path))
    return tmp_path / "models" / "onnx"


def _agrees(runner, net) -> bool:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return torch.allclose(runner(x), net(x), atol=1e-5)


@needs_onnx
def test_onnx_cache_is_written_once_and_atomically(cache):
    net = TinyNet()
    runner = onnx_backend.onnx_runner(lambda: net, "tiny", "fp32", TINY)
    assert [p.name for p in cache.iterdir()] == [runner.path.name]  # no temporary left beside it
    assert _agrees(runner, net)
    stamp = runner.path.stat().st_mtime_ns
    again = onnx_backend.onnx_runner(lambda: net, "tiny", "fp32", TINY)
    assert again.path == runner.path and runner.path.stat().st_mtime_ns == stamp  # read, not rebuilt


@needs_onnx
def test_a_failed_write_leaves_no_cached_model(cache, monkeypatch, caplog):
    import os

    def full_disk(source, target):
        raise OSError("disk full")

    net = TinyNet()
    monkeypatch.setattr(os, "replace", full_disk)  # the temporary is written, the rename into place fails
    runner = onnx_backend.onnx_runner(lambda: net, "tiny", "fp32", TINY)
    assert "cannot cache the ONNX model" in caplog.text
    assert list(cache.iterdir()) == [] and _agrees(runner, net)  # no temporary left; the model runs from memory


@needs_onnx
def test_onnx_cache_is_rebuilt_when_corrupt_or_stale(cache):
    net = TinyNet()
    path = onnx_backend.onnx_runner(lambda: net, "tiny", "fp32", TINY).path
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert _agrees(onnx_backend.onnx_runner(lambda: net, "tiny", "fp32", TINY), net)
    other = TinyNet(seed=1)  # other weights: another key, another file
    other_path = onnx_backend.onnx_runner(lambda: other, "tiny", "fp32", TINY).path
    assert other_path != path and _agrees(onnx_backend.onnx_runner(lambda: other, "tiny", "fp32", TINY), other)
    path.write_bytes(other_path.read_bytes())  # a readable model whose stored key is not this file's
    rebuilt = onnx_backend.onnx_runner(lambda: net, "tiny", "fp32", TINY)
    assert rebuilt.path == path and _agrees(rebuilt, net)
