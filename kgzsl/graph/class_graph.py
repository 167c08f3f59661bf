"""Stage 1: a class hierarchy plus word vectors becomes a graph folder.

A :class:`ClassGraph` holds, for N nodes: an id (the wnid for WordNet nodes), lemma names, gloss and
role (``seen`` = has a real classifier, ``unseen`` = a class to recognise, ``internal`` = structure
only); word-vector features ``[N, D]``; the direct hypernym edges ``child -> parent``; and the dense
ancestor relation ``node -> ancestor`` with BFS hop distances (0 = itself) that DGP propagates over.

Folder format, version 1 (loads without pickle)::

    graph.json            format, version, counts, how it was built (vectors, closure, ...)
    nodes.json            [{"id", "wnid", "names", "gloss", "role"}, ...] in node-index order
    tensors.safetensors   features f16 [N,D] (read as f32), has_vector bool [N], edge_index i64 [2,E],
                          dense_index i64 [2,P], dense_distance i64 [P]
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from kgzsl.core.files import (
    check_format,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from kgzsl.core.idlists import IdList
from kgzsl.core.outputs import atomic_dir
from kgzsl.errors import KgzslError
from kgzsl.graph.embeddings import NodeTexts, load_vectors
from kgzsl.graph.wordnet import gloss, hypernym_wnids, lemma_names, synset

if TYPE_CHECKING:
    import torch

    from kgzsl.graph.embeddings import NodeFeatureSource

# read_id_list (kgzsl.core.outputs) stays importable from here, its former home

FORMAT_NAME = "kgzsl.graph"
FORMAT_VERSION = 1
ROLES = ("seen", "unseen", "internal")
#: node features are stored as float16 (half the size; unit rows lose nothing that training sees) and read as float32
FEATURE_STORAGE = np.float16


@dataclass
class ClassGraph:
    """A class graph in memory; see the module docstring for the meaning of each field."""

    ids: list[str]
    wnids: list[str | None]
    names: list[list[str]]
    glosses: list[str]
    roles: list[str]
    features: np.ndarray
    has_vector: np.ndarray
    edge_index: np.ndarray
    dense_index: np.ndarray
    dense_distance: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.ids)

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def mask(self, role: str) -> np.ndarray:
        """Boolean mask of the nodes with ``role`` (seen / unseen / internal)."""
        return np.array([r == role for r in self.roles], dtype=bool)

    def index(self) -> dict[str, int]:
        """Map node id -> node index."""
        return {node_id: i for i, node_id in enumerate(self.ids)}

    @property
    def oov_ids(self) -> list[str]:
        """Ids of nodes that got no word vector."""
        return [self.ids[i] for i in np.flatnonzero(~self.has_vector)]

    def neighbours(self) -> list[list[int]]:
        """Each node's neighbours along the hypernym edges taken both ways (see :func:`undirected_neighbours`)."""
        return undirected_neighbours(self.edge_index, self.num_nodes)

    def dense_pairs_by_distance(self) -> list[int]:
        """Number of (node, ancestor) pairs at each hop distance 0, 1, 2, ..."""
        return np.bincount(self.dense_distance).tolist() if self.dense_distance.size else []

    def summary(self) -> dict[str, Any]:
        """The counts ``kgzsl build-graph --json`` prints."""
        return {
            "nodes": self.num_nodes,
            "edges": self.num_edges,
            "seen": int(self.mask("seen").sum()),
            "unseen": int(self.mask("unseen").sum()),
            "internal": int(self.mask("internal").sum()),
            "roots": len(set(range(self.num_nodes)) - set(self.edge_index[0].tolist())),
            "dense_pairs_by_distance": self.dense_pairs_by_distance(),
            "feature_dim": int(self.features.shape[1]),
            "vectors": self.meta.get("vectors"),
            "oov_nodes": self.oov_ids,
        }

    def save(self, out: str | Path, force: bool = False) -> Path:
        """Write the graph folder atomically (an existing ``out`` only with ``force``, and only a graph folder)."""
        with atomic_dir(out, force=force, kind="graph") as tmp:
            header = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                **{k: v for k, v in self.summary().items() if k != "oov_nodes"},
                "oov_count": len(self.oov_ids),
                "build": self.meta,
            }
            nodes = [
                {"id": i, "wnid": w, "names": n, "gloss": g, "role": r}
                for i, w, n, g, r in zip(self.ids, self.wnids, self.names, self.glosses, self.roles)
            ]
            write_json(tmp / "nodes.json", nodes)
            save_tensors(
                tmp / "tensors.safetensors",
                {
                    "features": self.features.astype(FEATURE_STORAGE),
                    "has_vector": self.has_vector.astype(bool),
                    "edge_index": self.edge_index.astype(np.int64),
                    "dense_index": self.dense_index.astype(np.int64),
                    "dense_distance": self.dense_distance.astype(np.int64),
                },
                metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION)},
            )
            write_json(tmp / "graph.json", header)  # written last: its presence marks a complete folder
        return Path(out)


def load_graph(folder: str | Path) -> ClassGraph:
    """Load a graph folder written by :meth:`ClassGraph.save`, checking format and consistency."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        hint = f"pass its folder, {folder.parent}" if folder.name in ("graph.json", "nodes.json", "tensors.safetensors") else "pass the folder that holds graph.json"
        raise KgzslError(f"graph {folder} is a file, not a graph folder: {hint}")
    if not folder.is_dir():
        raise KgzslError(f"graph folder {folder} does not exist (build one with `kgzsl build-graph`)")
    if not (folder / "graph.json").is_file():
        raise KgzslError(f"folder {folder} has no graph.json: it is not a graph folder of `kgzsl build-graph`")
    header = check_format(read_json(folder / "graph.json", "graph header"), FORMAT_NAME, FORMAT_VERSION, folder / "graph.json", "graph")
    nodes = _node_records(read_json(folder / "nodes.json", "graph node list"), folder / "nodes.json")
    tensors = _graph_tensors(folder / "tensors.safetensors", len(nodes))
    build = header.get("build", {})
    graph = ClassGraph(
        ids=[n["id"] for n in nodes],
        wnids=[n.get("wnid") for n in nodes],
        names=[list(n["names"]) for n in nodes],
        glosses=[n.get("gloss") or "" for n in nodes],
        roles=[n["role"] for n in nodes],
        features=tensors["features"].float().numpy(),
        has_vector=tensors["has_vector"].numpy().astype(bool),
        edge_index=tensors["edge_index"].numpy(),
        dense_index=tensors["dense_index"].numpy(),
        dense_distance=tensors["dense_distance"].numpy(),
        meta=dict(build) if isinstance(build, dict) else {},
    )
    n = graph.num_nodes
    if n != header.get("nodes"):
        raise KgzslError(f"graph folder {folder} is inconsistent: nodes.json lists {n} nodes, graph.json says {header.get('nodes')}")
    for name, index in (("edge_index", graph.edge_index), ("dense_index", graph.dense_index)):
        if index.size and (index.min() < 0 or index.max() >= n):
            raise KgzslError(f"graph folder {folder}: {name} refers to nodes outside 0..{n - 1}")
    graph.meta["folder"] = str(folder)
    return graph


def _node_records(nodes: Any, path: Path) -> list[dict[str, Any]]:
    """The node list of ``nodes.json``, each record checked (id, names, role; wnid and gloss optional), ids unique."""
    if not isinstance(nodes, list):
        raise KgzslError(f"graph node list {path} is not a list of nodes (found {type(nodes).__name__}): rebuild the graph")
    for k, node in enumerate(nodes):
        ok = (isinstance(node, dict) and isinstance(node.get("id"), str) and node.get("role") in ROLES
              and isinstance(node.get("names"), list) and all(isinstance(name, str) for name in node["names"])
              and isinstance(node.get("wnid"), (str, type(None))) and isinstance(node.get("gloss"), (str, type(None))))
        if not ok:
            raise KgzslError(f"graph node list {path}: node {k} is not a node record (id, names, role, wnid, gloss): "
                             f"{json.dumps(node)[:80]}: rebuild the graph")
    ids = [node["id"] for node in nodes]
    if len(set(ids)) != len(ids):
        raise KgzslError(f"graph node list {path} lists a node id twice: rebuild the graph")
    return nodes


#: the tensors of a graph folder: name -> (dimensions, integer-valued)
_GRAPH_TENSORS = {"features": (2, False), "has_vector": (1, False), "edge_index": (2, True), "dense_index": (2, True),
                  "dense_distance": (1, True)}


def _graph_tensors(path: Path, nodes: int) -> dict[str, Any]:
    """The tensors of ``tensors.safetensors``, each present with its shape checked against the node count."""
    tensors, _ = load_tensors(path, "graph tensors")
    for name, (dims, integer) in _GRAPH_TENSORS.items():
        tensor = tensors.get(name)
        if tensor is None or tensor.dim() != dims or (integer and tensor.is_floating_point()):
            found = "missing" if tensor is None else f"{tensor.dtype} of shape {list(tensor.shape)}"
            raise KgzslError(f"graph tensors {path}: {name} is {found}, not a {dims}-d {'integer ' if integer else ''}tensor: rebuild the graph")
    shapes = {name: list(tensors[name].shape) for name in _GRAPH_TENSORS}
    if (shapes["features"][0] != nodes or shapes["has_vector"][0] != nodes or shapes["edge_index"][0] != 2
            or shapes["dense_index"][0] != 2 or shapes["dense_index"][1] != shapes["dense_distance"][0]):
        raise KgzslError(f"graph folder {path.parent} is inconsistent: nodes.json lists {nodes} nodes, the tensors of "
                         f"{path.name} have shapes {shapes}: rebuild the graph")
    return tensors


def undirected_neighbours(edge_index: np.ndarray, num_nodes: int) -> list[list[int]]:
    """Adjacency lists of the ``[2, E]`` child -> parent edges taken both ways, in edge order: the one
    neighbour list every breadth-first search over the undirected hierarchy walks."""
    neighbours: list[list[int]] = [[] for _ in range(num_nodes)]
    for child, parent in np.asarray(edge_index).reshape(2, -1).T.tolist():
        neighbours[child].append(parent)
        neighbours[parent].append(child)
    return neighbours


def hop_distances(adjacency: Sequence[Sequence[int]], sources: Iterable[int]) -> np.ndarray:
    """Breadth-first hop distance of every node from the nearest of ``sources`` along ``adjacency``
    (lists of next nodes); -1 where unreachable."""
    distance = np.full(len(adjacency), -1, dtype=np.int64)
    queue = deque(int(s) for s in sources)
    distance[list(queue)] = 0
    while queue:
        node = queue.popleft()
        for other in adjacency[node]:
            if distance[other] < 0:
                distance[other] = distance[node] + 1
                queue.append(other)
    return distance


def ancestor_pairs(parents: Sequence[Sequence[int]], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every (node, ancestor) pair with its BFS hop distance along child -> parent edges (self at 0)."""
    sources: list[int] = []
    targets: list[int] = []
    distances: list[int] = []
    iterator: Iterable[int] = range(len(parents))
    if progress:
        iterator = tqdm(iterator, desc="ancestors", unit="node", leave=False, mininterval=0.5)
    for start in iterator:
        seen_at = {start: 0}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            hop = seen_at[node] + 1
            for parent in parents[node]:
                if parent not in seen_at:
                    seen_at[parent] = hop
                    queue.append(parent)
        sources.extend([start] * len(seen_at))
        targets.extend(seen_at.keys())
        distances.extend(seen_at.values())
    index = np.array([sources, targets], dtype=np.int64).reshape(2, -1)
    return index, np.array(distances, dtype=np.int64)


def check_acyclic(parents: Sequence[Sequence[int]], ids: Sequence[str], where: str) -> None:
    """Raise if the child -> parent relation has a cycle, naming the nodes on it."""
    state = [0] * len(parents)  # 0 new, 1 on the stack, 2 done
    for root in range(len(parents)):
        if state[root]:
            continue
        stack = [(root, iter(parents[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            nxt = next(children, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state[nxt] == 1:
                path = [ids[n] for n, _ in stack]
                cycle = path[path.index(ids[nxt]):] + [ids[nxt]]
                raise KgzslError(f"{where}: the hierarchy has a cycle: {' -> '.join(cycle)}")
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(parents[nxt])))


def assemble_graph(
    ids: list[str],
    wnids: list[str | None],
    names: list[list[str]],
    glosses: list[str],
    roles: list[str],
    parents: list[list[int]],
    vectors: NodeFeatureSource,
    meta: dict[str, Any],
    where: str = "hierarchy",
    progress: bool = False,
) -> ClassGraph:
    """Shared last step of every builder: features, edges, dense ancestor relation."""
    check_acyclic(parents, ids, where)
    texts = NodeTexts(names, glosses, [[names[p][0] for p in ps if names[p]] for ps in parents])
    features, has_vector = vectors.embed_nodes(texts, progress=progress)
    edges = [(child, parent) for child, ps in enumerate(parents) for parent in ps]
    edge_index = np.array(edges, dtype=np.int64).T.reshape(2, -1)
    dense_index, dense_distance = ancestor_pairs(parents, progress=progress)
    meta = {**meta, "vectors": vectors.source, "feature_dim": vectors.dim}
    return ClassGraph(ids, wnids, names, glosses, roles, features, has_vector, edge_index, dense_index, dense_distance, meta)


def _validated_wnids(ids: list[str], path_label: str) -> list[str]:
    """Check that every id is a WordNet noun wnid; an error names the file and line (for an :class:`IdList`)."""
    lines = ids.lines if isinstance(ids, IdList) else [None] * len(ids)
    for wnid, line in zip(ids, lines):
        synset(wnid, where=f"{ids.path}:{line}" if line else path_label)
    return ids


def _close_upward(order: dict[str, str], instance_hypernyms: bool) -> dict[str, list[str]]:
    """Add every hypernym ancestor of ``order``'s wnids to it (role ``internal``, sorted), breadth first;
    return the direct hypernyms of every wnid it walked, so they are not looked up twice."""
    hypernyms: dict[str, list[str]] = {}
    added: set[str] = set()
    frontier = list(order)
    while frontier:
        nxt = []
        for wnid in frontier:
            hypernyms[wnid] = hypernym_wnids(wnid, instance_hypernyms)
            for parent in hypernyms[wnid]:
                if parent not in order and parent not in added:
                    added.add(parent)
                    nxt.append(parent)
        frontier = nxt
    for wnid in sorted(added):
        order[wnid] = "internal"
    return hypernyms


def build_wordnet_graph(
    seen: list[str],
    unseen: list[str],
    extra: list[str] | None = None,
    closure: bool = True,
    vectors: NodeFeatureSource | None = None,
    instance_hypernyms: bool | None = None,
    sources: dict[str, str] | None = None,
    progress: bool = False,
) -> ClassGraph:
    """Build a WordNet noun graph over seen + unseen (+ extra) wnids.

    ``closure`` adds every hypernym ancestor up to the root; without it the graph is exactly the
    given node set with the hypernym edges inside it (DGP's ImageNet graph). ``instance_hypernyms``
    also follows instance-of links (a few ImageNet-21k classes, such as the sun or Bram Stoker, have
    no other parent); None means: follow them when closing upward, so every class reaches the root,
    and not otherwise, which keeps DGP's edge set. Node order: seen classes in the given order (the
    classifier order), then unseen, then extra, then added ancestors (sorted).
    """
    sources = sources or {}
    extra = extra or []
    if instance_hypernyms is None:
        instance_hypernyms = closure
    for label, ids in (("seen", seen), ("unseen", unseen)):
        if not ids:
            raise KgzslError(f"the {label} class list is empty")
    overlap = sorted(set(seen) & set(unseen))
    if overlap:
        raise KgzslError(
            f"{len(overlap)} wnids are listed both as seen and unseen (first: {overlap[0]}): a class is one or the other"
        )
    _validated_wnids(seen, sources.get("seen", "seen list"))
    _validated_wnids(unseen, sources.get("unseen", "unseen list"))
    _validated_wnids(extra, sources.get("extra", "extra-node list"))
    order: dict[str, str] = {}
    for wnids, role in ((seen, "seen"), (unseen, "unseen"), (extra, "internal")):
        for wnid in wnids:
            order.setdefault(wnid, role)
    if closure:
        hypernyms = _close_upward(order, instance_hypernyms)
    else:
        hypernyms = {w: hypernym_wnids(w, instance_hypernyms) for w in order}
    ids = list(order)
    position = {w: i for i, w in enumerate(ids)}
    parents = [[position[p] for p in hypernyms[w] if p in position] for w in ids]
    if vectors is None:
        vectors = load_vectors(None)
    names = [[n.replace("_", " ") for n in lemma_names(w)] for w in ids]
    meta = {
        "kind": "wordnet",
        "closure": closure,
        "instance_hypernyms": instance_hypernyms,
        "inputs": sources,
    }
    return assemble_graph(
        ids, list(ids), names, [gloss(w) for w in ids], list(order.values()), parents, vectors, meta,
        where="WordNet", progress=progress,
    )


def graph_fingerprint(ids: Iterable[str], edge_index: np.ndarray | torch.Tensor) -> str:
    """sha256 over the node ids (in order) and the set of ``[2, E]`` edges: a graph's identity.

    The edge columns are sorted (by child, then parent) first, so the fingerprint follows what the
    edges are, not the order a build happened to list them in.
    """
    digest = hashlib.sha256()
    for node_id in ids:
        digest.update(str(node_id).encode("utf-8"))
        digest.update(b"\n")
    edges = np.asarray(edge_index, dtype="<i8").reshape(2, -1)
    edges = np.ascontiguousarray(edges[:, np.lexsort((edges[1], edges[0]))])
    digest.update(f"edges {list(edges.shape)}\n".encode())
    digest.update(edges.tobytes())
    return digest.hexdigest()


def node_features(graph: ClassGraph) -> torch.Tensor:
    """The graph's word vectors as float32, each row L2-normalised (rows without a vector stay zero)."""
    import torch  # lazy: torch
    import torch.nn.functional as F  # lazy: torch

    return F.normalize(torch.as_tensor(np.asarray(graph.features), dtype=torch.float32), dim=1)
