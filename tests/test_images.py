"""Image loading (modes, EXIF, bad files), preprocessing and ImageFolder listing, on real ImageNet photos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kgzsl.errors import KgzslError
from kgzsl.vision.backbones.efficientnet_lite import lite_transform
from kgzsl.vision.backbones.resnet import resnet_transform
from kgzsl.vision.images import (
    MIN_IMAGE_SIDE,
    ImageTransform,
    center_crop,
    list_image_folder,
    load_image,
    resize_short_side,
)


@pytest.fixture(scope="module")
def photo() -> Path:
    """A real ImageNet validation photo shipped in the foolbox wheel (never imported, only read)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the foolbox wheel (real ImageNet sample images) is not installed")
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("imagenet_*.jpg"))
    if not files:
        pytest.skip("the foolbox wheel has no ImageNet sample images")
    return files[0]


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_rgb_photo_loads_unchanged(photo):
    image = load_image(photo)
    with Image.open(photo) as raw:
        assert image.mode == "RGB" and image.size == raw.size
        assert np.array_equal(np.asarray(image), np.asarray(raw.convert("RGB")))


def test_modes_become_rgb(photo, tmp_path):
    rgb = load_image(photo)
    reference = np.asarray(rgb, dtype=np.int16)
    variants = {
        "gray.png": _save(rgb.convert("L"), tmp_path / "gray.png"),
        "bilevel.png": _save(rgb.convert("1"), tmp_path / "bilevel.png"),
        "palette.gif": _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), tmp_path / "palette.gif"),
        "cmyk.jpg": _save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95),
        "cmyk.tif": _save(rgb.convert("CMYK"), tmp_path / "cmyk.tif"),
        "rgba.png": _save(rgb.convert("RGBA"), tmp_path / "rgba.png"),
        "gray16.png": _save(Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257), tmp_path / "gray16.png"),
    }
    for name, path in variants.items():
        image = load_image(path)
        assert image.mode == "RGB", name
        assert image.size == rgb.size, name
    gray = np.asarray(load_image(variants["gray.png"]))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert np.array_equal(gray[..., 0], np.asarray(rgb.convert("L")))
    # 16-bit grayscale is scaled to 8 bits (65535 -> 255), not clipped at 255.
    assert np.array_equal(np.asarray(load_image(variants["gray16.png"]))[..., 0], np.asarray(rgb.convert("L")))
    # CMYK and palette round trips stay close to the original colours.
    for name in ("cmyk.jpg", "cmyk.tif", "palette.gif"):
        diff = np.abs(np.asarray(load_image(variants[name]), dtype=np.int16) - reference).mean()
        assert diff < 12, (name, diff)
    assert np.array_equal(np.asarray(load_image(variants["rgba.png"])), np.asarray(rgb))


def test_alpha_is_composited_on_white(photo, tmp_path):
    rgba = load_image(photo).convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, dtype=np.uint8)
    alpha[:, : rgba.size[0] // 2] = 0  # left half fully transparent
    alpha[:, rgba.size[0] // 2 : rgba.size[0] // 2 + 10] = 128  # a half-transparent stripe
    rgba.putalpha(Image.fromarray(alpha))
    pixels = np.asarray(load_image(_save(rgba, tmp_path / "alpha.png")), dtype=np.int16)
    assert (pixels[:, : rgba.size[0] // 2] == 255).all()
    original = np.asarray(rgba.convert("RGB"), dtype=np.int16)
    assert np.array_equal(pixels[:, -5:], original[:, -5:])
    stripe = pixels[:, rgba.size[0] // 2 + 2]
    expected = (original[:, rgba.size[0] // 2 + 2].astype(np.float64) * 128 + 255 * 127) / 255
    assert np.abs(stripe - expected).max() <= 1
    # a palette image with a transparent index and a gray+alpha image go the same way
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    palette.paste(1, (10, 0, 20, 20))
    loaded = np.asarray(load_image(_save(palette, tmp_path / "trans.png", transparency=0)))
    assert (loaded[:, :10] == 255).all() and (loaded[:, 10:] == (200, 100, 50)).all()
    la = Image.merge("LA", (Image.new("L", (20, 20), 40), Image.new("L", (20, 20), 0)))
    assert (np.asarray(load_image(_save(la, tmp_path / "la.png"))) == 255).all()


def test_exif_orientation_is_applied(photo, tmp_path):
    rgb = load_image(photo).resize((64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = _save(rgb, tmp_path / "sideways.jpg", exif=exif, quality=98)
    image = load_image(path)
    assert image.size == (48, 64)
    expected = np.asarray(rgb.transpose(Image.Transpose.ROTATE_270), dtype=np.int16)
    assert np.abs(np.asarray(image, dtype=np.int16) - expected).mean() < 4


def test_bad_files_raise_naming_the_file(photo, tmp_path):
    text = tmp_path / "page.jpg"
    text.write_text("<html>404 not found</html>")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[: photo.stat().st_size // 3])
    tiny = _save(Image.new("RGB", (1, 1), (255, 0, 0)), tmp_path / "tiny.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (text, truncated, tiny, empty, tmp_path / "missing.jpg", tmp_path):
        with pytest.raises(KgzslError) as info:
            load_image(path)
        assert str(path) in str(info.value)
    with pytest.raises(KgzslError, match=rf"1x1 pixels.*minimum is {MIN_IMAGE_SIDE}"):
        load_image(tiny)
    with pytest.raises(KgzslError, match="missing.jpg does not exist"):
        load_image(tmp_path / "missing.jpg")


def test_resize_short_side_keeps_aspect_and_antialiases():
    image = Image.new("RGB", (400, 300))
    assert resize_short_side(image, 256).size == (341, 256)
    assert resize_short_side(image.rotate(90, expand=True), 256).size == (256, 341)
    assert center_crop(resize_short_side(image, 256), 224).size == (224, 224)
    # a one-pixel checkerboard shrunk 8x must average to mid-gray (point sampling would give 0 or 255)
    board = Image.fromarray(((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)).convert("RGB")
    for resample in ("bilinear", "bicubic"):
        small = np.asarray(resize_short_side(board, 32, resample), dtype=np.float64)
        assert np.abs(small - 127.5).max() < 10, resample
    with pytest.raises(KgzslError, match="nearest"):
        resize_short_side(image, 10, "nearest")


def test_lite_preprocessing_is_minus_127_over_128():
    transform = lite_transform("efficientnet-lite0")
    assert (transform.resize, transform.crop) == (256, 224)
    assert (lite_transform("efficientnet-lite1").crop, lite_transform("efficientnet-lite2").crop) == (240, 260)
    image = Image.new("RGB", (300, 260), (255, 127, 0))
    image.putpixel((150, 130), (64, 200, 31))
    x = transform(image)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    corner = x[:, 0, 0]
    assert torch.allclose(corner, torch.tensor([1.0, 0.0, -127 / 128]))
    # ResNets: (pixel / 255 - mean) / std with the ImageNet statistics
    y = resnet_transform()(Image.new("RGB", (256, 256), (255, 127, 0)))
    expected = (torch.tensor([255, 127, 0]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(y[:, 100, 100], expected, atol=1e-5)


def test_transform_of_a_real_photo(photo):
    x = ImageTransform(resize=256, crop=224, mean=(127.0,) * 3, std=(128.0,) * 3)(load_image(photo))
    assert x.shape == (3, 224, 224)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.1


def test_list_image_folder(tmp_path, photo):
    (tmp_path / "n02" / "sub").mkdir(parents=True)
    (tmp_path / "n01").mkdir()
    (tmp_path / ".cache").mkdir()
    (tmp_path / "empty_class").mkdir()
    for rel in ("n02/b.jpg", "n02/A.JPEG", "n02/sub/c.png", "n01/z.webp", "n01/.hidden.jpg", ".cache/x.jpg", "root.jpg"):
        (tmp_path / rel).write_bytes(photo.read_bytes())
    (tmp_path / "n01" / "notes.txt").write_text("not an image")
    items = list_image_folder(tmp_path)
    assert [item.relpath for item in items] == ["n01/z.webp", "n02/A.JPEG", "n02/b.jpg", "n02/sub/c.png"]
    assert [item.label for item in items] == ["n01", "n02", "n02", "n02"]
    assert all(item.path == tmp_path / item.relpath for item in items)
    with pytest.raises(KgzslError, match="does not exist"):
        list_image_folder(tmp_path / "nope")
    with pytest.raises(KgzslError, match="no class sub-folders"):
        list_image_folder(tmp_path / "empty_class")
    (tmp_path / "only_text" / "c").mkdir(parents=True)
    (tmp_path / "only_text" / "c" / "a.txt").write_text("x")
    with pytest.raises(KgzslError, match="no image files"):
        list_image_folder(tmp_path / "only_text")
