"""One object for zero-shot recognition from Python: :class:`Recognizer`, over a trained run folder.

::

    from kgzsl import Recognizer
    rec = Recognizer.from_run("runs/dgp")     # or Recognizer.pretrained(): the demo's default, trained once
    rec.predict("photo.jpg", top=5)          # a Prediction; a list, a folder, PIL images, features: a list
    rec.predict("photo.jpg", hedge=0.9).hedged  # after `kgzsl calibrate`: a graph node and its probability
    rec("photo.jpg", candidate_labels=["okapi", "zebra", "red panda cub"])  # [{"label", "score"}], most probable first
    rec.explain("giraffe")                   # what `kgzsl inspect giraffe` prints, as data

It only composes the library's stages (:mod:`kgzsl.propagation.run`, :func:`kgzsl.vision.backbones.load_backbone`,
:func:`kgzsl.vision.images.load_image`, :func:`kgzsl.recognition.recognize.recognize`,
:func:`kgzsl.inspection.explain.inspect_node`), which stay available for anything it does not cover.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.core.resources import cache_dir
from kgzsl.demo import DEFAULT_GRAPH, load_or_build_graph, reusable_run
from kgzsl.errors import KgzslError
from kgzsl.propagation.run import Run, load_run
from kgzsl.vision.backbone_identity import BackboneIdentity

if TYPE_CHECKING:
    import torch

    from kgzsl.graph.class_graph import ClassGraph
    from kgzsl.propagation.models import PropagationModel
    from kgzsl.propagation.targets import Targets
    from kgzsl.recognition.hedge.hierarchy import HedgedAnswer
    from kgzsl.recognition.hedge.rules import Hedger
    from kgzsl.vision.backbones import Backbone

log = logging.getLogger("kgzsl")


@dataclass(frozen=True)
class Prediction:
    """The best candidate classes of one image, best first: graph node ids (wnids in WordNet graphs),
    their names and scores (``[feature, 1] . classifier``); with ``predict(hedge=...)``, the hedged answer too;
    with ``predict(labels=...)``, the labels and their probabilities."""

    image: str
    ids: list[str]
    names: list[str]
    scores: list[float]
    hedged: HedgedAnswer | None = None
    #: with ``predict(labels=...)``: the labels as given, most probable first (``ids``, ``names``, ``scores`` follow
    #: that order), and their probabilities (softmax over the labels at the run's calibrated temperature; sum 1)
    labels: list[str] | None = None
    probabilities: list[float] | None = None


@dataclass(frozen=True)
class RelatedClass:
    """A class an :class:`Explanation` lists: ``trained`` if its real classifier was used in training, and
    its ``distance`` (hops; ancestors, descendants), ``cosine`` (nearest by weight) or ``weight`` (attribution)."""

    id: str
    name: str
    role: str
    trained: bool
    distance: int | None = None
    cosine: float | None = None
    weight: float | None = None


@dataclass(frozen=True)
class Explanation:
    """Why a class got its classifier (:func:`kgzsl.inspection.explain.inspect_node`'s report, typed); ``str()`` gives
    what ``kgzsl inspect`` prints and ``report`` the JSON-able dict ``kgzsl inspect --json`` prints."""

    id: str
    wnid: str
    names: list[str]
    gloss: str
    role: str
    trained_on_real_classifier: bool
    weight_norm: float
    ancestors: list[RelatedClass]
    descendants: list[RelatedClass]
    descendant_count: int
    nearest_by_weight: list[RelatedClass]
    cosine_to_true_classifier: float | None
    attribution: list[RelatedClass] | None
    attribution_faithfulness: float | None
    distance_weights: dict[str, Any] | None  # the model's learned hop-distance group weights (DGP), if any
    report: dict[str, Any] = field(repr=False)

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Explanation:
        """Type the dict :func:`kgzsl.inspection.explain.inspect_node` returns."""
        from kgzsl.inspection.explain import GROUP_WEIGHTS  # lazy: torch

        def related(key: str) -> list[RelatedClass]:
            return [RelatedClass(**entry) for entry in report[key]]

        weights = [value for key, value in report.items() if key.endswith(GROUP_WEIGHTS)]
        return cls(
            id=report["id"], wnid=report["wnid"], names=list(report["names"]), gloss=report["gloss"], role=report["role"],
            trained_on_real_classifier=report["trained_on_real_classifier"], weight_norm=report["weight_norm"],
            ancestors=related("ancestors"), descendants=related("descendants"), descendant_count=report["descendant_count"],
            nearest_by_weight=related("nearest_by_weight"),
            cosine_to_true_classifier=report.get("cosine_to_true_classifier"),
            attribution=related("attribution") if "attribution" in report else None,
            attribution_faithfulness=report.get("attribution_faithfulness"),
            distance_weights=weights[0] if weights else None, report=report,
        )

    def __str__(self) -> str:
        from kgzsl.inspection.explain import format_report  # lazy: torch

        return format_report(self.report)


class Recognizer:
    """Names images with the classifiers of a trained run: :meth:`predict`, and :meth:`explain` for why a
    class got its classifier.

    ``backbone``: the network whose features the classifiers take (default: the one the run records;
    another one is refused, as ``kgzsl predict`` does). ``candidates``: ``"unseen"`` (standard zero-shot:
    classes whose real classifier was not used), ``"all"`` (seen ones too) or a list of node ids.
    ``graph``: the run's graph folder, where the one it records has moved. ``precision``: the backbone's forward
    pass: ``"auto"`` (int8 for EfficientNet-Lite0 on a CPU with VNNI through ONNX Runtime, fp32 elsewhere),
    ``"int8"``, ``"fp32"`` or ``"bf16"``
    (:func:`kgzsl.vision.backbones.resolve_precision`, :mod:`kgzsl.vision.speed`).
    """

    def __init__(
        self,
        run: Run,
        backbone: str | os.PathLike | None = None,
        candidates: str | list[str] = "unseen",
        graph: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        progress: bool = True,
        precision: str = "auto",
    ) -> None:
        name = backbone or run.backbone
        if not name:
            raise KgzslError(f"run {run.source} records no backbone (its targets were a plain matrix): pass backbone=, "
                             "the network whose features its classifiers take")
        if int(batch_size) < 1:
            raise KgzslError(f"batch_size must be at least 1, got {batch_size}")
        self.run, self.candidates, self.batch_size, self.progress = run, candidates, int(batch_size), progress
        self._backbone_name, self._device, self._graph_folder = str(name), device, graph
        self._precision = precision

    def __repr__(self) -> str:
        return f"Recognizer({self.run.source}, model={self.run.model_name}, backbone={self._backbone_name})"

    @classmethod
    def from_run(cls, path: str | os.PathLike, **options: Any) -> Recognizer:
        """A recognizer over a run folder written by ``kgzsl train`` (or its predictions file); ``options``
        as for :class:`Recognizer`."""
        return cls(load_run(path), **options)

    @classmethod
    def pretrained(
        cls,
        model: str = "dgp",
        seed: int = 0,
        epochs: int | None = None,
        graph: str | os.PathLike | None = None,
        folder: str | os.PathLike | None = None,
        **options: Any,
    ) -> Recognizer:
        """The demo's default: ``model`` trained on the shipped ImageNet-21k graph (or ``graph``) with its default
        schedule on EfficientNet-Lite0's real classifiers, no class held out. Trained once (minutes, with a
        progress bar) into ``folder`` (default ``<kgzsl cache>/pretrained/<model>``), reused after. The default DGP
        run comes with the hedging calibration shipped for it (``data/calibration``), so ``predict(hedge=0.9)`` works."""
        progress = options.get("progress", True)
        loaded = load_or_build_graph(Path(graph) if graph is not None else DEFAULT_GRAPH, progress)
        where = Path(folder) if folder is not None else cache_dir() / "pretrained" / str(model)
        run, _ = reusable_run(loaded, where, model=model, epochs=epochs, seed=seed, progress=progress, log=log.info)
        recognizer = cls(run, **options)
        recognizer.__dict__["graph"] = loaded  # the cached property: already loaded
        return recognizer

    # ------------------------------------------------------------------------- loaded on first use
    @cached_property
    def backbone(self) -> Backbone:
        """The feature extractor, loaded on first use; refused if the run was trained for another one."""
        from kgzsl.vision.backbones import load_backbone  # lazy: torch

        network = load_backbone(self._backbone_name, device=self._device, precision=self._precision)
        mismatch = BackboneIdentity.from_record(self.run.predictions.meta).mismatch(network.identity)
        if mismatch is not None:
            raise KgzslError(f"run {self.run.source} was trained for {mismatch[0]} but backbone {mismatch[1]} was given: "
                             "leave backbone= out to use the run's")
        return network

    @cached_property
    def graph(self) -> ClassGraph:
        """The graph the run was trained on."""
        return self.run.load_graph(self._graph_folder)

    @cached_property
    def model(self) -> PropagationModel | None:
        """The trained model (None where the run folder has none: no attribution in :meth:`explain`)."""
        return self.run.load_model(self.graph)

    @cached_property
    def targets(self) -> Targets | None:
        """The real classifiers the run regressed (None where they cannot be loaded again)."""
        try:
            return self.run.load_targets()
        except KgzslError as exc:
            log.warning("the targets of run %s cannot be loaded again (%s): no comparison with true classifiers",
                        self.run.source, exc)
            return None

    # ------------------------------------------------------------------------------------ the API
    def predict(self, x: Any, top: int | None = None, candidates: str | list[str] | None = None,
                hedge: float | None = None, labels: list[str] | None = None) -> Prediction | list[Prediction]:
        """The ``top`` (default 5) best candidate classes of each image in ``x``: a path, a folder (its images, sorted),
        a PIL image, a list of paths / PIL images, or features of the run's backbone (``[D]`` or ``[B, D]``).

        One image (a path, a PIL image, ``[D]``) gives one :class:`Prediction`; anything else a list, in
        input order. Among several files, unreadable ones are skipped with a warning naming each and why; a single one raises.
        ``hedge``: a target accuracy calibrated by ``kgzsl calibrate``; each Prediction's ``hedged`` is then the
        most informative graph node meeting it, with its probability (candidates ``"unseen"``, or ``"all"`` where the
        run is calibrated for the generalized setting: seen classes then carry the calibrated gamma).
        ``labels``: rank these instead of ``candidates`` (``top`` default: all of them), each a graph id, a wnid, a synset
        name (``ray.n.07``), a WordNet name (``ray``: the sense a photo can show, reported in a warning), ``NAME=SYNSET``,
        or free text (``red panda cub``, ``NAME<PARENT``: a new node, its classifier propagated by the run's model);
        each Prediction then has ``labels`` and ``probabilities`` (see docs/recognition.md).
        """
        from kgzsl.recognition.recognize import (  # lazy: torch
            RecognitionOptions,
            recognize,
        )

        if top is not None and (isinstance(top, bool) or int(top) < 1):
            raise KgzslError(f"top must be at least 1, got {top}")
        if labels is not None:
            if candidates is not None or hedge is not None:
                raise KgzslError("labels: give labels, or candidates / hedge, not both", parameter="labels")
            return self._predict_labels(x, labels, top)
        wanted = candidates or self.candidates
        options = RecognitionOptions(wanted, int(top or 5))  # checked before a hedger is built or an image read
        if hedge is not None:
            options = replace(options, hedger=self._hedger(hedge, wanted))
        single, features, names = self._features(x)
        found = [Prediction(r.image, r.ids, r.names, r.scores, r.hedged)
                 for r in recognize(features, names, self.run.predictions, options)]
        return found[0] if single else found

    def __call__(self, images: Any, candidate_labels: list[str], top_k: int | None = None) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Hugging Face's zero-shot-image-classification pipeline shape: ``[{"label": ..., "score": ...}, ...]``, each
        label exactly as given, most probable first, ``score`` its probability (for a list of images, a list of
        those). ``images`` and ``candidate_labels`` as :meth:`predict`'s ``x`` and ``labels``."""
        found = self.predict(images, top=top_k, labels=candidate_labels)

        def shape(p: Prediction) -> list[dict[str, Any]]:
            return [{"label": label, "score": score} for label, score in zip(p.labels or [], p.probabilities or [])]

        return shape(found) if isinstance(found, Prediction) else [shape(p) for p in found]

    def labels(self, labels: list[str]) -> Any:
        """``labels`` resolved against the run's graph, with a classifier each: a
        :class:`kgzsl.recognition.labels.LabelSet` (kept for the next call with the same labels)."""
        from kgzsl.recognition.labels import label_set  # lazy: torch

        key = tuple(labels) if isinstance(labels, (list, tuple)) else labels
        cache = self.__dict__.setdefault("_label_sets", {})
        if not isinstance(key, tuple):
            raise KgzslError(f"labels must be a list of strings, got {labels!r}", parameter="labels")
        if key not in cache:
            model = self.__dict__.get("model")
            cache[key] = label_set(self.run, self.graph, list(key), model=model)
        return cache[key]

    def _predict_labels(self, x: Any, labels: list[str], top: int | None) -> Prediction | list[Prediction]:
        from kgzsl.recognition.labels import rank_labels  # lazy: torch

        chosen = self.labels(labels)  # resolved (and checked) before any image is read
        single, features, names = self._features(x)
        keep = int(top) if top is not None else len(chosen.labels)
        found = [Prediction(r.image, r.ids[:keep], r.names[:keep], r.scores[:keep], None, r.labels[:keep],
                            r.probabilities[:keep]) for r in rank_labels(features, names, chosen)]
        return found[0] if single else found

    def _hedger(self, target: float, candidates: str | list[str]) -> Hedger:
        """The run's calibrated hedger for ``target`` (built once per target)."""
        from kgzsl.recognition.hedge.calibration import run_hedger  # lazy: torch
        from kgzsl.recognition.hedge.storage import hedge_file  # lazy: torch

        hedge_file(candidates)  # a candidate set hedging is calibrated for, before it keys the cache
        cache = self.__dict__.setdefault("_hedgers", {})
        if (target, candidates) not in cache:
            cache[target, candidates] = run_hedger(self.run, self.graph, target, candidates)
        return cache[target, candidates]

    def explain(self, query: str, top: int = 10) -> Explanation:
        """What ``kgzsl inspect`` reports about the class ``query`` (a wnid or a name): its place in the graph,
        the nearest classifiers, the seen classes its classifier is built from (``top`` of each)."""
        from kgzsl.inspection.explain import inspect_node  # lazy: torch

        if int(top) < 1:
            raise KgzslError(f"top must be at least 1, got {top}")
        report = inspect_node(self.graph, self.run.predictions, query, model=self.model, targets=self.targets, k=int(top))
        return Explanation.from_report(report)

    # ------------------------------------------------------------------------------------ images
    def _features(self, x: Any) -> tuple[bool, torch.Tensor, list[str]]:
        """(one input?, features [n, D], a name for each row) of what :meth:`predict` takes."""
        import torch  # lazy: torch

        if isinstance(x, torch.Tensor):
            features = x.detach().float().cpu()
            if features.dim() not in (1, 2):
                raise KgzslError(f"features must be [D] or [images, D], got shape {list(features.shape)}")
            if features.dim() == 1:
                return True, features.unsqueeze(0), ["features"]
            return False, features, [f"features[{i}]" for i in range(features.size(0))]
        items, single = _image_items(x)
        features, names = self._image_features(items, single)
        return single, features, names

    def _image_features(self, items: list[tuple[str, Any]], single: bool) -> tuple[torch.Tensor, list[str]]:
        """Features of ``items`` (name, path or PIL image), in input order: files through
        :func:`kgzsl.vision.features.image_list_features` (the next batch decoded while the network runs, a progress
        bar over many), PIL images through :meth:`~kgzsl.vision.backbones.Backbone.embed`."""
        import torch  # lazy: torch

        from kgzsl.vision.features import image_list_features  # lazy: torch
        from kgzsl.vision.images import rgb_image  # lazy: PIL

        rows: dict[int, torch.Tensor] = {}
        reasons: list[str] = []
        files = [i for i, (_, item) in enumerate(items) if isinstance(item, (str, os.PathLike))]
        if files:
            features, good, bad = image_list_features([items[i][1] for i in files], self.backbone, self.batch_size,
                                                      progress=self.progress and len(files) > 1, desc="recognize")
            loaded, failed = iter(zip(good, features)), iter(bad)
            upcoming = next(loaded, None)
            for i in files:  # input order is kept: each file is the next loaded one, or the next failure
                if upcoming is not None and upcoming[0] == str(items[i][1]):
                    rows[i], upcoming = upcoming[1], next(loaded, None)
                    continue
                reason = next(failed)["reason"]
                if single:
                    raise KgzslError(reason)
                reasons.append(reason)
                log.warning("skipped %s: %s", items[i][0], reason)
        pictures, images = [], []
        for i, (name, item) in enumerate(items):
            if not isinstance(item, (str, os.PathLike)):
                try:
                    images.append(rgb_image(item, name))
                    pictures.append(i)
                except KgzslError as exc:
                    if single:
                        raise
                    reasons.append(str(exc))
                    log.warning("skipped %s: %s", name, exc)
        if images:
            rows.update(zip(pictures, self.backbone.embed(images, self.batch_size)))
        if not rows:
            raise KgzslError(f"none of the {len(items)} images could be read: {'; '.join(reasons[:3])}"
                             + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""))
        order = sorted(rows)
        return torch.stack([rows[i] for i in order]), [items[i][0] for i in order]


def _image_items(x: Any) -> tuple[list[tuple[str, Any]], bool]:
    """(name, path or PIL image) of every image ``x`` names, and whether ``x`` was a single image."""
    from PIL import Image  # lazy: PIL

    from kgzsl.vision.images import list_images  # lazy: PIL

    if isinstance(x, Image.Image):
        return [(getattr(x, "filename", "") or "image", x)], True
    if isinstance(x, (str, os.PathLike)):
        if Path(x).is_dir():
            return [(str(path), path) for path in list_images(x)], False
        return [(str(x), x)], True
    if isinstance(x, (list, tuple)):
        items: list[tuple[str, Any]] = []
        for i, entry in enumerate(x):
            if isinstance(entry, Image.Image):
                items.append((getattr(entry, "filename", "") or f"image {i}", entry))
            elif isinstance(entry, (str, os.PathLike)):
                items.extend(_image_items(entry)[0])
            else:
                raise KgzslError(f"image {i} of the list is a {type(entry).__name__}: give paths or PIL images")
        if not items:
            raise KgzslError("the image list is empty")
        return items, False
    raise KgzslError(f"cannot recognize a {type(x).__name__}: give a path, a folder, a PIL image, a list of them, "
                     "or a feature tensor")
