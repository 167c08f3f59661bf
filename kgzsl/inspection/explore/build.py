"""``kgzsl explore``: everything the explorer shows, gathered from a run folder, then written as a site."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from kgzsl.errors import KgzslError
from kgzsl.inspection.explore.curves import calibration_panel
from kgzsl.inspection.explore.data import ROLES, class_details, group_weights, node_table
from kgzsl.inspection.explore.layout import cached_map
from kgzsl.inspection.explore.photos import check_photo_features, photo_data
from kgzsl.inspection.explore.site import check_site_dir, plotly_js, write_site
from kgzsl.propagation.run import load_run
from kgzsl.propagation.targets import Targets, load_targets
from kgzsl.vision.feature_folder import load_features

log = logging.getLogger("kgzsl")


def run_targets(source: str | None) -> Targets | None:
    """The true classifiers the run regressed, as ``kgzsl inspect`` loads them (None, with a note, where they
    no longer load)."""
    if not source:
        return None
    try:
        return load_targets(source)
    except KgzslError as exc:
        log.warning("the run's targets cannot be loaded again (%s): no comparison with true classifiers", exc)
        return None


def explore(run_path: str | os.PathLike, out: str | os.PathLike, features: str | os.PathLike | None = None,
            graph_dir: str | os.PathLike | None = None, force: bool = False, top: int = 10, candidates: str = "all",
            progress: bool = True) -> dict[str, Any]:
    """Write the explorer site of the run at ``run_path`` into ``out``; with ``features`` (a feature folder of
    ``kgzsl features``) its photos too. Returns a summary: the folder, files, size, whether the map was cached."""
    check_site_dir(out, force)
    plotly_js()
    if features is not None and not Path(features).is_dir():
        raise KgzslError(f"--features {features} is not a folder: give a feature folder of `kgzsl features`")
    run = load_run(run_path)
    if features is not None:
        check_photo_features(features, run.predictions)
    graph = run.load_graph(graph_dir)
    model = run.load_model(graph)
    targets = run_targets(run.predictions.meta.get("targets"))
    nodes = node_table(graph, run.predictions)
    details = class_details(graph, run.predictions, model, targets, top, progress)
    coords, cached = cached_map(run.predictions.pred, list(run.predictions.ids), progress=progress)
    if features is not None:
        feats = load_features(features)
        panel = calibration_panel(run, graph, feats.features, feats.labels, str(features))
    else:
        panel = calibration_panel(run, graph)
    roles = Counter(graph.roles)
    meta = {
        "run": str(run_path), "model": run.model_name, "backbone": run.backbone, "graph": str(graph.meta.get("folder", "")),
        "nodes": graph.num_nodes, "counts": {r: roles.get(r, 0) for r in ROLES}, "trained": int(run.predictions.seen.sum()),
        "top": top, "group_weights": group_weights(model), "calibration": panel, "map": "t-SNE (openTSNE) of the unit predicted classifiers",
        "attribution": model is not None, "targets": targets is not None,
    }

    def fill(site: Path) -> dict[str, Any] | None:
        if features is None:
            return None
        return photo_data(features, run.predictions, site, candidates, progress=progress)

    summary = write_site(out, nodes=nodes, details=details, coords=coords, meta=meta, force=force, fill=fill)
    return {**summary, "map_cached": cached, "nodes": graph.num_nodes, "photos": features is not None,
            "calibrated": panel is not None}
