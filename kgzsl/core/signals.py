"""SIGTERM and SIGINT raised as exceptions while kgzsl writes, so every cleanup block runs and a
rename pair is never cut in half."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from kgzsl.core.locks import command_scope


# ------------------------------------------------------------------------------------- signals
class Terminated(KeyboardInterrupt):
    """SIGTERM raised as an exception (see :func:`raise_on_sigterm`), so every cleanup block runs.

    A KeyboardInterrupt, so code that already stops quietly on Ctrl-C (DataLoader workers, tqdm)
    stops quietly on SIGTERM too.
    """


class _Deferral:
    """Signals caught by :func:`raise_on_sigterm` while a rename pair or a cleanup must not be cut."""

    depth = 0
    pending: type[BaseException] | None = None


def _in_finalizer(frame: Any) -> bool:
    """Whether ``frame`` runs inside a ``__del__``, where Python prints and drops a raised exception."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _in_import(frame: Any) -> bool:
    """Whether ``frame`` runs inside a module being imported: an exception raised into a half-imported C extension
    (torch's) can abort the interpreter (SIGABRT, no cleanup) instead of unwinding."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _on_signal(signum: int, frame: Any) -> None:
    exc = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    if _Deferral.depth:
        _Deferral.pending = _Deferral.pending or exc
        return
    if _in_finalizer(frame) or _in_import(frame):  # raised here it would be lost or abort: deliver it again just after
        retry = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        retry.daemon = True
        retry.start()
        return
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise exc()


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`Terminated` instead of killing the process.

    A plain SIGTERM would skip the ``except BaseException`` blocks that remove temporaries. SIGINT
    keeps raising KeyboardInterrupt; both wait until a rename pair or a cleanup in progress is done.
    The block is one command's run (:func:`kgzsl.core.locks.command_scope`): on leaving it, the outputs it claimed are released.
    """
    installed = {}
    if threading.current_thread() is threading.main_thread():
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            if signal.getsignal(signum) is default:  # leave a handler someone else chose (or SIG_IGN) alone
                installed[signum] = signal.signal(signum, _on_signal)
    try:
        with command_scope():  # the outputs the command claims are released when it ends (kgzsl.core.locks)
            yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


class _signals_deferred:  # noqa: N801 - used like a function: ``with _signals_deferred():``
    """Hold a signal caught by :func:`raise_on_sigterm` until the block ends, then raise it."""

    def __enter__(self) -> None:
        self.counted = threading.current_thread() is threading.main_thread()
        if self.counted:
            _Deferral.depth += 1

    def __exit__(self, *exc_info: Any) -> bool:
        if self.counted:
            _Deferral.depth -= 1
            if not _Deferral.depth and _Deferral.pending is not None:
                pending, _Deferral.pending = _Deferral.pending, None
                raise pending()
        return False
