"""The ``kgzsl`` command: a thin layer over the library API, one subcommand a pipeline stage.

Every subcommand takes ``--json`` for a machine-readable summary on stdout; progress goes to stderr.
Bad input ends with one line ``kgzsl: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kgzsl.errors import KgzslError

DEFAULT_GRAPH = Path("graphs") / "imagenet21k"


def _emit(args: argparse.Namespace, summary: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        print(human(summary))


# ----------------------------------------------------------------------------------- build-graph
def cmd_build_graph(args: argparse.Namespace) -> None:
    from kgzsl.embeddings import load_vectors
    from kgzsl.graph import build_wordnet_graph, read_id_list
    from kgzsl.io import atomic_dir  # noqa: F401  (checked early below)

    start = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not args.force:
        raise KgzslError(f"output folder {out} already exists: pass --force to replace it")
    vectors = load_vectors(args.vectors)
    if args.taxonomy:
        from kgzsl.taxonomy import build_taxonomy_graph, load_taxonomy

        taxonomy = load_taxonomy(args.taxonomy)
        seen = read_id_list(args.seen, "seen", whole_line=True) if args.seen else None
        unseen = read_id_list(args.unseen, "unseen", whole_line=True) if args.unseen else None
        graph = build_taxonomy_graph(taxonomy, seen=seen, unseen=unseen, vectors=vectors, progress=not args.json)
    else:
        from kgzsl.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids

        sources = {
            "seen": str(args.seen) if args.seen else "imagenet-1k (timm wheel)",
            "unseen": str(args.unseen) if args.unseen else "imagenet-21k minus 1k (timm wheel)",
        }
        seen = read_id_list(args.seen, "seen") if args.seen else imagenet1k_wnids()
        unseen = read_id_list(args.unseen, "unseen") if args.unseen else imagenet21k_unseen_wnids()
        extra = read_id_list(args.extra_nodes, "extra-nodes") if args.extra_nodes else []
        if args.extra_nodes:
            sources["extra"] = str(args.extra_nodes)
        graph = build_wordnet_graph(
            seen, unseen, extra, closure=not args.no_closure, vectors=vectors,
            instance_hypernyms={"auto": None, "yes": True, "no": False}[args.instance_hypernyms], sources=sources, progress=not args.json,
        )
    graph.save(out, force=args.force)
    summary = {**graph.summary(), "out": str(out), "seconds": round(time.perf_counter() - start, 2)}

    def human(s: dict[str, Any]) -> str:
        return (
            f"graph {s['out']}: {s['nodes']} nodes ({s['seen']} seen, {s['unseen']} unseen, {s['internal']} internal), "
            f"{s['edges']} edges, {sum(s['dense_pairs_by_distance'])} dense pairs at distances "
            f"0..{len(s['dense_pairs_by_distance']) - 1}, {s['feature_dim']}-d vectors ({s['vectors']}), "
            f"{len(s['oov_nodes'])} nodes without a vector, {s['seconds']} s"
        )

    _emit(args, summary, human)


# ----------------------------------------------------------------------------------------- splits
def cmd_splits(args: argparse.Namespace) -> None:
    from kgzsl.graph import load_graph, read_id_list
    from kgzsl.io import atomic_file
    from kgzsl.splits import compare_split, hop_split

    graph = load_graph(args.graph)
    summary: dict[str, Any] = {"graph": str(args.graph), "splits": {}}
    for hops in args.hops:
        derived = hop_split(graph, hops)
        entry: dict[str, Any] = {"classes": len(derived)}
        if args.out:
            path = Path(args.out) / f"split-{hops}-hops.txt"
            with atomic_file(path) as handle:
                handle.write("".join(f"{w}\n" for w in derived))
            entry["file"] = str(path)
        summary["splits"][f"{hops}-hops"] = entry
        for standard in args.compare or []:
            entry.setdefault("compare", {})[str(standard)] = compare_split(
                derived, read_id_list(standard, "standard split"), graph
            )

    def human(s: dict[str, Any]) -> str:
        lines = []
        for name, entry in s["splits"].items():
            lines.append(f"{name}: {entry['classes']} unseen classes" + (f" -> {entry['file']}" if "file" in entry else ""))
            for other, c in entry.get("compare", {}).items():
                lines.append(
                    f"  vs {other}: {c['common']} common of {c['standard']} ({c['standard_in_graph']} in graph); "
                    f"precision {c['precision']}, recall {c['recall']}, Jaccard {c['jaccard']}"
                )
        return "\n".join(lines)

    _emit(args, summary, human)


# ----------------------------------------------------------------------------------------- train
# (cmd_train goes here)


# -------------------------------------------------------------------------------------- features
# (cmd_features goes here)


# ------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kgzsl",
        description="Knowledge-graph zero-shot image recognition. Pipeline: build-graph -> train -> predict / evaluate -> inspect.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "build-graph",
        help="class hierarchy + word vectors -> graph folder",
        description=(
            "Build a class graph. WordNet mode (default): seen + unseen (+ extra) wnids, closed upward along "
            "noun hypernyms to the root unless --no-closure; defaults are ImageNet-1k seen and ImageNet-21k "
            "unseen. Taxonomy mode (--taxonomy): a user hierarchy of plain class names for a new domain."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    p.add_argument("--vectors", default=None, help="word vectors: GloVe text, word2vec text/.bin or fastText .bin; default embedded GloVe 6B 50-d")
    p.add_argument("--out", type=Path, default=DEFAULT_GRAPH, help="graph folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_build_graph)

    p = sub.add_parser(
        "splits",
        help="hop-based unseen splits (k hops from the seen classes) and comparison with standard split files",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--graph", type=Path, default=DEFAULT_GRAPH, help="graph folder")
    p.add_argument("--hops", type=int, nargs="+", default=[2, 3], help="hop counts to derive")
    p.add_argument("--compare", type=Path, nargs="*", help="standard split files (one wnid a line) to compare with")
    p.add_argument("--out", type=Path, help="folder to write split-K-hops.txt files into")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=cmd_splits)

    # (train subparser goes here)

    # (features subparser goes here)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kgzsl`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KgzslError as exc:
        print(f"kgzsl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kgzsl: interrupted (no partial output was left behind)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
