"""``kgzsl build-graph``: a class hierarchy (WordNet wnid lists or a user taxonomy) + word vectors -> graph folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.cli.flags import add_force, add_json, subparser
from kgzsl.cli.steps import DEFAULT_GRAPH, emit
from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    from kgzsl.graph.class_graph import ClassGraph


def add_parser(sub: Any) -> None:
    p = subparser(
        sub, "build-graph", help="class hierarchy + word vectors -> graph folder",
        description=(
            "Build a class graph. WordNet mode (default): seen + unseen (+ extra) wnids, closed upward along "
            "noun hypernyms to the root unless --no-closure; defaults are ImageNet-1k seen and ImageNet-21k "
            "unseen. Taxonomy mode (--taxonomy): a user hierarchy of plain class names for a new domain."
        ),
    )
    p.add_argument("--seen", type=Path, help="file of seen wnids (classes with a real classifier), one a line; default ImageNet-1k")
    p.add_argument("--unseen", type=Path, help="file of unseen wnids, one a line; default ImageNet-21k minus 1k")
    p.add_argument("--extra-nodes", type=Path, help="file of extra structure wnids (neither seen nor unseen)")
    p.add_argument("--no-closure", action="store_true", help="keep exactly the listed nodes (DGP's graph) instead of adding all ancestors")
    p.add_argument(
        "--instance-hypernyms", choices=["auto", "yes", "no"], default="auto",
        help="follow WordNet instance-of links too; auto = yes when closing upward, no with --no-closure",
    )
    p.add_argument("--taxonomy", type=Path, help="a user taxonomy (CSV child,parent[,synset] or nested JSON/YAML) instead of WordNet lists")
    p.add_argument("--vectors", default=None,
                   help="node features: glove-6b-50d+minilm (the default: GloVe 6B 50-d next to all-MiniLM-L6-v2 of 'names: gloss'), "
                        "minilm, minilm-names, minilm-parents, glove-6b-50d, a GloVe text / word2vec text or .bin / fastText "
                        ".bin file, or two of these joined by '+'")
    p.add_argument("--out", type=Path, default=DEFAULT_GRAPH, help="graph folder to write")
    add_force(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.core.outputs import check_output_dir  # lazy: startup
    from kgzsl.graph.embeddings import load_vectors  # lazy: numpy

    start = time.perf_counter()
    out = check_output_dir(args.out, "graph", args.force)  # before any work: never after minutes of it
    vectors = load_vectors(args.vectors)
    graph = _taxonomy_graph(args, vectors) if args.taxonomy else _wordnet_graph(args, vectors)
    graph.save(out, force=args.force)
    summary = {**graph.summary(), "out": str(out), "seconds": round(time.perf_counter() - start, 2)}
    emit(args, summary, _text)


def _taxonomy_graph(args: argparse.Namespace, vectors: Any) -> ClassGraph:
    """Taxonomy mode: ``--taxonomy`` with ``--seen`` (and optionally ``--unseen``) class-name files."""
    from kgzsl.core.idlists import read_id_list  # lazy: startup
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy  # lazy: numpy

    taxonomy = load_taxonomy(args.taxonomy)
    seen = read_id_list(args.seen, "seen") if args.seen else None
    unseen = read_id_list(args.unseen, "unseen") if args.unseen else None
    return build_taxonomy_graph(taxonomy, seen=seen, unseen=unseen, vectors=vectors, progress=not args.json)


def _wordnet_graph(args: argparse.Namespace, vectors: Any) -> ClassGraph:
    """WordNet mode: the wnid files given, ImageNet-1k seen / 21k unseen for those not given."""
    from kgzsl.core.idlists import read_id_list  # lazy: startup
    from kgzsl.core.imagenet import (  # lazy: startup
        imagenet1k_wnids,
        imagenet21k_unseen_wnids,
    )
    from kgzsl.graph.class_graph import build_wordnet_graph  # lazy: numpy

    sources = {
        "seen": str(args.seen) if args.seen else "imagenet-1k (timm wheel)",
        "unseen": str(args.unseen) if args.unseen else "imagenet-21k minus 1k (timm wheel)",
    }
    seen = read_id_list(args.seen, "seen") if args.seen else imagenet1k_wnids()
    unseen = read_id_list(args.unseen, "unseen") if args.unseen else imagenet21k_unseen_wnids()
    extra = read_id_list(args.extra_nodes, "extra-nodes") if args.extra_nodes else []
    if args.extra_nodes:
        sources["extra"] = str(args.extra_nodes)
    if bool(args.seen) != bool(args.unseen):  # one list given, the other the ImageNet default: say which clash
        given, default = ("--seen", "unseen") if args.seen else ("--unseen", "seen")
        clash = sorted(set(seen) & set(unseen))
        if clash:
            raise KgzslError(
                f"{len(clash)} classes of {given} {args.seen or args.unseen} (first: {clash[0]}) are among the default "
                f"{default} classes ({sources[default]}), used because no --{default} was given: pass --{default} too"
            )
    return build_wordnet_graph(
        seen, unseen, extra, closure=not args.no_closure, vectors=vectors,
        instance_hypernyms={"auto": None, "yes": True, "no": False}[args.instance_hypernyms], sources=sources,
        progress=not args.json,
    )


def _text(s: dict[str, Any]) -> str:
    return (
        f"graph {s['out']}: {s['nodes']} nodes ({s['seen']} seen, {s['unseen']} unseen, {s['internal']} internal), "
        f"{s['edges']} edges, {sum(s['dense_pairs_by_distance'])} dense pairs at distances "
        f"0..{len(s['dense_pairs_by_distance']) - 1}, {s['feature_dim']}-d vectors ({s['vectors']}), "
        f"{len(s['oov_nodes'])} nodes without a vector, {s['seconds']} s"
    )
