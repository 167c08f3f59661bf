"""GCNZ / SGCN / DGP: shapes, defaults, dropout, the receptive-field path equal to the all-nodes path, and the
base interface a fourth model needs (one class, one registry entry)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import Linear
from torch_geometric.utils import degree

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import node_features
from kgzsl.propagation.models import (
    DGP,
    GCNZ,
    MODELS,
    SGCN,
    Plan,
    PropagationModel,
    build_model,
)
from kgzsl.propagation.models._base import (
    SparseOperator,
    bf16_linear,
    check_nodes,
    check_x,
    dropout,
    hop_plan,
    unit_rows,
)

OUT = 1281  # EfficientNet-Lite0 classifier rows with the bias column
SMALL_WIDTHS = {"gcnz": {"hidden_channels": (96, 96, 64, 64, 32)}, "sgcn": {"hidden_channels": 96}, "dgp": {"hidden_channels": 96}}


@pytest.fixture(scope="module")
def mid_graph(glove):
    """A real WordNet graph of 200 ImageNet-1k and 209 ImageNet-21k classes, closed upward (1,105 nodes)."""
    from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids
    from kgzsl.graph.class_graph import build_wordnet_graph

    return build_wordnet_graph(imagenet1k_wnids()[::5], imagenet21k_unseen_wnids()[::100], vectors=glove)


def _perturbed(name: str, in_channels: int, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A model whose group weights and biases are not at their (uniform / zero) initial values."""
    torch.manual_seed(seed)
    model = build_model(name, in_channels, OUT, **kwargs)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param) * (param.abs().mean() + 0.1))
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("graph_name", ["small_graph", "mid_graph"])
def test_restricted_forward_equals_all_nodes(name, graph_name, request):
    graph = request.getfixturevalue(graph_name)
    x = node_features(graph)
    model = _perturbed(name, x.size(1), **SMALL_WIDTHS[name]).eval()
    inputs = model.graph_inputs(graph)
    generator = torch.Generator().manual_seed(1)
    seen = torch.from_numpy(np.flatnonzero(graph.mask("seen")))
    unseen = torch.from_numpy(np.flatnonzero(graph.mask("unseen")))
    subsets = {
        "seen": seen,
        "mixed": torch.cat([seen[:3], unseen[:3]])[torch.randperm(6, generator=generator)],
        "all": torch.arange(graph.num_nodes),
    }
    with torch.no_grad():
        full = model(x, *inputs)
        for label, nodes in subsets.items():
            plan = model.plan(nodes, *inputs, num_nodes=graph.num_nodes)
            part = model.forward_plan(x, plan)
            assert part.shape == (nodes.numel(), OUT)
            torch.testing.assert_close(part, full[nodes], atol=2e-5, rtol=1e-4, msg=f"{name} on {label} nodes")
    # the receptive field really is smaller than the graph for the seen classes
    plan = model.plan(seen, *inputs, num_nodes=graph.num_nodes)
    assert plan.rows[-1] == seen.numel()
    assert plan.flops < model.plan(torch.arange(graph.num_nodes), *inputs, num_nodes=graph.num_nodes).flops


@pytest.mark.parametrize("name", sorted(MODELS))
def test_restricted_gradients_equal_all_nodes(name, mid_graph):
    """Training through the plan (custom sparse backward) gives the gradients of the all-nodes model."""
    x = node_features(mid_graph)
    model = _perturbed(name, x.size(1), dropout=0.0, **SMALL_WIDTHS[name]).train()
    inputs = model.graph_inputs(mid_graph)
    nodes = torch.from_numpy(np.flatnonzero(mid_graph.mask("seen")))
    target = torch.nn.functional.normalize(torch.randn(nodes.numel(), OUT, generator=torch.Generator().manual_seed(2)), dim=1)

    def grads(out: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        (out - target).pow(2).sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    full = grads(model(x, *inputs)[nodes])
    part = grads(model.forward_plan(x, model.plan(nodes, *inputs, num_nodes=mid_graph.num_nodes)))
    assert full.keys() == part.keys()
    for key in full:
        assert full[key].abs().sum() > 0, f"{name}: {key} got no gradient"
        torch.testing.assert_close(part[key], full[key], atol=1e-4, rtol=1e-3, msg=f"{name}: gradient of {key}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dropout_is_applied_in_training_only(name, small_graph):
    x = node_features(small_graph)
    torch.manual_seed(0)
    model = build_model(name, x.size(1), OUT, **SMALL_WIDTHS[name])
    inputs = model.graph_inputs(small_graph)
    plan = model.plan(torch.arange(small_graph.num_nodes), *inputs, num_nodes=small_graph.num_nodes)
    model.train()
    assert not torch.allclose(model.forward_plan(x, plan), model.forward_plan(x, plan))
    assert not torch.allclose(model(x, *inputs), model(x, *inputs))
    model.eval()
    torch.testing.assert_close(model.forward_plan(x, plan), model.forward_plan(x, plan))
    out = model(x, *inputs)
    assert out.shape == (small_graph.num_nodes, OUT)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(small_graph.num_nodes))


@pytest.mark.parametrize("p", [0.5, 0.2, 0.8])
def test_dropout_helper_statistics(p):
    from kgzsl.propagation.models._base import dropout

    x = torch.ones(400, 500)
    y = dropout(x, p, training=True)
    assert abs((y == 0).float().mean().item() - p) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.03  # inverted dropout keeps the expectation
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p))
    assert not torch.equal(dropout(x, p, True), y)
    assert dropout(x, p, training=False) is x


def test_paper_defaults():
    gcnz = GCNZ(300, 2049)
    widths = [(c.in_channels, c.out_channels) for c in gcnz.convs]
    assert widths == [(300, 2048), (2048, 2048), (2048, 1024), (1024, 1024), (1024, 512), (512, 2049)]
    assert (gcnz.dropout, gcnz.negative_slope) == (0.5, 0.2)
    sgcn = SGCN(300, 2049)
    assert [(lin.in_channels, lin.out_channels) for lin in sgcn.lins] == [(300, 2048), (2048, 2049)]
    dgp = DGP(300, 2049)
    assert (dgp.hidden_channels, dgp.max_distance, dgp.dropout) == (2048, 4, 0.5)
    assert dgp.att_desc.shape == dgp.att_anc.shape == (5,)  # self, 1, 2, 3, >=4
    alpha_desc, alpha_anc = dgp.group_weights()
    torch.testing.assert_close(alpha_desc, torch.full((5,), 0.2))
    for model in (gcnz, sgcn, dgp):
        assert build_model(model.name, **model.config()).config() == model.config()


def test_dgp_merges_distances_from_max_distance(mid_graph):
    """Distances >= max_distance form one group; distances below it are kept apart."""
    x = node_features(mid_graph)
    model = _perturbed("dgp", x.size(1), max_distance=3, hidden_channels=64).eval()
    index, distance = model.graph_inputs(mid_graph)
    assert int(distance.max()) > 4
    with torch.no_grad():
        base = model(x, index, distance)
        torch.testing.assert_close(model(x, index, distance.clamp(max=3)), base)
        assert not torch.allclose(model(x, index, distance.clamp(max=2)), base, atol=1e-4)


def test_dgp_first_phase_reads_descendants(mid_graph):
    """Changing a leaf's features changes its ancestors' outputs (descendant phase) and only theirs."""
    x = node_features(mid_graph)
    model = _perturbed("dgp", x.size(1), hidden_channels=64).eval()
    inputs = model.graph_inputs(mid_graph)
    index = inputs[0]
    leaf = int(np.flatnonzero(mid_graph.mask("unseen"))[0])
    ancestors = set(index[1][index[0] == leaf].tolist())
    # nodes reached in two phases: ancestors of the leaf, then everything whose ancestors include them
    reached = set(index[0][torch.isin(index[1], torch.tensor(sorted(ancestors)))].tolist())
    changed = x.clone()
    changed[leaf] = torch.nn.functional.normalize(torch.randn(x.size(1)), dim=0)
    with torch.no_grad():
        diff = (model(changed, *inputs) - model(x, *inputs)).abs().amax(dim=1)
    moved = set(torch.nonzero(diff > 1e-6).flatten().tolist())
    assert leaf in moved and moved <= reached
    assert len(moved) > 1


def test_bf16_autocast_forward_is_close(mid_graph):
    x = node_features(mid_graph)
    model = _perturbed("dgp", x.size(1)).eval()
    inputs = model.graph_inputs(mid_graph)
    nodes = torch.from_numpy(np.flatnonzero(mid_graph.mask("seen")))
    plan = model.plan(nodes, *inputs, num_nodes=mid_graph.num_nodes)
    with torch.no_grad():
        ref = model.forward_plan(x, plan)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.forward_plan(x, plan).float()
    assert torch.isfinite(low).all()
    assert (low * ref).sum(dim=1).min() > 0.99  # cosine to the float32 rows


def _reference_dropout(x, p):
    """Dropout as DGP's training step drew it before the step was sped up: the same random words, mask as floats."""
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    keep = words.view(torch.int16)[:n].view(x.shape) >= (round(p * 65536) - 32768)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def _reference_dgp_step(model, x, plan):
    """DGP's training forward written out plainly (gather, dropout, grouped operators, F.normalize)."""
    alpha_desc, alpha_anc = model.group_weights()
    desc, anc = plan.layers
    op = desc["adj"]
    h = op(_reference_dropout(x[plan.input_nodes], model.dropout), op.grouped(alpha_desc))
    h = torch.cat([h, (desc["bias"] @ alpha_desc).unsqueeze(1)], dim=1)
    weight = torch.cat([model.lin_desc.weight, model.lin_desc.bias.unsqueeze(1)], dim=1)
    h = F.leaky_relu(F.linear(h, weight), model.negative_slope)
    op = anc["adj"]
    h = op(_reference_dropout(h, model.dropout), op.grouped(alpha_anc))
    bias = (anc["bias"] @ alpha_anc).unsqueeze(1) * model.lin_anc.bias
    return F.normalize(torch.addmm(bias, h, model.lin_anc.weight.t()), dim=1)


def _step(model, run, target):
    """Output and parameter gradients of one training step's loss, from the RNG state seeded here."""
    torch.manual_seed(11)
    model.zero_grad(set_to_none=True)
    out = run()
    (1.0 - (out * target).sum() / out.size(0)).backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_dgp_training_step_is_bitwise_the_plain_one(mid_graph):
    """The sped-up float32 step (kept input rows, boolean masks, the dropout scale on the sparse values) gives
    bitwise the outputs and gradients of the plain step, on the same random draws, the second time too (cache)."""
    x = node_features(mid_graph)
    model = _perturbed("dgp", x.size(1), hidden_channels=96).train()
    nodes = torch.from_numpy(np.flatnonzero(mid_graph.mask("seen")))
    plan = model.plan(nodes, *model.graph_inputs(mid_graph), num_nodes=mid_graph.num_nodes)
    target = F.normalize(torch.randn(nodes.numel(), OUT, generator=torch.Generator().manual_seed(1)), dim=1)
    ref_out, ref_grads = _step(model, lambda: _reference_dgp_step(model, x, plan), target)
    for _ in range(2):
        out, grads = _step(model, lambda: model.forward_plan(x, plan), target)
        assert torch.equal(out, ref_out)
        assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    other_out, _ = _step(model, lambda: model.forward_plan(x + 0.0, plan), target)  # another feature tensor: no stale rows
    assert torch.equal(other_out, ref_out)


def test_dgp_bf16_step_is_close_to_float32(mid_graph):
    """Under bf16 autocast the step computes the same function: outputs within bf16 rounding, gradients near."""
    x = node_features(mid_graph)
    model = _perturbed("dgp", x.size(1)).train()
    nodes = torch.from_numpy(np.flatnonzero(mid_graph.mask("seen")))
    plan = model.plan(nodes, *model.graph_inputs(mid_graph), num_nodes=mid_graph.num_nodes)
    target = F.normalize(torch.randn(nodes.numel(), OUT, generator=torch.Generator().manual_seed(1)), dim=1)
    ref_out, ref_grads = _step(model, lambda: model.forward_plan(x, plan), target)

    def low():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.forward_plan(x, plan)

    out, grads = _step(model, low, target)
    assert out.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    assert (out * ref_out).sum(dim=1).min() > 0.999  # unit rows: cosine to the float32 ones
    for got, ref in zip(grads, ref_grads):
        assert (got - ref).norm() < 0.05 * ref.norm()


def test_bf16_linear_and_unit_rows_match_their_float32_forms():
    """Hand-written random inputs (a unit-test fixture)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 96, generator=generator).requires_grad_()
    w = torch.randn(48, 96, generator=generator).requires_grad_()
    g = torch.randn(64, 48, generator=generator)
    out = bf16_linear(x, w)
    out.backward(g)
    got = (out.detach(), x.grad.clone(), w.grad.clone())
    x.grad = w.grad = None
    F.linear(x, w).backward(g)
    ref = (F.linear(x, w).detach(), x.grad, w.grad)
    for a, b in zip(got, ref):
        assert a.dtype == torch.float32 and (a - b).norm() < 1e-2 * b.norm()
    z = torch.randn(64, 48, generator=generator).requires_grad_()
    rows = unit_rows(z)
    assert torch.equal(rows, F.normalize(z.detach(), dim=1))  # the same forward values
    rows.backward(g)
    fused = z.grad.clone()
    z.grad = None
    F.normalize(z, dim=1).backward(g)
    torch.testing.assert_close(fused, z.grad)


def test_plan_keeps_input_rows_while_the_features_are_unchanged(mid_graph):
    x = node_features(mid_graph)
    model = build_model("dgp", x.size(1), OUT, hidden_channels=8)
    nodes = torch.from_numpy(np.flatnonzero(mid_graph.mask("seen")))
    plan = model.plan(nodes, *model.graph_inputs(mid_graph), num_nodes=mid_graph.num_nodes)
    rows = plan.inputs(x)
    assert plan.inputs(x) is rows and torch.equal(rows, x[plan.input_nodes])
    assert torch.equal(plan.inputs(x, 2.0), 2.0 * x[plan.input_nodes])
    x.mul_(3.0)  # changed in place: read again
    assert torch.equal(plan.inputs(x), x[plan.input_nodes]) and not torch.equal(plan.inputs(x), rows)


def test_sparse_operator_matches_dense_autograd():
    """Hand-written random pattern (a unit-test fixture): values and input gradients equal the dense ones."""
    generator = torch.Generator().manual_seed(0)
    rows, cols = 7, 5
    dense_mask = torch.rand(rows, cols, generator=generator) < 0.5
    row, col = torch.nonzero(dense_mask, as_tuple=True)
    values = torch.rand(row.numel(), generator=generator, dtype=torch.float32).requires_grad_()
    x = torch.randn(cols, 3, generator=generator).requires_grad_()
    op = SparseOperator(row, col, (rows, cols), group=torch.zeros_like(row))
    perm = torch.argsort(row * cols + col)  # the operator keeps entries row-major
    out = op(x, values[perm])
    weight = torch.randn(rows, 3, generator=generator)
    (out * weight).sum().backward()
    got_values, got_x = values.grad.clone(), x.grad.clone()
    values.grad = None
    x.grad = None
    dense = torch.zeros(rows, cols).index_put((row, col), values)
    ((dense @ x) * weight).sum().backward()
    torch.testing.assert_close(out, (dense @ x).detach())
    torch.testing.assert_close(got_values, values.grad)
    torch.testing.assert_close(got_x, x.grad)


def test_bad_inputs_are_clear_errors(small_graph):
    x = node_features(small_graph)
    with pytest.raises(KgzslError, match="unknown model 'gat'"):
        build_model("gat", 50, OUT)
    with pytest.raises(KgzslError, match="takes no argument max_distance"):
        build_model("sgcn", 50, OUT, max_distance=3)
    with pytest.raises(KgzslError, match="dropout"):
        build_model("dgp", 50, OUT, dropout=1.5)
    model = build_model("sgcn", 50, OUT, hidden_channels=8)
    (edge_index,) = model.graph_inputs(small_graph)
    with pytest.raises(KgzslError, match=r"node features must be \[N, 50\]"):
        model(x[:, :10], edge_index)
    with pytest.raises(KgzslError, match="outside"):
        model(x, edge_index + small_graph.num_nodes)
    with pytest.raises(KgzslError, match="distinct"):
        model.plan(torch.tensor([0, 0]), edge_index, num_nodes=small_graph.num_nodes)
    dgp = build_model("dgp", 50, OUT, hidden_channels=8)
    index, distance = dgp.graph_inputs(small_graph)
    with pytest.raises(KgzslError, match="distances for"):
        dgp(x, index, distance[:-1])


def test_grouped_values_have_the_indexing_gradient_and_repeat_bitwise():
    """``SparseOperator.grouped`` is ``value * alpha[group]``; its backward sums per group in a fixed
    order, so repeated backward passes over a large pattern give bitwise-equal gradients (autograd's
    indexing backward adds with parallel atomics on CPU and did not)."""
    generator = torch.Generator().manual_seed(0)
    rows, cols, nnz = 4000, 4000, 300_000
    key = torch.randperm(rows * cols, generator=generator)[:nnz]
    group = torch.randint(0, 5, (nnz,), generator=generator)
    op = SparseOperator(key // cols, key % cols, (rows, cols), torch.rand(nnz, generator=generator) + 0.5, group)
    x = torch.randn(cols, 8, generator=generator)
    upstream = torch.randn(rows, 8, generator=generator)

    def grad(values_of):
        alpha = torch.tensor([0.3, -0.2, 0.5, 0.1, 0.7], requires_grad=True)
        (op(x, values_of(alpha)) * upstream).sum().backward()
        return alpha.grad

    reference = grad(lambda a: op.value * a[op.group])
    first = grad(op.grouped)
    assert torch.allclose(first, reference, rtol=1e-4, atol=1e-3)
    for _ in range(5):
        assert torch.equal(grad(op.grouped), first)
    assert torch.equal(op.grouped(torch.tensor([0.3, -0.2, 0.5, 0.1, 0.7])), op.value * torch.tensor([0.3, -0.2, 0.5, 0.1, 0.7])[op.group])
    with pytest.raises(KgzslError, match="without groups"):
        SparseOperator(key // cols, key % cols, (rows, cols)).grouped(torch.ones(5))


def test_segment_products_equal_the_sparse_products():
    """The GPU path of ``SparseOperator`` (gather + segment sums, repeatable there) computes the same
    ``A @ x``, ``A^T @ g`` and value gradient as the CPU path; checked here on the CPU."""
    from kgzsl.propagation.models._base import _segment_matmul

    generator = torch.Generator().manual_seed(1)
    rows, cols, nnz = 300, 200, 3000
    key = torch.randperm(rows * cols, generator=generator)[:nnz]
    op = SparseOperator(key // cols, key % cols, (rows, cols), torch.rand(nnz, generator=generator))
    x, g = torch.randn(cols, 7, generator=generator), torch.randn(rows, 7, generator=generator)
    assert torch.allclose(_segment_matmul(op.crow, op.col, op.value, x), torch.sparse.mm(op.matrix(), x), atol=1e-5)
    transposed = _segment_matmul(op.t_crow, op.t_index[1], op.value[op.t_perm], g)
    assert torch.allclose(transposed, torch.sparse.mm(op.matrix().t(), g), atol=1e-5)
    empty_row = _segment_matmul(torch.tensor([0, 0, 2]), torch.tensor([0, 1]), torch.ones(2), torch.ones(2, 3))
    assert torch.equal(empty_row, torch.tensor([[0.0] * 3, [2.0] * 3]))


# ------------------------------------------------------------------------ the model interface
NON_DEFAULT = {
    "gcnz": {"hidden_channels": [40, 30], "dropout": 0.25, "negative_slope": 0.1},
    "sgcn": {"hidden_channels": 40, "dropout": 0.0, "negative_slope": 0.1},
    "dgp": {"hidden_channels": 40, "max_distance": 2, "dropout": 0.3, "negative_slope": 0.05},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_round_trip(name):
    """``config()`` is read from the constructor's arguments; rebuilding from it (through JSON, as a
    checkpoint does) gives the same configuration and a model the saved state dict loads into."""
    import json

    model = build_model(name, 50, OUT, **NON_DEFAULT[name])
    config = model.config()
    assert list(config) == list(MODELS[name].init_params)  # constructor order, as train.json records it
    assert config == {"in_channels": 50, "out_channels": OUT, **NON_DEFAULT[name]}
    again = build_model(name, **json.loads(json.dumps(config)))
    assert again.config() == config
    again.load_state_dict(model.state_dict(), strict=True)
    assert set(build_model(name, 50, OUT).config()) == set(config)  # defaults fill the same keys


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_is_checked_once_in_the_base(name, p):
    with pytest.raises(KgzslError, match=rf"{MODELS[name].__name__}: dropout must be in \[0, 1\)"):
        build_model(name, 50, OUT, dropout=p)


def test_base_interface_declarations(small_graph):
    """Hooks are declared on the base: no model needs probing with hasattr."""
    from kgzsl.propagation.models import PropagationModel

    assert PropagationModel.graph_inputs(small_graph)[0].dtype == torch.long  # the edge_index default
    for name, cls in MODELS.items():
        model = build_model(name, 50, OUT, **SMALL_WIDTHS[name])
        assert isinstance(model, PropagationModel) and cls.name == name
        weights = model.distance_weights()
        assert (weights is not None) == (name == "dgp")
    weights = build_model("dgp", 50, OUT, max_distance=3).distance_weights()
    assert list(weights.phases) == ["descendant", "ancestor"] and weights.labels() == ["0", "1", "2", ">=3"]
    with pytest.raises(TypeError, match="no \\*args / \\*\\*kwargs"):
        type("Loose", (PropagationModel,), {"__init__": lambda self, in_channels, out_channels, **kw: None})


class MeanLinear(PropagationModel):
    r"""A fourth model in one file's worth of code: one mean aggregation, then one linear layer.

    .. math::
        \hat W = \mathrm{normalize}\big(\bar A\,\mathrm{drop}(X)\,W + b\big),\qquad \bar A = D^{-1}(A + A^\top + I)
    """

    name = "meanlinear"

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(in_channels, out_channels, dropout)
        self.lin = Linear(self.in_channels, self.out_channels, weight_initializer="glorot", bias_initializer="zeros")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def _mean(self, edge_index: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        """The symmetrised edges and the mean operator (self-loops included) as ``(src, dst, weight)``."""
        edge_index = self.undirected(edge_index, n)
        src, dst = (torch.cat([e, torch.arange(n)]) for e in edge_index)
        return edge_index, src, dst, 1.0 / degree(dst, n)[dst]

    def _aggregate(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        _, src, dst, weight = self._mean(edge_index, x.size(0))
        return SparseOperator(dst, src, (x.size(0), x.size(0)), weight)(x)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        check_x(self, x)
        return torch.nn.functional.normalize(self.lin(self._aggregate(dropout(x, self.dropout, self.training), edge_index)), dim=1)

    @torch.no_grad()
    def last_layer_inputs(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._aggregate(x, edge_index), torch.ones(x.size(0), 1)], dim=1)

    def plan(self, nodes: torch.Tensor, edge_index: torch.Tensor, num_nodes: int) -> Plan:
        edge_index, src, dst, weight = self._mean(edge_index, num_nodes)
        widths = [(self.in_channels, self.out_channels)]
        return hop_plan(check_nodes(nodes, num_nodes), edge_index, src, dst, weight, widths, num_nodes)

    def forward_plan(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        check_x(self, x)
        h = plan.layers[0]["adj"](dropout(x[plan.input_nodes], self.dropout, self.training))
        return torch.nn.functional.normalize(self.lin(h), dim=1)


def test_a_fourth_model_is_one_file_and_a_registry_entry(small_graph, monkeypatch, tmp_path):
    """Registered in MODELS only, a new model trains (default schedule), saves, reloads from its
    checkpoint and is explained by ``kgzsl.inspection.explain`` through the base interface alone."""
    from kgzsl.inspection.explain import format_report, inspect_node, last_layer_inputs
    from kgzsl.inspection.plots import plot_inspection
    from kgzsl.propagation.predictions import load_predictions
    from kgzsl.propagation.run import load_checkpoint, save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import predict, train

    monkeypatch.setitem(MODELS, "meanlinear", MeanLinear)
    targets = load_targets()
    result = train(small_graph, targets, model="meanlinear", epochs=15, seed=0, progress=False, dropout=0.1)
    assert result.config["model_config"] == {"in_channels": 50, "out_channels": targets.dim, "dropout": 0.1}
    assert result.config["lr"] == 1e-3  # the default schedule: no SCHEDULES entry needed
    save_run(result, small_graph, tmp_path / "run")
    model, _ = load_checkpoint(tmp_path / "run", small_graph)
    assert isinstance(model, MeanLinear) and torch.equal(predict(model, small_graph), result.predictions)
    x, inputs = node_features(small_graph), model.graph_inputs(small_graph)
    nodes = torch.from_numpy(np.flatnonzero(small_graph.mask("seen")))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_plan(x, model.plan(nodes, *inputs, num_nodes=small_graph.num_nodes)),
                                   model(x, *inputs)[nodes], atol=2e-5, rtol=1e-4)
    z = last_layer_inputs(model, small_graph)
    w = torch.cat([model.lin.weight, model.lin.bias.view(-1, 1)], dim=1)
    torch.testing.assert_close(torch.nn.functional.normalize(z @ w.T, dim=1), result.predictions, atol=1e-5, rtol=1e-4)
    predictions = load_predictions(tmp_path / "run" / "predictions.safetensors")
    report = inspect_node(small_graph, predictions, "n02084071", model=model, targets=targets, k=3)
    assert len(report["attribution"]) == 3 and not any(key.endswith("_group_weights") for key in report)
    assert "built from" in format_report(report) and "distance-group" not in format_report(report)
    plot_inspection(small_graph, predictions, small_graph.index()["n02084071"], str(tmp_path / "p.png"), model=model, targets=targets)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
