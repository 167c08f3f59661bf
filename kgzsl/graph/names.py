"""Class names to graph nodes: class folders, image labels and user words matched to node ids, loosely
(case, spaces and underscores, Unicode form) but never ambiguously."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable, Sequence

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph

#: unknown folders that get close-name suggestions (each one scans every name of the graph)
MAX_SUGGESTED = 20


# ------------------------------------------------------------------------------ folders -> nodes
def name_key(text: str) -> str:
    """A class name compared loosely: Unicode NFC, case-folded, underscores as spaces, runs of spaces as one."""
    return " ".join(unicodedata.normalize("NFC", str(text)).casefold().replace("_", " ").split())


class _NodeIndex:
    """The ways a folder name can name a node: its exact id, its wnid, its id or any of its names loosely."""

    def __init__(self, graph: ClassGraph) -> None:
        self.graph = graph
        self.tiers: list[dict[str, list[int]]] = [{}, {}, {}, {}]
        for i, (node_id, wnid, names) in enumerate(zip(graph.ids, graph.wnids, graph.names)):
            self.tiers[0].setdefault(node_id, []).append(i)
            if wnid:
                self.tiers[1].setdefault(wnid, []).append(i)
            self.tiers[2].setdefault(name_key(node_id), []).append(i)
            for name in {name_key(n) for n in names}:
                self.tiers[3].setdefault(name, []).append(i)

    def candidates(self, folder: str) -> list[int]:
        """The nodes of the first way that names any (exact id, wnid, loose id, loose name); [] if none does."""
        for tier, table in enumerate(self.tiers):
            found = table.get(folder if tier < 2 else name_key(folder))
            if found:
                return sorted(set(found))
        return []

    def structural(self, i: int) -> bool:
        return self.graph.roles[i] == "internal"

    def label(self, i: int) -> str:
        names = self.graph.names[i]
        node_id = self.graph.ids[i]
        return node_id if not names or names[0] == node_id else f"{node_id} ({names[0]})"

    def suggest(self, folder: str) -> list[str]:
        """Up to 3 classes whose id or name is close to ``folder`` (difflib), structure-only nodes left out."""
        if not hasattr(self, "_keys"):
            self._keys = [k for k, nodes in self.tiers[3].items() if any(not self.structural(i) for i in nodes)]
        close = difflib.get_close_matches(name_key(folder), self._keys, n=3, cutoff=0.6)
        return [self.label(next(i for i in self.tiers[3][k] if not self.structural(i))) for k in close]


def match_class_folders(folder_names: Iterable[str], graph: ClassGraph, where: str = "") -> dict[str, str]:
    """Map each class folder name to the id of the graph node it names: by exact id, else by wnid, else by
    id or name compared loosely (:func:`name_key`: case, spaces/underscores, Unicode form), only when one
    class node fits. Structure-only (``internal``) nodes are never matched.

    Every folder that matches no node, matches several, names a structure-only node, or names the node
    another folder names is listed in one :class:`KgzslError` (with close names); never a partial mapping.
    ``where`` names the folders' place in messages (e.g. the image folder).
    """
    index = _NodeIndex(graph)
    mapping: dict[str, str] = {}
    problems: list[str] = []
    unknown = 0
    for folder in folder_names:
        found = index.candidates(folder)
        classes = [i for i in found if not index.structural(i)]
        if len(classes) == 1:
            mapping[folder] = graph.ids[classes[0]]
        elif classes:
            problems.append(f"{folder!r} is ambiguous: it names {len(classes)} classes, "
                            f"{', '.join(index.label(i) for i in classes[:5])}: rename it to one's id")
        elif found:
            problems.append(f"{folder!r} names a structure-only node, {index.label(found[0])}, which takes no classifier: "
                            "remove the folder, or rebuild the graph with that class in --seen")
        else:
            unknown += 1
            close = index.suggest(folder) if unknown <= MAX_SUGGESTED else []
            problems.append(f"{folder!r} names no node" + (f" (close: {', '.join(close)})" if close else ""))
    by_node: dict[str, list[str]] = {}
    for folder, node in mapping.items():
        by_node.setdefault(node, []).append(folder)
    problems.extend(f"folders {' and '.join(map(repr, folders))} all name {node}: merge them into one folder"
                    for node, folders in by_node.items() if len(folders) > 1)
    if problems:
        place = f" of {where}" if where else ""
        graph_name = graph.meta.get("folder", "the graph") if getattr(graph, "meta", None) else "the graph"
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise KgzslError(f"the class folders{place} do not name classes of {graph_name} one to one ({count}): "
                         + "; ".join(problems) + ". Name each folder after a node id or a name unique in the graph")
    return mapping


def labels_as_node_ids(labels: Sequence[str], graph: ClassGraph, where: str = "", strict: bool = True) -> list[str]:
    """Image labels (class folder names) as the graph's node ids: unchanged where each already is one; else
    matched as :func:`match_class_folders` does (wnid folders against a taxonomy whose ids are class names,
    or names against wnids). ``strict=False`` leaves a label that names no class as it is (an evaluation
    keeps only its splits' classes) instead of refusing it."""
    known = set(graph.ids)
    if all(label in known for label in labels):
        return list(labels)
    folders = sorted(set(labels))
    if not strict:
        index = _NodeIndex(graph)
        folders = [f for f in folders if len([i for i in index.candidates(f) if not index.structural(i)]) == 1]
    mapping = match_class_folders(folders, graph, where)
    return [mapping.get(label, label) for label in labels]
