"""Writing the explorer's static site: templates, the vendored plotly.js, and the run's data as JavaScript files.

Layout of a site (opened from ``file://``, which forbids fetching JSON, so every data file is a script)::

    index.html, app.js, style.css   the page (package data of kgzsl.inspection.explore/templates)
    plotly.min.js                    plotly.js, copied from the plotly Python package (WebGL scatter for the map)
    data/nodes.js                    every node: ids, names, gloss, role, trained flag, parents
    data/meta.js                     the run, DGP group weights, calibration, what the detail shards hold
    data/map.js                      the 2-D map (t-SNE of the predicted classifiers)
    data/detail-NNN.js               per node: nearest by classifier / node feature, attribution, photos (lazy)
    data/photos.js, thumbs/          with --features: each photo's top-5 and its thumbnail
    kgzsl-site.json                  the marker ``--force`` looks for before replacing a folder

The folder is written as a temporary sibling and renamed into place (:func:`kgzsl.core.atomic.staged_dir`).
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from kgzsl.core.atomic import staged_dir
from kgzsl.core.outputs import check_output_dir
from kgzsl.core.resources import package_file

SITE_FORMAT = "kgzsl.explore"
SITE_VERSION = 1
MARKER = "kgzsl-site.json"
#: nodes a detail shard holds: the class page loads only the one of its node
SHARD_SIZE = 512
TEMPLATES = ("index.html", "app.js", "style.css")
PLOTLY_HINT = "pip install plotly (the explorer's map vendors its plotly.min.js)"


def check_site_dir(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse, before any work, a site folder kgzsl may not write: an existing one unless ``force``, and with
    ``force`` only a site kgzsl wrote (its marker file) or an empty folder; never the current folder, a parent of
    it, the home folder, ``/`` or the project (as :func:`kgzsl.core.outputs.check_output_dir` does for runs)."""
    return check_output_dir(path, "site", force)


def plotly_js() -> Path:
    """The plotly.min.js shipped inside the plotly Python package (found without importing plotly)."""
    return package_file("plotly", "package_data/plotly.min.js", PLOTLY_HINT)


def _script(path: Path, variable: str, value: Any) -> None:
    """Write ``value`` as a script setting ``window.<variable>`` (compact JSON: valid JavaScript)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    path.write_text(f"window.{variable}={text};\n", encoding="ascii")


def _templates(site: Path, photos: bool) -> None:
    """Copy the page's files; index.html gets the optional photos script."""
    folder = resources.files("kgzsl.inspection.explore") / "templates"
    for name in TEMPLATES:
        text = (folder / name).read_text(encoding="utf-8")
        if name == "index.html":
            text = text.replace("<!--KG_PHOTOS-->", '<script src="data/photos.js"></script>' if photos else "")
        (site / name).write_text(text, encoding="utf-8")
    shutil.copyfile(plotly_js(), site / "plotly.min.js")


def write_site(out: str | os.PathLike, *, nodes: dict[str, Any], details: list[dict[str, Any]], coords: Any,
               meta: dict[str, Any], photos: dict[str, Any] | None = None, force: bool = False,
               fill: Any = None) -> dict[str, Any]:
    """Write the site into ``out`` atomically (checked by :func:`check_site_dir` first).

    ``fill(site)`` (optional) runs first inside the temporary folder and returns the photo data (thumbnails
    are written there); ``details`` are the per-node records of :func:`kgzsl.inspection.explore.data.class_details`.
    Returns a summary: the folder, its files and size in bytes.
    """
    path = check_site_dir(out, force)
    plotly_js()  # before any work: a missing plotly is a one-line error
    with staged_dir(path) as tmp:
        if fill is not None:
            photos = fill(tmp)
        if photos is not None:
            for node, entries in photos.pop("by_class").items():
                details[int(node)]["p"] = entries
        data = tmp / "data"
        data.mkdir()
        shards = (len(details) + SHARD_SIZE - 1) // SHARD_SIZE
        _script(data / "nodes.js", "KG_NODES", nodes)
        _script(data / "meta.js", "KG_META", {**meta, "shard_size": SHARD_SIZE, "shards": shards, "photos": photos is not None})
        _script(data / "map.js", "KG_MAP", {"x": [round(float(x), 2) for x in coords[:, 0]],
                                            "y": [round(float(y), 2) for y in coords[:, 1]]})
        for k in range(shards):
            text = json.dumps(details[k * SHARD_SIZE:(k + 1) * SHARD_SIZE], separators=(",", ":"), allow_nan=False)
            (data / f"detail-{k:03d}.js").write_text(f"KG_DETAIL({k},{text});\n", encoding="ascii")
        if photos is not None:
            _script(data / "photos.js", "KG_PHOTOS", photos)
        _templates(tmp, photos is not None)
        (tmp / MARKER).write_text(json.dumps({"format": SITE_FORMAT, "version": SITE_VERSION, "run": meta.get("run")}, indent=1))
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        size = sum((tmp / f).stat().st_size for f in files)
    return {"out": str(path), "files": len(files), "bytes": size, "shards": shards}
