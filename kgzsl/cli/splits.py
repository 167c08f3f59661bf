"""``kgzsl splits``: hop-based unseen splits (k hops from the seen classes), compared with standard split files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kgzsl.cli.flags import add_graph, add_json, add_number, subparser
from kgzsl.cli.steps import emit, graph_folder


def add_parser(sub: Any) -> None:
    p = subparser(sub, "splits", help="hop-based unseen splits (k hops from the seen classes) and comparison with standard split files")
    add_graph(p)
    add_number(p, "--hops", int, nargs="+", default=[2, 3], at_least=1, help="hop counts to derive")
    p.add_argument("--compare", type=Path, nargs="*", help="standard split files (one wnid a line) to compare with")
    p.add_argument("--out", type=Path, help="folder to write split-K-hops.txt files into")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from kgzsl.core.idlists import read_id_list  # lazy: startup
    from kgzsl.graph.class_graph import load_graph  # lazy: numpy
    from kgzsl.graph.splits import compare_split, hop_splits, write_split  # lazy: numpy

    if args.out is not None:
        _check_out(args.out)
    args.graph = graph_folder(args.graph)
    graph = load_graph(args.graph)
    standards = {str(path): read_id_list(path, "standard split") for path in args.compare or []}
    summary: dict[str, Any] = {"graph": str(args.graph), "splits": {}}
    for hops, derived in hop_splits(graph, args.hops).items():
        entry: dict[str, Any] = {"classes": len(derived)}
        if args.out:
            entry["file"] = str(write_split(derived, args.out, hops))
        summary["splits"][f"{hops}-hops"] = entry
        for name, standard in standards.items():
            entry.setdefault("compare", {})[name] = compare_split(derived, standard, graph)
    emit(args, summary, _text)


def _check_out(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that is a file or a folder that cannot be written."""
    from kgzsl.core.outputs import check_folder_for_files  # lazy: startup

    check_folder_for_files(out, "splits --out folder (split-K-hops.txt files go there)")


def _text(s: dict[str, Any]) -> str:
    lines = []
    for name, entry in s["splits"].items():
        lines.append(f"{name}: {entry['classes']} unseen classes" + (f" -> {entry['file']}" if "file" in entry else ""))
        for other, c in entry.get("compare", {}).items():
            lines.append(
                f"  vs {other}: {c['common']} common of {c['standard']} ({c['standard_in_graph']} in graph); "
                f"precision {c['precision']}, recall {c['recall']}, Jaccard {c['jaccard']}"
            )
    return "\n".join(lines)
