"""Backbones: real EfficientNet-Lite weights on real ImageNet photos; ResNets against torchvision's key layout."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from kgzsl.errors import KgzslError
from kgzsl.vision.backbones import load_backbone
from kgzsl.vision.backbones.resnet import ResNet
from kgzsl.vision.images import load_image

LITE = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]

# torchvision's state dicts: every conv has a weight, every batch norm five entries, fc two.
# resnet50 = 53 convs + 53 BNs, resnet101 = 104 + 104.
TORCHVISION_KEYS = {"resnet50": 53 * 6 + 2, "resnet101": 104 * 6 + 2}


@pytest.fixture(scope="module")
def imagenet_photos() -> list[tuple[Path, int]]:
    """The 20 real ImageNet validation photos of the foolbox wheel, with their 1k label index."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the foolbox wheel (real ImageNet sample images) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    found = [(p, int(re.fullmatch(r"imagenet_\d+_(\d+)", p.stem).group(1))) for p in sorted(folder.glob("imagenet_*.jpg"))]
    if len(found) < 10:
        pytest.skip("the foolbox wheel lacks its ImageNet sample images")
    return found


def _lite(variant: str):
    try:
        return load_backbone(variant, precision="fp32")  # these tests hold the package's own fp32 network to ~1e-4
    except KgzslError as exc:
        if "not installed" in str(exc):
            pytest.skip(str(exc))
        raise


@pytest.fixture(scope="module")
def lite0():
    return _lite("efficientnet-lite0")


@pytest.mark.parametrize("variant", LITE)
def test_lite_classifies_real_photos(variant, imagenet_photos):
    backbone = _lite(variant)
    assert backbone.dim == 1280 and backbone.name == variant
    batch = torch.stack([backbone.transform(load_image(path)) for path, _ in imagenet_photos])
    features = backbone.features(batch)
    assert features.shape == (len(imagenet_photos), 1280) and features.dtype == torch.float32
    # the pooled features are exactly what the package model's classifier consumes
    with torch.inference_mode():
        logits = backbone.model.net(batch)
    weight, bias = backbone.classifier
    assert weight.shape == (1000, 1280) and bias.shape == (1000,)
    assert torch.allclose(features @ weight.T + bias, logits, atol=1e-4, rtol=1e-4)
    assert torch.allclose(backbone.logits(features), logits, atol=1e-4, rtol=1e-4)
    labels = torch.tensor([label for _, label in imagenet_photos])
    top5 = logits.topk(5, dim=1).indices
    top1_acc = (top5[:, 0] == labels).float().mean().item()
    top5_acc = (top5 == labels[:, None]).any(1).float().mean().item()
    print(f"{variant}: top-1 {top1_acc:.2f}, top-5 {top5_acc:.2f} on {len(labels)} ImageNet val photos")
    assert top1_acc >= 0.75 and top5_acc >= 0.85


def test_lite_classes_are_imagenet1k_order(lite0):
    classes = lite0.classes
    assert len(classes) == 1000 and classes == sorted(classes) and classes[0] == "n01440764"


def test_features_are_identical_across_calls(lite0, imagenet_photos):
    batch = torch.stack([lite0.transform(load_image(path)) for path, _ in imagenet_photos[:4]])
    first, second = lite0.features(batch), lite0.features(batch.clone())
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[1])


def test_features_reject_wrong_shapes(lite0):
    with pytest.raises(KgzslError, match=r"\[B, 3, H, W\]"):
        lite0.features(torch.zeros(3, 224, 224))


def test_lite_reset_parameters_randomises(lite0):
    from kgzsl.vision.backbones.efficientnet_lite import EfficientNetLite

    model = EfficientNetLite("efficientnet-lite0")
    model.load_state_dict(lite0.model.state_dict())
    before = model.fc.weight.detach().clone()
    model.reset_parameters()
    assert not torch.equal(before, model.fc.weight)


def _random_resnet_file(tmp_path: Path, arch: str, **save) -> tuple[Path, dict]:
    torch.manual_seed(0)
    model = ResNet(arch)
    for module in model.modules():  # non-trivial BN statistics, so a mis-wired layer shows in the outputs
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.1, 0.3)
    state = model.state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path, **save)
    return path, state


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_resnet_loads_torchvision_layout(arch, tmp_path):
    path, state = _random_resnet_file(tmp_path, arch)
    assert len(state) == TORCHVISION_KEYS[arch]
    for key in ("conv1.weight", "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.running_mean", "layer4.2.conv3.weight", "layer4.2.bn3.bias", "fc.weight", "fc.bias"):
        assert key in state
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: stride on the 3x3 conv
    assert ResNet(arch).load_state_dict(state, strict=True).missing_keys == []

    backbone = load_backbone(path)  # arch told from the keys
    assert backbone.name == arch and backbone.dim == 2048
    assert backbone.transform.crop == 224 and backbone.transform.resize == 256
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    features = backbone.features(x)
    assert features.shape == (2, 2048)
    with torch.inference_mode():
        logits = backbone.model.fc(backbone.model(x))
    weight, bias = backbone.classifier
    assert torch.allclose(features @ weight.T + bias, logits, atol=1e-4)
    assert torch.equal(weight, state["fc.weight"])
    assert load_backbone(path, arch=arch).name == arch


def test_resnet_checkpoint_variants(tmp_path):
    path, state = _random_resnet_file(tmp_path, "resnet50")
    reference = load_backbone(path)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    expected = reference.features(x)
    # DataParallel "module." prefix, a {"state_dict": ...} wrapper and safetensors all load the same network
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    assert torch.equal(load_backbone(wrapped).features(x), expected)
    from kgzsl.core.files import save_tensors

    st = tmp_path / "r50.safetensors"
    save_tensors(st, {k: v for k, v in state.items()})
    assert torch.equal(load_backbone(st).features(x), expected)
    # a fine-tuned head with another number of classes
    small = dict(state, **{"fc.weight": torch.randn(10, 2048), "fc.bias": torch.zeros(10)})
    torch.save(small, tmp_path / "ten.pth")
    ten = load_backbone(tmp_path / "ten.pth")
    assert ten.classifier[0].shape == (10, 2048) and ten.classes is None


def test_resnet_errors(tmp_path):
    path, state = _random_resnet_file(tmp_path, "resnet50")
    with pytest.raises(KgzslError, match="holds a resnet50, not the resnet101"):
        load_backbone(path, arch="resnet101")
    missing = dict(state)
    del missing["layer3.1.bn2.running_mean"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(KgzslError, match=r"missing.pth does not match torchvision's resnet50: 1 missing keys \(e.g. layer3.1.bn2.running_mean"):
        load_backbone(tmp_path / "missing.pth")
    extra = dict(state, **{"layer1.0.se.weight": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(KgzslError, match="1 unexpected keys"):
        load_backbone(tmp_path / "extra.pth")
    shape = dict(state, **{"layer2.0.conv1.weight": torch.zeros(128, 256, 3, 3)})
    torch.save(shape, tmp_path / "shape.pth")
    with pytest.raises(KgzslError, match="size mismatch"):
        load_backbone(tmp_path / "shape.pth")
    basic = {k: v for k, v in state.items() if ".conv3." not in k and ".bn3." not in k}
    torch.save(basic, tmp_path / "basic.pth")
    with pytest.raises(KgzslError, match="basic-block"):
        load_backbone(tmp_path / "basic.pth")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(KgzslError, match="not a torchvision ResNet"):
        load_backbone(tmp_path / "other.pth")
    torch.save(ResNet("resnet50"), tmp_path / "pickled.pth")  # a whole pickled model: refused, never executed
    with pytest.raises(KgzslError, match="weights_only"):
        load_backbone(tmp_path / "pickled.pth")
    with pytest.raises(KgzslError, match="neither a known name"):
        load_backbone("efficientnet-b7")
    with pytest.raises(KgzslError, match="--arch resnet50 does not apply"):
        load_backbone("efficientnet-lite0", arch="resnet50")


def test_resnet_reset_parameters():
    model = ResNet("resnet50")
    before = model.layer1[0].conv1.weight.detach().clone()
    model.layer1[0].bn1.running_mean.fill_(3.0)
    model.reset_parameters()
    assert not torch.equal(before, model.layer1[0].conv1.weight)
    assert float(model.layer1[0].bn1.running_mean.abs().max()) == 0.0
