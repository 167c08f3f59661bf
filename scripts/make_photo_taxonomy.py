#!/usr/bin/env python3
"""Write ``data/taxonomies/imagenet-photos.csv``: the 175 classes of ``../shared/images`` as a user taxonomy.

The leaves are the photo classes (``unseen/`` and ``heldout/`` wnid folders) under their first WordNet
lemma; the hierarchy is derived once from WordNet 3.0 hypernym paths: every ancestor is kept at first,
then ancestors with a single child are collapsed (their child takes their parents), edges implied by
another path are dropped, and the top node is renamed ``thing``. Every node is pinned to its synset by
wnid (the third column), which gives it WordNet's names and gloss and records which photo folder a
leaf is. The wnids come from the photo folders, or, where they are absent, from the file's own leaves.

    .venv/bin/python scripts/make_photo_taxonomy.py [--images ../shared/images] [--out data/taxonomies/imagenet-photos.csv]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from collections import Counter
from pathlib import Path

from kgzsl.graph.taxonomy import load_taxonomy
from kgzsl.graph.wordnet import synset, wnid_of

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "data" / "taxonomies" / "imagenet-photos.csv"
ROOT_NAME = "thing"
HEADER = ["child", "parent", "synset", "description"]


def photo_wnids(images: Path | None, fallback: Path) -> list[str]:
    """The class wnids: the photo tree's ``unseen/`` and ``heldout/`` folder names, else the leaves pinned in ``fallback``."""
    if images is not None and (images / "unseen").is_dir() and (images / "heldout").is_dir():
        return sorted(p.name for part in ("unseen", "heldout") for p in (images / part).iterdir() if p.is_dir())
    if not fallback.is_file():
        raise SystemExit(f"make_photo_taxonomy: no photo tree at {images} and no {fallback} to read the wnids from")
    taxonomy = load_taxonomy(fallback)
    return sorted(taxonomy.synsets[name] for name in taxonomy.leaves())


def hypernym_dag(wnids: list[str]) -> dict[str, set[str]]:
    """Parents of every class and of every WordNet ancestor on any of its hypernym paths (wnids)."""
    parents: dict[str, set[str]] = {}
    for wnid in wnids:
        for path in synset(wnid).hypernym_paths():  # root first, the class last
            for parent, child in zip(path, path[1:]):
                parents.setdefault(wnid_of(child), set()).add(wnid_of(parent))
            parents.setdefault(wnid_of(path[0]), set())
    return parents


def children_of(parents: dict[str, set[str]]) -> dict[str, set[str]]:
    """The inverse of ``parents``: each node's children."""
    children: dict[str, set[str]] = {node: set() for node in parents}
    for child, ps in parents.items():
        for parent in ps:
            children[parent].add(child)
    return children


def collapse_chains(parents: dict[str, set[str]], keep: set[str]) -> dict[str, set[str]]:
    """Remove every node outside ``keep`` with a single child, re-linking that child to its parents."""
    parents = {node: set(ps) for node, ps in parents.items()}
    while True:
        children = children_of(parents)
        chain = sorted(node for node in parents if node not in keep and len(children[node]) == 1)
        if not chain:
            return parents
        node = chain[0]
        (child,) = children[node]
        parents[child] = (parents[child] - {node}) | parents.pop(node)


def ancestors(node: str, parents: dict[str, set[str]]) -> set[str]:
    """Every node above ``node``."""
    found: set[str] = set()
    stack = list(parents[node])
    while stack:
        parent = stack.pop()
        if parent not in found:
            found.add(parent)
            stack.extend(parents[parent])
    return found


def reduce_edges(parents: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop a parent edge that another parent already implies (transitive reduction of the DAG)."""
    reduced = {}
    for node, ps in parents.items():
        reduced[node] = {p for p in ps if not any(p in ancestors(q, parents) for q in ps - {p})}
    return reduced


def unique_names(nodes: list[str], parents: dict[str, set[str]], leaves: set[str]) -> dict[str, str]:
    """First lemma of each node (``_`` as spaces); colliding names of non-leaves get their first parent's in brackets."""
    first = {node: synset(node).lemma_names()[0].replace("_", " ") for node in nodes}
    count = Counter(first.values())
    names = {}
    for node in nodes:
        name = first[node]
        if count[name] > 1 and node not in leaves and parents[node]:
            name = f"{name} ({first[sorted(parents[node])[0]]})"
        names[node] = name
    if len(set(names.values())) != len(names):
        clash = sorted(n for n, c in Counter(names.values()).items() if c > 1)
        raise SystemExit(f"make_photo_taxonomy: names still collide: {clash}")
    roots = [node for node in nodes if not parents[node]]
    names[roots[0]] = ROOT_NAME
    return names


def top_down(parents: dict[str, set[str]], names: dict[str, str]) -> list[str]:
    """Nodes parents first (breadth-first from the root), siblings by name: a readable file order."""
    children = children_of(parents)
    order: list[str] = []
    frontier = sorted((n for n, ps in parents.items() if not ps), key=names.get)
    while frontier:
        order.extend(n for n in frontier if n not in order)
        frontier = sorted({c for n in frontier for c in children[n]
                           if c not in order and all(p in order or p in frontier for p in parents[c])}, key=names.get)
    missing = set(parents) - set(order)
    return order + sorted(missing, key=names.get)


def taxonomy_rows(wnids: list[str]) -> list[list[str]]:
    """``child,parent,synset,description`` rows of the derived taxonomy (a root row first)."""
    parents = reduce_edges(collapse_chains(hypernym_dag(wnids), set(wnids)))
    nodes = sorted(parents)
    names = unique_names(nodes, parents, set(wnids))
    rows = []
    for node in top_down(parents, names):
        for parent in sorted(parents[node], key=names.get) or [None]:
            rows.append([names[node], names[parent] if parent else "", node, ""])
    return rows


def write_taxonomy(rows: list[list[str]], wnids: list[str], out: Path) -> None:
    """The CSV with a header, comment lines saying where it came from, then the rows (written atomically)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HEADER)
    text.write(f"# {len(wnids)} photo classes of ../shared/images as leaves under their first WordNet lemma;\n"
               "# hierarchy from WordNet 3.0 hypernym paths with single-child chains collapsed; every node pinned by wnid.\n"
               "# generated by scripts/make_photo_taxonomy.py: edit that script, not this file.\n")
    writer.writerows(rows)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text.getvalue(), encoding="utf-8")
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path(os.environ.get("KGZSL_IMAGES", ROOT.parent / "shared" / "images")),
                        help="photo tree with unseen/ and heldout/ wnid folders (default $KGZSL_IMAGES or ../shared/images)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    wnids = photo_wnids(args.images, args.out)
    rows = taxonomy_rows(wnids)
    write_taxonomy(rows, wnids, args.out)
    taxonomy = load_taxonomy(args.out)
    print(f"{args.out}: {len(taxonomy.names)} classes ({len(taxonomy.leaves())} leaves), {len(rows)} rows")


if __name__ == "__main__":
    main()
