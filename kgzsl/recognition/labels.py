"""Naming photos against a user's own labels: each label resolved to a graph node (:mod:`kgzsl.graph.labels`), a new
node (a synset outside the graph, free text) given its classifier by the run's trained model without retraining,
and the scores over the labels turned into probabilities (:mod:`kgzsl.recognition.probabilities`).

A new node's classifier is what ``kgzsl propagate`` gives it on the run's graph grown by that node alone (its node
feature from the graph's feature source, e.g. GloVe next to the sentence encoder's reading of the text; attached
under the given parent, its synset's hypernyms, or the graph node nearest in meaning): the model's forward pass for
that one row (:meth:`~kgzsl.propagation.models.PropagationModel.forward_plan`, equal to the full pass's row). Each
is cached per run in ``<kgzsl cache>/label-classifiers``; the run folder is never written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from kgzsl.core.files import load_tensors, save_tensors
from kgzsl.core.resources import cache_dir
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph, node_features
from kgzsl.graph.embeddings import NodeTexts, load_vectors
from kgzsl.graph.labels import ResolvedLabel, grown_graph, resolve_labels
from kgzsl.propagation.predictions import Predictions
from kgzsl.propagation.run import MODEL_FILE, RECORD_FILE, Run
from kgzsl.recognition.probabilities import (
    LabelTemperature,
    label_probabilities,
    label_temperature,
)
from kgzsl.recognition.recognize import RecognitionOptions, recognize

log = logging.getLogger("kgzsl")

#: how many graph nodes, nearest in meaning, a free-text label is attached under
NEAREST_PARENTS = 1
CACHE_FORMAT = "kgzsl.label-classifier"


@dataclass(frozen=True)
class LabelSet:
    """Labels resolved for a run: ``labels`` (as given, resolved), ``predictions`` holding one classifier row per
    distinct node they name (new nodes included), and the ``temperature`` their probabilities use."""

    labels: list[ResolvedLabel]
    predictions: Predictions
    temperature: LabelTemperature

    @property
    def node_ids(self) -> list[str]:
        return list(self.predictions.ids)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [label.as_dict() for label in self.labels]


@dataclass(frozen=True)
class LabelRanking:
    """One image's labels, most probable first: each label as given, its node id and name, raw score and probability."""

    image: str
    labels: list[str]
    ids: list[str]
    names: list[str]
    scores: list[float]
    probabilities: list[float]


def label_set(run: Run, graph: ClassGraph, labels: Sequence[str], model: Any = None, warn: bool = True) -> LabelSet:
    """Resolve ``labels`` against the run's ``graph`` and gather (or compute, for new nodes) each one's classifier.
    ``model``: the run's trained model, if loaded already (it is loaded only where a label needs a new node)."""
    base = run.predictions
    trained = [node_id for node_id, seen in zip(base.ids, base.seen.tolist()) if seen]
    resolved = resolve_labels(labels, graph, trained)
    rows: dict[str, torch.Tensor] = {}
    new = [entry for entry in resolved if entry.new]
    if new:
        done = _NewNodes(run, graph, model)
        for k, entry in enumerate(resolved):
            if entry.new and entry.node_id not in rows:
                resolved[k], rows[entry.node_id] = done.classifier(entry)
            elif entry.new:
                resolved[k] = replace(entry, parents=next(e.parents for e in resolved[:k] if e.node_id == entry.node_id))
    predictions = _label_predictions(base, resolved, rows)
    temperature = label_temperature(run, with_seen=bool(predictions.seen.any()), warn=warn)
    return LabelSet(resolved, predictions, temperature)


def rank_labels(features: Any, names: Sequence[str], labels: LabelSet, transductive: bool = False) -> list[LabelRanking]:
    """Every label of ``labels`` for each row of ``features`` (through :func:`recognize`, the one recognition path),
    most probable first; probabilities are the softmax over the labels at the set's temperature."""
    ids = labels.node_ids
    gamma = labels.temperature.gamma if bool(labels.predictions.seen.any()) else 0.0
    options = RecognitionOptions(ids, len(ids), gamma, transductive)
    column = {label.label: ids.index(label.node_id) for label in labels.labels}
    out = []
    for row in recognize(features, names, labels.predictions, options):
        by_id = dict(zip(row.ids, row.scores))
        scores = np.array([[by_id[ids[column[label.label]]] for label in labels.labels]], dtype=np.float64)
        probs = label_probabilities(scores, labels.temperature.temperature)[0]
        order = sorted(range(len(labels.labels)), key=lambda k: (-probs[k], k))
        pick = [labels.labels[k] for k in order]
        out.append(LabelRanking(row.image, [p.label for p in pick], [p.node_id for p in pick], [p.name for p in pick],
                                [float(scores[0, k]) for k in order], [float(probs[k]) for k in order]))
    return out


def _label_predictions(base: Predictions, labels: list[ResolvedLabel], new_rows: dict[str, torch.Tensor]) -> Predictions:
    """A small :class:`Predictions`: one row per distinct node the labels name, in label order, with the run's
    metadata (names, roles) for those rows and the real classifiers of the seen ones."""
    ids, names, roles, pred, seen, real = [], [], [], [], [], []
    seen_position = torch.cumsum(base.seen.long(), 0) - 1
    base_roles = base.meta.get("roles") or ["unseen"] * len(base.ids)
    for label in labels:
        if label.node_id in ids:
            continue
        ids.append(label.node_id)
        names.append(label.name)
        if label.new:
            roles.append("unseen")
            pred.append(new_rows[label.node_id].view(-1))
            seen.append(False)
            continue
        i = base.index.get(label.node_id)
        if i is None:
            raise KgzslError(f"label {label.label!r}: {label.node_id} has no classifier in the run's predictions",
                             parameter="labels")
        roles.append(base_roles[i])
        pred.append(base.pred[i])
        seen.append(bool(base.seen[i]))
        if seen[-1] and base.seen_true is not None:
            real.append(base.seen_true[int(seen_position[i])])
    meta = {**base.meta, "names": names, "roles": roles}
    return Predictions(ids, torch.stack(pred).float(), torch.tensor(seen, dtype=torch.bool), meta,
                       seen_true=torch.stack(real) if real and len(real) == sum(seen) else None)


class _NewNodes:
    """Classifiers of new nodes for one run: from the cache, else computed (feature, parents, the model's row)."""

    def __init__(self, run: Run, graph: ClassGraph, model: Any) -> None:
        from kgzsl.propagation.grow import run_vectors  # lazy: torch_geometric

        self.run, self.graph, self._model = run, graph, model
        self.vectors = run_vectors(run) or graph.meta.get("vectors")
        self.folder = cache_dir() / "label-classifiers" / _run_key(run)

    def classifier(self, entry: ResolvedLabel) -> tuple[ResolvedLabel, torch.Tensor]:
        """``entry`` with its parents, and its classifier row ``[D + 1]``."""
        spec = {"format": CACHE_FORMAT, "node": entry.node_id, "names": entry.names, "gloss": entry.gloss,
                "parents": entry.parents if (entry.parents_given or entry.synset) else "nearest",
                "vectors": self.vectors, "nearest": NEAREST_PARENTS}
        path = self.folder / (hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32] + ".safetensors")
        if path.is_file():
            try:
                tensors, meta = load_tensors(path, "label classifier cache")
                return replace(entry, parents=json.loads(meta["parents"])), tensors["row"].float().view(-1)
            except (KgzslError, KeyError, ValueError):
                pass  # a damaged cache entry is only a cache: computed again below
        feature = self._feature(entry)
        parents = entry.parents or self._nearest(feature)
        if not parents:
            raise KgzslError(f"label {entry.label!r}: no graph node to attach it under", parameter="labels")
        row = self._row(entry, feature, parents)
        save_tensors(path, {"row": row.view(1, -1), "feature": torch.as_tensor(feature).view(1, -1)},
                     metadata={"format": CACHE_FORMAT, "spec": json.dumps(spec), "parents": json.dumps(parents)})
        return replace(entry, parents=parents), row

    def _feature(self, entry: ResolvedLabel) -> np.ndarray:
        """The node feature of a new node, from the graph's feature source (names and gloss, as build-graph reads)."""
        if not self.vectors:
            raise KgzslError(f"label {entry.label!r} needs a new node, but the run's graph records no feature source "
                             "(build-graph --vectors) to give it a feature", parameter="labels")
        if not hasattr(self, "_source"):
            log.info("loading node features %s for %s", self.vectors, entry.label)
            self._source = load_vectors(self.vectors)
        index = self.graph.index()
        parent_names = [self.graph.names[index[p]][0] for p in entry.parents if self.graph.names[index[p]]]
        features, has = self._source.embed_nodes(NodeTexts([entry.names], [entry.gloss], [parent_names]))
        if not bool(has[0]) or not np.any(features[0]):
            raise KgzslError(f"label {entry.label!r}: none of its words has a vector in {self.vectors}: use other words, "
                             "or a synset (NAME=SYNSET)", parameter="labels")
        return features[0]

    def _nearest(self, feature: np.ndarray) -> list[str]:
        """The graph nodes whose features are nearest (cosine) to ``feature``."""
        x = np.asarray(self.graph.features, dtype=np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        similarity = x @ (feature / max(float(np.linalg.norm(feature)), 1e-12))
        similarity[~np.asarray(self.graph.has_vector, dtype=bool)] = -np.inf
        best = np.argsort(-similarity, kind="stable")[:NEAREST_PARENTS]
        return [self.graph.ids[int(i)] for i in best]

    def _row(self, entry: ResolvedLabel, feature: np.ndarray, parents: list[str]) -> torch.Tensor:
        """The trained model's classifier of the new node on the graph grown by it alone."""
        grown = grown_graph(self.graph, entry.node_id, entry.names, entry.gloss, feature, parents)
        model = self.model(entry)
        n = grown.num_nodes
        with torch.no_grad():
            plan = model.plan(torch.tensor([n - 1]), *model.graph_inputs(grown), num_nodes=n)
            return model.forward_plan(node_features(grown), plan).float().view(-1)

    def model(self, entry: ResolvedLabel) -> Any:
        if self._model is None:
            if not self.run.has_model:
                raise KgzslError(f"label {entry.label!r} is not a node of the run's graph: a classifier for it needs the "
                                 f"trained model ({MODEL_FILE}, {RECORD_FILE}), which {self.run.source} lacks",
                                 parameter="labels")
            self._model = self.run.load_model(self.graph)
        self._model.eval()
        return self._model


def _run_key(run: Run) -> str:
    """The identity of a trained run: a hash of its model weights and training record."""
    digest = hashlib.sha256()
    for name in (MODEL_FILE, RECORD_FILE):
        path = run.folder / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:24]
