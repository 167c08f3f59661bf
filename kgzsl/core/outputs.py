"""Output checks, run before any long work.

:func:`check_output_dir` lets ``--force`` replace only a kgzsl output of the same kind and never the current
folder, a parent of it, the home folder, ``/`` or the project; :func:`check_output_file` and
:func:`check_folder_for_files` make sure a file or a folder of files can be written there; :func:`atomic_dir`
writes a checked output folder atomically. An output folder is claimed (:mod:`kgzsl.core.locks`) from the
check until a command ends (and by :func:`atomic_dir` while it writes): another process writing it is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from kgzsl.core.atomic import _probe, _writable_place, staged_dir
from kgzsl.core.locks import claim_output, release_output
from kgzsl.core.resources import project_root
from kgzsl.errors import KgzslError

# -------------------------------------------------------------------------------- output checks
OUTPUT_KINDS = {"graph": "graph folder", "train": "training run folder", "features": "feature folder", "site": "explorer site"}
# Each kind's own format file, as kgzsl.graph.class_graph, kgzsl.propagation.run, kgzsl.inspection.explore and kgzsl.vision.features write it (format names "kgzsl.graph", "kgzsl.train").
_FORMAT_FILES = {"graph": ("graph.json", "kgzsl.graph"), "train": ("train.json", "kgzsl.train"),
                 "site": ("kgzsl-site.json", "kgzsl.explore")}


def _json_dict(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            obj = json.load(handle)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def output_kind(folder: str | os.PathLike) -> str | None:
    """Which kgzsl output ``folder`` is, told by its own format file: a key of OUTPUT_KINDS, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for kind, (name, format_name) in _FORMAT_FILES.items():
        header = _json_dict(folder / name)
        if header is not None and header.get("format") == format_name:
            return kind
    run, manifest = _json_dict(folder / "run.json"), _json_dict(folder / "manifest.json")
    if run is not None and run.get("format") == 1 and "files_sha256" in run and "shard_size" in run:
        return "features"
    if manifest is not None and manifest.get("format") == 1 and isinstance(manifest.get("shards"), list):
        return "features"
    return None


def _protected(path: Path) -> str | None:
    """Why ``path`` may never be an output folder (the current folder, home, /, the project ...), or None."""
    target = path.resolve()
    places: list[tuple[str, Path]] = []
    with contextlib.suppress(OSError):
        places.append(("the current folder", Path.cwd().resolve()))
    with contextlib.suppress(RuntimeError, KeyError, OSError):
        places.append(("the home folder", Path.home().resolve()))
    root = project_root()
    if root is not None:
        places.append(("the kgzsl project folder", root))
    if target == Path(target.anchor):
        return "the root folder"
    for name, place in places:
        if target == place:
            return name
        if target in place.parents:
            return f"a parent of {name}"
    return None


def check_output_dir(path: str | os.PathLike, kind: str, force: bool = False) -> Path:
    """Refuse, before any work, an output folder of ``kind`` kgzsl may not write; return it as a Path.

    Graph and run folders are written whole: an existing one is refused unless ``force``, and
    ``force`` replaces only a kgzsl output of the same kind (told by its format file) or an empty
    folder, never an unrelated folder or a file. A feature folder is resumed in place, so it must be
    one already, or hold no visible file. Never the current folder, a parent of it, the home folder,
    ``/`` or the project; and the place must be writable.
    """
    path = Path(path)
    label = OUTPUT_KINDS[kind]
    reason = _protected(path)
    if reason:
        raise KgzslError(f"output folder {path} is {reason}: kgzsl never writes a {label} there; choose a new folder inside it")
    if not (path.exists() or path.is_symlink()):
        _writable_place(path, label)
        claim_output(path, "output folder", for_command=True)
        return path
    if not path.is_dir():
        raise KgzslError(f"output {path} exists and is not a folder: kgzsl never replaces a file with a {label}; choose another --out")
    try:
        entries = sorted(p.name for p in path.iterdir())
    except OSError as exc:
        raise KgzslError(f"output folder {path} cannot be read ({exc.strerror or exc}): choose another --out") from None
    found = output_kind(path)
    if found is not None and found != kind:
        raise KgzslError(f"output folder {path} is a kgzsl {OUTPUT_KINDS[found]}, not a {label}: "
                         f"{'--force only replaces a ' + label + '; ' if force else ''}choose another --out")
    if kind == "features":
        visible = [name for name in entries if not name.startswith(".")]
        if found is None and visible:
            raise KgzslError(f"output folder {path} is not empty and holds no kgzsl feature run (e.g. {visible[0]}): "
                             f"{'--force only starts over in a feature folder; ' if force else ''}choose an empty or new folder")
        _probe(path, "run.json", label, path)
        claim_output(path, "output folder", for_command=True)
        return path
    if not force:
        if found == kind or not entries:
            raise KgzslError(f"output folder {path} already exists: pass --force to replace it")
        raise KgzslError(f"output folder {path} already exists and is not a kgzsl {label} (it holds {entries[0]}): choose another --out")
    if found != kind and entries:
        marker = _FORMAT_FILES[kind][0]
        raise KgzslError(f"output folder {path} is not a kgzsl {label} (no kgzsl {marker}; it holds {entries[0]}): "
                         "--force only replaces kgzsl's own output; choose another --out")
    _writable_place(path, label)
    claim_output(path, "output folder", for_command=True)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file", example: str = "plot.png") -> Path:
    """Refuse, before any work, a file output that cannot be written (a folder, an unwritable place);
    ``example`` is the file name suggested inside a folder given instead of a file."""
    path = Path(path)
    if path.is_dir():
        raise KgzslError(f"{what} {path} is a folder: give a file name, e.g. {path / example}")
    _writable_place(path, what)
    return path


def check_folder_for_files(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse, before any work, a folder to write files into that is a file or cannot be written."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise KgzslError(f"{what} {path} is a file, not a folder: give a folder (it is created if missing)")
        _probe(path, ".kgzsl-probe", what, path)
    else:
        _writable_place(path, what)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False, *, kind: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` only if the block succeeds.

    ``path`` is checked by :func:`check_output_dir` first: an existing one is refused unless
    ``force``, which replaces only a kgzsl output of the same ``kind``, after the new one is complete.
    The claim on ``path`` that check takes (:mod:`kgzsl.core.locks`) is given up when the block ends.
    """
    try:
        path = check_output_dir(path, kind, force)
        claim_output(path, "output folder")  # a library caller's claim too, for the write itself
        with staged_dir(path) as tmp:
            yield tmp
    finally:
        release_output(path)


