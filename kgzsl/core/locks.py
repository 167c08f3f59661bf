"""One writer per output: a process claims an output path before its long work, and a second process that
wants the same path is refused at once instead of racing it to the rename.

The claim is an ``flock`` on a lock file named after the output's real path, in a folder of the temporary
directory (never beside the output, so a refused command leaves nothing in the user's folders). The kernel
drops an ``flock`` when its process dies, SIGKILL included, so a killed writer never blocks the next one;
the lock file is removed when the claim is released (unlinked while still locked, and a claimer checks that
the file it locked is still the one at that name, so removal never lets two writers in).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kgzsl.errors import KgzslError

try:
    import fcntl
except ImportError:  # not on POSIX: outputs are not claimed (writes stay atomic)
    fcntl = None  # type: ignore[assignment]

#: real output path -> the descriptor of its locked file, for the claims this process holds
_HELD: dict[str, int] = {}
_GUARD = threading.Lock()
#: how many commands (:func:`command_scope`) this process is running: claims made "for the command" need one
_COMMANDS = [0]


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """One command's run (``kgzsl`` CLI): claims taken for the command last until it ends, then are released.

    Outside a command (a library call), :func:`claim_output` with ``for_command=True`` claims nothing, so a
    Python caller never keeps a claim after the call that wrote the output returns or fails.
    """
    _COMMANDS[0] += 1
    try:
        yield
    finally:
        _COMMANDS[0] -= 1
        if not _COMMANDS[0]:
            release_all_outputs()


def lock_folder() -> Path:
    """Where lock files live: a per-user folder of the temporary directory."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"kgzsl-locks-{uid}"


def _key(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(path))


def _lock_file(key: str) -> Path:
    return lock_folder() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"


def _owner(fd: int, patience: float = 0.2) -> str:
    """`` (pid N)`` of the process holding the lock file ``fd``, or ``""``. The holder writes its pid just after it
    locks, so a claimer that comes in between waits up to ``patience`` seconds for it."""
    deadline = time.monotonic() + patience
    while True:
        with contextlib.suppress(OSError, ValueError):
            text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
            if text and text[0].isdigit():
                return f" (pid {text[0]})"
        if time.monotonic() >= deadline:
            return ""
        time.sleep(0.005)


def claim_output(path: str | os.PathLike, what: str = "output", *, for_command: bool = False) -> None:
    """Claim ``path`` for this process until :func:`release_output` (or the process's end); a KgzslError naming
    it when another live process holds it. Idempotent within a process. ``for_command``: a claim taken before a
    command's long work, held until the command ends (:func:`command_scope`); outside a command it is not taken.
    Only rank 0 of a torchrun group claims (the ranks write one output together). Where no lock file can be made,
    nothing is claimed."""
    if fcntl is None or os.environ.get("RANK", "0") not in ("", "0") or (for_command and not _COMMANDS[0]):
        return
    key = _key(path)
    with _GUARD:
        if key in _HELD:
            return
        file = _lock_file(key)
        try:
            file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return
        while True:
            try:
                fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _owner(fd)
                os.close(fd)
                raise KgzslError(f"{what} {path} is being written by another kgzsl process{owner}: "
                                 "wait until it has finished, or choose another output") from None
            try:
                current = os.stat(file).st_ino == os.fstat(fd).st_ino
            except OSError:
                current = False
            if current:  # else its holder removed it between our open and our lock: take the new one
                break
            os.close(fd)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {key}\n".encode(), 0)
        _HELD[key] = fd


def release_output(path: str | os.PathLike) -> None:
    """Give up this process's claim on ``path`` (nothing if it holds none)."""
    key = _key(path)
    with _GUARD:
        fd = _HELD.pop(key, None)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(_lock_file(key))  # still locked: a waiting claimer sees the name gone and retries
        os.close(fd)


def release_all_outputs() -> None:
    """Give up every claim this process holds (the end of a command)."""
    for key in list(_HELD):
        release_output(key)


def held_outputs() -> list[str]:
    """The real paths this process holds claims on."""
    return sorted(_HELD)
