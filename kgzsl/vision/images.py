"""Loading images safely as RGB, CNN preprocessing, and listing ImageFolder-style trees.

Real photo collections hold every kind of file: grayscale and palette GIFs, CMYK JPEGs, 16-bit PNGs,
transparent PNGs, phone photos stored sideways with an EXIF orientation tag, truncated downloads and
HTML error pages saved as ``.jpg``. :func:`load_image` turns the good ones into plain 8-bit RGB and
rejects the bad ones with a :class:`~kgzsl.errors.KgzslError` that names the file, so a feature
extraction run can record them and carry on.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kgzsl.errors import KgzslError

#: File extensions an image folder is scanned for (compared lower-case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

#: The smallest image side accepted: anything smaller holds no information a CNN could use.
MIN_IMAGE_SIDE = 8

RESAMPLING = {"bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values, antialiased when shrinking


def _to_rgb(image):
    """Convert any Pillow mode to 8-bit RGB; transparent pixels are composited on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":  # palette: keep its transparency, if any, for compositing below
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    elif mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    elif mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (or 32-bit) grayscale: Pillow's own convert("L") clips at 255 instead of scaling.
        values = np.asarray(image, dtype=np.float64)
        peak = values.max(initial=0)
        if mode == "F":
            top = 1.0 if peak <= 1.0 else 255.0  # float images are 0..1 or 0..255
        else:
            top = 255.0 if mode == "I" and peak <= 255 else 65535.0  # "I" may hold 8- or 16-bit values
        gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "CMYK" and image.info.get("icc_profile"):
        converted = _icc_to_srgb(image)
        if converted is not None:
            return converted
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX, ...


def _icc_to_srgb(image):
    """Colour-manage an image with an embedded ICC profile into sRGB; ``None`` where that fails."""
    try:
        from PIL import ImageCms  # lazy: ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # a broken profile: fall back to Pillow's plain conversion
        return None


def load_image(path: str | os.PathLike, min_side: int = MIN_IMAGE_SIDE, draft: int | None = None):
    """Open ``path`` as an 8-bit RGB ``PIL.Image`` with its EXIF orientation applied.

    ``draft``: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose short side is still at least
    ``draft`` pixels (Pillow's ``Image.draft``: much less decoding work for photos far larger than the network
    input); other formats and smaller JPEGs decode in full. Grayscale, palette, CMYK (colour-managed when it embeds an ICC profile), 16-bit and images
    with alpha (composited on white) all come back as RGB. A missing, unreadable, truncated or
    too-small file raises :class:`KgzslError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise KgzslError(f"image {path} does not exist" if not path.exists() else f"image {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                if draft and handle.format == "JPEG":
                    width, height = handle.size
                    short = min(width, height)
                    if short >= 2 * draft:  # else no DCT scale keeps the short side >= draft
                        handle.draft(None, (-(-width * draft // short), -(-height * draft // short)))
                handle.load()  # decode now so a truncated file fails here, not later
                image = ImageOps.exif_transpose(handle) or handle
                image = _to_rgb(image)
                image.load()
    except UnidentifiedImageError:
        raise KgzslError(f"image {path} is not an image file Pillow can read (corrupt, or not an image)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise KgzslError(f"image {path} is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KgzslError(f"image {path} is corrupt or truncated ({text})") from None
    return _large_enough(image, path, min_side)


def rgb_image(image, name: str = "image", min_side: int = MIN_IMAGE_SIDE):
    """An in-memory ``PIL.Image`` as 8-bit RGB, converted and size-checked as :func:`load_image` does a file's
    (``name`` is what an error calls it)."""
    if not isinstance(image, Image.Image):
        raise KgzslError(f"{name} is a {type(image).__name__}, not a PIL image")
    return _large_enough(_to_rgb(image), name, min_side)


def _large_enough(image, name: str | os.PathLike, min_side: int):
    """``image`` itself if both its sides are at least ``min_side`` pixels; a KgzslError naming it otherwise."""
    width, height = image.size
    if min(width, height) < min_side:
        raise KgzslError(f"image {name} is {width}x{height} pixels: too small (the minimum is {min_side} pixels a side)")
    return image


def resize_short_side(image, size: int, resample: str = "bicubic"):
    """Resize so the shorter side is ``size`` pixels, keeping the aspect ratio (PIL, antialiased)."""
    if resample not in RESAMPLING:
        raise KgzslError(f"resample {resample!r} is not one of {', '.join(RESAMPLING)}")
    width, height = image.size
    if width <= height:
        new = (size, max(1, round(height * size / width)))
    else:
        new = (max(1, round(width * size / height)), size)
    if new == (width, height):
        return image
    return image.resize(new, resample=RESAMPLING[resample])


def center_crop(image, size: int):
    """Crop the central ``size`` x ``size`` square (the image must be at least that large)."""
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> normalised float32 tensor [3, crop, crop]: resize short side, centre crop, normalise.

    ``mean`` and ``std`` are on the 0..255 pixel scale: ``x = (pixel - mean) / std`` per channel.
    EfficientNet-Lite uses mean 127, std 128; torchvision ResNets use the ImageNet statistics
    (0.485, 0.456, 0.406) * 255 and (0.229, 0.224, 0.225) * 255.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bicubic"

    def __call__(self, image):
        return self.normalise(self.pixels(image)[None])[0].contiguous()

    def pixels(self, image) -> np.ndarray:
        """Resized and centre-cropped 8-bit pixels [crop, crop, 3] (the cheap per-image part, batched later)."""
        return np.asarray(center_crop(resize_short_side(image, self.resize, self.resample), self.crop))

    def normalise(self, pixels, dtype=None):
        """8-bit pixels [B, H, W, 3] (array or tensor) -> float tensor [B, 3, H, W], channels-last in memory.

        One vectorised pass per batch: ``(pixel - mean) / std`` in float32, then cast to ``dtype`` if given;
        the same values, image by image, as normalising each image alone.
        """
        import torch  # lazy: torch

        batch = (pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.array(pixels, dtype=np.uint8))).permute(0, 3, 1, 2)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        out = (batch.float() - mean).div_(std).contiguous(memory_format=torch.channels_last)
        return out if dtype is None else out.to(dtype)

    def normalise_array(self, pixels) -> np.ndarray:
        """:meth:`normalise` in numpy, for engines that take arrays (ONNX Runtime): 8-bit pixels [B, H, W, 3] ->
        float32 [B, 3, H, W], C-contiguous. Bit-equal to :meth:`normalise` (the same float32 subtraction, then
        division, on each value), without torch."""
        batch = np.asarray(pixels, dtype=np.uint8)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        out = (batch.astype(np.float32) - mean) / std
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def describe(self) -> dict:
        """A JSON-able record of the preprocessing (stored beside extracted features)."""
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std), "resample": self.resample}


#: a drafted JPEG keeps a short side of at least this many times the resize size (see Backbone's ``draft``)
DRAFT_FACTOR = 2
#: EfficientNet-Lite's evaluation resize: the short side to crop / 0.875, then a centre crop (TF reference eval)
LITE_CROP_FRACTION = 0.875


def lite_preprocessing(resolution: int) -> ImageTransform:
    """EfficientNet-Lite's evaluation preprocessing at its input ``resolution``: mean 127, std 128 on 0..255 pixels
    (torch-free, so ``kgzsl features`` can start decoding before torch is imported)."""
    return ImageTransform(resize=int(resolution / LITE_CROP_FRACTION), crop=resolution, mean=(127.0, 127.0, 127.0),
                          std=(128.0, 128.0, 128.0), resample="bicubic")


def list_images(folder: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """The image files anywhere under ``folder`` (hidden files and folders skipped), sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise KgzslError(f"image folder {root} does not exist" if not root.exists() else f"image folder {root} is not a folder")
    wanted = tuple(e.lower() for e in extensions)
    found = [path for path in root.rglob("*") if path.name.lower().endswith(wanted) and path.is_file()
             and not any(part.startswith(".") for part in path.relative_to(root).parts)]
    if not found:
        raise KgzslError(f"image folder {root} holds no image files ({', '.join(wanted)})")
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


@dataclass(frozen=True)
class ImageItem:
    """One image of an ImageFolder tree: its absolute path, path relative to the root, and class label."""

    path: Path
    relpath: str
    label: str


def list_image_folder(root: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[ImageItem]:
    """List an ImageFolder-style tree: one sub-folder per class (e.g. a wnid), images anywhere inside it.

    Classes and files come sorted (by relative path), so the list - and so shard contents - is
    the same on every machine and every run. Hidden files and folders are skipped; files lying
    directly in ``root`` belong to no class and are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise KgzslError(f"image folder {root} does not exist" if not root.exists() else f"image folder {root} is not a folder")
    wanted = tuple(e.lower() for e in extensions)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise KgzslError(f"image folder {root} has no class sub-folders (expected ROOT/<class>/<image files>)")
    items: list[ImageItem] = []
    for folder in classes:
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith(".") or not name.lower().endswith(wanted):
                    continue
                path = Path(dirpath) / name
                items.append(ImageItem(path=path, relpath=path.relative_to(root).as_posix(), label=folder.name))
    if not items:
        raise KgzslError(f"image folder {root} has no image files ({', '.join(wanted)}) in its class sub-folders")
    items.sort(key=lambda item: item.relpath)
    return items
