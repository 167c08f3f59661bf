"""Weight-propagation models: word-vector node features -> classifier vectors for every graph node.

``GCNZ`` (Wang et al. 2018), ``SGCN`` and ``DGP`` (Kampffmeyer et al. 2019), each a
:class:`~kgzsl.models._base.PropagationModel` with an all-nodes ``forward`` and a receptive-field
``forward_plan`` for fast training. :func:`build_model` makes one by name.
"""

from __future__ import annotations

import inspect
from typing import Any

from kgzsl.errors import KgzslError
from kgzsl.models._base import Plan, PropagationModel
from kgzsl.models.dgp import DGP
from kgzsl.models.gcnz import GCNZ
from kgzsl.models.sgcn import SGCN

MODELS: dict[str, type[PropagationModel]] = {"gcnz": GCNZ, "sgcn": SGCN, "dgp": DGP}

__all__ = ["DGP", "GCNZ", "MODELS", "Plan", "PropagationModel", "SGCN", "build_model"]


def build_model(name: str, in_channels: int, out_channels: int, **kwargs: Any) -> PropagationModel:
    """Construct model ``name`` (gcnz, sgcn, dgp); ``kwargs`` override the papers' defaults.

    Unknown names or keyword arguments are refused with a :class:`KgzslError` naming the choices.
    """
    key = str(name).lower()
    if key not in MODELS:
        raise KgzslError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    cls = MODELS[key]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "in_channels", "out_channels"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise KgzslError(f"model {key} takes no argument {', '.join(unknown)} (it takes {', '.join(sorted(accepted))})")
    return cls(in_channels, out_channels, **kwargs)
