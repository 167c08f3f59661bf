"""A user's labels (``ray``, ``ray.n.07``, ``n01495701``, ``seal=seal.n.09``, ``red panda cub<lesser_panda.n.01``) as
nodes of a class graph: graph ids and synsets as given, WordNet names by the sense a photo can show, free text as a
new node to attach. Torch-free; the classifier of a new node is :mod:`kgzsl.recognition.labels`' business.

Syntax of one label: ``NAME`` (a graph id, a wnid, a synset name, a WordNet lemma, or any text), ``NAME=SYNSET``
(pin the sense: ``seal=seal.n.09``; the label stays ``NAME`` where it is shown) and ``NAME<PARENT`` (free text
attached under the graph node ``PARENT``, itself a label).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph
from kgzsl.graph.names import _NodeIndex, name_key
from kgzsl.graph.wordnet import is_wnid, reader, synset_by_name, wnid_of

log = logging.getLogger("kgzsl")

#: ``dog.n.01``: a WordNet synset name (noun)
SYNSET_NAME = re.compile(r"^[^\s=<]+\.n\.\d{2}$")
#: the WordNet synset every concrete thing a photo can show descends from
PHYSICAL_ENTITY = "physical_entity.n.01"
#: the id prefix of a free-text label's new node
TEXT_PREFIX = "label:"


@dataclass(frozen=True)
class ResolvedLabel:
    """One label and the graph node it names. ``how``: ``id`` (a graph id), ``synset`` (a wnid or synset name),
    ``pinned`` (``NAME=SYNSET``), ``name`` (a WordNet lemma, its sense chosen), ``graph-name`` (a node's name in a
    graph that is not WordNet's) or ``text`` (free text). ``new``: the node is not in the graph (a synset outside it,
    or free text): it is attached under ``parents`` and gets its classifier from the trained model. ``senses``: the
    noun senses a name has (the chosen one is ``synset``)."""

    label: str
    node_id: str
    name: str
    how: str
    names: list[str]
    gloss: str = ""
    synset: str | None = None
    wnid: str | None = None
    senses: list[str] = field(default_factory=list)
    new: bool = False
    parents: list[str] = field(default_factory=list)
    parents_given: bool = False

    @property
    def ambiguous(self) -> bool:
        """Whether the label is a name with several noun senses (one was chosen)."""
        return len(self.senses) > 1

    def note(self) -> str:
        """The line that says which sense an ambiguous name got (and how to pin another)."""
        others = [s for s in self.senses if s != self.synset]
        return (f"label {self.label!r} has {len(self.senses)} noun senses: using {self.synset} ({self.wnid}: "
                f"{_short(self.gloss)}); pin another as '{self.label}=SYNSET' ({', '.join(others[:6])}"
                f"{', ...' if len(others) > 6 else ''})")

    def as_dict(self) -> dict[str, Any]:
        """What ``kgzsl predict --json`` reports about the label."""
        return {"label": self.label, "id": self.node_id, "name": self.name, "how": self.how, "synset": self.synset,
                "gloss": self.gloss, "senses": list(self.senses), "ambiguous": self.ambiguous, "new": self.new,
                "parents": list(self.parents)}


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def parse_label(text: Any) -> tuple[str, str | None, str | None]:
    """``(name, pinned synset or None, parent or None)`` of one label (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise KgzslError(f"labels must be non-empty strings, got {text!r}", parameter="labels")
    name, pin, parent = text.strip(), None, None
    if "<" in name:
        name, parent = (part.strip() for part in name.split("<", 1))
    if "=" in name:
        name, pin = (part.strip() for part in name.rsplit("=", 1))
    if not name or pin == "" or parent == "":
        raise KgzslError(f"label {text!r}: write NAME, NAME=SYNSET or NAME<PARENT", parameter="labels")
    return name, pin, parent


class LabelResolver:
    """Resolves labels against ``graph``; ``trained`` are the node ids whose real classifiers the run was trained on
    (a sense whose subtree holds some is one photos were seen of)."""

    def __init__(self, graph: ClassGraph, trained: Collection[str] = ()) -> None:
        self.graph = graph
        self.index = graph.index()
        self.wordnet = graph.meta.get("kind", "wordnet") == "wordnet" or any(graph.wnids)
        self.names = _NodeIndex(graph)
        self._trained = set(trained)
        self._physical: dict[str, bool] = {}

    @property
    def trained_below(self) -> np.ndarray:
        """Per node: how many trained classes its subtree (itself included) holds."""
        if not hasattr(self, "_below"):
            g = self.graph
            flags = np.array([node_id in self._trained for node_id in g.ids], dtype=bool)
            self._below = np.bincount(g.dense_index[1][flags[g.dense_index[0]]], minlength=g.num_nodes)
        return self._below

    def resolve(self, label: str) -> ResolvedLabel:
        """The node ``label`` names (see :class:`ResolvedLabel`); a KgzslError naming it where it names nothing usable."""
        name, pin, parent = parse_label(label)
        if pin is not None:
            return replace(self._exact(pin, label, "pinned"), label=label)
        found = self._exact(name, label, None) if (name in self.index or is_wnid(name) or SYNSET_NAME.match(name)) else None
        found = found or self._by_name(name, label)
        if found is None:
            found = ResolvedLabel(label, TEXT_PREFIX + name_key(name), name, "text", [name], new=True)
        if parent is not None:
            if not found.new or found.how != "text":
                raise KgzslError(f"label {label!r}: {name!r} names {found.node_id} already; a parent (<) is for free text",
                                 parameter="labels")
            node = self._exact(parent, label, None) if parent in self.index else self.resolve(parent)
            if node.new:
                raise KgzslError(f"label {label!r}: parent {parent!r} is not a node of the graph", parameter="labels")
            found = replace(found, node_id=f"{found.node_id}<{node.node_id}", parents=[node.node_id], parents_given=True)
        return found

    def _exact(self, text: str, label: str, how: str | None) -> ResolvedLabel:
        """A graph id, a wnid or a synset name (a synset outside the graph becomes a new node under its hypernyms)."""
        if text in self.index and not (is_wnid(text) and self.wordnet):
            i = self.index[text]
            return ResolvedLabel(label, text, self._name(i), how or "id", list(self.graph.names[i]), self.graph.glosses[i])
        if not self.wordnet:
            raise KgzslError(f"label {label!r}: {text!r} is not a node of the graph", parameter="labels")
        try:
            found = synset_by_name(text, where=f"label {label!r}")
        except KgzslError as exc:
            raise KgzslError(str(exc), parameter="labels") from None
        return self._synset(found, label, how or "synset")

    def _synset(self, found: Any, label: str, how: str, senses: Sequence[str] = ()) -> ResolvedLabel:
        wnid = wnid_of(found)
        names = [n.replace("_", " ") for n in found.lemma_names()]
        common = {"gloss": found.definition(), "synset": found.name(), "wnid": wnid, "senses": list(senses)}
        if wnid in self.index:
            i = self.index[wnid]
            return ResolvedLabel(label, wnid, self._name(i), how, list(self.graph.names[i]), **common)
        return ResolvedLabel(label, wnid, names[0], how, names, new=True, parents=self._graph_hypernyms(found), **common)

    def _by_name(self, name: str, label: str) -> ResolvedLabel | None:
        """A WordNet lemma (its sense chosen), else a unique class name of the graph; None for free text."""
        senses = reader().synsets(name.replace(" ", "_"), pos="n") if self.wordnet else []
        if senses:
            best = min(range(len(senses)), key=lambda k: self._sense_key(senses[k], k))
            return self._synset(senses[best], label, "name", [s.name() for s in senses])
        nodes = [i for i in self.names.candidates(name) if not self.names.structural(i)]
        if nodes:
            node_id = self.graph.ids[nodes[0]]
            return ResolvedLabel(label, node_id, self._name(nodes[0]), "graph-name", list(self.graph.names[nodes[0]]),
                                 self.graph.glosses[nodes[0]], senses=[self.graph.ids[i] for i in nodes] if len(nodes) > 1 else [])
        return None

    def _sense_key(self, sense: Any, order: int) -> tuple[bool, bool, bool, int]:
        """Smaller is preferred: a class of the graph (it has a classifier), a sense over classes trained on real
        photos, a physical entity, then WordNet's own sense order (most frequent first)."""
        i = self.index.get(wnid_of(sense))
        is_class = i is not None and self.graph.roles[i] != "internal"
        trained = i is not None and bool(self.trained_below[i] > 0)
        return not is_class, not trained, not self._is_physical(sense), order

    def _is_physical(self, sense: Any) -> bool:
        if sense.name() not in self._physical:
            above = {s.name() for s in sense.closure(lambda s: s.hypernyms() + s.instance_hypernyms())}
            self._physical[sense.name()] = PHYSICAL_ENTITY in above or sense.name() == PHYSICAL_ENTITY
        return self._physical[sense.name()]

    def _graph_hypernyms(self, found: Any) -> list[str]:
        """The nearest hypernyms of a synset outside the graph that are graph nodes (breadth first), sorted."""
        frontier, seen = [found], {found.name()}
        while frontier:
            parents = sorted({p for s in frontier for p in s.hypernyms() + s.instance_hypernyms()}, key=lambda s: s.name())
            inside = sorted({wnid_of(p) for p in parents if wnid_of(p) in self.index})
            if inside:
                return inside
            frontier = [p for p in parents if p.name() not in seen]
            seen.update(p.name() for p in frontier)
        return []

    def _name(self, i: int) -> str:
        names = self.graph.names[i]
        return names[0] if names else self.graph.ids[i]


def resolve_labels(labels: Sequence[str], graph: ClassGraph, trained: Collection[str] = ()) -> list[ResolvedLabel]:
    """Each label of ``labels`` (see the module docstring) as a :class:`ResolvedLabel`, in order; the chosen sense of
    every ambiguous name is logged (a warning). Refused: an empty list, a label given twice."""
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels:
        raise KgzslError(f"labels must be a non-empty list of strings, got {labels!r}", parameter="labels")
    repeated = sorted({label for label in labels if isinstance(label, str) and labels.count(label) > 1})
    if repeated:
        raise KgzslError(f"labels: {repeated[0]!r} is given more than once", parameter="labels")
    resolver = LabelResolver(graph, trained)
    resolved = [resolver.resolve(label) for label in labels]
    for entry in resolved:
        if entry.ambiguous:
            log.warning("%s", entry.note())
    return resolved


def read_label_file(path: Any) -> list[str]:
    """The labels of a text file, one a line (blank lines and lines starting with ``#`` skipped)."""
    from pathlib import Path  # lazy: startup

    file = Path(path)
    if not file.is_file():
        raise KgzslError(f"labels file {file} does not exist" if not file.exists() else f"labels file {file} is not a file")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise KgzslError(f"labels file {file} is not UTF-8 text") from None
    labels = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not labels:
        raise KgzslError(f"labels file {file} holds no labels (one a line)")
    return labels


# ------------------------------------------------------------------------------------ new nodes
def grown_graph(graph: ClassGraph, node_id: str, names: list[str], gloss: str, feature: np.ndarray,
                parents: Sequence[str]) -> ClassGraph:
    """``graph`` plus one new ``unseen`` leaf ``node_id`` under ``parents`` (graph ids), with node ``feature`` (stored
    as a graph folder stores it, float16): its edges and its dense ancestor pairs (each parent's ancestors one hop
    further), as ``kgzsl build-graph`` would give it. The graph itself is not modified."""
    index = graph.index()
    if node_id in index:
        raise KgzslError(f"node {node_id} is in the graph already")
    missing = [p for p in parents if p not in index]
    if not parents or missing:
        raise KgzslError(f"new node {node_id}: parents must be graph nodes, got {list(parents)}")
    n, rows = graph.num_nodes, [index[p] for p in parents]
    distance: dict[int, int] = {n: 0}
    picked = np.isin(graph.dense_index[0], rows)
    for ancestor, hops in zip(graph.dense_index[1][picked].tolist(), graph.dense_distance[picked].tolist()):
        distance[ancestor] = min(distance.get(ancestor, hops + 1), hops + 1)
    pairs = np.array([[n] * len(distance), list(distance)], dtype=np.int64)
    row = np.asarray(feature, dtype=np.float32).reshape(1, -1).astype(np.float16).astype(np.float32)
    if row.shape[1] != graph.features.shape[1]:
        raise KgzslError(f"new node {node_id}: a {row.shape[1]}-d feature for a graph of {graph.features.shape[1]}-d features")
    return replace(
        graph, ids=[*graph.ids, node_id], wnids=[*graph.wnids, node_id if is_wnid(node_id) else None],
        names=[*graph.names, list(names)], glosses=[*graph.glosses, gloss], roles=[*graph.roles, "unseen"],
        features=np.vstack([graph.features, row]), has_vector=np.append(graph.has_vector, True),
        edge_index=np.concatenate([graph.edge_index, np.array([[n] * len(rows), rows], dtype=np.int64)], axis=1),
        dense_index=np.concatenate([graph.dense_index, pairs], axis=1),
        dense_distance=np.concatenate([graph.dense_distance, np.array(list(distance.values()), dtype=np.int64)]),
        meta={**graph.meta, "grown_from": graph.meta.get("folder")},
    )
