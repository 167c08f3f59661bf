"""Shared pieces of the weight-propagation models: the base class, receptive-field plans, sparse products.

Every model maps word-vector node features ``x [N, F]`` to classifier vectors ``[N, D]`` over a class
graph. Two ways to run it:

* ``forward(x, *graph_inputs)``: every node, in the reference order (transform, then aggregate), as the
  papers' code does; used once at the end of training to predict all nodes.
* ``forward_plan(x, plan)``: only the rows ``plan.nodes``, computing each layer on just the nodes the
  next layer reads (the receptive field) and aggregating in the narrower of the two feature spaces
  (``(A X) W`` instead of ``A (X W)``, equal by associativity). A training step only needs the seen
  classes, so this is where the speed comes from. With dropout off it equals ``forward(...)[nodes]``
  to float tolerance (tests/test_models.py checks this).
"""

from __future__ import annotations

import copy
import functools
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch_geometric.utils import k_hop_subgraph, to_undirected

from kgzsl.errors import KgzslError


@dataclass
class Plan:
    """The receptive field of ``nodes``: what :meth:`PropagationModel.forward_plan` needs, precomputed once.

    ``input_nodes`` are the graph nodes whose features are read; ``layers`` holds one entry a layer
    (sparse matrices mapping the previous layer's rows to this layer's rows, plus model-specific
    extras); ``rows`` lists the number of rows each layer computes; ``flops`` counts the dense
    matrix-multiply floating-point operations of one forward pass (2 per multiply-add).
    """

    nodes: Tensor
    input_nodes: Tensor
    layers: list[dict[str, Any]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    flops: int = 0
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def inputs(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """``x[input_nodes] * scale``, kept between calls while ``x`` is the same unchanged tensor: a training
        step reads the same node features every epoch, so the gather (and dropout's scaling) is done once."""
        if x.requires_grad:
            return x[self.input_nodes] * scale if scale != 1.0 else x[self.input_nodes]
        key = ("inputs", scale)
        hit = self.cache.get(key)
        if hit is None or hit[0] is not x or hit[1] != x._version:
            rows = x[self.input_nodes]
            hit = (x, x._version, rows * scale if scale != 1.0 else rows)
            self.cache[key] = hit
        return hit[2]

    def to(self, device: torch.device | str) -> "Plan":
        """A copy whose node lists, sparse operators and per-layer tensors live on ``device``."""
        move = lambda value: value.to(device) if isinstance(value, (Tensor, SparseOperator)) else value  # noqa: E731
        layers = [{key: move(value) for key, value in layer.items()} for layer in self.layers]
        return Plan(self.nodes.to(device), self.input_nodes.to(device), layers, list(self.rows), self.flops)


@dataclass
class DistanceWeights:
    """Learned weights of hop-distance groups, one vector a propagation phase (DGP's softmax attention).

    ``phases`` maps a phase name (``"descendant"``) to its weights ``[groups]``: group ``k`` is hop
    distance ``k``, the last group every distance from ``groups - 1`` on.
    """

    phases: dict[str, Tensor]

    def labels(self, at_least: str = ">=") -> list[str]:
        """The groups' names: ``"0"``, ``"1"``, ..., ``">=K"``."""
        groups = len(next(iter(self.phases.values())))
        return [str(d) for d in range(groups - 1)] + [f"{at_least}{groups - 1}"]


class PropagationModel(torch.nn.Module):
    """Base class of GCNZ, SGCN and DGP (see the module docstring for the two forward paths).

    A model is one file: a subclass with a ``name``, a constructor that stores every argument under its
    own name (so :meth:`config` can read them back, as scikit-learn's ``get_params``), and
    ``reset_parameters``, ``forward``, ``plan``, ``forward_plan`` and ``last_layer_inputs``; then an
    entry in :data:`kgzsl.propagation.models.MODELS`. ``graph_inputs`` defaults to the hypernym ``edge_index``;
    :meth:`distance_weights` is an optional diagnostic.
    """

    #: name used by :func:`kgzsl.propagation.models.build_model`, the CLI and checkpoints
    name: str = ""
    #: the constructor's parameter names, recorded once a class (:meth:`__init_subclass__`)
    init_params: tuple[str, ...] = ("in_channels", "out_channels", "dropout")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()):
            raise TypeError(f"{cls.__name__}.__init__ must name its arguments (no *args / **kwargs): config() reads them back")
        cls.init_params = tuple(name for name in params if name != "self")

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise KgzslError(f"{type(self).__name__}: in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        if not 0.0 <= dropout < 1.0:
            raise KgzslError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.dropout = float(dropout)

    def config(self) -> dict[str, Any]:
        """The constructor arguments as stored on the model (JSON-able), so a checkpoint can rebuild it."""
        missing = [name for name in self.init_params if not hasattr(self, name)]
        if missing:
            raise KgzslError(f"internal error: {type(self).__name__} stores no attribute for its argument(s) {', '.join(missing)}")
        return {name: _jsonable(getattr(self, name)) for name in self.init_params}

    @staticmethod
    def graph_inputs(graph: Any) -> tuple[Tensor, ...]:
        """The graph tensors ``forward`` takes after ``x``, read from a :class:`kgzsl.graph.class_graph.ClassGraph`:
        by default the hypernym edges ``child -> parent`` (models symmetrise them, :meth:`undirected`)."""
        return (torch.as_tensor(graph.edge_index, dtype=torch.long),)

    def undirected(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """``edge_index`` validated against ``num_nodes`` and symmetrised (PyG ``to_undirected``)."""
        return to_undirected(check_index(edge_index, num_nodes, f"{type(self).__name__} edge_index"), num_nodes=num_nodes)

    def reset_parameters(self) -> None:  # pragma: no cover - abstract
        """(Re)initialise every parameter (called at the end of the constructor)."""
        raise NotImplementedError

    def forward(self, x: Tensor, *graph_inputs: Tensor) -> Tensor:  # pragma: no cover - abstract
        """All nodes: ``[N, in_channels] -> [N, out_channels]``, unit rows."""
        raise NotImplementedError

    def plan(self, nodes: Tensor, *graph_inputs: Tensor, num_nodes: int) -> Plan:  # pragma: no cover
        """Precompute the receptive field of ``nodes`` (graph-only work, done once per node set)."""
        raise NotImplementedError

    def forward_plan(self, x: Tensor, plan: Plan) -> Tensor:  # pragma: no cover - abstract
        """Outputs for ``plan.nodes`` only, ``[len(nodes), out_channels]``."""
        raise NotImplementedError

    def last_layer_inputs(self, x: Tensor, *graph_inputs: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``Z [N, K]`` with ``Z @ [W | b]^T`` = the un-normalised output in eval mode, ``W``, ``b`` the last
        layer's weights: each prediction as a linear function of them (:mod:`kgzsl.inspection.explain`'s attribution)."""
        raise NotImplementedError

    def distance_weights(self) -> DistanceWeights | None:
        """Optional diagnostic: learned weights per hop-distance group (DGP); None for models without."""
        return None

    def distance_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters behind :meth:`distance_weights` (DGP's group logits), which a trainer may give their own
        learning rate (``train(distance_lr=...)``); none for models without."""
        return []


def _jsonable(value: Any) -> Any:
    """Tuples as lists (a JSON record reads back equal), everything else as stored."""
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def check_x(model: PropagationModel, x: Tensor, num_nodes: int | None = None) -> None:
    """Refuse features of the wrong shape with a one-line error instead of a deep matmul traceback."""
    if x.dim() != 2 or x.size(1) != model.in_channels:
        raise KgzslError(
            f"{type(model).__name__}: node features must be [N, {model.in_channels}], got {list(x.shape)}"
        )
    if num_nodes is not None and x.size(0) != num_nodes:
        raise KgzslError(f"{type(model).__name__}: {x.size(0)} feature rows for a graph of {num_nodes} nodes")


def check_index(index: Tensor, num_nodes: int, what: str) -> Tensor:
    """Validate a ``[2, E]`` node index tensor against ``num_nodes``."""
    index = torch.as_tensor(index, dtype=torch.long)
    if index.dim() != 2 or index.size(0) != 2:
        raise KgzslError(f"{what} must have shape [2, E], got {list(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_nodes):
        raise KgzslError(f"{what} refers to nodes outside 0..{num_nodes - 1}")
    return index


def check_nodes(nodes: Tensor, num_nodes: int) -> Tensor:
    """Validate the node subset of a plan (1-D, distinct, in range)."""
    nodes = torch.as_tensor(nodes, dtype=torch.long).reshape(-1)
    if nodes.numel() == 0:
        raise KgzslError("a plan needs at least one node")
    if int(nodes.min()) < 0 or int(nodes.max()) >= num_nodes:
        raise KgzslError(f"plan nodes must lie in 0..{num_nodes - 1}")
    if torch.unique(nodes).numel() != nodes.numel():
        raise KgzslError("plan nodes must be distinct")
    return nodes


def positions(subset: Tensor, num_nodes: int) -> Tensor:
    """Map graph node -> row in ``subset`` (-1 where absent)."""
    pos = torch.full((num_nodes,), -1, dtype=torch.long)
    pos[subset] = torch.arange(subset.numel())
    return pos


class SparseOperator:
    """A fixed sparsity pattern ``[rows, cols]`` whose values may change every step (and be learned).

    Entries are kept sorted row-major (the coalesced COO order, which is also the CSR order); ``value``
    and ``group`` are per-entry constants in that order. The transposed pattern and a CSR copy are
    precomputed, so the backward pass is one sparse product for the dense input and one sampled
    product (``torch.sparse.sampled_addmm``) for the values, instead of what ``torch.sparse.mm``'s own
    backward does (re-sorting the transpose every step, and a slow path for value gradients).
    """

    def __init__(self, row: Tensor, col: Tensor, shape: tuple[int, int], value: Tensor | None = None, group: Tensor | None = None) -> None:
        rows, cols = int(shape[0]), int(shape[1])
        row, col = row.long(), col.long()
        key = row * cols + col
        order = torch.argsort(key)
        sorted_key = key[order]
        if bool((sorted_key[1:] == sorted_key[:-1]).any()):
            raise KgzslError("internal error: a sparse pattern has repeated entries")
        self.shape = (rows, cols)
        self.row, self.col = row[order], col[order]
        self.value = (value if value is not None else torch.ones(row.numel()))[order].to(torch.float32)
        self.group = group[order].long() if group is not None else None
        self.index = torch.stack([self.row, self.col])
        self.crow = _csr_offsets(self.row, rows)  # row r's entries: crow[r]:crow[r+1]

    # the transpose and the CSR pattern serve the backward pass only: built at first use (a plan's operators),
    # never for the all-nodes prediction at the end of training
    @functools.cached_property
    def t_perm(self) -> Tensor:
        return torch.argsort(self.col * self.shape[0] + self.row)

    @functools.cached_property
    def t_index(self) -> Tensor:
        return torch.stack([self.col[self.t_perm], self.row[self.t_perm]])

    @functools.cached_property
    def t_crow(self) -> Tensor:  # row offsets of the transpose (entries in t_perm order)
        return _csr_offsets(self.col, self.shape[1]).to(self.col.device)

    @functools.cached_property
    def pattern(self) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(
                self.crow, self.col, torch.zeros(self.nnz, device=self.col.device), self.shape, check_invariants=False
            )

    def to(self, device: torch.device | str) -> "SparseOperator":
        """A copy whose tensors live on ``device`` (training on a GPU moves the plans once)."""
        moved = copy.copy(self)
        for name in ("row", "col", "value", "group", "t_perm", "t_index", "index", "pattern", "crow", "t_crow"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(moved, name, tensor.to(device))
        return moved

    @property
    def nnz(self) -> int:
        return int(self.row.numel())

    def matrix(self, values: Tensor | None = None) -> Tensor:
        """The COO matrix with ``values`` (default: the constant ``value``)."""
        values = self.value if values is None else values
        return torch.sparse_coo_tensor(self.index, values, self.shape, is_coalesced=True, check_invariants=False)

    def transposed(self, values: Tensor) -> Tensor:
        return torch.sparse_coo_tensor(
            self.t_index, values[self.t_perm], (self.shape[1], self.shape[0]), is_coalesced=True, check_invariants=False
        )

    def __call__(self, x: Tensor, values: Tensor | None = None) -> Tensor:
        """``A @ x`` in float32 with ``A`` holding ``values`` (differentiable in both)."""
        return _SparseMatmul.apply(self.value if values is None else values, x, self)

    def grouped(self, alpha: Tensor) -> Tensor:
        """Entry values ``value * alpha[group]`` (one learned weight per group), with a deterministic backward.

        Autograd's own backward of ``alpha[group]`` is an accumulating ``index_put_``, which on CPU adds
        with parallel atomics in whatever order the threads run: two seeded trainings then drift apart
        by an ulp or so per step. Summing each group's gradient with ``bincount`` keeps runs bitwise equal.
        """
        if self.group is None:
            raise KgzslError("internal error: grouped() on a sparse pattern without groups")
        return _GroupScale.apply(alpha, self)


def _csr_offsets(index: Tensor, size: int) -> Tensor:
    """CSR offsets ``[size + 1]``: once the entries are sorted by ``index``, those of value ``i`` lie at ``offsets[i]:offsets[i+1]``."""
    offsets = torch.zeros(size + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.bincount(index, minlength=size), 0)
    return offsets


def _segment_matmul(crow: Tensor, col: Tensor, values: Tensor, x: Tensor) -> Tensor:
    """CSR ``A @ x`` as a gather and a per-row segment sum: each row is summed in entry order by one
    thread, so unlike cuSPARSE's product (which may add with atomics) it repeats bitwise on a GPU."""
    return torch.segment_reduce(values.unsqueeze(1) * x[col], "sum", offsets=crow, axis=0, unsafe=True, initial=0.0)


class _SparseMatmul(torch.autograd.Function):
    """``A(values) @ x`` with a precomputed-transpose backward (see :class:`SparseOperator`).

    On the CPU the products are ``torch.sparse.mm`` (row-parallel, repeatable); on a GPU they are
    gather + segment sums (:func:`_segment_matmul`) and the value gradient a row-wise dot product, so
    that two seeded GPU trainings give equal results too.
    """

    @staticmethod
    def forward(ctx: Any, values: Tensor, x: Tensor, op: SparseOperator) -> Tensor:  # type: ignore[override]
        values32, x32 = values.float(), x.float()
        ctx.op, ctx.x_dtype = op, x.dtype
        ctx.save_for_backward(values32, x32)
        if x32.is_cuda:
            return _segment_matmul(op.crow, op.col, values32, x32)
        return torch.sparse.mm(op.matrix(values32), x32)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        values, x = ctx.saved_tensors
        op: SparseOperator = ctx.op
        grad = grad.float().contiguous()
        grad_values = grad_x = None
        if grad.is_cuda:
            if ctx.needs_input_grad[0]:
                grad_values = (grad[op.row] * x[op.col]).sum(dim=1)
            if ctx.needs_input_grad[1]:
                grad_x = _segment_matmul(op.t_crow, op.t_index[1], values[op.t_perm], grad).to(ctx.x_dtype)
            return grad_values, grad_x, None
        if ctx.needs_input_grad[0]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                grad_values = torch.sparse.sampled_addmm(op.pattern, grad, x.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            grad_x = torch.sparse.mm(op.transposed(values), grad).to(ctx.x_dtype)
        return grad_values, grad_x, None


class _GroupScale(torch.autograd.Function):
    """``value * alpha[group]`` with ``d alpha`` summed per group by ``bincount`` (see :meth:`SparseOperator.grouped`)."""

    @staticmethod
    def forward(ctx: Any, alpha: Tensor, op: SparseOperator) -> Tensor:  # type: ignore[override]
        ctx.op, ctx.n_groups = op, alpha.numel()
        return op.value * alpha[op.group]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        op: SparseOperator = ctx.op
        weights = (grad * op.value).double()  # float64 sums: also independent of the entry order's rounding
        if weights.is_cuda:  # bincount adds with atomics there; a one-hot product does not
            onehot = torch.nn.functional.one_hot(op.group, ctx.n_groups).to(weights.dtype)
            return (weights @ onehot).to(grad.dtype), None
        return torch.bincount(op.group, weights=weights, minlength=ctx.n_groups).to(grad.dtype), None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout (zero with probability ``p``, scale the rest by ``1 / (1 - p)``), as ``F.dropout``.

    The mask is drawn as 16-bit lanes of random 64-bit words and kept where a lane is at least
    ``round(65536 p) - 32768`` (exact for p = 0.5, within 1/65536 otherwise): on CPU this is about 6x
    faster than ``F.dropout``'s Bernoulli sampling, which was the costliest elementwise op of a DGP step.
    """
    if not training or p == 0.0:
        return x
    return x.mul(dropout_mask(x, p)).mul_(1.0 / (1.0 - p))


def dropout_mask(x: Tensor, p: float) -> Tensor:
    """The keep mask (bool, ``x``'s shape) of :func:`dropout`; ``x_scaled * mask`` with ``x_scaled = x / (1 - p)``
    is bitwise the same as ``dropout(x, p, True)`` (zeros keep ``x``'s sign either way), one pass fewer."""
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    return words.view(torch.int16)[:n].view(x.shape) >= (round(p * 65536) - 32768)


def autocast_bf16(x: Tensor) -> bool:
    """Whether bfloat16 autocast is on for ``x``'s device (``train(bf16=True)``)."""
    kind = x.device.type
    return torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16


def bf16_linear(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight.T`` with bfloat16 operands, float32 input, output and gradients.

    Only the three products (forward, both gradients) run in bfloat16 (about 3x faster than float32 on
    CPUs with AVX-512 BF16); everything around them stays float32, and unlike autocast no cast of a
    float32 activation is kept for backward twice.
    """
    return _Bf16Linear.apply(x, weight)


class _Bf16Linear(torch.autograd.Function):
    """See :func:`bf16_linear`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        xb, wb = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(xb, wb)
        return torch.mm(xb, wb.t()).float()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        xb, wb = ctx.saved_tensors
        gb = grad.to(torch.bfloat16)
        grad_x = torch.mm(gb, wb).float() if ctx.needs_input_grad[0] else None
        grad_w = torch.mm(gb.t(), xb).float() if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def unit_rows(x: Tensor) -> Tensor:
    """``F.normalize(x, dim=1)`` (the same forward values) with a fused backward: ``(g - y (y . g)) / |x|``
    in three passes over the rows instead of autograd's dozen."""
    return _UnitRows.apply(x)


class _UnitRows(torch.autograd.Function):
    """See :func:`unit_rows`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
        y = x / norm
        ctx.save_for_backward(y, norm)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        y, norm = ctx.saved_tensors
        dot = torch.linalg.vecdot(y, grad, dim=1).unsqueeze(1)
        return torch.addcmul(grad, y, dot, value=-1.0).div_(norm)


def linear_flops(rows: int, in_features: int, out_features: int) -> int:
    """Floating-point operations of a ``[rows, in] @ [in, out]`` product (2 per multiply-add)."""
    return 2 * int(rows) * int(in_features) * int(out_features)


def hop_plan(
    nodes: Tensor, edge_index: Tensor, src: Tensor, dst: Tensor, weight: Tensor, widths: list[tuple[int, int]], num_nodes: int
) -> Plan:
    """Receptive-field plan of a stack of 1-hop layers with the normalised adjacency ``(dst <- src, weight)``.

    Layer ``l`` of ``L`` computes the nodes within ``L - l`` hops of ``nodes`` (PyG ``k_hop_subgraph``
    over the undirected ``edge_index``); ``widths`` are the layers' (in, out) sizes, for the FLOP count.
    """
    sets = [nodes]  # sets[k]: nodes computed by the layer k steps before the last
    for _ in widths:
        sets.append(k_hop_subgraph(sets[-1], 1, edge_index, num_nodes=num_nodes)[0])
    sets.reverse()  # sets[0]: features read; sets[l]: rows of layer l; sets[L] = nodes
    layers = []
    flops = 0
    for l, (fan_in, fan_out) in enumerate(widths, start=1):
        out_pos = positions(sets[l], num_nodes)
        in_pos = positions(sets[l - 1], num_nodes)
        keep = out_pos[dst] >= 0
        shape = (sets[l].numel(), sets[l - 1].numel())
        layers.append({"adj": SparseOperator(out_pos[dst[keep]], in_pos[src[keep]], shape, weight[keep])})
        flops += linear_flops(sets[l].numel(), fan_in, fan_out)
    return Plan(nodes=nodes, input_nodes=sets[0], layers=layers, rows=[s.numel() for s in sets[1:]], flops=flops)
