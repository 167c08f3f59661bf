"""ImageNet class lists (wnids) from registry packages, never from the web.

The ``timm`` wheel carries the ILSVRC-2012 list (1,000 wnids, sorted: the index order of every
ImageNet-1k classifier) and Google's ImageNet-21k list (21,843 wnids). kgzsl reads those files without
importing timm.
"""

from __future__ import annotations

from kgzsl.resources import package_file

TIMM_HINT = "pip install --no-deps timm"


def _read_wnids(relative: str) -> list[str]:
    path = package_file("timm", f"data/_info/{relative}", TIMM_HINT)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def imagenet1k_wnids() -> list[str]:
    """The 1,000 ILSVRC-2012 wnids in classifier index order (sorted)."""
    return _read_wnids("imagenet_synsets.txt")


def imagenet21k_wnids() -> list[str]:
    """The 21,843 wnids of Google's ImageNet-21k (fall 2011) release, in its index order."""
    return _read_wnids("imagenet21k_goog_synsets.txt")


def imagenet21k_unseen_wnids() -> list[str]:
    """ImageNet-21k classes that are not ImageNet-1k classes: the standard "All" unseen set."""
    seen = set(imagenet1k_wnids())
    return [w for w in imagenet21k_wnids() if w not in seen]
