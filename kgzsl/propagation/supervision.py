"""What a model is trained on: the seen nodes with a target row (held-out classes excluded) and those rows."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from kgzsl.core.idlists import IdList
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph
from kgzsl.propagation.targets import Targets, align_targets

log = logging.getLogger("kgzsl")


def select_targets(graph: ClassGraph, targets: Targets, exclude: Iterable[str] | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[str, int]]:
    """The seen nodes whose real classifier rows are used (role ``seen``, not excluded), their rows by
    node, and counts that say what was dropped and why.

    Every ``exclude`` entry must be a node id or wnid of the graph (an :class:`~kgzsl.core.idlists.IdList` error
    names its line). Seen classes without a target row are named in a warning, or in the error when
    none has one: they are the classes a user expects to be trained on.
    """
    _check_exclude(graph, exclude)
    excluded = set(exclude or [])
    no_target = seen_without_target(graph, targets, excluded)
    seen_count = sum(r == "seen" and graph.ids[i] not in excluded and graph.wnids[i] not in excluded
                     for i, r in enumerate(graph.roles))
    where = getattr(graph, "meta", {}).get("folder") or "the graph"
    if no_target:
        listed = _class_names(graph, no_target)
        if len(no_target) == seen_count:
            raise KgzslError(
                f"none of the {seen_count} seen classes of {where} has a target row in {targets.source}: {listed}; "
                "pin each to the synset (wnid) of its classifier's class, or give targets (--backbone/--wnids) that name them"
            )
        log.warning(
            "%d of the %d seen classes of %s have no target row in %s and are not trained on: %s "
            "(pin each to the synset of its classifier's class to use it)",
            len(no_target), seen_count, where, targets.source, listed,
        )
    nodes, rows = align_targets(graph, targets, report_missing=False)
    role_ok = torch.tensor([graph.roles[i] == "seen" for i in nodes.tolist()], dtype=torch.bool)
    not_excluded = torch.tensor(
        [graph.ids[i] not in excluded and graph.wnids[i] not in excluded for i in nodes.tolist()], dtype=torch.bool
    )
    use = role_ok & not_excluded
    if not bool(use.any()):
        raise KgzslError(
            f"no targets left to train on: {len(nodes)} target classes are in the graph, {int((~role_ok).sum())} of them "
            f"are not 'seen' nodes and {int((~not_excluded).sum())} are excluded"
        )
    counts = {
        "targets": len(targets.wnids),
        "in_graph": int(nodes.numel()),
        "not_seen_role": int((~role_ok).sum()),
        "excluded": int((role_ok & ~not_excluded).sum()),
        "seen_without_target": len(no_target),
    }
    return nodes[use], {int(n): r for n, r in zip(nodes[use].tolist(), rows[use])}, counts


def seen_without_target(graph: ClassGraph, targets: Targets, exclude: Iterable[str] | None = None) -> list[int]:
    """Indices of the graph's seen nodes (not excluded) that no target row names, by id or wnid."""
    excluded = set(exclude or [])
    named = set(targets.wnids)
    return [
        i for i, role in enumerate(graph.roles)
        if role == "seen" and graph.ids[i] not in excluded and graph.wnids[i] not in excluded
        and graph.ids[i] not in named and graph.wnids[i] not in named
    ]


def _class_names(graph: ClassGraph, nodes: list[int], most: int = 20) -> str:
    """``id (name), ...`` of ``nodes`` (the id alone where it is the name), at most ``most`` of them."""
    shown = []
    for i in nodes[:most]:
        name = graph.names[i][0] if graph.names[i] else graph.ids[i]
        shown.append(graph.ids[i] if name == graph.ids[i] else f"{graph.ids[i]} ({name})")
    return ", ".join(shown) + (f" and {len(nodes) - most} more" if len(nodes) > most else "")


def _check_exclude(graph: ClassGraph, exclude: Iterable[str] | None) -> None:
    """Refuse exclude entries that are no node id or wnid of ``graph`` (a typo would train on the class)."""
    if not exclude:
        return
    known = set(graph.ids) | {w for w in graph.wnids if w}
    where = getattr(graph, "meta", {}).get("folder") or "the graph"

    def hint(entry: str) -> str:
        ids = [graph.ids[i] for i, names in enumerate(graph.names) if entry in names][:3]
        return f" (it is a name of {', '.join(ids)}: list node ids)" if ids else ""

    if isinstance(exclude, IdList):
        exclude.require_known(known, f"a node id or wnid of {where}", hint)
        return
    unknown = [e for e in exclude if e not in known]
    if unknown:
        raise KgzslError(
            f"exclude: {len(unknown)} entries are no node id or wnid of {where} (first: {unknown[0]!r}{hint(unknown[0])})"
        )


def unit_targets(target_of: dict[int, torch.Tensor], nodes: torch.Tensor) -> torch.Tensor:
    """The target rows of ``nodes`` (``target_of`` from :func:`select_targets`), in that order, L2-normalised:
    what :func:`fit` regresses."""
    return F.normalize(torch.stack([target_of[int(n)] for n in nodes]), dim=1)
