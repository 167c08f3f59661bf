"""GCNZ (Wang, Ye, Gupta, CVPR 2018): a deep GCN over the symmetrised WordNet hypernym graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from kgzsl.errors import KgzslError
from kgzsl.propagation.models._base import (
    Plan,
    PropagationModel,
    check_nodes,
    check_x,
    dropout,
    hop_plan,
)


class GCNZ(PropagationModel):
    r"""GCNZ: ``L = len(hidden_channels) + 1`` graph-convolution layers (6 by default).

    .. math::
        H^{(0)} = X,\qquad
        H^{(l)} = \phi\big(\hat A\,\mathrm{drop}(H^{(l-1)})\,W^{(l)} + b^{(l)}\big),\qquad
        \hat A = D^{-1/2}(A + A^\top + I)D^{-1/2},\qquad
        \hat W = H^{(L)} / \lVert H^{(L)} \rVert_2 \text{ (row-wise)}

    with :math:`\phi` = LeakyReLU(0.2) on every layer but the last (identity there), widths
    ``in -> 2048 -> 2048 -> 1024 -> 1024 -> 512 -> out`` as in the paper, and each row of the output
    L2-normalised (the loss compares directions).

    Differences from the reference code, on purpose: dropout (p = 0.5) is really applied to the input
    of every layer in training mode (the TensorFlow code configures it but never feeds the rate, so it
    never acted); input features are L2-normalised by the trainer instead of divided by their sum;
    no CUDA is assumed and runs are seeded.
    """

    name = "gcnz"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: Sequence[int] = (2048, 2048, 1024, 1024, 512),
        dropout: float = 0.5,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__(in_channels, out_channels, dropout)
        if isinstance(hidden_channels, int):
            hidden_channels = (hidden_channels,)
        self.hidden_channels = tuple(int(c) for c in hidden_channels)
        if any(c < 1 for c in self.hidden_channels):
            raise KgzslError(f"GCNZ: hidden widths must be positive, got {list(self.hidden_channels)}")
        self.negative_slope = float(negative_slope)
        dims = [self.in_channels, *self.hidden_channels, self.out_channels]
        self.convs = torch.nn.ModuleList(GCNConv(a, b, add_self_loops=True, normalize=True) for a, b in zip(dims[:-1], dims[1:]))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights, zero biases (PyG's GCNConv defaults, as in the paper's code)."""
        for conv in self.convs:
            conv.reset_parameters()

    def _activation(self, i: int, h: Tensor) -> Tensor:
        return F.leaky_relu(h, self.negative_slope) if i < len(self.convs) - 1 else h

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """All nodes: ``[N, in] -> [N, out]``, unit rows (reference order: transform, then aggregate)."""
        check_x(self, x)
        edge_index = self.undirected(edge_index, x.size(0))
        h = x
        for i, conv in enumerate(self.convs):
            h = dropout(h, self.dropout, self.training)
            h = self._activation(i, conv(h, edge_index))
        return F.normalize(h, dim=1)

    @torch.no_grad()
    def last_layer_inputs(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """``Z [N, hidden+1]`` with ``Z @ [W_last | b_last]^T`` = the un-normalised output (eval mode):
        the symmetric-normalised aggregate of the last hidden layer, and 1 for the bias (added after
        aggregation in GCNConv). Used by :mod:`kgzsl.inspection.explain` for attribution."""
        edge_index = self.undirected(edge_index, x.size(0))
        h = x
        for i, conv in enumerate(self.convs[:-1]):
            h = self._activation(i, conv(h, edge_index))
        norm_index, norm_weight = gcn_norm(edge_index, None, h.size(0), add_self_loops=True)
        aggregated = self.convs[-1].propagate(norm_index, x=h, edge_weight=norm_weight)
        return torch.cat([aggregated, torch.ones(h.size(0), 1)], dim=1)

    def plan(self, nodes: Tensor, edge_index: Tensor, num_nodes: int) -> Plan:
        """Layer ``l`` computes the nodes within ``L - l`` hops of ``nodes`` (PyG ``k_hop_subgraph``)."""
        nodes = check_nodes(nodes, num_nodes)
        edge_index = self.undirected(edge_index, num_nodes)
        norm_index, norm_weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
        src, dst = norm_index
        widths = [(conv.in_channels, conv.out_channels) for conv in self.convs]
        return hop_plan(nodes, edge_index, src, dst, norm_weight, widths, num_nodes)

    def forward_plan(self, x: Tensor, plan: Plan) -> Tensor:
        """Rows ``plan.nodes`` only; aggregates before the weight product (``(A H) W = A (H W)``)."""
        check_x(self, x)
        h = x[plan.input_nodes]
        for i, (conv, layer) in enumerate(zip(self.convs, plan.layers)):
            h = dropout(h, self.dropout, self.training)
            h = layer["adj"](h)
            h = self._activation(i, F.linear(h, conv.lin.weight, conv.bias))
        return F.normalize(h, dim=1)
