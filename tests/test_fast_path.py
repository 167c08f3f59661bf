"""The fast image path (kgzsl.vision.speed, Backbone.embed_files, draft decoding) against plain fp32 eager, on real photos."""

from __future__ import annotations

import pytest
import torch

from kgzsl.vision.backbones import load_backbone
from kgzsl.vision.images import load_image
from kgzsl.vision.samples import foolbox_imagenet_images
from kgzsl.vision.speed import fold_batchnorms, inference_copy

COSINE_MEAN, COSINE_MIN = 0.995, 0.98


@pytest.fixture(scope="module")
def photos() -> list:
    return [path for path, _ in foolbox_imagenet_images()]


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet-lite0")  # the defaults: fp32, draft decoding (a no-op on these 512-pixel photos)


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


@pytest.mark.parametrize(("precision", "draft"), [("fp32", False), ("bf16", False), ("bf16", True)])
def test_reduced_modes_hold_the_cosine_tolerance(photos, eager, precision, draft):
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
    backbone = load_backbone("efficientnet-lite0")
    assert backbone.draft and backbone.describe()["transform"]["draft"] is True
    plain = load_backbone("efficientnet-lite0", draft=False)
    drafted, full = backbone.embed_files([big])[0], plain.embed_files([big])[0]
    assert torch.nn.functional.cosine_similarity(drafted, full).item() > 0.995


def test_unknown_precision_is_refused():
    from kgzsl.errors import KgzslError

    with pytest.raises(KgzslError, match="precision 'int4'"):
        load_backbone("efficientnet-lite0", precision="int4")
