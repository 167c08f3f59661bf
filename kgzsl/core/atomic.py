"""Atomic writes: every output goes to a temporary sibling first and is renamed into place.

Temporaries are named ``.{name}.kgzsl-{pid}-{host}-XXXXXXXX.tmp`` (``.old`` for a folder being replaced):
removed on any exit the process survives (SIGTERM included, see :func:`kgzsl.core.signals.raise_on_sigterm`),
and those of a killed writer (SIGKILL) are removed by the next writer of the same path once their pid is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kgzsl.core.signals import _signals_deferred
from kgzsl.errors import KgzslError

# --------------------------------------------------------------------------------- temporaries
_STALE_REST = re.compile(r"(\d+)-([A-Za-z0-9]*)-[a-z0-9_]+\.(?:tmp|old)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]


def _temp_base(path: Path) -> str:
    return f".{path.name[:100]}.kgzsl-"


def _temp_prefix(path: Path) -> str:
    """``.{name}.kgzsl-{pid}-{host}-``: recognisably kgzsl's, and tells whose writer it is."""
    return f"{_temp_base(path)}{os.getpid()}-{_host()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _remove(path: str | os.PathLike) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what killed kgzsl writers of ``path`` left beside it; return what was removed.

    Only ``.{name}.kgzsl-{pid}-{host}-*.tmp`` / ``.old`` entries of this host whose process is gone
    are touched: never a live writer's temporary, another machine's, or anything else.
    """
    path = Path(path)
    base, host = _temp_base(path), _host()
    try:
        names = [e.name for e in os.scandir(path.parent or ".") if e.name.startswith(base)]
    except OSError:
        return []
    removed = []
    for name in names:
        match = _STALE_REST.fullmatch(name[len(base):])
        if match and match.group(2) == host and not _pid_alive(int(match.group(1))):
            _remove(path.parent / name)
            removed.append(path.parent / name)
    return removed


def _make_parent(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _writable_place(path, what)  # names the file in the way or the folder that cannot be written
        raise KgzslError(f"cannot create folder {path.parent} for {what} {path} ({exc.strerror or exc})") from None


def _temporary(path: Path, folder: bool = False, suffix: str = ".tmp", what: str = "output") -> Path:
    """A new temporary sibling of ``path`` (after removing stale ones of dead writers)."""
    _make_parent(path, what)
    clean_stale_temporaries(path)
    try:
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent))
            tmp.chmod(0o755)
        else:
            fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
            os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise KgzslError(
            f"cannot write {what} {path}: folder {path.parent} is not writable ({exc.strerror or exc}): "
            "choose a writable location"
        ) from None
    return tmp


def _writable_place(path: Path, what: str) -> None:
    """Check that ``path`` can be created: its nearest existing ancestor is a folder we can write in."""
    folder, child = Path(os.path.abspath(path)).parent, path.name or "out"
    while not (folder.exists() or folder.is_symlink()) and folder != folder.parent:
        folder, child = folder.parent, folder.name
    if not folder.is_dir():
        raise KgzslError(f"cannot write {what} {path}: {folder} is a file, not a folder; choose another location")
    _probe(folder, child, what, path)


def _probe(folder: Path, name: str, what: str, path: Path) -> None:
    """Create and remove a temporary file in ``folder``: the one honest test of "can write here"."""
    try:
        with _signals_deferred():  # one step: a SIGTERM between creating and removing it would leave the file behind
            fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(folder / name), suffix=".tmp", dir=folder)
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        raise KgzslError(
            f"cannot write {what} {path}: folder {folder} is not writable ({exc.strerror or exc}): choose a writable location"
        ) from None


# ------------------------------------------------------------------------------- a full disk
class DiskFull(KgzslError):
    """Writing an output ran out of room (no space left, a quota, the file-size limit); ``reason`` says which."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large (the file-size limit)",
         errno.EDQUOT: "disk quota exceeded"}


def _full_disk(exc: BaseException) -> str | None:
    """Why ``exc`` is a write that ran out of room, or None. safetensors reports it as a text with the OS error code."""
    if isinstance(exc, DiskFull):
        return exc.reason
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return _FULL[exc.errno]
    found = re.search(r"os error (\d+)|code: (\d+)", str(exc)) if type(exc).__name__ == "SafetensorError" else None
    code = int(found.group(1) or found.group(2)) if found else None
    return _FULL.get(code) if code is not None else None


def _out_of_room(exc: BaseException, what: str, path: Path) -> None:
    """Raise a one-line :class:`DiskFull` naming ``path`` where ``exc`` is a write that ran out of room."""
    reason = _full_disk(exc)
    if reason is not None:
        raise DiskFull(f"cannot write {what} {path}: {reason}; nothing was replaced (the previous output, if any, is "
                       "untouched): make room and run again", reason) from None


# ------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def staged_file(path: str | os.PathLike, what: str = "output file") -> Iterator[Path]:
    """Yield the path of a new temporary sibling of ``path``; rename it over ``path`` only if the block succeeds.
    A write that runs out of room ends in a one-line :class:`DiskFull` naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise KgzslError(f"{what} {path} is a folder: give a file name")
    tmp: Path | None = None
    try:
        with _signals_deferred():
            tmp = _temporary(path, what=what)
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with _signals_deferred():
                _remove(tmp)
        _out_of_room(exc, what, path)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    with staged_file(path) as tmp, open(tmp, mode) as handle:
        yield handle


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``), so even a SIGKILL never finds
    the output missing; False where the system or the file system cannot (then the caller renames twice)."""
    global _RENAMEAT2
    if _RENAMEAT2 is None:
        try:
            import ctypes  # lazy: startup

            libc = ctypes.CDLL(None, use_errno=True)
            _RENAMEAT2 = libc.renameat2 if sys.platform.startswith("linux") and hasattr(libc, "renameat2") else False
        except (OSError, AttributeError):
            _RENAMEAT2 = False
    if not _RENAMEAT2:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return _RENAMEAT2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


_RENAMEAT2: Any = None


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``path``; it replaces ``path`` only if the block succeeds (a write
    that runs out of room ends in a one-line :class:`DiskFull` naming ``path``).

    No checks on ``path``: the caller decides whether it may be replaced (see :func:`atomic_dir`).
    The old ``path`` is removed only after the new folder is in place.
    """
    path = Path(path)
    tmp: Path | None = None
    old: Path | None = None
    try:
        with _signals_deferred():
            tmp = _temporary(path, folder=True, what="output folder")
        yield tmp
        with _signals_deferred():  # the two renames are one step: never left half done
            if (path.exists() or path.is_symlink()) and _exchange(tmp, path):
                old, tmp = tmp, None  # the previous folder now sits in the temporary: removed below
            elif path.exists() or path.is_symlink():  # no atomic exchange here: two renames, microseconds apart
                old = _temporary(path, folder=True, suffix=".old", what="output folder")
                os.replace(path, old / "x")
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(old / "x", path)
                    raise
            else:
                os.replace(tmp, path)
            tmp = None
    except BaseException as exc:
        if tmp is not None:
            with _signals_deferred():
                shutil.rmtree(tmp, ignore_errors=True)
        _out_of_room(exc, "output folder", path)
        raise
    finally:
        if old is not None:
            with _signals_deferred():
                shutil.rmtree(old, ignore_errors=True)
