"""kgzsl: knowledge-graph zero-shot image recognition.

The package is laid out as the pipeline: ``graph`` (class hierarchy + node features -> graph folder),
``propagation`` (GCNZ / SGCN / DGP trained to regress seen classifiers; the run folder), ``recognition``
(scoring images, hedged answers, evaluation) and ``inspection`` (why a class got its classifier, plots),
with ``vision`` (backbones, images, features) for the CNN side and ``core`` for shared plumbing. The
``kgzsl`` command (``kgzsl.cli``) is a thin layer over these, and so is :class:`Recognizer` (``kgzsl.api``),
the one object for Python.
"""

import importlib
from typing import Any

from kgzsl.errors import KgzslError

__version__ = "0.1.0"
#: imported on first use, so that ``import kgzsl`` stays light (no torch)
_LAZY = {"Recognizer": "kgzsl.api", "Prediction": "kgzsl.api", "Explanation": "kgzsl.api",
         "Run": "kgzsl.propagation.run", "load_run": "kgzsl.propagation.run"}
__all__ = ["Explanation", "KgzslError", "Prediction", "Recognizer", "Run", "__version__", "load_run"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kgzsl' has no attribute {name!r}")
