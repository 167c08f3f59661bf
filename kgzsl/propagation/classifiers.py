"""Seen-class classifiers fitted from labelled images: the regression targets of a new domain.

The graph networks learn to regress the seen classes' classifier rows; for ImageNet-1k classes those
are the backbone's own last layer, but a new domain has none. :func:`fit_classifiers` fits them on a
few labelled images a class, in exactly the space ``kgzsl predict`` scores in
(``score = [feature, 1] . [w, b]`` on the backbone's raw pooled features, :func:`kgzsl.recognition.scoring.class_scores`):

* **Solver**: scikit-learn's multinomial ``LogisticRegression`` (lbfgs, L2, ``class_weight="balanced"``),
  a well-kept, tested solver, rather than a hand-written torch loop.
* **Scaling**: the features are centred per dimension and divided by one global scale (their root
  mean square after centring) before fitting, and the scaling is folded back into the rows
  (``w = w_z / s``, ``b = b_z - w . mean``), so the rows apply to raw features. One scale, not one per
  dimension: a per-dimension standardisation divides by each unit's spread on a handful of images, which
  can blow up the raw weight of a unit that barely varies there, and makes the L2 penalty anisotropic,
  unlike the weight decay the backbone's own classifier was trained with. (On 3 images a class of 150
  ImageNet classes, EfficientNet-Lite0, both gave 63.0% top-1 on the other 2 images a class at C = 0.1.)
* **Regularisation**: C is chosen from :data:`DEFAULT_CS` by stratified k-fold cross-validation on the
  images (seeded), by balanced accuracy, ties broken by balanced log loss. ``folds`` is lowered to the
  smallest class's image count; with a class of one image no cross-validation is possible and C is
  :data:`DEFAULT_C` (the best of the grid on 3 images a class of 150 ImageNet classes), said in the notes.

:func:`match_class_folders` maps class folder names to graph nodes, :func:`save_fitted_targets` writes
the targets file (``targets.safetensors``, format ``kgzsl.targets`` version 1) that
:func:`kgzsl.propagation.targets.load_targets` and ``kgzsl train --targets`` read, and :func:`targets_from_images`
does all of it for an image tree or a ``kgzsl features`` folder (``kgzsl targets``).

File format (safetensors): tensor ``weights`` float32 ``[C, D + 1]`` (weight row, bias last: the layout
of :class:`kgzsl.propagation.targets.Targets`); string metadata ``format``, ``version`` and, JSON-encoded, ``ids``
(node ids, row order), ``backbone`` and ``backbone_fingerprint`` (the backbone whose features the rows
take, as training records it), ``mapping`` (folder -> node id), ``C``, ``folds``, ``cv_scores``,
``report`` (per class: images, train and CV accuracy), ``notes``, ``seed``, ``images``, ``solver``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kgzsl.core.files import save_tensors
from kgzsl.core.outputs import output_kind
from kgzsl.errors import KgzslError, check_number
from kgzsl.graph.names import match_class_folders
from kgzsl.propagation.targets import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Targets,
    check_targets_out,
)
from kgzsl.vision import (
    backbones,  # called as backbones.load_backbone: tests patch it to prove checks come first
)
from kgzsl.vision.backbone_identity import DEFAULT_BACKBONE, BackboneIdentity
from kgzsl.vision.features import (
    ExtractionOptions,
    extract_features,
    load_features,
    read_manifest,
)
from kgzsl.vision.images import list_image_folder

if TYPE_CHECKING:
    from kgzsl.graph.class_graph import ClassGraph
    from kgzsl.vision.backbones import Backbone

log = logging.getLogger("kgzsl")

#: the grid of C (inverse L2 strength, on the centred and globally scaled features) cross-validation chooses from
DEFAULT_CS = (0.001, 0.01, 0.1, 1.0, 10.0)
#: C without cross-validation (a class with one image): the grid's best on 3 images a class of 150 ImageNet classes
DEFAULT_C = 0.1
DEFAULT_FOLDS = 5
#: classes with fewer images than this are warned about
MIN_IMAGES = 3
MAX_ITER = 1000
SOLVER = "scikit-learn LogisticRegression (multinomial, lbfgs, L2, class_weight=balanced)"


@dataclass
class ClassReport:
    """How one class's classifier fits: its images, and the share of them it classifies right when
    trained on all of them (``train_accuracy``) and when held out in cross-validation (``cv_accuracy``)."""

    id: str
    images: int
    train_accuracy: float
    cv_accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "images": self.images, "train_accuracy": round(self.train_accuracy, 4),
                "cv_accuracy": None if self.cv_accuracy is None else round(self.cv_accuracy, 4)}


@dataclass
class FittedClassifiers:
    """What :func:`fit_classifiers` fitted: the ``targets`` (one row a class), the chosen ``C``, the folds
    used (0: no cross-validation), balanced CV accuracy by C, a report a class, and notes on what was assumed.
    ``mapping`` (class folder -> node id), ``names`` (node id -> its first name) and ``bad_files`` are filled by
    :func:`targets_from_images`."""

    targets: Targets
    C: float
    folds: int
    cv_scores: dict[float, float]
    report: list[ClassReport]
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    mapping: dict[str, str] = field(default_factory=dict)
    bad_files: list[dict[str, str]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return sum(r.images for r in self.report)

    def summary(self) -> dict[str, Any]:
        """A JSON-able record (what ``kgzsl targets --json`` prints and the targets file keeps)."""
        folders = {node: folder for folder, node in self.mapping.items()}
        return {
            "classes": [{**r.as_dict(), "name": self.names.get(r.id, r.id), "folder": folders.get(r.id)} for r in self.report],
            "images": self.images, "C": self.C, "folds": self.folds,
            "cv_scores": {f"{c:g}": round(s, 4) for c, s in self.cv_scores.items()},
            "mapping": dict(self.mapping), "notes": list(self.notes), "seed": self.seed,
            "backbone": self.targets.backbone, "backbone_fingerprint": self.targets.backbone_fingerprint,
            "dim": self.targets.dim - 1, "solver": SOLVER, "bad_files": list(self.bad_files),
        }


# ------------------------------------------------------------------------------------- fitting
def _check_fit_inputs(features: Any, labels: Sequence[str], folds: int, Cs: Sequence[float],
                      min_images: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(features [N, D] float64, class index of each row, sorted classes)``, or a KgzslError saying what is wrong."""
    x = torch.as_tensor(features).detach().cpu().double().numpy()
    if x.ndim != 2 or x.shape[0] == 0:
        raise KgzslError(f"features must be a non-empty [images, dim] matrix, got shape {list(x.shape)}")
    if len(labels) != x.shape[0]:
        raise KgzslError(f"{len(labels)} labels for {x.shape[0]} feature rows: give one class label an image")
    if not np.isfinite(x).all():
        raise KgzslError("features have NaN or infinite entries: re-extract them")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise KgzslError(f"classifiers need images of at least 2 classes, got {len(classes)} ({', '.join(classes)})")
    check_number("folds", folds, at_least=2)
    check_number("min_images", min_images, at_least=1)
    if not Cs:
        raise KgzslError("Cs must hold at least one C", parameter="Cs")
    for c in Cs:
        check_number("Cs", c, above=0, meaning=" (each C, the inverse L2 strength)")
    position = {c: k for k, c in enumerate(classes)}
    return x, np.array([position[label] for label in labels]), classes


def _fit_lr(z: np.ndarray, y: np.ndarray, C: float, seed: int) -> tuple[Any, bool]:
    """One class-balanced multinomial logistic regression on ``z``; also whether lbfgs converged.

    BLAS runs on one thread: lbfgs's many small vector steps are 7-20x slower with OpenBLAS threads here
    (150 classes, 450 images: 1.1 s against 8 s), with identical results."""
    from sklearn.exceptions import ConvergenceWarning  # lazy: sklearn
    from sklearn.linear_model import LogisticRegression  # lazy: sklearn
    from threadpoolctl import threadpool_limits  # lazy: sklearn

    model = LogisticRegression(C=C, solver="lbfgs", class_weight="balanced", max_iter=MAX_ITER, random_state=seed)
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(z, y)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def _rows(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(W [C, D], b [C])`` of a fitted model, one row a class; a binary model's one row becomes ``-w/2, +w/2``
    (the same probabilities under a softmax)."""
    coef, intercept = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:
        return np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef, intercept


def _balanced(values: np.ndarray, y: np.ndarray, classes: int) -> float:
    """The mean over classes of each class's mean of ``values``."""
    return float(np.mean([values[y == c].mean() for c in range(classes)]))


def _choose_c(z: np.ndarray, y: np.ndarray, folds: int, Cs: Sequence[float], seed: int
              ) -> tuple[float, dict[float, float], np.ndarray, bool]:
    """Stratified k-fold CV over ``Cs``: ``(best C, balanced accuracy by C, out-of-fold predictions at the best C,
    whether every fit converged)``. Best: highest balanced accuracy, then lowest balanced log loss, then smaller C."""
    from sklearn.model_selection import StratifiedKFold  # lazy: sklearn

    n = int(y.max()) + 1
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(z, y))
    scores: dict[float, float] = {}
    best: tuple[float, float, float] | None = None
    best_pred = np.zeros_like(y)
    converged = True
    for C in sorted(float(c) for c in Cs):
        pred, loss = np.zeros_like(y), np.zeros(len(y))
        for train, test in splits:
            model, ok = _fit_lr(z[train], y[train], C, seed)
            converged &= ok
            proba = model.predict_proba(z[test])
            pred[test] = model.classes_[proba.argmax(1)]
            column = np.searchsorted(model.classes_, y[test])
            loss[test] = -np.log(np.clip(proba[np.arange(len(test)), column], 1e-15, None))
        scores[C] = _balanced((pred == y).astype(float), y, n)
        key = (-scores[C], _balanced(loss, y, n), C)
        if best is None or key < best:
            best, best_pred = key, pred
    return best[2], scores, best_pred, converged


def fit_classifiers(
    features: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
    Cs: Sequence[float] = DEFAULT_CS,
    min_images: int = MIN_IMAGES,
    backbone: Backbone | dict[str, Any] | None = None,
) -> FittedClassifiers:
    """Fit one classifier a class (``labels``: the class of each row of ``features`` [N, D], the backbone's raw
    pooled features) by class-balanced multinomial logistic regression, C chosen by cross-validation
    (module docstring). Rows come back in sorted class order as :class:`~kgzsl.propagation.targets.Targets`
    (``[w, b]``, scored as ``[feature, 1] . [w, b]``), recording ``backbone`` (a Backbone or its
    ``describe()`` record) so runs trained on them check the features' backbone. Reproducible for a ``seed``.
    """
    x, y, classes = _check_fit_inputs(features, labels, folds, Cs, min_images)
    counts = np.bincount(y, minlength=len(classes))
    notes: list[str] = []
    few = [f"{classes[c]} ({counts[c]})" for c in range(len(classes)) if counts[c] < min_images]
    if few:
        notes.append(f"{len(few)} classes have fewer than {min_images} images: {', '.join(few)}; add images for a reliable classifier")
        log.warning("%s", notes[-1])
    mean = x.mean(axis=0)
    scale = float(np.sqrt(np.mean((x - mean) ** 2)))
    if not scale > 0:
        raise KgzslError(f"all {len(x)} feature rows are identical: nothing tells the classes apart")
    z = (x - mean) / scale
    used = min(int(folds), int(counts.min()))
    if used >= 2:
        C, cv_scores, cv_pred, converged = _choose_c(z, y, used, Cs, seed)
        if used < folds:
            notes.append(f"{used}-fold cross-validation, not {folds}: the smallest class has {counts.min()} images")
    else:
        C, cv_scores, cv_pred, converged = DEFAULT_C, {}, None, True
        single = [classes[c] for c in range(len(classes)) if counts[c] < 2]
        notes.append(f"no cross-validation: {', '.join(single)} {'has' if len(single) == 1 else 'have'} a single image; "
                     f"C = {DEFAULT_C:g} (the default)")
        log.warning("%s", notes[-1])
    model, ok = _fit_lr(z, y, C, seed)
    if not (ok and converged):
        notes.append(f"lbfgs did not converge within {MAX_ITER} iterations on some fits")
        log.warning("%s", notes[-1])
    w, b = _rows(model)
    weight = w / scale
    bias = b - weight @ mean
    rows = torch.from_numpy(np.hstack([weight, bias[:, None]])).float()
    identity = backbone_identity(backbone)
    targets = Targets(wnids=list(classes), weights=rows, source=f"classifiers fitted on {len(x)} images",
                      backbone=identity.name, backbone_fingerprint=identity.fingerprint)
    train_pred = (x @ weight.T + bias).argmax(axis=1)
    report = [ClassReport(cls, int(counts[c]), float((train_pred[y == c] == c).mean()),
                          None if cv_pred is None else float((cv_pred[y == c] == c).mean()))
              for c, cls in enumerate(classes)]
    return FittedClassifiers(targets, float(C), used if used >= 2 else 0, cv_scores, report, notes, int(seed))


def backbone_identity(backbone: Backbone | dict[str, Any] | None) -> BackboneIdentity:
    """The identity targets record for ``backbone`` (a Backbone, its ``describe()`` record, or None)."""
    if backbone is None:
        return BackboneIdentity(None)
    return backbone.identity if not isinstance(backbone, dict) else BackboneIdentity.from_description(backbone)


# ------------------------------------------------------------------------------------- the file
def save_fitted_targets(fitted: FittedClassifiers, path: str | os.PathLike, mapping: dict[str, str] | None = None,
                        force: bool = False) -> Path:
    """Write the targets file (module docstring) atomically; ``mapping`` (folder -> node id) defaults to
    ``fitted.mapping``. An existing file is replaced only with ``force``."""
    path = check_targets_out(path, force)
    summary = fitted.summary()
    meta = {"ids": fitted.targets.wnids, "mapping": mapping if mapping is not None else fitted.mapping,
            "report": [r.as_dict() for r in fitted.report],
            **{k: summary[k] for k in ("backbone", "backbone_fingerprint", "C", "folds", "cv_scores", "notes", "seed",
                                      "images", "solver")}}
    metadata = {key: json.dumps(value, ensure_ascii=False) for key, value in meta.items()}
    metadata.update({"format": FORMAT_NAME, "version": str(FORMAT_VERSION)})
    save_tensors(path, {"weights": fitted.targets.weights}, metadata=metadata)
    return path


# ------------------------------------------------------------------------------ from a folder
def _check_feature_backbone(folder: Path, manifest: dict[str, Any], backbone: Backbone) -> None:
    """Refuse a ``kgzsl features`` folder whose recorded backbone is not ``backbone`` (by classifier fingerprint,
    else by name, and feature size)."""
    recorded = BackboneIdentity.from_description(manifest.get("backbone"))
    if not recorded.same_features(backbone.identity):
        raise KgzslError(f"feature folder {folder} holds features of backbone {recorded.name} "
                         f"(classifier sha256 {str(recorded.fingerprint)[:8]}), not of --backbone {backbone.identity.name} "
                         f"({backbone.fingerprint[:8]}): pass the backbone they were extracted with, or give the image tree")


def _extract(folder: Path, backbone: Backbone, batch_size: int, progress: bool) -> tuple[Any, list[dict[str, str]]]:
    """The features of an ImageFolder tree and its bad files, by :func:`kgzsl.vision.features.extract_features` (its
    loader, progress bar and bad-file handling) into a temporary feature folder, removed after."""

    with tempfile.TemporaryDirectory(prefix="kgzsl-targets-") as tmp:
        extract_features(folder, backbone, tmp, ExtractionOptions(batch_size=batch_size, progress=progress))
        return load_features(tmp), list(read_manifest(tmp)["bad_files"])


def targets_from_images(
    images: str | os.PathLike,
    graph: ClassGraph,
    backbone: str | os.PathLike | Backbone = DEFAULT_BACKBONE,
    *,
    arch: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
    Cs: Sequence[float] = DEFAULT_CS,
    min_images: int = MIN_IMAGES,
    batch_size: int = 32,
    progress: bool = True,
) -> FittedClassifiers:
    """Fit seen-class classifiers (:func:`fit_classifiers`) from ``images``: an ImageFolder tree, one folder a
    class (features extracted with ``backbone``), or a finished ``kgzsl features`` folder of that backbone.
    Folder names are mapped to nodes of ``graph`` first (:func:`match_class_folders`), before any network is
    loaded; the rows are keyed by node id, ``mapping`` keeps folder -> node id."""
    folder = Path(images)
    if not folder.is_dir():
        raise KgzslError(f"image folder {folder} does not exist" if not folder.exists() else
                         f"{folder} is a file: give an image folder (one sub-folder a class) or a `kgzsl features` folder")
    manifest = read_manifest(folder) if output_kind(folder) == "features" else None
    if manifest is not None:
        folders = list(manifest.get("labels") or [])
    else:
        folders = sorted({item.label for item in list_image_folder(folder)})
    mapping = match_class_folders(folders, graph, where=str(folder))
    network = backbone if isinstance(backbone, backbones.Backbone) else backbones.load_backbone(backbone, arch=arch, device=device)
    if manifest is not None:
        _check_feature_backbone(folder, manifest, network)
        feats, bad = load_features(folder), list(manifest.get("bad_files") or [])
    else:
        feats, bad = _extract(folder, network, batch_size, progress)
    missing = sorted(set(mapping) - set(feats.labels))
    if missing and len(set(feats.labels)) < 2:  # say why a class is gone before "need 2 classes" hides it
        unread = "; ".join(f"{b['path']}: {b['reason']}" for b in bad if b.get("label") in missing)
        raise KgzslError(f"{folder}: class folders {', '.join(missing)} have no readable image ({unread or 'none listed'}), "
                         f"leaving {len(set(feats.labels))} class ({', '.join(sorted(set(feats.labels))) or 'none'}); "
                         "classifiers need images of at least 2 classes: replace the unreadable files")
    mapping = {k: v for k, v in mapping.items() if k not in missing}
    fitted = fit_classifiers(feats.features, [mapping[label] for label in feats.labels], seed=seed, folds=folds, Cs=Cs,
                             min_images=min_images, backbone=network)
    fitted.mapping, fitted.bad_files = mapping, bad
    _describe_classes(fitted, graph, missing, folder)
    return fitted


def _describe_classes(fitted: FittedClassifiers, graph: ClassGraph, missing: list[str], folder: Path) -> None:
    """Fill ``fitted.names`` and note folders left without an image and classes the graph does not train on."""
    index = graph.index()
    fitted.names = {node: (graph.names[index[node]] or [node])[0] for node in fitted.mapping.values()}
    if missing:
        fitted.notes.append(f"class folders with no readable image, left out: {', '.join(missing)}")
        log.warning("class folders of %s with no readable image (no classifier): %s", folder, ", ".join(missing))
    not_seen = [node for node in fitted.mapping.values() if graph.roles[index[node]] != "seen"]
    if not_seen:
        fitted.notes.append(f"{len(not_seen)} classes are not seen classes of the graph, and `kgzsl train` does not "
                            f"regress their rows: {', '.join(not_seen[:10])}{' ...' if len(not_seen) > 10 else ''}")


def format_fitted(summary: dict[str, Any]) -> str:
    """The per-class table, the chosen C and the folder -> node mapping, for people."""
    rows = summary["classes"]
    width = max([len("class")] + [len(str(r["id"])) for r in rows])
    named = max([len("name")] + [len(str(r.get("name") or "")) for r in rows])
    pct = (lambda v: "     -" if v is None else f"{100 * v:5.1f}%")
    lines = [f"{'class':<{width}}  {'name':<{named}}  images  train acc  CV acc  folder"]
    lines.extend(f"{r['id']:<{width}}  {r.get('name') or '':<{named}}  {r['images']:>6}  {pct(r['train_accuracy']):>9}  "
                 f"{pct(r['cv_accuracy']):>6}  {r['folder'] if r.get('folder') not in (None, r['id']) else ''}" for r in rows)
    lines = [line.rstrip() for line in lines]
    cv = ", ".join(f"{c} {100 * s:.1f}%" for c, s in summary["cv_scores"].items())
    how = (f"chosen by {summary['folds']}-fold cross-validation; balanced CV accuracy by C: {cv}" if summary["folds"]
           else "the default: no cross-validation")
    lines.append(f"{len(rows)} classes, {summary['images']} images, backbone {summary['backbone']}; C = {summary['C']:g}, {how}")
    renamed = {f: n for f, n in summary["mapping"].items() if f != n}
    if renamed:
        lines.append("folders -> nodes: " + ", ".join(f"{f} -> {n}" for f, n in renamed.items()))
    lines.extend(f"note: {note}" for note in summary["notes"])
    lines.extend(f"skipped {b['path']}: {b['reason']}" for b in summary.get("bad_files", []))
    return "\n".join(lines)
