"""kgzsl's file formats on disk: JSON read and written atomically, pickle-free safetensors, and the
one format/version check every reader uses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open

from kgzsl.core.atomic import atomic_file, staged_file
from kgzsl.errors import KgzslError


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=1, sort_keys=False)
        handle.write("\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON with an error that names the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise KgzslError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise KgzslError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise KgzslError(f"{what} {path} is not valid JSON (not UTF-8 text: byte {exc.start})") from None
    except RecursionError:
        raise KgzslError(f"{what} {path} is not valid JSON kgzsl reads (nested too deeply)") from None
    except OSError as exc:
        raise KgzslError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None


def check_format(header: Any, name: str | int, version: int | str | None, where: str | os.PathLike, what: str) -> dict:
    """Return ``header`` (a JSON object or safetensors metadata) if it is a kgzsl ``what`` of format ``name``
    and ``version`` (compared as stored: an int in JSON, a str in safetensors metadata; None: the format
    has no separate version); else a KgzslError naming ``where`` and what was found."""
    found = header.get("format") if isinstance(header, dict) else type(header).__name__
    if not isinstance(header, dict) or found != name:
        raise KgzslError(f"{where} is not a kgzsl {what} (format {found!r})")
    if version is not None and header.get("version") != version:
        raise KgzslError(f"{where} is {what} format version {header.get('version')}; this kgzsl reads {version}")
    return header


def save_tensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Save numpy arrays or torch tensors as a safetensors file, atomically (numpy arrays alone: without torch; the
    file's bytes are the same either way)."""
    import numpy as np  # lazy: numpy

    if all(isinstance(value, np.ndarray) for value in tensors.values()):
        from safetensors.numpy import save_file  # lazy: safetensors

        ready: dict[str, Any] = {key: np.ascontiguousarray(value) for key, value in tensors.items()}
    else:
        import torch  # lazy: torch
        from safetensors.torch import save_file  # lazy: torch

        ready = {key: (torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value)
                 .detach().contiguous().cpu() for key, value in tensors.items()}
    with staged_file(path, "tensor file") as tmp:
        save_file(ready, str(tmp), metadata=metadata)
        _sort_safetensors_metadata(tmp)
        os.chmod(tmp, 0o644)  # safetensors recreates the file, so mkstemp's 0600 would stick


def _sort_safetensors_metadata(path: str | os.PathLike) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted, in place.

    safetensors writes the metadata in the order of a Rust hash map, which changes from run to run;
    sorted, equal tensors and metadata always give byte-identical files.
    """
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        meta = header.pop("__metadata__", None)
        if not meta:
            return
        header = {"__metadata__": dict(sorted(meta.items())), **header}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= size:  # the same keys and values: the same length (padding spaces keep the alignment)
            handle.seek(8)
            handle.write(text.ljust(size, b" "))
            return
        data = handle.read()
        text = text.ljust(-(-len(text) // 8) * 8, b" ")
        handle.seek(0)
        handle.write(len(text).to_bytes(8, "little") + text + data)
        handle.truncate()


def load_tensors(path: str | os.PathLike, what: str = "tensor file") -> tuple[dict[str, Any], dict[str, str]]:
    """Load a safetensors file as torch tensors plus its string metadata; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise KgzslError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise KgzslError(f"{what} {path} is not a readable safetensors file ({exc})") from None
    return tensors, metadata
