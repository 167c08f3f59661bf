"""The demo (the README's first command): zero-shot recognition end to end on real data.

1. the ImageNet-21k graph (``graphs/imagenet21k``, built if missing);
2. DGP trained on EfficientNet-Lite0's real ImageNet-1k classifiers, with the classes of the
   labelled demo images held out (their classifiers are never seen);
3. EfficientNet-Lite0 features of 20 real ImageNet validation images (the foolbox wheel) and of a
   giraffe photo (Debian's darknet package; giraffe is an ImageNet-21k class outside ImageNet-1k);
4. standard zero-shot prediction over every class without a trained classifier (the ImageNet-21k
   unseen classes plus the held-out ones): a table, Hit@1/5, and a PNG sheet of each image with its top 5;
   where the run has been calibrated (``kgzsl calibrate``, its ``hedge.json``), a hedged column too: the most
   specific WordNet node meeting the target accuracy (``hedge``, default 0.9) and its probability.

The numbers are honest zero-shot numbers: no image's class had a classifier during training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.core.files import read_json, write_json
from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids
from kgzsl.core.outputs import check_output_dir, check_output_file
from kgzsl.core.resources import default_graph_dir
from kgzsl.errors import KgzslError, check_number
from kgzsl.graph.class_graph import (
    ClassGraph,
    build_wordnet_graph,
    graph_fingerprint,
    load_graph,
)
from kgzsl.graph.wordnet import lemma_names
from kgzsl.propagation.run import REUSE_FILE, Run, load_run, save_run
from kgzsl.propagation.run_files import PREDICTIONS_FILE
from kgzsl.recognition.hedge.storage import (
    install_shipped_calibration,
    run_calibration,
)
from kgzsl.vision.backbone_identity import DEFAULT_BACKBONE
from kgzsl.vision.images import load_image
from kgzsl.vision.samples import (
    GIRAFFE_WNID,
    darknet_photo,
    foolbox_imagenet_images,
)

if TYPE_CHECKING:
    from kgzsl.propagation.training import TrainResult

DEFAULT_RUN = Path("runs") / "demo"
#: the shipped graph, inside the installed package or the checkout kgzsl runs from (never the current folder)
DEFAULT_GRAPH = default_graph_dir()


def load_or_build_graph(graph_dir: Path, progress: bool = True) -> ClassGraph:
    """The graph in ``graph_dir``; where it is absent, the default ImageNet-21k graph built and saved there."""
    if (graph_dir / "graph.json").is_file():
        return load_graph(graph_dir)
    graph = build_wordnet_graph(imagenet1k_wnids(), imagenet21k_unseen_wnids(), progress=progress,
                                sources={"seen": "imagenet-1k (timm wheel)", "unseen": "imagenet-21k minus 1k (timm wheel)"})
    graph.save(graph_dir)
    return load_graph(graph_dir)


def _check_before_work(out: Path, graph_dir: Path, epochs: int | None) -> None:
    """Refuse bad settings and check everything the demo writes before it builds or trains anything."""
    if epochs is not None:
        check_number("epochs", epochs, at_least=1)
    if not (graph_dir / "graph.json").is_file():
        if graph_dir.exists() or graph_dir.is_symlink():  # else the message below would talk of --out
            kind = "a file" if not graph_dir.is_dir() else "a folder without graph.json"
            raise KgzslError(f"graph_dir {graph_dir} is {kind}, not a kgzsl graph folder: pass a graph folder, "
                             "or a new folder to build the graph in", parameter="graph_dir")
        check_output_dir(graph_dir, "graph")
    check_output_dir(out / "run", "train", force=True)  # a stale demo run is retrained in place
    check_output_file(out / "demo-top5.png", "demo sheet")


def run_demo(
    out: str | Path = DEFAULT_RUN,
    graph_dir: str | Path = DEFAULT_GRAPH,
    model: str = "dgp",
    epochs: int | None = None,
    seed: int = 0,
    top: int = 5,
    progress: bool = True,
    log=print,
    hedge: float = 0.9,
) -> dict[str, Any]:
    """Run the demo; returns the summary (per-image rows, Hit@k, seconds, files written; with a calibrated
    run, each row's hedged answer at target accuracy ``hedge``)."""
    import torch  # lazy: torch

    from kgzsl.recognition.recognize import RecognitionOptions, recognize  # lazy: torch
    from kgzsl.recognition.scoring import candidate_mask  # lazy: torch
    from kgzsl.vision.backbones import load_backbone  # lazy: torch
    from kgzsl.vision.features import image_list_features  # lazy: torch

    start = time.perf_counter()
    out = Path(out)
    check_number("hedge", hedge, above=0)
    options = RecognitionOptions("unseen", top)  # standard zero-shot; checked before any work
    _check_before_work(out, Path(graph_dir), epochs)
    labelled = foolbox_imagenet_images()
    try:
        labelled.append((darknet_photo("giraffe.jpg"), GIRAFFE_WNID))
    except KgzslError as exc:
        log(f"(skipping the giraffe: {exc})")
    held_out = sorted({w for _, w in labelled if w != GIRAFFE_WNID})
    graph = load_or_build_graph(Path(graph_dir), progress)
    run, result = reusable_run(graph, out / "run", model, held_out, epochs, seed, progress, log)
    predictions = run.predictions

    backbone = load_backbone(run.backbone)
    features, good, bad = image_list_features([p for p, _ in labelled], backbone)
    for entry in bad:
        log(f"skipped {entry['path']}: {entry['reason']}")
    truth = {str(p): w for p, w in labelled}
    hedger = _hedger(run, graph, hedge, log) if good else None
    rows = recognize(features, good, predictions, replace(options, hedger=hedger), truth=[truth[g] for g in good]) if good else []
    ranks = [r.true_rank for r in rows]
    table = _table(rows, good, ranks, truth, [r.hedged for r in rows] if hedger is not None else None)
    n = max(1, len(table))
    summary = {
        "images": len(table),
        "candidates": int(candidate_mask(predictions, "unseen").sum()),
        "held_out_classes": len(held_out),
        "hit@1": sum(r["hit@1"] for r in table) / n,
        "hit@5": sum(r["hit@5"] for r in table) / n,
        "median_rank": float(torch.tensor(ranks, dtype=torch.float32).median()) if len(table) else None,
        "model": predictions.meta.get("model", model),
        "rows": table,
        "bad_files": bad,
        "hedge": hedge if hedger is not None else None,
    }
    sheet = out / "demo-top5.png"
    write_sheet([p for p in good], table, sheet)
    summary["sheet"] = str(sheet)
    summary["trained_now"] = result is not None
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary


def _hedger(run: Any, graph: ClassGraph, target: float, log: Any) -> Any:
    """The run's hedger for ``target`` where it is calibrated (unseen candidates); None (with a note) where not."""
    from kgzsl.recognition.hedge.calibration import run_hedger  # lazy: torch

    record = run_calibration(run)
    if record is None:
        log(f"(no hedged column: run `kgzsl calibrate --predictions {run.folder} ...` on other held-out images first)")
        return None
    try:
        return run_hedger(run, graph, target)
    except KgzslError as exc:
        log(f"(no hedged column: {exc})")
        return None


def _table(rows: list[Any], good: list[str], ranks: list[int], truth: dict[str, str], hedged: list[Any] | None) -> list[dict[str, Any]]:
    """The demo's rows: image, true class, top predictions, rank, hits and, given ``hedged``, the hedged answer."""
    table = []
    for k, (row, path, rank) in enumerate(zip(rows, good, ranks)):
        wnid = truth[path]
        entry = {
            "image": Path(path).name, "true": wnid, "true_name": lemma_names(wnid)[0].replace("_", " "),
            "top": [{"wnid": w, "name": n, "score": round(s, 3)} for w, n, s in row.top],
            "rank": rank, "hit@1": rank <= 1, "hit@5": rank <= 5,
        }
        if hedged is not None:
            entry["hedged"] = {"wnid": hedged[k].id, "name": hedged[k].name, "probability": round(hedged[k].probability, 3)}
        table.append(entry)
    return table


def format_demo(summary: dict[str, Any]) -> str:
    """The demo's table: image, true class, top-5, hit, and the Hit@k line."""
    hedge = summary.get("hedge")
    lines = [
        f"Zero-shot over {summary['candidates']} candidate classes (ImageNet-21k unseen + "
        f"{summary['held_out_classes']} held-out ImageNet-1k classes), {summary['model']} on EfficientNet-Lite0:",
        f"{'image':<22}{'true class':<24}{'rank':>6}  " + (f"{f'hedged at {hedge:g}':<30}" if hedge else "") + "top-5 predictions",
    ]
    for r in summary["rows"]:
        mark = "HIT " if r["hit@1"] else ("top5" if r["hit@5"] else "    ")
        top = ", ".join(t["name"] for t in r["top"])
        h = r.get("hedged")
        column = f"{h['name'][:22] + ' ' + format(h['probability'], '.2f'):<30}" if h else ""
        lines.append(f"{r['image']:<22}{r['true_name'][:23]:<24}{r['rank']:>6}  {column}{mark} {top}")
    lines.append(
        f"Hit@1 {100 * summary['hit@1']:.1f}%   Hit@5 {100 * summary['hit@5']:.1f}%   median rank {summary['median_rank']:.0f}   "
        f"({summary['images']} images; sheet {summary['sheet']}; {summary['seconds']} s)"
    )
    return "\n".join(lines)


def write_sheet(paths: list[str], table: list[dict[str, Any]], out: Path) -> None:
    """A PNG contact sheet: each image with its true class and top-5 predictions (hits in green)."""
    from kgzsl.inspection.plots import pyplot, save_png  # lazy: torch

    plt = pyplot()
    cols = 4
    rows = (len(table) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.6, rows * 4.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, path, row in zip(axes.flat, paths, table):
        image = load_image(path)
        image.thumbnail((256, 256))
        ax.imshow(image)
        ax.set_title(f"{row['true_name'][:28]}  (rank {row['rank']})", fontsize=8, fontweight="bold")
        text = "\n".join(f"{i + 1}. {t['name'][:30]}" for i, t in enumerate(row["top"]))
        hit = any(t["wnid"] == row["true"] for t in row["top"])
        ax.text(0.0, -0.02, text, transform=ax.transAxes, va="top", fontsize=7, color="green" if hit else "black")
    fig.subplots_adjust(left=0.02, right=0.98, top=0.97, bottom=0.03, wspace=0.08, hspace=0.62)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, out, dpi=90)


# ----------------------------------------------------------------------------------- reusable runs
def reusable_run(
    graph: ClassGraph,
    folder: str | Path,
    model: str = "dgp",
    exclude: Iterable[str] = (),
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> tuple[Run, TrainResult | None]:
    """The run in ``folder`` if it was trained for exactly this graph, model, seed, epochs and held-out
    set (its ``demo.json`` says); else ``model`` trained now on EfficientNet-Lite0's classifiers and
    saved there. A calibration of hedged answers shipped for exactly this run (``data/calibration``) is
    installed where the folder has none. Returns the run and the training result (None when reused)."""
    from kgzsl.propagation.targets import load_targets  # lazy: torch
    from kgzsl.propagation.training import train  # lazy: torch

    folder = Path(folder)
    want = reuse_key(graph, model, exclude, epochs, seed)
    record = folder / REUSE_FILE
    result = None
    if record.is_file() and (folder / PREDICTIONS_FILE).is_file() and read_json(record) == want:
        log(f"reusing the trained {model} in {folder} (delete it to retrain)")
    else:
        log(f"training {model} on {graph.num_nodes} nodes with {len(want['exclude'])} classes held out ...")
        result = train(graph, load_targets(DEFAULT_BACKBONE), model=model, epochs=epochs, seed=seed,
                       exclude=want["exclude"], progress=progress)
        save_run(result, graph, folder, force=True)
        write_json(record, want)
    for name in install_shipped_calibration(folder, want):
        log(f"installed the shipped hedging calibration {name} into {folder}")
    return load_run(folder), result


def reuse_key(graph: ClassGraph, model: str = "dgp", exclude: Iterable[str] = (), epochs: int | None = None,
              seed: int = 0) -> dict[str, Any]:
    """What a reusable run is trained for (its ``demo.json``): model, seed, held-out classes, epochs, graph."""
    return {"model": model, "seed": seed, "exclude": sorted(exclude), "epochs": epochs,
            "graph_fingerprint": graph_fingerprint(graph.ids, graph.edge_index)}
