"""The shipped example taxonomies: each trains on every class it claims, and the photo taxonomy is well formed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from kgzsl.core.idlists import read_id_list
from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "taxonomies"
PHOTOS = DATA / "imagenet-photos.csv"
#: taxonomies whose seen classifiers come from the user's photos (`kgzsl targets`), not ImageNet-1k rows
FITTED_FROM_PHOTOS = {"imagenet-photos"}
TAXONOMY_SUFFIXES = (".csv", ".json", ".yaml", ".yml")


def taxonomy_files() -> list[Path]:
    """Every taxonomy file shipped under data/taxonomies."""
    return sorted(p for p in DATA.iterdir() if p.suffix in TAXONOMY_SUFFIXES)


def seen_file(taxonomy: Path) -> Path:
    return taxonomy.with_name(f"{taxonomy.stem}-seen.txt")


def test_every_example_says_where_its_targets_come_from():
    """A taxonomy ships a seen list (trained on ImageNet-1k rows) or is one whose targets are fitted from photos."""
    for path in taxonomy_files():
        assert seen_file(path).is_file() or path.stem in FITTED_FROM_PHOTOS, path


@pytest.mark.parametrize("taxonomy", [p for p in taxonomy_files() if seen_file(p).is_file()], ids=lambda p: p.name)
def test_example_trains_on_every_seen_class(taxonomy, glove):
    """`kgzsl train` with the default ImageNet-1k targets regresses every class of the example's seen list."""
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train

    seen = read_id_list(seen_file(taxonomy), "seen")
    graph = build_taxonomy_graph(load_taxonomy(taxonomy), seen=seen, vectors=glove)
    result = train(graph, load_targets("efficientnet-lite0"), epochs=5, seed=0)
    assert int(result.seen.sum()) == len(seen)
    assert sorted(graph.ids[i] for i in result.seen.nonzero().view(-1).tolist()) == sorted(seen)


def _photo_wnids(taxonomy) -> list[str]:
    return [taxonomy.synsets[name] for name in taxonomy.leaves()]


def test_photo_taxonomy_is_well_formed():
    """175 leaves, each pinned to a distinct wnid (150 ImageNet-1k, 25 other ImageNet-21k), one root, every node pinned."""
    from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_wnids

    taxonomy = load_taxonomy(PHOTOS)
    wnids = _photo_wnids(taxonomy)
    assert len(taxonomy.leaves()) == 175 and len(set(wnids)) == 175
    inside = set(imagenet1k_wnids())
    assert sum(w in inside for w in wnids) == 150
    assert set(wnids) <= set(imagenet21k_wnids())
    assert [n for n, ps in taxonomy.parents.items() if not ps] == ["thing"]
    assert set(taxonomy.synsets) == set(taxonomy.names)


def test_photo_taxonomy_covers_the_shared_photos():
    """Every class folder of ../shared/images is a leaf exactly once (skipped where the photos are absent)."""
    images = Path(os.environ.get("KGZSL_IMAGES", ROOT.parent / "shared" / "images"))
    if not (images / "unseen").is_dir() or not (images / "heldout").is_dir():
        pytest.skip(f"no photo tree at {images}")
    folders = sorted(p.name for part in ("unseen", "heldout") for p in (images / part).iterdir() if p.is_dir())
    wnids = _photo_wnids(load_taxonomy(PHOTOS))
    assert sorted(wnids) == folders


def test_photo_taxonomy_is_what_its_script_makes():
    """scripts/make_photo_taxonomy.py derives exactly the shipped rows from the file's own leaves."""
    spec = importlib.util.spec_from_file_location("make_photo_taxonomy", ROOT / "scripts" / "make_photo_taxonomy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.taxonomy_rows(sorted(_photo_wnids(load_taxonomy(PHOTOS))))
    shipped = [line for line in PHOTOS.read_text(encoding="utf-8").splitlines()[1:] if not line.startswith("#")]
    import csv

    assert [list(r) for r in csv.reader(shipped)] == rows


def test_photo_taxonomy_trains_on_fitted_targets_named_by_class(glove):
    """Targets named by taxonomy names (as `kgzsl targets` writes them) train every seen class of the photo taxonomy."""
    from kgzsl.propagation.targets import Targets
    from kgzsl.propagation.training import train

    taxonomy = load_taxonomy(PHOTOS)
    seen = taxonomy.leaves()[::3]
    graph = build_taxonomy_graph(taxonomy, seen=seen, vectors=glove)
    rows = torch.randn(len(seen), 1281, generator=torch.Generator().manual_seed(0))
    result = train(graph, Targets(seen, rows, "rows named by class"), epochs=5, seed=0)
    assert int(result.seen.sum()) == len(seen)
    assert not any(graph.wnids[i] is None for i in range(len(graph.ids)))  # pinned: WordNet names and glosses
