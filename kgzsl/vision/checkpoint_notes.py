"""What one process learned about a checkpoint file, kept for the next under the file's stamp (path, size, time).

The notes hold the classifier's fingerprint, the feature size and the keys of the ONNX models built from the
checkpoint. With them, a command whose ONNX model is already cached runs the backbone without building the torch
network or reading the checkpoint (0.15 s of a cold one-photo ``kgzsl predict`` here).

The notes only ever save work. Notes whose stamp no longer matches the file (reinstalled, replaced, touched) are
ignored, and so are notes that are missing, unreadable or garbled; the values are then computed from the
checkpoint and written again, atomically. A note that cannot be written costs only a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from kgzsl.core.files import read_json, write_json
from kgzsl.core.resources import cache_dir
from kgzsl.errors import KgzslError

#: bump when what the notes hold changes meaning: older notes are then ignored
FORMAT = 1

log = logging.getLogger("kgzsl")


def file_stamp(path: str | os.PathLike) -> dict[str, Any]:
    """What tells a file's content changed without reading it: its absolute path, size and modification time (ns)."""
    resolved = Path(path).resolve()
    status = resolved.stat()
    return {"path": str(resolved), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def notes_file(checkpoint: str | os.PathLike) -> Path:
    """Where the notes on ``checkpoint`` are kept: ``<kgzsl cache>/models/notes/<hash of its path>.json``."""
    name = hashlib.sha256(str(Path(checkpoint).resolve()).encode()).hexdigest()[:24]
    return cache_dir() / "models" / "notes" / f"{name}.json"


def read_notes(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The notes on ``checkpoint`` (a dict of what was recorded), or ``{}`` where there are none that still hold."""
    try:
        stamp = file_stamp(checkpoint)
        record = read_json(notes_file(checkpoint), "checkpoint notes")
    except (OSError, KgzslError):
        return {}
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("stamp") != stamp:
        return {}
    notes = record.get("notes")
    return notes if isinstance(notes, dict) else {}


def add_notes(checkpoint: str | os.PathLike, **entries: Any) -> None:
    """Record ``entries`` (JSON values; a dict value is merged with the one recorded) in the notes on ``checkpoint``."""
    notes = read_notes(checkpoint)
    for key, value in entries.items():
        old = notes.get(key)
        notes[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
    path = notes_file(checkpoint)
    try:
        record = {"format": FORMAT, "stamp": file_stamp(checkpoint), "notes": notes}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
    except (KgzslError, OSError) as exc:
        log.warning("cannot keep notes on checkpoint %s at %s (%s): the next run reads the checkpoint again",
                    checkpoint, path, exc)
