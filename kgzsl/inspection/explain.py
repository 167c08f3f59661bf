"""Stage 5: explaining propagated weights (``kgzsl inspect``). Why did a class get the classifier it did?

For one class: what it is (wnid, lemmas, gloss, role), where it sits in the graph (ancestors and
descendants with hop distances), which classes have the most similar predicted classifier (cosine),
its weight norm, the cosine to its true classifier where one is known (seen classes, held-out
classes), and which seen classes its prediction came from (:func:`attribution`). Pictures: a 2-D map
of predicted weights, the DGP distance-group weights, and a predicted-vs-true cosine histogram.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph, node_features
from kgzsl.propagation.targets import Targets, align_targets

if TYPE_CHECKING:
    from kgzsl.propagation.models import PropagationModel
    from kgzsl.propagation.predictions import Predictions


def _norm_name(text: str) -> str:
    return " ".join(text.replace("_", " ").lower().split())


def resolve(graph: ClassGraph, query: str) -> int:
    """Node index of a wnid/id or a class name; a one-line error with the closest names otherwise."""
    index = graph.index()
    if query in index:
        return index[query]
    wanted = _norm_name(query)
    matches = [i for i, names in enumerate(graph.names) if any(_norm_name(n) == wanted for n in names)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        # prefer real classes over structure-only nodes; then the first name listed (WordNet's most frequent sense)
        classes = [i for i in matches if graph.roles[i] != "internal"]
        primary = [i for i in (classes or matches) if _norm_name(graph.names[i][0]) == wanted]
        if len(primary) == 1:
            return primary[0]
        listed = "; ".join(f"{graph.ids[i]} ({graph.glosses[i][:50]})" for i in (classes or matches)[:5])
        raise KgzslError(f"{query!r} names {len(matches)} classes, pass a wnid instead: {listed}")
    vocabulary: dict[str, int] = {}
    for i, names in enumerate(graph.names):
        for n in names:
            vocabulary.setdefault(_norm_name(n), i)
    close = difflib.get_close_matches(wanted, list(vocabulary), n=5, cutoff=0.6)
    hint = ", ".join(f"{name} ({graph.ids[vocabulary[name]]})" for name in close) or "none"
    raise KgzslError(f"no class {query!r} in graph {graph.meta.get('folder', '')}: closest names: {hint}")


def neighbourhood(graph: ClassGraph, node: int, max_distance: int | None = None) -> dict[str, list[tuple[str, int]]]:
    """Ancestors and descendants of ``node`` as (id, hop distance), nearest first."""
    src, dst = graph.dense_index
    dist = graph.dense_distance
    keep = dist > 0
    if max_distance is not None:
        keep &= dist <= max_distance
    ancestors = sorted(((graph.ids[a], int(d)) for a, d in zip(dst[(src == node) & keep], dist[(src == node) & keep])), key=lambda x: x[1])
    descendants = sorted(((graph.ids[s], int(d)) for s, d in zip(src[(dst == node) & keep], dist[(dst == node) & keep])), key=lambda x: x[1])
    return {"ancestors": ancestors, "descendants": descendants}


def nearest_by_weight(pred: torch.Tensor, node: int, candidates: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
    """The ``k`` candidate nodes whose predicted classifier is most cosine-similar to ``node``'s (itself excluded)."""
    unit = F.normalize(torch.as_tensor(pred, dtype=torch.float32), dim=1)
    candidates = np.asarray([c for c in np.asarray(candidates).tolist() if c != node])
    sims = unit[candidates] @ unit[node]
    top = sims.topk(min(k, len(candidates)))
    return [(int(candidates[i]), float(s)) for s, i in zip(top.values, top.indices)]


@dataclass
class PCAMap:
    """2-D coordinates of predicted weights (PCA or t-SNE) for a map plot."""

    coords: np.ndarray
    method: str


def weight_map(pred: torch.Tensor, nodes: np.ndarray, method: str = "pca", seed: int = 0) -> PCAMap:
    """Project the (L2-normalised) predicted weights of ``nodes`` to 2-D by PCA, or t-SNE (scikit-learn)."""
    x = F.normalize(torch.as_tensor(pred, dtype=torch.float32)[torch.as_tensor(nodes)], dim=1).double()
    if method == "pca":
        centred = x - x.mean(dim=0, keepdim=True)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False, niter=6)
        return PCAMap((centred @ v[:, :2]).numpy(), "PCA")
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE  # lazy: sklearn
        except ImportError:
            raise KgzslError("method tsne needs scikit-learn: pip install scikit-learn (or use the default PCA)",
                             parameter="method") from None
        coords = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, max(5, len(nodes) // 4))).fit_transform(x.numpy())
        return PCAMap(coords, "t-SNE")
    raise KgzslError(f"unknown map method {method!r}: use pca or tsne")


def describe(graph: ClassGraph, node: int) -> dict[str, Any]:
    """The class itself: id, wnid, names, gloss, role."""
    return {"id": graph.ids[node], "wnid": graph.wnids[node], "names": graph.names[node], "gloss": graph.glosses[node], "role": graph.roles[node]}


#: report key suffix of a model's :meth:`~kgzsl.propagation.models.PropagationModel.distance_weights` (``dgp_group_weights``)
GROUP_WEIGHTS = "_group_weights"


# ------------------------------------------------------------------------------------ attribution
@dataclass
class Attribution:
    """Which seen classes a node's predicted classifier is built from.

    ``weights[u]`` is the coefficient of seen class ``u``'s (unit) target in the representer
    expansion of the node's prediction; ``faithfulness`` is the cosine between that expansion and
    the model's actual prediction (1.0 = the expansion explains it exactly).
    """

    node: int
    seen_nodes: list[int]
    weights: torch.Tensor
    faithfulness: float | None

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        order = self.weights.abs().argsort(descending=True)[:k]
        return [(self.seen_nodes[i], float(self.weights[i])) for i in order.tolist()]


def last_layer_inputs(model: PropagationModel, graph: ClassGraph) -> torch.Tensor:
    """Every node's input to the model's last (linear) layer, aggregation included: ``Z [N, hidden+1]``."""
    model.eval()
    return model.last_layer_inputs(node_features(graph), *model.graph_inputs(graph))


def seen_target_rows(t_nodes: torch.Tensor, t_rows: torch.Tensor, seen_nodes: list[int]) -> tuple[list[int], torch.Tensor]:
    """Which of ``seen_nodes`` have a real classifier among the aligned targets (their positions in ``seen_nodes``),
    and those classifiers as unit rows: what an attribution's expansion is compared against (its faithfulness)."""
    row_of = {int(n): r for r, n in enumerate(t_nodes.tolist())}
    known = [i for i, s in enumerate(seen_nodes) if s in row_of]
    return known, F.normalize(t_rows[torch.tensor([row_of[seen_nodes[i]] for i in known])], dim=1)


def attribution(
    z: torch.Tensor, node: int, seen_nodes: list[int], targets: torch.Tensor | None = None, ridge: float = 1e-2
) -> Attribution:
    """Representer attribution of ``node``'s prediction to the seen classes' targets.

    Every model here ends in a layer that is linear in its weights: ``pred_v ~ z_v W``. Fitting that
    last layer by ridge regression on the seen classes makes each prediction an exact linear
    combination of their targets, ``pred_v = sum_u beta_vu t_u`` with
    ``beta_v = z_v Z_S^T (Z_S Z_S^T + lambda I)^-1`` (the kernel / representer form, Schoelkopf et al.
    2001); ``beta_vu`` says how much seen class u's target moves v's classifier. ``lambda`` is
    ``ridge`` times the mean self-similarity. With ``targets [len(seen_nodes), D]`` the expansion is
    compared with the model's actual prediction elsewhere (see :func:`inspect_node`).
    """
    zs = z[torch.as_tensor(seen_nodes)].double()
    kernel = zs @ zs.T
    lam = ridge * float(kernel.diagonal().mean())
    beta = torch.linalg.solve(kernel + lam * torch.eye(len(seen_nodes), dtype=kernel.dtype), zs @ z[node].double())
    return Attribution(node, list(seen_nodes), beta.float(), None)


def inspect_node(
    graph: ClassGraph,
    predictions: Predictions,
    query: str,
    model: PropagationModel | None = None,
    targets: Targets | None = None,
    k: int = 10,
    max_distance: int | None = 3,
) -> dict[str, Any]:
    """Everything ``kgzsl inspect`` reports about one class, as a JSON-able dict."""
    node = resolve(graph, query)
    if list(predictions.ids) != list(graph.ids):
        raise KgzslError("the predictions were made for another graph (their node lists differ): pass the graph they were trained on")
    pred = predictions.pred
    is_class = np.array([r != "internal" for r in graph.roles])
    seen_mask = predictions.seen.numpy()
    hood = neighbourhood(graph, node, max_distance)
    names = {i: graph.names[i][0] if graph.names[i] else graph.ids[i] for i in range(graph.num_nodes)}
    index = graph.index()

    def entry(node_id: str, **extra: Any) -> dict[str, Any]:
        i = index[node_id]
        return {"id": node_id, "name": names[i], "role": graph.roles[i], "trained": bool(seen_mask[i]), **extra}

    report: dict[str, Any] = {
        **describe(graph, node),
        "trained_on_real_classifier": bool(seen_mask[node]),
        "weight_norm": float(pred[node].norm()),
        "ancestors": [entry(a, distance=d) for a, d in hood["ancestors"]],
        "descendants": [entry(a, distance=d) for a, d in hood["descendants"][:50]],
        "descendant_count": len(hood["descendants"]),
        "nearest_by_weight": [entry(graph.ids[i], cosine=round(c, 4)) for i, c in nearest_by_weight(pred, node, np.flatnonzero(is_class), k)],
    }
    if targets is not None:
        t_nodes, t_rows = align_targets(graph, targets)  # once: used for the true cosine and the faithfulness
        where = (t_nodes == node).nonzero().view(-1)
        if len(where):
            report["cosine_to_true_classifier"] = float(F.cosine_similarity(pred[node], t_rows[where[0]], dim=0))
    if model is not None:
        z = last_layer_inputs(model, graph)
        seen_nodes = np.flatnonzero(seen_mask).tolist()
        attr = attribution(z, node, seen_nodes)
        if targets is not None:
            known, unit = seen_target_rows(t_nodes, t_rows, seen_nodes)
            expansion = attr.weights[torch.tensor(known)] @ unit
            attr.faithfulness = float(F.cosine_similarity(expansion, pred[node], dim=0))
        report["attribution"] = [entry(graph.ids[s], weight=round(w, 4)) for s, w in attr.top(k)]
        report["attribution_faithfulness"] = attr.faithfulness
        weights = model.distance_weights()
        if weights is not None:
            report[f"{model.name}{GROUP_WEIGHTS}"] = {
                "distances": weights.labels(),
                **{f"{phase}_phase": [round(float(v), 4) for v in w] for phase, w in weights.phases.items()},
            }
    return report


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_node`'s report."""
    lines = [
        f"{report['id']}  {', '.join(report['names'][:4])}  [{report['role']}"
        f"{', trained on its real classifier' if report['trained_on_real_classifier'] else ', classifier predicted'}]",
        f"  {report['gloss']}",
        f"  weight norm {report['weight_norm']:.4f}"
        + (f"; cosine to its true classifier {report['cosine_to_true_classifier']:.4f}" if "cosine_to_true_classifier" in report else ""),
        "  ancestors: " + ", ".join(f"{a['name']} ({a['distance']})" for a in report["ancestors"][:8]),
        f"  descendants ({report['descendant_count']}): " + ", ".join(f"{d['name']} ({d['distance']})" for d in report["descendants"][:8]),
        "  nearest classifiers: " + ", ".join(f"{n['name']}{'*' if n['trained'] else ''} {n['cosine']:.3f}" for n in report["nearest_by_weight"]),
    ]
    if "attribution" in report:
        faith = report["attribution_faithfulness"]
        lines.append("  built from (representer weights of seen classes"
                     + (f", expansion cosine {faith:.3f}" if faith is not None else "") + "): "
                     + ", ".join(f"{a['name']} {a['weight']:+.3f}" for a in report["attribution"]))
    for key in [key for key in report if key.endswith(GROUP_WEIGHTS)]:
        g = dict(report[key])
        distances = g.pop("distances")
        phases = " / ".join(phase.removesuffix("_phase") for phase in g)
        lines.append(f"  {key.removesuffix(GROUP_WEIGHTS).upper()} distance-group weights (distance: {phases} phase): "
                     + ", ".join(f"{d}: " + "/".join(f"{w:.2f}" for w in ws) for d, *ws in zip(distances, *g.values())))
    lines.append("  (* = trained on its real classifier)")
    return "\n".join(lines)


