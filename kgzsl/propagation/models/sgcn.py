"""SGCN: the two-layer, mean-aggregating GCN baseline of DGP (Kampffmeyer et al., CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import Linear, SimpleConv
from torch_geometric.utils import degree

from kgzsl.errors import KgzslError
from kgzsl.propagation.models._base import (
    Plan,
    PropagationModel,
    check_nodes,
    check_x,
    dropout,
    hop_plan,
)


class SGCN(PropagationModel):
    r"""SGCN: two graph-convolution layers with mean (random-walk) normalisation.

    .. math::
        H = \phi\big(\bar A\,(\mathrm{drop}(X) W_1 + b_1)\big),\qquad
        \hat W = \mathrm{normalize}\big(\bar A\,(\mathrm{drop}(H) W_2 + b_2)\big),\qquad
        \bar A = D^{-1}(A + A^\top + I)

    :math:`\phi` = LeakyReLU(0.2), hidden width 2048, dropout 0.5 on the input of both layers (DGP's
    ``'d2048,d'``), output rows L2-normalised. Since every row of :math:`\bar A` sums to one, the
    bias passes through the mean unchanged. Unlike the reference code, no CUDA is assumed and runs
    are seeded.
    """

    name = "sgcn"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 2048,
        dropout: float = 0.5,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__(in_channels, out_channels, dropout)
        if int(hidden_channels) < 1:
            raise KgzslError(f"SGCN: hidden_channels must be positive, got {hidden_channels}")
        self.hidden_channels = int(hidden_channels)
        self.negative_slope = float(negative_slope)
        self.lins = torch.nn.ModuleList([
            Linear(self.in_channels, self.hidden_channels, weight_initializer="glorot", bias_initializer="zeros"),
            Linear(self.hidden_channels, self.out_channels, weight_initializer="glorot", bias_initializer="zeros"),
        ])
        self.mean = SimpleConv(aggr="mean", combine_root="self_loop")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot (Xavier-uniform) weights and zero biases, as DGP's ``GraphConv``."""
        for lin in self.lins:
            lin.reset_parameters()

    def _activation(self, i: int, h: Tensor) -> Tensor:
        return F.leaky_relu(h, self.negative_slope) if i == 0 else h

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """All nodes: ``[N, in] -> [N, out]``, unit rows (reference order: transform, then mean)."""
        check_x(self, x)
        edge_index = self.undirected(edge_index, x.size(0))
        h = x
        for i, lin in enumerate(self.lins):
            h = dropout(h, self.dropout, self.training)
            h = self._activation(i, self.mean(lin(h), edge_index))
        return F.normalize(h, dim=1)

    @torch.no_grad()
    def last_layer_inputs(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """``Z [N, hidden+1]`` with ``Z @ [W_last | b_last]^T`` = the un-normalised output (eval mode).

        The last layer is linear in its weights, so this exposes each node's prediction as a linear
        function of them (used by :mod:`kgzsl.inspection.explain` for attribution). Mean weights sum to one, so
        the bias coefficient is 1.
        """
        edge_index = self.undirected(edge_index, x.size(0))
        h = x
        for i, lin in enumerate(self.lins[:-1]):
            h = self._activation(i, self.mean(lin(h), edge_index))
        return torch.cat([self.mean(h, edge_index), torch.ones(h.size(0), 1)], dim=1)

    def plan(self, nodes: Tensor, edge_index: Tensor, num_nodes: int) -> Plan:
        """Layer 2 on ``nodes``, layer 1 on their 1-hop neighbourhood, features of the 2-hop one."""
        nodes = check_nodes(nodes, num_nodes)
        edge_index = self.undirected(edge_index, num_nodes)
        loops = torch.arange(num_nodes)
        src = torch.cat([edge_index[0], loops])
        dst = torch.cat([edge_index[1], loops])
        weight = 1.0 / degree(dst, num_nodes)[dst]
        widths = [(lin.in_channels, lin.out_channels) for lin in self.lins]
        return hop_plan(nodes, edge_index, src, dst, weight, widths, num_nodes)

    def forward_plan(self, x: Tensor, plan: Plan) -> Tensor:
        """Rows ``plan.nodes`` only, aggregating first: ``mean(H) W + b = mean(H W + b)``."""
        check_x(self, x)
        h = x[plan.input_nodes]
        for i, (lin, layer) in enumerate(zip(self.lins, plan.layers)):
            h = dropout(h, self.dropout, self.training)
            h = self._activation(i, lin(layer["adj"](h)))
        return F.normalize(h, dim=1)
