"""The explorer's photos (``--features``): which photos score each class highest, and each photo's top-5.

A feature folder of ``kgzsl features`` is scored against the run's candidates exactly as recognition scores it
(:func:`kgzsl.recognition.scoring.candidate_scores`); a JPEG thumbnail of every photo shown is written into the
site, so the site still opens where the photos are not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from tqdm import tqdm

from kgzsl.errors import KgzslError
from kgzsl.propagation.predictions import Predictions
from kgzsl.recognition.scoring import candidate_scores
from kgzsl.vision.feature_folder import load_features, read_manifest

#: the thumbnails' longest side in pixels, and their folder inside the site
THUMB_PX = 128
THUMB_DIR = "thumbs"


def _thumbnail(source: Path, target: Path) -> bool:
    """Write a JPEG thumbnail of ``source`` to ``target``; False where the photo cannot be read any more."""
    try:
        with Image.open(source) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((THUMB_PX, THUMB_PX))
            image.save(target, "JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


def check_photo_features(features_dir: str | Path, predictions: Predictions) -> dict[str, Any]:
    """The manifest of ``features_dir``, refused (before any work) unless its features fit the run's classifiers."""
    manifest = read_manifest(features_dir)
    backbone = manifest.get("backbone") or {}
    recorded = predictions.meta.get("backbone_fingerprint")
    if backbone.get("fingerprint") and recorded and backbone["fingerprint"] != recorded:
        raise KgzslError(f"--features {features_dir} come from another backbone ({backbone.get('name')}) than the run's "
                         "classifiers: extract them with the run's backbone")
    if int(manifest.get("dim", -1)) != predictions.pred.shape[1] - 1:
        raise KgzslError(f"--features {features_dir} are {manifest.get('dim')}-d; the run's classifiers take "
                         f"{predictions.pred.shape[1] - 1}-d features")
    return manifest


def photo_data(features_dir: str | Path, predictions: Predictions, site: Path, candidates: str = "all",
               top: int = 5, per_class: int = 6, progress: bool = True) -> dict[str, Any]:
    """Score the photos of ``features_dir`` and write their thumbnails under ``site``/thumbs.

    Returns ``photos`` (path, label, thumbnail file or None, top: ``[[node, score], ...]`` best first) and
    ``by_class`` (node index -> ``[[photo, score], ...]``, the ``per_class`` photos scoring that class highest).
    """
    manifest = check_photo_features(features_dir, predictions)
    feats = load_features(features_dir)
    if not len(feats.paths):
        raise KgzslError(f"feature folder {features_dir} holds no photo")
    scores, columns = candidate_scores(feats.features, predictions, candidates)
    values, picks = scores.topk(min(top, scores.shape[1]), dim=1)
    cols = columns.tolist()
    photos = [{"path": path, "label": label, "thumb": None,
               "top": [[cols[j], round(float(v), 4)] for v, j in zip(vs, js)]}
              for path, label, vs, js in zip(feats.paths, feats.labels, values.tolist(), picks.tolist())]
    best_v, best_i = scores.topk(min(per_class, scores.shape[0]), dim=0)  # [per_class, columns]
    by_class = {cols[c]: [[int(best_i[r, c]), round(float(best_v[r, c]), 4)] for r in range(best_v.shape[0])]
                for c in range(len(cols))}
    shown = sorted({p for entries in by_class.values() for p, _ in entries} | set(range(len(photos))))
    (site / THUMB_DIR).mkdir(exist_ok=True)
    image_dir = Path(manifest.get("image_dir", ""))
    for p in tqdm(shown, desc="thumbnails", unit="photo", file=sys.stderr, disable=not progress, mininterval=0.5):
        name = f"{p:06d}.jpg"
        if _thumbnail(image_dir / photos[p]["path"], site / THUMB_DIR / name):
            photos[p]["thumb"] = f"{THUMB_DIR}/{name}"
    return {"candidates": candidates, "folder": str(features_dir), "photos": photos,
            "by_class": {str(k): v for k, v in by_class.items()}}
