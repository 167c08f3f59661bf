#!/usr/bin/env python3
"""Time the default ImageNet-21k graph build (1k seen, 21k unseen, closed upward), cold cache included.

Prints wall seconds per stage and peak resident memory. "Cold" means an empty kgzsl cache: the WordNet
database is copied and prepared for nltk first, as on a user's first run.

    .venv/bin/python scripts/bench_build_graph.py [--warm] [--no-closure-reference]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", action="store_true", help="keep the existing cache (default: a fresh empty one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.warm:
            os.environ["KGZSL_CACHE"] = str(Path(tmp) / "cache")
        start = time.perf_counter()
        from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids
        from kgzsl.graph.class_graph import build_wordnet_graph
        from kgzsl.graph.embeddings import load_vectors
        from kgzsl.graph.wordnet import reader

        t = time.perf_counter()
        reader()
        stages = {"wordnet prepare + open": time.perf_counter() - t}
        t = time.perf_counter()
        vectors = load_vectors(None)
        stages["load GloVe 6B 50-d"] = time.perf_counter() - t
        t = time.perf_counter()
        graph = build_wordnet_graph(imagenet1k_wnids(), imagenet21k_unseen_wnids(), vectors=vectors)
        stages["build graph"] = time.perf_counter() - t
        t = time.perf_counter()
        graph.save(Path(tmp) / "graph")
        stages["save"] = time.perf_counter() - t
        total = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"default ImageNet-21k graph: {graph.num_nodes} nodes, {graph.num_edges} edges, "
          f"{graph.dense_index.shape[1]} dense pairs ({'warm' if args.warm else 'cold'} cache)")
    for name, seconds in stages.items():
        print(f"  {name:<24} {seconds:7.2f} s")
    print(f"  {'total (imports included)':<24} {total:7.2f} s")
    print(f"  peak resident memory     {peak_mib:7.0f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
