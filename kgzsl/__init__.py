"""kgzsl: knowledge-graph zero-shot image recognition.

Pipeline, one module a stage: ``graph`` (class hierarchy + word vectors -> graph folder),
``embeddings`` (word vectors), ``models`` (GCNZ / SGCN / DGP), ``train``, ``recognize``,
``evaluate``, ``inspect``. The ``kgzsl`` command is a thin layer over these.
"""

from kgzsl.errors import KgzslError

__version__ = "0.1.0"
__all__ = ["KgzslError", "__version__"]
