"""User taxonomies for new domains: plain class names in a hierarchy become a graph.

Two file forms:

* CSV, one edge a row: ``child,parent[,synset[,description]]``. A row with an empty parent declares a
  root. A header row ``child,parent[,synset[,description]]`` is optional. A child may have several parents (several rows). Every
  parent must itself be declared (as a child or as a root), so a typo is an error, not a new root.
* JSON or YAML, nested: ``{"animal": {"dog": {"husky": {}, "corgi": null}, "cat": ["lynx", "puma"]}}``
  (a value is a mapping of children, a list of leaf names, or null), optionally wrapped as
  ``{"tree": {...}, "synsets": {"husky": "n02110185", "cat": "cat.n.01"}, "descriptions": {"corgi": "..."}}``.
  Each name appears once.

A name may be pinned to a WordNet noun synset (wnid or ``dog.n.01``): its node then takes the synset's
lemma names, gloss and wnid. Any class may carry a description (a one-line definition); it is the
node's gloss, which sentence-encoder features read (``"name: description"``), and it wins over a
pinned synset's gloss. Unpinned names without a description are embedded from their name alone.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kgzsl.core.idlists import IdList
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph, assemble_graph
from kgzsl.graph.embeddings import load_vectors
from kgzsl.graph.wordnet import synset_by_name, wnid_of

if TYPE_CHECKING:
    from kgzsl.graph.embeddings import NodeFeatureSource

log = logging.getLogger("kgzsl")


@dataclass
class Taxonomy:
    """Names in file order, their parents, optional synset pins, and where they came from."""

    names: list[str]
    parents: dict[str, list[str]]
    synsets: dict[str, str] = field(default_factory=dict)
    source: str = "taxonomy"
    descriptions: dict[str, str] = field(default_factory=dict)

    def leaves(self) -> list[str]:
        """Names that are nobody's parent."""
        used = {p for ps in self.parents.values() for p in ps}
        return [n for n in self.names if n not in used]


def _clean(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise KgzslError(f"{where}: a class name must be a non-empty string, got {name!r}")
    return name.strip()


def _load_csv(path: Path) -> Taxonomy:
    names: list[str] = []
    parents: dict[str, list[str]] = {}
    synsets: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    seen_rows: set[tuple[str, str]] = set()
    try:
        rows = list(csv.reader(io.StringIO(_text(path), newline="")))
    except csv.Error as exc:
        raise KgzslError(f"taxonomy {path} is not a readable CSV file ({exc}): one 'child,parent[,synset[,description]]' a line") from None
    for line, row in enumerate(rows, start=1):
        row = [cell.strip() for cell in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if line == 1 and row[0].lower() == "child":
            continue
        if len(row) < 2 or len(row) > 4:
            raise KgzslError(f"{path}:{line}: expected 'child,parent[,synset[,description]]', got {len(row)} columns")
        child, parent = _clean(row[0], f"{path}:{line}"), row[1]
        if (child, parent) in seen_rows:
            raise KgzslError(f"{path}:{line}: duplicate row {child!r} -> {parent!r}")
        seen_rows.add((child, parent))
        if child not in parents:
            names.append(child)
            parents[child] = []
        if parent:
            parents[child].append(parent)
        if len(row) >= 3 and row[2]:
            if child in synsets and synsets[child] != row[2]:
                raise KgzslError(f"{path}:{line}: {child!r} is pinned to both {synsets[child]} and {row[2]}")
            synsets[child] = row[2]
        if len(row) == 4 and row[3]:
            if child in descriptions and descriptions[child] != row[3]:
                raise KgzslError(f"{path}:{line}: {child!r} has two different descriptions")
            descriptions[child] = row[3]
    return Taxonomy(names, parents, synsets, str(path), descriptions)


def _walk(node: Any, parent: str | None, tax: Taxonomy, where: str) -> None:
    if node is None:
        return
    if isinstance(node, list):
        items = [(child, None) for child in node]
    elif isinstance(node, dict):
        items = list(node.items())
    else:
        raise KgzslError(f"{where}: under {parent!r} expected a mapping, a list of names or null, got {type(node).__name__}")
    for child, sub in items:
        if isinstance(child, dict) and parent is not None and sub is None and len(child) == 1:
            child, sub = next(iter(child.items()))  # YAML list item "- dog: {...}"
        name = _clean(child, where)
        if name in tax.parents:
            raise KgzslError(f"{where}: duplicate class name {name!r} (each name appears once in a nested taxonomy)")
        tax.names.append(name)
        tax.parents[name] = [parent] if parent is not None else []
        _walk(sub, name, tax, where)


def _text(path: Path) -> str:
    """The file's text; a KgzslError naming it where it is not UTF-8 (an image or archive given by mistake)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KgzslError(f"taxonomy {path} is not UTF-8 text (byte {exc.start}): give a CSV, JSON or YAML taxonomy") from None
    except OSError as exc:
        raise KgzslError(f"taxonomy {path} cannot be read ({exc.strerror or exc})") from None


def _load_nested(path: Path) -> Taxonomy:
    text = _text(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KgzslError(f"taxonomy {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KgzslError(f"taxonomy {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise KgzslError(f"taxonomy {path} must be a non-empty mapping of class names")
    synsets: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    if "tree" in data and set(data) <= {"tree", "synsets", "descriptions"}:
        synsets = data.get("synsets") or {}
        descriptions = data.get("descriptions") or {}
        for key, value in (("synsets", synsets), ("descriptions", descriptions)):
            if not isinstance(value, dict):
                raise KgzslError(f"taxonomy {path}: '{key}' must map class names to strings")
        data = data["tree"]
    tax = Taxonomy([], {}, {str(k): str(v) for k, v in synsets.items()}, str(path),
                   {str(k): str(v).strip() for k, v in descriptions.items()})
    _walk(data, None, tax, str(path))
    return tax


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read a taxonomy file (CSV, JSON or YAML), checking names, parents and pins."""
    path = Path(path)
    if not path.is_file():
        raise KgzslError(f"taxonomy file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        tax = _load_csv(path)
    elif suffix in {".json", ".yaml", ".yml"}:
        tax = _load_nested(path)
    else:
        raise KgzslError(f"taxonomy file {path}: unknown format {suffix!r} (use .csv, .json, .yaml or .yml)")
    if not tax.names:
        raise KgzslError(f"taxonomy file {path} declares no classes")
    for child, ps in tax.parents.items():
        for parent in ps:
            if parent not in tax.parents:
                raise KgzslError(
                    f"taxonomy {path}: parent {parent!r} of {child!r} is not declared "
                    f"(add a row '{parent},' to make it a root, or fix the name)"
                )
    for what, given in (("synsets", tax.synsets), ("descriptions", tax.descriptions)):
        unknown = sorted(set(given) - set(tax.parents))
        if unknown:
            raise KgzslError(f"taxonomy {path}: {what} given for undeclared names: {', '.join(unknown[:5])}")
    return tax


def build_taxonomy_graph(
    taxonomy: Taxonomy,
    seen: list[str] | None,
    unseen: list[str] | None = None,
    vectors: NodeFeatureSource | None = None,
    progress: bool = False,
) -> ClassGraph:
    """Turn a taxonomy into a :class:`ClassGraph`; ``seen`` names have classifiers, ``unseen`` default to the other leaves."""
    if not seen:
        raise KgzslError("a taxonomy graph needs --seen: a file naming the classes that have a classifier, one a line")
    known = set(taxonomy.parents)
    for label, names in (("seen", seen), ("unseen", unseen or [])):
        if isinstance(names, IdList):  # read from a file: name the line
            names.require_known(known, f"a class of taxonomy {taxonomy.source}")
        missing = [n for n in names if n not in known]
        if missing:
            raise KgzslError(f"{label} list names classes not in taxonomy {taxonomy.source}: {', '.join(missing[:5])}")
    if unseen is None:
        unseen = [n for n in taxonomy.leaves() if n not in set(seen)]
    both = sorted(set(seen) & set(unseen))
    if both:
        raise KgzslError(f"{len(both)} classes are listed both as seen and unseen (first: {both[0]})")
    role = {n: "internal" for n in taxonomy.names}
    role.update({n: "seen" for n in seen})
    role.update({n: "unseen" for n in unseen})
    ids = list(seen) + list(unseen) + [n for n in taxonomy.names if role[n] == "internal"]
    position = {n: i for i, n in enumerate(ids)}
    wnids: list[str | None] = []
    names: list[list[str]] = []
    glosses: list[str] = []
    for name in ids:
        pin = taxonomy.synsets.get(name)
        if pin:
            s = synset_by_name(pin, where=f"{taxonomy.source}: synset of {name!r}")
            wnids.append(wnid_of(s))
            names.append([name] + [l.replace("_", " ") for l in s.lemma_names() if l.replace("_", " ") != name])
            glosses.append(taxonomy.descriptions.get(name) or s.definition())
        else:
            wnids.append(None)
            names.append([name])
            glosses.append(taxonomy.descriptions.get(name, ""))
    parents = [[position[p] for p in taxonomy.parents[n]] for n in ids]
    if vectors is None:
        vectors = load_vectors(None)
    meta = {"kind": "taxonomy", "taxonomy": taxonomy.source, "pinned": len(taxonomy.synsets)}
    graph = assemble_graph(ids, wnids, names, glosses, [role[n] for n in ids], parents, vectors, meta,
                           where=f"taxonomy {taxonomy.source}", progress=progress)
    if graph.oov_ids:
        log.warning(
            "taxonomy %s: %d classes have no word vector in %s (their features are zero): %s; "
            "rename them, pin them to synsets, or add sentence features (--vectors glove-6b-50d+minilm)", taxonomy.source, len(graph.oov_ids),
            graph.meta.get("vectors"), ", ".join(graph.oov_ids),
        )
    return graph
