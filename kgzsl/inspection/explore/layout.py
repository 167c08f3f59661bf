"""The explorer's 2-D map: every node's predicted classifier placed by t-SNE (openTSNE), computed once and cached.

The unit classifier rows are reduced to 50 dimensions by PCA, then embedded by openTSNE (exact nearest
neighbours, FFT gradients, a fixed seed: the same predictions give the same map). The result is kept in
kgzsl's cache under the SHA-256 of the predictions (rows and ids) and the layout's settings, so a second site of the
same run (or ``--force``) skips the minutes t-SNE takes on 23,548 rows.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kgzsl.core.atomic import staged_file
from kgzsl.core.resources import cache_dir
from kgzsl.errors import KgzslError

#: bump when the layout's computation changes, so old cached maps are not reused
LAYOUT_VERSION = 1
_PCA_DIMS = 50
_EARLY_ITERS, _ITERS = 250, 500
#: fewer nodes than this are placed by PCA alone
_MIN_TSNE = 10


def predictions_sha256(pred: torch.Tensor, ids: list[str]) -> str:
    """SHA-256 of the predicted classifiers and their node ids: the map's cache key (a copy of a run, or the same
    predictions saved with other metadata, shares it)."""
    digest = hashlib.sha256("\n".join(ids).encode())
    digest.update(np.ascontiguousarray(torch.as_tensor(pred, dtype=torch.float32).numpy()).tobytes())
    return digest.hexdigest()


def _settings(n: int, seed: int) -> dict[str, Any]:
    return {"version": LAYOUT_VERSION, "method": "openTSNE", "pca": _PCA_DIMS, "perplexity": _perplexity(n), "seed": seed,
            "iterations": [_EARLY_ITERS, _ITERS]}


def _perplexity(n: int) -> float:
    return float(max(2.0, min(30.0, (n - 1) / 3.0 - 1.0)))


def cache_path(predictions_sha256: str, n: int, seed: int = 0) -> Path:
    """Where the map of the predictions file with that hash is cached."""
    key = hashlib.sha256(f"{predictions_sha256}:{sorted(_settings(n, seed).items())}".encode()).hexdigest()[:32]
    return cache_dir() / "explore" / f"map-{key}.npy"


def tsne_map(pred: torch.Tensor, seed: int = 0, progress: bool = True) -> np.ndarray:
    """2-D t-SNE coordinates ``[N, 2]`` (float32) of the L2-normalised rows of ``pred``."""
    try:
        from openTSNE import TSNE  # lazy: openTSNE
    except ImportError:
        raise KgzslError("the explorer's map needs openTSNE: pip install openTSNE") from None
    x = F.normalize(torch.as_tensor(pred, dtype=torch.float32), dim=1).double()
    centred = x - x.mean(dim=0, keepdim=True)
    dims = min(_PCA_DIMS, x.shape[0] - 1, x.shape[1])
    torch.manual_seed(seed)
    _, _, v = torch.pca_lowrank(centred, q=dims, center=False, niter=6)
    reduced = (centred @ v[:, :dims]).numpy()
    if len(reduced) < _MIN_TSNE:  # too few points for t-SNE's neighbourhoods: the PCA plane itself
        return np.pad(reduced, ((0, 0), (0, max(0, 2 - dims))))[:, :2].astype(np.float32)
    reduced = reduced / np.abs(reduced).max()
    total = _EARLY_ITERS + _ITERS
    bar = tqdm(total=total, desc="map (t-SNE)", unit="iter", file=sys.stderr, disable=not progress, mininterval=0.5)

    def tick(iteration: int, error: float, embedding: Any) -> None:
        bar.update(10)

    with bar:
        tsne = TSNE(n_components=2, perplexity=_perplexity(len(reduced)), neighbors="exact", negative_gradient_method="fft",
                    early_exaggeration_iter=_EARLY_ITERS, n_iter=_ITERS, random_state=seed, n_jobs=1, initialization="pca",
                    callbacks=tick, callbacks_every_iters=10, verbose=False)
        coords = np.asarray(tsne.fit(reduced), dtype=np.float32)
    return coords


def cached_map(pred: torch.Tensor, ids: list[str], seed: int = 0, progress: bool = True) -> tuple[np.ndarray, bool]:
    """The map of ``pred`` (one row a node of ``ids``): read from kgzsl's cache, else computed and cached.
    Returns the coordinates and whether they came from the cache."""
    path = cache_path(predictions_sha256(pred, ids), len(pred), seed)
    if path.is_file():
        try:
            coords = np.load(path, allow_pickle=False)
            if coords.shape == (len(pred), 2):
                return coords, True
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
    coords = tsne_map(pred, seed, progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(path, "map cache") as tmp, open(tmp, "wb") as handle:
            np.save(handle, coords, allow_pickle=False)
    except (OSError, KgzslError):
        pass  # an unwritable cache only costs the next run the time again
    return coords, False
