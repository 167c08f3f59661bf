"""DGP (Kampffmeyer et al., CVPR 2019): dense graph propagation over descendants, then ancestors."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import Linear

from kgzsl.errors import KgzslError
from kgzsl.propagation.models._base import (
    DistanceWeights,
    Plan,
    PropagationModel,
    SparseOperator,
    autocast_bf16,
    bf16_linear,
    check_index,
    check_nodes,
    check_x,
    dropout,
    dropout_mask,
    linear_flops,
    positions,
    unit_rows,
)


class DGP(PropagationModel):
    r"""Dense Graph Propagation with distance-group weighting (the paper's ``GCN_Dense_Att``).

    .. math::
        H = \phi\Big(\sum_{k=0}^{K} \alpha^{d}_k\, (D^{d}_k)^{-1} A^{d}_k\,
              \big(\mathrm{drop}(X)\,\Theta_d + b_d\big)\Big),\qquad
        \hat W = \mathrm{normalize}\Big(\sum_{k=0}^{K} \alpha^{a}_k\, (D^{a}_k)^{-1} A^{a}_k\,
              \big(\mathrm{drop}(H)\,\Theta_a + b_a\big)\Big)

    * :math:`A^{d}_k[i, j] = 1` when ``j`` is a descendant of ``i`` at (shortest) hop distance ``k``
      (the descendant phase, first); :math:`A^{a}_k = (A^{d}_k)^\top`: ``j`` is an ancestor of ``i``
      (the ancestor phase, second). :math:`D_k` is the row sum of :math:`A_k` (row normalisation per
      group; a node with no neighbour in a group gets a zero row there, as in the reference code).
    * Groups (from the released code, ``lim = 4`` in ``train_gcn_dense_att.py``): distance 0 (the node
      itself) is a group of its own; distances ``1 .. K-1`` one group each; all distances ``>= K``
      merged into group ``K``. ``max_distance = K = 4`` gives 5 weights a phase.
    * :math:`\alpha = \mathrm{softmax}(a)`, one learned logit a group a phase, initialised to equal
      weights.
    * Dropout 0.5 on the input of both phases (``hidden_layers = 'd2048,d'``); LeakyReLU(0.2) after the
      descendant phase only (the released code's last ``GraphConv`` has ``relu=False``: after the
      ancestor phase there is only the L2 normalisation of each output row); the bias is added
      before aggregation (``support = x W + b``, then ``A support``).

    Unlike the reference code: no CUDA is hard-coded, runs are seeded, and training computes only the
    rows the loss reads (:meth:`forward_plan`): both phases are linear before the activation, so
    ``A (X Theta) = (A X) Theta``; aggregation happens in the narrow input space, the descendant
    phase runs only on the ancestors of the training nodes and the ancestor phase only on the
    training nodes.
    """

    name = "dgp"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 2048,
        max_distance: int = 4,
        dropout: float = 0.5,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__(in_channels, out_channels, dropout)
        if int(hidden_channels) < 1:
            raise KgzslError(f"DGP: hidden_channels must be positive, got {hidden_channels}")
        if int(max_distance) < 1:
            raise KgzslError(f"DGP: max_distance must be at least 1, got {max_distance}")
        self.hidden_channels = int(hidden_channels)
        self.max_distance = int(max_distance)
        self.num_groups = self.max_distance + 1
        self.negative_slope = float(negative_slope)
        self.lin_desc = Linear(self.in_channels, self.hidden_channels, weight_initializer="glorot", bias_initializer="zeros")
        self.lin_anc = Linear(self.hidden_channels, self.out_channels, weight_initializer="glorot", bias_initializer="zeros")
        self.att_desc = torch.nn.Parameter(torch.ones(self.num_groups))
        self.att_anc = torch.nn.Parameter(torch.ones(self.num_groups))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights, zero biases, equal group weights (as the reference code)."""
        self.lin_desc.reset_parameters()
        self.lin_anc.reset_parameters()
        with torch.no_grad():
            self.att_desc.fill_(1.0)
            self.att_anc.fill_(1.0)

    @staticmethod
    def graph_inputs(graph: Any) -> tuple[Tensor, ...]:
        """The dense ``(node, ancestor)`` pairs and their hop distances (0 = the node itself)."""
        return (
            torch.as_tensor(graph.dense_index, dtype=torch.long),
            torch.as_tensor(graph.dense_distance, dtype=torch.long),
        )

    def group_weights(self) -> tuple[Tensor, Tensor]:
        """The softmax-normalised group weights ``(alpha_desc, alpha_anc)``."""
        return torch.softmax(self.att_desc.float(), 0), torch.softmax(self.att_anc.float(), 0)

    def distance_weights(self) -> DistanceWeights:
        """The group weights per phase, for ``kgzsl inspect`` (detached)."""
        alpha_desc, alpha_anc = self.group_weights()
        return DistanceWeights({"descendant": alpha_desc.detach(), "ancestor": alpha_anc.detach()})

    def distance_parameters(self) -> list[torch.nn.Parameter]:
        """The group logits ``a`` of both phases (10 numbers by default)."""
        return [self.att_desc, self.att_anc]

    def _relation(self, dense_index: Tensor, dense_distance: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
        """Validated pairs as ``(node, ancestor, distance group)``."""
        dense_index = check_index(dense_index, num_nodes, "DGP dense_index")
        dense_distance = torch.as_tensor(dense_distance, dtype=torch.long).reshape(-1)
        if dense_distance.numel() != dense_index.size(1):
            raise KgzslError(f"DGP: {dense_distance.numel()} distances for {dense_index.size(1)} dense pairs")
        if dense_distance.numel() and int(dense_distance.min()) < 0:
            raise KgzslError("DGP: dense_distance has negative hop distances")
        group = dense_distance.clamp(max=self.max_distance)
        return dense_index[0], dense_index[1], group

    def _counts(self, dst: Tensor, group: Tensor, num_nodes: int) -> Tensor:
        """``[num_nodes, groups]`` number of pairs a node aggregates from in each group."""
        return torch.bincount(dst * self.num_groups + group, minlength=num_nodes * self.num_groups).view(num_nodes, self.num_groups)

    def _operator(self, src: Tensor, dst: Tensor, group: Tensor, counts: Tensor, rows: Tensor, cols: Tensor, num_nodes: int) -> tuple[SparseOperator, Tensor]:
        """``sum_k alpha_k D_k^-1 A_k`` restricted to ``rows`` x ``cols`` as one sparse pattern.

        Entry ``(dst, src)`` holds ``1 / counts[dst, group]`` and its group, so the values for given
        weights are ``value * alpha[group]`` (:meth:`SparseOperator.grouped`). Pairs ``src -> dst`` with ``dst`` in
        ``rows`` are kept (their ``src`` must lie in ``cols``). Also returns the ``[len(rows), groups]``
        indicators of non-empty groups: a row receives ``(indicator @ alpha) * b`` of the bias.
        """
        row_pos = positions(rows, num_nodes)
        col_pos = positions(cols, num_nodes)
        keep = row_pos[dst] >= 0
        src, dst, group = src[keep], dst[keep], group[keep]
        value = 1.0 / counts[dst, group].to(torch.float32)
        op = SparseOperator(row_pos[dst], col_pos[src], (rows.numel(), cols.numel()), value, group)
        return op, (counts[rows] > 0).to(torch.float32)

    def _full_operators(self, dense_index: Tensor, dense_distance: Tensor, n: int) -> tuple[tuple[SparseOperator, Tensor], tuple[SparseOperator, Tensor]]:
        """The descendant- and ancestor-phase operators over all ``n`` nodes, each with its bias indicators."""
        node, ancestor, group = self._relation(dense_index, dense_distance, n)
        everyone = torch.arange(n)
        desc = self._operator(node, ancestor, group, self._counts(ancestor, group, n), everyone, everyone, n)
        anc = self._operator(ancestor, node, group, self._counts(node, group, n), everyone, everyone, n)
        return desc, anc

    def forward(self, x: Tensor, dense_index: Tensor, dense_distance: Tensor) -> Tensor:
        """All nodes: ``[N, in] -> [N, out]``, unit rows (reference order: transform, then aggregate)."""
        check_x(self, x)
        (desc, _), (anc, _) = self._full_operators(dense_index, dense_distance, x.size(0))
        alpha_desc, alpha_anc = self.group_weights()
        h = self.lin_desc(dropout(x, self.dropout, self.training))
        h = F.leaky_relu(desc(h, desc.grouped(alpha_desc)), self.negative_slope)
        h = self.lin_anc(dropout(h, self.dropout, self.training))
        return F.normalize(anc(h, anc.grouped(alpha_anc)), dim=1)

    @torch.no_grad()
    def last_layer_inputs(self, x: Tensor, dense_index: Tensor, dense_distance: Tensor) -> Tensor:
        """``Z [N, hidden+1]`` with ``Z @ [Theta_a | b_a]^T`` = the un-normalised output (eval mode): the
        ancestor-phase aggregate of the hidden layer and the bias coefficient (sum of the group weights
        of the non-empty groups). Used by :mod:`kgzsl.inspection.explain` for attribution."""
        (desc, _), (anc, bias) = self._full_operators(dense_index, dense_distance, x.size(0))
        alpha_desc, alpha_anc = self.group_weights()
        h = F.leaky_relu(desc(self.lin_desc(x), desc.grouped(alpha_desc)), self.negative_slope)
        return torch.cat([anc(h, anc.grouped(alpha_anc)), (bias @ alpha_anc).unsqueeze(1)], dim=1)

    def plan(self, nodes: Tensor, dense_index: Tensor, dense_distance: Tensor, num_nodes: int) -> Plan:
        """Ancestor phase on ``nodes``; descendant phase on their ancestors; features of those ancestors' descendants."""
        nodes = check_nodes(nodes, num_nodes)
        node, ancestor, group = self._relation(dense_index, dense_distance, num_nodes)
        counts_desc = self._counts(ancestor, group, num_nodes)
        counts_anc = self._counts(node, group, num_nodes)
        in_nodes = positions(nodes, num_nodes)[node] >= 0
        middle = torch.unique(torch.cat([ancestor[in_nodes], nodes]))  # rows of the descendant phase
        in_middle = positions(middle, num_nodes)[ancestor] >= 0
        inputs = torch.unique(torch.cat([node[in_middle], middle]))  # features read
        desc, bias_desc = self._operator(node, ancestor, group, counts_desc, middle, inputs, num_nodes)
        anc, bias_anc = self._operator(ancestor, node, group, counts_anc, nodes, middle, num_nodes)
        flops = linear_flops(middle.numel(), self.in_channels + 1, self.hidden_channels) + linear_flops(
            nodes.numel(), self.hidden_channels, self.out_channels
        )
        layers = [{"adj": desc, "bias": bias_desc}, {"adj": anc, "bias": bias_anc}]
        return Plan(nodes=nodes, input_nodes=inputs, layers=layers, rows=[middle.numel(), nodes.numel()], flops=flops)

    def forward_plan(self, x: Tensor, plan: Plan) -> Tensor:
        """Rows ``plan.nodes`` only (see the class docstring); equals ``forward(...)[nodes]`` without dropout.

        Descendant phase: aggregate the (50-d) inputs, append the bias coefficient as one more input
        column, one product with ``[Theta_d | b_d]``. Ancestor phase: aggregate the hidden rows, then
        ``addmm`` with the per-row bias. Under bfloat16 autocast only the two dense products (and their
        gradients) run in bfloat16 (:func:`bf16_linear`); the rest stays float32.
        """
        check_x(self, x)
        if autocast_bf16(x):
            with torch.autocast(x.device.type, enabled=False):
                return self._forward_plan(x, plan, bf16_linear)
        return self._forward_plan(x, plan, None)

    def _forward_plan(self, x: Tensor, plan: Plan, linear: Any) -> Tensor:
        alpha_desc, alpha_anc = self.group_weights()
        desc, anc = plan.layers
        op = desc["adj"]
        drop = self.training and self.dropout > 0.0
        if drop:  # the scaled input rows are kept on the plan: only the mask is new each step
            x_in = plan.inputs(x, 1.0 / (1.0 - self.dropout))
            x_in = torch.where(dropout_mask(x_in, self.dropout), x_in, 0.0)
        else:
            x_in = plan.inputs(x)
        if linear is not None and not x_in.requires_grad and x_in.device.type == "cpu":
            # one aggregate per distance group, weighted afterwards: d alpha is then a dot product of the
            # small [rows, groups, in] aggregates, not a sampled product over the 200k pattern entries
            per_group = torch.sparse.mm(_stacked(plan, op, self.num_groups), x_in).view(op.shape[0], self.num_groups, -1)
            h = (per_group * alpha_desc.view(1, -1, 1)).sum(1)
        else:
            h = op(x_in, op.grouped(alpha_desc))
        h = torch.cat([h, (desc["bias"] @ alpha_desc).unsqueeze(1)], dim=1)
        weight = torch.cat([self.lin_desc.weight, self.lin_desc.bias.unsqueeze(1)], dim=1)
        h = F.leaky_relu(F.linear(h, weight) if linear is None else linear(h, weight), self.negative_slope)
        op = anc["adj"]
        values = op.grouped(alpha_anc)
        if drop:  # A (h * mask / (1 - p)) as (A / (1 - p)) (h * mask): the scale on the 12k entries, not the 4M rows
            h = torch.where(dropout_mask(h, self.dropout), h, 0.0)
            values = values * (1.0 / (1.0 - self.dropout))
        h = op(h, values)
        bias = (anc["bias"] @ alpha_anc).unsqueeze(1) * self.lin_anc.bias
        if linear is None:
            return F.normalize(torch.addmm(bias, h, self.lin_anc.weight.t()), dim=1)
        return unit_rows(linear(h, self.lin_anc.weight) + bias)


def _stacked(plan: Plan, op: SparseOperator, groups: int) -> Tensor:
    """``op``'s pattern with row ``r`` split into rows ``r * groups + g`` by distance group ``g`` (values
    unweighted), as a coalesced COO matrix; built once a plan."""
    hit = plan.cache.get(("stacked", groups))
    if hit is None:
        row = op.row * groups + op.group
        order = torch.argsort(row * op.shape[1] + op.col)
        index = torch.stack([row[order], op.col[order]])
        hit = torch.sparse_coo_tensor(index, op.value[order], (op.shape[0] * groups, op.shape[1]), is_coalesced=True, check_invariants=False)
        plan.cache[("stacked", groups)] = hit
    return hit
