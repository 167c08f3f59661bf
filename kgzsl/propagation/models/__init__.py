"""Weight-propagation models: word-vector node features -> classifier vectors for every graph node.

``GCNZ`` (Wang et al. 2018), ``SGCN`` and ``DGP`` (Kampffmeyer et al. 2019), each a
:class:`~kgzsl.propagation.models._base.PropagationModel` with an all-nodes ``forward`` and a receptive-field
``forward_plan`` for fast training. :func:`build_model` makes one by name. A new model is one file
(a ``PropagationModel`` subclass) and an entry in :data:`MODELS`.
"""

from __future__ import annotations

from typing import Any

from kgzsl.errors import KgzslError
from kgzsl.propagation.models._base import DistanceWeights, Plan, PropagationModel
from kgzsl.propagation.models.dgp import DGP
from kgzsl.propagation.models.gcnz import GCNZ
from kgzsl.propagation.models.sgcn import SGCN

#: the models by name (CLI choices, checkpoints' ``model`` field)
MODELS: dict[str, type[PropagationModel]] = {"gcnz": GCNZ, "sgcn": SGCN, "dgp": DGP}

__all__ = ["DGP", "GCNZ", "MODELS", "DistanceWeights", "Plan", "PropagationModel", "SGCN", "build_model"]


def build_model(name: str, in_channels: int, out_channels: int, **kwargs: Any) -> PropagationModel:
    """Construct model ``name`` (gcnz, sgcn, dgp); ``kwargs`` override the papers' defaults.

    Unknown names or keyword arguments are refused with a :class:`KgzslError` naming the choices.
    """
    key = str(name).lower()
    if key not in MODELS:
        raise KgzslError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    cls = MODELS[key]
    accepted = set(cls.init_params) - {"in_channels", "out_channels"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise KgzslError(f"model {key} takes no argument {', '.join(unknown)} (it takes {', '.join(sorted(accepted))})")
    return cls(in_channels, out_channels, **kwargs)
