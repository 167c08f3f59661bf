#!/usr/bin/env python
"""Speed of the kgzsl trainer against a plain all-nodes implementation of the same maths.

For each model (GCNZ, SGCN, DGP) on the ImageNet-21k graph (built into a temporary folder unless
``--graph`` is given), with the real EfficientNet-Lite0 classifier rows as targets:

* ``kgzsl``: :func:`kgzsl.propagation.training.train` itself (receptive-field plans, aggregate-first, custom sparse
  backward, fused Adam);
* ``plain``: the reference code's way, written out here: every node computed every epoch, transform
  then aggregate (``A (X W + b)``), ``torch.sparse.mm`` with its own backward, standard Adam.

Both start from the same initial weights with dropout off and train on the same classes (no
validation slice), so their per-epoch losses must agree (printed: the largest difference). Each run
is a separate worker process, so its peak resident memory (``ru_maxrss``) is its own. FLOP counts
are the dense matrix products of one training step (forward, weight gradients, input gradients
where needed); "of peak" compares the achieved rate with an fp32 matmul measured in this process.

    .venv/bin/python scripts/bench_speed.py [--graph DIR] [--models dgp sgcn gcnz] [--epochs 5]
    .venv/bin/python scripts/bench_speed.py --full-dgp        # also time the full default `kgzsl train`, fp32 and --bf16
    .venv/bin/python scripts/bench_speed.py --full-dgp-only --quality --repeat 2 --json -   # those alone, with unseen Hit@5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_EPOCHS = {"dgp": 6, "sgcn": 6, "gcnz": 3}


# ------------------------------------------------------------------------------ plain implementations
def _coo(row: torch.Tensor, col: torch.Tensor, value: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.stack([row, col]), value, (n, n)).coalesce()


class PlainDGP(torch.nn.Module):
    """DGP as its reference code computes it: per-group sparse matrices over all N nodes."""

    def __init__(self, model, graph) -> None:
        super().__init__()
        n = graph.num_nodes
        index = torch.as_tensor(graph.dense_index)
        group = torch.as_tensor(graph.dense_distance).clamp(max=model.max_distance)
        self.desc, self.anc = [], []
        for k in range(model.num_groups):
            node, anc = index[0][group == k], index[1][group == k]
            for rows, cols, out in ((anc, node, self.desc), (node, anc, self.anc)):
                deg = torch.bincount(rows, minlength=n).float()
                out.append(_coo(rows, cols, 1.0 / deg[rows], n))
        self.w1 = torch.nn.Parameter(model.lin_desc.weight.detach().t().clone())
        self.b1 = torch.nn.Parameter(model.lin_desc.bias.detach().clone())
        self.w2 = torch.nn.Parameter(model.lin_anc.weight.detach().t().clone())
        self.b2 = torch.nn.Parameter(model.lin_anc.bias.detach().clone())
        self.a_att = torch.nn.Parameter(model.att_desc.detach().clone())
        self.r_att = torch.nn.Parameter(model.att_anc.detach().clone())
        self.slope = model.negative_slope
        self.layers = [(n, model.in_channels, model.hidden_channels), (n, model.hidden_channels, model.out_channels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for adj, att, w, b, last in ((self.desc, self.a_att, self.w1, self.b1, False), (self.anc, self.r_att, self.w2, self.b2, True)):
            support = torch.mm(h, w) + b
            alpha = F.softmax(att, dim=0)
            h = sum(torch.sparse.mm(a, support) * alpha[k] for k, a in enumerate(adj))
            if not last:
                h = F.leaky_relu(h, self.slope)
        return F.normalize(h)


class PlainGCN(torch.nn.Module):
    """SGCN (mean) or GCNZ (symmetric) over all N nodes: ``A (H W) (+ b)``, every layer."""

    def __init__(self, model, graph, symmetric: bool) -> None:
        super().__init__()
        from torch_geometric.utils import to_undirected

        n = graph.num_nodes
        edges = to_undirected(torch.as_tensor(graph.edge_index), num_nodes=n)
        loops = torch.arange(n)
        row, col = torch.cat([edges[1], loops]), torch.cat([edges[0], loops])
        deg = torch.bincount(row, minlength=n).float()
        value = deg[row].rsqrt() * deg[col].rsqrt() if symmetric else 1.0 / deg[row]
        self.adj = _coo(row, col, value, n)
        if symmetric:  # GCNZ: PyG GCNConv weights, bias after aggregation
            pairs = [(c.lin.weight, c.bias) for c in model.convs]
        else:  # SGCN: bias before the mean (equal, rows sum to one)
            pairs = [(lin.weight, lin.bias) for lin in model.lins]
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(w.detach().t().clone()) for w, _ in pairs)
        self.biases = torch.nn.ParameterList(torch.nn.Parameter(b.detach().clone()) for _, b in pairs)
        self.symmetric = symmetric
        self.slope = model.negative_slope
        self.layers = [(n, w.size(0), w.size(1)) for w in self.weights]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if self.symmetric:
                h = torch.sparse.mm(self.adj, torch.mm(h, w)) + b
            else:
                h = torch.sparse.mm(self.adj, torch.mm(h, w) + b)
            if i < last:
                h = F.leaky_relu(h, self.slope)
        return F.normalize(h)


def step_flops(layers: list[tuple[int, int, int]]) -> int:
    """Dense-product FLOPs of a training step: forward + weight gradients + input gradients (not of layer 1)."""
    forward = [2 * r * i * o for r, i, o in layers]
    return 2 * sum(forward) + sum(forward[1:])


def plan_layers(model, plan) -> list[tuple[int, int, int]]:
    """``(rows, in, out)`` of each dense product a kgzsl training step does."""
    if model.name == "dgp":
        return [(plan.rows[0], model.in_channels + 1, model.hidden_channels), (plan.rows[1], model.hidden_channels, model.out_channels)]
    mods = model.convs if model.name == "gcnz" else model.lins
    return [(rows, m.in_channels, m.out_channels) for rows, m in zip(plan.rows, mods)]


# ------------------------------------------------------------------------------------------ worker
def worker(model_name: str, impl: str, graph_dir: str, epochs: int, seed: int) -> dict:
    from kgzsl.graph.class_graph import load_graph, node_features
    from kgzsl.propagation.models import build_model
    from kgzsl.propagation.supervision import select_targets, unit_targets
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import SCHEDULES, train

    graph = load_graph(graph_dir)
    targets = load_targets()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result: dict = {"model": model_name, "impl": impl, "threads": torch.get_num_threads(), "epochs": epochs}
    if impl == "kgzsl":
        start = time.perf_counter()
        run = train(graph, targets, model=model_name, epochs=epochs, seed=seed, val_fraction=0.0, patience=None, progress=False, dropout=0.0)
        result["total_seconds"] = time.perf_counter() - start
        result["epoch_seconds"] = run.config["train_loop_seconds"] / epochs
        result["losses"] = run.losses
        nodes = torch.nonzero(run.seen).flatten()
        plan = run.model.plan(nodes, *run.model.graph_inputs(graph), num_nodes=graph.num_nodes)
        result["layers"] = plan_layers(run.model, plan)
    else:
        x = node_features(graph)
        nodes, target_of, _ = select_targets(graph, targets)  # the classes kgzsl's train() regresses
        nodes = torch.sort(nodes).values
        target = unit_targets(target_of, nodes)
        torch.manual_seed(seed)
        model = build_model(model_name, x.size(1), targets.dim, dropout=0.0)
        net = PlainDGP(model, graph) if model_name == "dgp" else PlainGCN(model, graph, symmetric=model_name == "gcnz")
        optimizer = torch.optim.Adam(net.parameters(), lr=SCHEDULES[model_name].lr, weight_decay=5e-4)  # train()'s lr
        losses, times = [], []
        for _ in range(epochs):
            start = time.perf_counter()
            out = net(x)
            loss = ((out[nodes] - target) ** 2).sum() / (2 * nodes.numel())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            losses.append(float(loss.detach()))
        result["epoch_seconds"] = sum(times) / epochs
        result["losses"] = losses
        result["layers"] = net.layers
    result["flops_per_epoch"] = step_flops(result["layers"])
    result["rows"] = [r for r, _, _ in result["layers"]]
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["inputs_rss_mib"] = base_rss / 1024
    return result


def measure_peak_gflops() -> float:
    """Best of a few fp32 2048x2048 matmuls, in GFLOP/s (this machine's practical peak)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = 0.0
    for _ in range(8):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048**3 / (time.perf_counter() - start) / 1e9)
    return best


def run_worker(args: argparse.Namespace, model: str, impl: str, graph: str, epochs: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", model, impl, "--graph", graph, "--epochs", str(epochs), "--seed", str(args.seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"worker {model}/{impl} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def full_dgp_run(graph: str, bf16: bool = False, out: str | None = None) -> dict:
    """One full default ``kgzsl train --model dgp`` (500 epochs; ``--bf16`` with ``bf16``), timed as a user runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        run = out or f"{tmp}/run"
        cmd = [sys.executable, "-m", "kgzsl", "train", "--graph", graph, "--model", "dgp", "--out", run, "--json", "--force"]
        start = time.perf_counter()
        done = subprocess.run(cmd + (["--bf16"] if bf16 else []), capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"kgzsl train failed:\n{done.stderr[-3000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["bf16"] = bf16
    summary["wall_seconds"] = round(seconds, 1)
    return summary


def unseen_hit5(run: str, graph_dir: str, images: Path, work: Path) -> float:
    """Hit@5 of a run on the unseen photos (``images/unseen``), as ``scripts/bench_images.py``'s unseen protocol."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_images  # lazy: sibling script (the unseen protocol's own candidates, ranks and hits)

    from kgzsl.graph.class_graph import load_graph  # lazy: kgzsl
    from kgzsl.propagation.run import load_run  # lazy: kgzsl
    from kgzsl.recognition.scoring import class_scores  # lazy: kgzsl

    feats = bench_images.image_features(images, work, "efficientnet-lite0")["unseen"]
    graph = load_graph(graph_dir)
    candidates = [graph.ids[i] for i, role in enumerate(graph.roles) if role == "unseen"]
    scores = class_scores(feats.features, load_run(run).predictions.rows(candidates))
    ranks = bench_images.measure(scores, list(feats.labels), candidates, graph)
    return bench_images.summarise({"flat": [ranks["flat"]], "hier": [ranks["hier"]]})["hit@5"]


def full_dgp(args: argparse.Namespace, graph: str) -> dict:
    """The default DGP training against ``--bf16`` in one run: best of ``--repeat`` each, alternating; with
    ``--quality``, each run's unseen Hit@5 on ``../shared/images`` (features cached in ``--work``)."""
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="kgzsl-bench-") as tmp:
            return _full_dgp(args, graph, Path(tmp))
    return _full_dgp(args, graph, Path(args.work))


def _full_dgp(args: argparse.Namespace, graph: str, work: Path) -> dict:
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for i in range(args.repeat):
        for mode in runs:
            print(f"full default DGP training ({mode}, {i + 1}/{args.repeat}) ...", file=sys.stderr)
            runs[mode].append(full_dgp_run(graph, bf16=mode == "bf16", out=str(work / f"run-{mode}")))
    best = {mode: min(rs, key=lambda r: r["wall_seconds"]) for mode, rs in runs.items()}
    out = {"runs": runs, "best": best, "ratio": round(best["bf16"]["wall_seconds"] / best["fp32"]["wall_seconds"], 3)}
    if args.quality:
        sys.path.insert(0, str(ROOT / "scripts"))
        import bench_images  # lazy: the photo benchmark's own image lookup

        images = bench_images.images_root(args.images)
        if images is None:
            out["quality"] = "skipped: no ../shared/images (or --images) with unseen/ and heldout/"
        else:
            out["quality"] = {mode: {"unseen_hit@5": unseen_hit5(str(work / f"run-{mode}"), graph, images, work)} for mode in runs}
    return out


def print_full_dgp(full: dict) -> None:
    for mode, best in full["best"].items():
        quality = full.get("quality")
        hit = f", unseen Hit@5 {100 * quality[mode]['unseen_hit@5']:.1f}" if isinstance(quality, dict) else ""
        print(f"full default DGP training, {mode}: {best['wall_seconds']} s wall (best of {len(full['runs'][mode])}; "
              f"{best['epochs_run']} epochs, seen loss {best['seen_loss']}{hit})")
    print(f"full default DGP training: bf16 / fp32 = {full['ratio']:.2f}")
    if isinstance(full.get("quality"), str):
        print(f"quality {full['quality']}")


def write_json(where: str | None, results: dict) -> None:
    """``--json``: results to a file, or to stdout for ``-``."""
    if where == "-":
        print(json.dumps(results))
    elif where:
        Path(where).write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", help="graph folder (default: build the ImageNet-21k graph into a temporary folder)")
    parser.add_argument("--models", nargs="+", default=["dgp", "sgcn", "gcnz"], choices=["dgp", "sgcn", "gcnz"])
    parser.add_argument("--epochs", type=int, help="timed epochs per run (default: dgp/sgcn 6, gcnz 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-dgp", action="store_true",
                        help="also time the full default DGP training (`kgzsl train --model dgp`) against the same with --bf16")
    parser.add_argument("--full-dgp-only", action="store_true", help="only the full trainings (implies --full-dgp)")
    parser.add_argument("--repeat", type=int, default=1, help="full trainings per mode, alternating; the fastest counts")
    parser.add_argument("--quality", action="store_true", help="with --full-dgp: each run's unseen Hit@5 on ../shared/images")
    parser.add_argument("--images", type=Path, help="photo tree with unseen/ (default: ../shared/images)")
    parser.add_argument("--work", help="folder for the full runs and photo features (default: a temporary folder)")
    parser.add_argument("--json", help="also write all results to this JSON file ('-': print them as JSON on stdout)")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.graph, args.epochs, args.seed)))
        return

    tmp = None
    graph = args.graph
    if graph is None:
        tmp = tempfile.TemporaryDirectory()
        graph = f"{tmp.name}/imagenet21k"
        print(f"building the ImageNet-21k graph into {graph} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "kgzsl", "build-graph", "--out", graph, "--json"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    if args.full_dgp_only:
        full = full_dgp(args, graph)
        print_full_dgp(full)
        write_json(args.json, {"full_dgp": full})
        if tmp is not None:
            tmp.cleanup()
        return
    peak = measure_peak_gflops()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"fp32 matmul peak {peak:.0f} GFLOP/s (measured)")
    rows = []
    results = {"peak_gflops": peak, "runs": []}
    for model in args.models:
        epochs = args.epochs or DEFAULT_EPOCHS[model]
        pair = {}
        for impl in ("plain", "kgzsl"):
            print(f"{model}/{impl}: {epochs} epochs ...", file=sys.stderr)
            pair[impl] = run_worker(args, model, impl, graph, epochs)
            results["runs"].append(pair[impl])
        diff = max(abs(a - b) for a, b in zip(pair["plain"]["losses"], pair["kgzsl"]["losses"]))
        speedup = pair["plain"]["epoch_seconds"] / pair["kgzsl"]["epoch_seconds"]
        for impl in ("plain", "kgzsl"):
            r = pair[impl]
            rate = r["flops_per_epoch"] / r["epoch_seconds"] / 1e9
            rows.append([
                model, impl, f"{r['epoch_seconds']:.3f}", f"{speedup:.1f}x" if impl == "kgzsl" else "1.0x",
                "/".join(str(n) for n in r["rows"]), f"{r['flops_per_epoch'] / 1e9:.1f}", f"{rate:.0f}",
                f"{100 * rate / peak:.0f}%", f"{r['peak_rss_mib']:.0f}", f"{r['losses'][-1]:.6f}",
                f"{diff:.1e}" if impl == "kgzsl" else "",
            ])
    header = ["model", "impl", "s/epoch", "speedup", "rows per layer", "GFLOP/ep", "GFLOP/s", "of peak", "peak RSS MiB", "last loss", "max|dloss|"]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    if args.full_dgp:
        results["full_dgp"] = full_dgp(args, graph)
        print_full_dgp(results["full_dgp"])
    write_json(args.json, results)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
