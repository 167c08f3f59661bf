"""The garbage collector's settings for a ``kgzsl`` process (the command line, not a library caller's process).

Importing torch creates about a million Python objects that live until the process ends. With CPython's default
thresholds (a collection every 700 new objects) the collector scans them again and again while they are created,
and once more when the interpreter shuts down. Measured here (fastest of 6, ``python -c "import torch"``): 1.41 s
with the defaults, 1.11 s with a threshold of 100,000 and :func:`gc.freeze` before the exit. A kgzsl command pays
the same import, so every command that loads torch starts and ends 0.3 s sooner. Cycles are still collected, only
less often; nothing is computed differently.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: objects created (net of those freed) between two youngest-generation collections; CPython's default is 700
THRESHOLD = 100_000


@contextmanager
def command_process(threshold: int = THRESHOLD) -> Iterator[None]:
    """Run a whole command under a higher first collection threshold and, on the way out, freeze every object left
    (:func:`gc.freeze`): the exit then frees them with the process instead of scanning them for cycles first.
    For a process's entry point only: a library caller's own collector settings are not this module's to change."""
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.freeze()
