"""``kgzsl propagate`` (issue 13, item 3): a trained run's model on a grown graph, without retraining.

Real data throughout: the shipped bird taxonomy (its seen birds pinned to ImageNet-1k synsets, so they
regress EfficientNet-Lite0's real classifier rows), built with the default node features, and the same
taxonomy with two new birds (free names with a description, under existing parents). One short run a
model, the pelican held out.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_SEEN, SMALL_UNSEEN

from kgzsl.cli import main
from kgzsl.propagation.run import load_run
from kgzsl.propagation.run_files import PREDICTIONS_FILE

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "taxonomies"
#: the new birds, each under an existing parent of birds.csv, as a user adds a class to a taxonomy
NEW = {
    "tawny owl": ("owl", "a brown European owl of woodland that hunts at night, with a round head and no ear tufts"),
    "mandarin duck": ("duck", "a small Asian duck; the drake has orange sail-like feathers on its back and a crested head"),
}
HELD = "pelican"  # a seen bird held out of every run: it must stay unseen after propagation
MODELS = ("gcnz", "sgcn", "dgp")
#: narrower than the papers' (the test's time goes to training); a checkpoint must rebuild them all the same
WIDTHS = {"gcnz": {"hidden_channels": [512, 512, 256, 256, 128]}, "sgcn": {"hidden_channels": 512}, "dgp": {"hidden_channels": 512}}


@pytest.fixture(scope="module")
def world(tmp_path_factory, glove):
    """Graph folders (the birds; the birds and two more; the birds with other features of the same and of
    another width) and one run a model on the birds (60 epochs, narrower layers, Lite0 targets, the pelican held out)."""
    from kgzsl.core.idlists import read_id_list
    from kgzsl.graph.class_graph import build_wordnet_graph, load_graph
    from kgzsl.graph.embeddings import (
        DEFAULT_VECTORS,
        GLOVE_50D,
        ConcatenatedFeatures,
        load_vectors,
    )
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train

    root = tmp_path_factory.mktemp("propagate")
    bigger = root / "birds-and-two.csv"
    rows = "".join(f'{name},{parent},,"{text}"\n' for name, (parent, text) in NEW.items())
    bigger.write_text((DATA / "birds.csv").read_text().rstrip("\n") + "\n" + rows)
    seen = read_id_list(DATA / "birds-seen.txt", "seen")
    default = ConcatenatedFeatures([glove, load_vectors("minilm")], DEFAULT_VECTORS)
    names_only = ConcatenatedFeatures([glove, load_vectors("minilm-names")], f"{GLOVE_50D}+minilm-names")  # also 434-d
    for name, taxonomy, vectors in (("birds", DATA / "birds.csv", default), ("bigger", bigger, default),
                                    ("names", bigger, names_only), ("glove", bigger, glove)):
        build_taxonomy_graph(load_taxonomy(taxonomy), seen, vectors=vectors).save(root / name)
    # another domain's graph with the same node features (issue 24, defect 1): no class of the birds in it
    build_wordnet_graph(SMALL_SEEN, SMALL_UNSEEN, vectors=default).save(root / "wordnet")
    graph, targets = load_graph(root / "birds"), load_targets()
    for model in MODELS:
        result = train(graph, targets, model=model, epochs=60, seed=0, exclude=[HELD], progress=False, **WIDTHS[model])
        save_run(result, graph, root / f"run-{model}")
    return root


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- (a) the run's own graph
@pytest.mark.parametrize("model", MODELS)
def test_on_its_own_graph_it_reproduces_the_run_exactly(world, model):
    from kgzsl.propagation.grow import propagate

    out = world / f"same-{model}"
    done = propagate(world / f"run-{model}", world / "birds", out=out)
    run, again = load_run(world / f"run-{model}"), load_run(out)
    assert again.predictions.ids == run.predictions.ids
    assert torch.equal(again.predictions.pred, run.predictions.pred)
    assert torch.equal(again.predictions.seen, run.predictions.seen)
    assert torch.equal(again.predictions.seen_true, run.predictions.seen_true)
    assert torch.equal(done.predictions.classifiers(), run.predictions.classifiers())  # in memory too
    assert done.summary()["new_count"] == 0 and done.summary()["removed_count"] == 0
    assert again.record["graph_fingerprint"] == run.record["graph_fingerprint"]
    assert again.record["propagated"]["from_run"] == str((world / f"run-{model}").resolve())
    assert (again.backbone, again.backbone_fingerprint) == (run.backbone, run.backbone_fingerprint)
    assert again.record["excluded"] == [HELD]


# ------------------------------------------------------------------------------ (b) a grown graph
def _subtree(graph, node: int) -> set[int]:
    """``node`` and every node below it (edges point child -> parent)."""
    children: dict[int, list[int]] = {}
    for child, parent in graph.edge_index.T.tolist():
        children.setdefault(parent, []).append(child)
    found, todo = {node}, [node]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.mark.parametrize("model", MODELS)
def test_new_classes_get_classifiers_next_to_their_siblings(world, model):
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.grow import propagate

    graph = load_graph(world / "bigger")
    run = load_run(world / f"run-{model}").predictions
    done = propagate(world / f"run-{model}", graph)
    summary, grown = done.summary(), done.predictions
    assert summary["new_count"] == 2 and sorted(n["name"] for n in summary["new"]) == sorted(NEW)
    assert summary["run_nodes"] == len(run.ids) and summary["nodes"] == len(run.ids) + 2
    weights = F.normalize(grown.classifiers(), dim=1)  # seen classes by their real classifiers, as recognition
    index = graph.index()
    for name, (parent, _) in NEW.items():
        node = index[name]
        assert torch.isfinite(grown.pred[node]).all() and float(grown.pred[node].norm()) > 0.99
        cosine = weights @ weights[node]
        cosine[node] = -2.0
        nearest = int(cosine.argmax())
        assert nearest in _subtree(graph, index[parent]), (name, graph.ids[nearest])
        classes = torch.tensor([role != "internal" for role in graph.roles])
        sibling = int(torch.where(classes, cosine, torch.full_like(cosine, -2.0)).argmax())
        parents_of = {c: p for c, p in graph.edge_index.T.tolist()}
        assert parents_of[sibling] == index[parent], (name, graph.ids[sibling])  # the nearest class is a sibling
    # the classes the run trained on keep their real classifiers; the held-out one stays unseen
    old = torch.tensor([grown.index[i] for i in run.ids])
    assert torch.equal(grown.seen[old], run.seen) and int(grown.seen.sum()) == int(run.seen.sum())
    assert torch.equal(grown.classifiers()[old][run.seen], run.classifiers()[run.seen])
    assert not bool(grown.seen[index[HELD]])
    # existing classes move a little (their neighbourhoods grew), never far: measured min cosine 0.995 (DGP)
    moved = F.cosine_similarity(grown.pred[old], run.pred, dim=1)
    assert float(moved.min()) > 0.99, [(run.ids[i], round(float(moved[i]), 4)) for i in moved.argsort()[:3].tolist()]


# -------------------------------------------------------------------------------------- (c) refusals
def _predictions_only(world: Path, work: Path) -> str:
    (work / "preds").mkdir()
    shutil.copy(world / "run-dgp" / PREDICTIONS_FILE, work / "preds" / PREDICTIONS_FILE)
    return "preds"


REFUSALS = [
    pytest.param(["--run", "{W}/run-dgp", "--graph", "{W}/names"], ["feature source differs", "minilm-names", "{W}/birds", "{W}/names"],
                 id="same-width-other-features"),
    pytest.param(["--run", "{W}/run-dgp", "--graph", "{W}/glove"], ["width differ", "434-d", "50-d", "{W}/glove"], id="other-width"),
    pytest.param(["--run", "{W}/run-dgp", "--graph", "{W}/wordnet"], ["holds none of the 5 classes", "'bald eagle'", "{W}/wordnet",
                                                                    "{W}/birds"], id="d1-graph-of-another-domain"),
    pytest.param(["--run", "preds", "--graph", "{W}/bigger"], ["predictions only", "model.safetensors"], id="predictions-only"),
    pytest.param(["--run", "no-such-run", "--graph", "{W}/bigger"], ["run no-such-run does not exist"], id="missing-run"),
    pytest.param(["--run", "{W}/run-dgp", "--graph", "no-such-graph"], ["graph folder no-such-graph does not exist"], id="missing-graph"),
    pytest.param(["--run", "{W}/run-dgp", "--graph", "{W}/bigger", "--out", "taken"], ["already exists: pass --force"], id="out-exists"),
    pytest.param(["--run", "{W}/run-dgp", "--graph", "{W}/bigger", "--out", "{W}/run-dgp", "--force"], ["is the run being propagated"],
                 id="out-is-the-run"),
    pytest.param(["--run", "{W}/run-dgp", "--graph", "{W}/bigger", "--out", "{W}/bigger", "--force"], ["is a kgzsl graph folder"],
                 id="out-is-a-graph"),
]


def _listing(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("argv, says", REFUSALS)
def test_refusals_name_the_inputs_and_leave_nothing(world, argv, says, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    _predictions_only(world, work)
    shutil.copytree(world / "run-dgp", work / "taken")
    monkeypatch.chdir(work)
    args = [a.replace("{W}", str(world)) for a in argv]
    if "--out" not in args:
        args += ["--out", "new-run"]
    before = (_listing(work), _listing(world))
    code, out, err = _cli(capsys, "propagate", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kgzsl: error: "), err
    for text in says:
        assert text.replace("{W}", str(world)) in lines[0], lines[0]
    assert out == "" and not (work / "new-run").exists()
    assert (_listing(work), _listing(world)) == before  # nothing written, replaced or left half-done


# ---------------------------------------------------------------------- (d) downstream commands
def test_cli_output_is_a_run_every_command_takes(world, tmp_path, capsys):
    from kgzsl.vision.samples import foolbox_imagenet_images

    out = tmp_path / "grown"
    code, stdout, err = _cli(capsys, "propagate", "--run", world / "run-dgp", "--graph", world / "bigger", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["new_count"] == 2 and {n["id"] for n in summary["new"]} == set(NEW) and summary["out"] == str(out)
    code, stdout, err = _cli(capsys, "propagate", "--run", world / "run-dgp", "--graph", world / "bigger", "--out", out, "--force")
    assert code == 0 and "2 new: tawny owl, mandarin duck" in stdout, err  # --force replaces a run folder
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporaries left
    photo = foolbox_imagenet_images()[17][0]  # a bald eagle
    (tmp_path / "candidates.txt").write_text("tawny owl\nmandarin duck\nbarn owl\n")
    code, stdout, err = _cli(capsys, "predict", photo, "--predictions", out, "--candidates", tmp_path / "candidates.txt",
                             "--top", "3", "--json")
    assert code == 0, err
    top = json.loads(stdout)["images"][0]["top"]
    assert {t["id"] for t in top} == {"tawny owl", "mandarin duck", "barn owl"}
    code, stdout, err = _cli(capsys, "predict", photo, "--predictions", out / PREDICTIONS_FILE, "--json")
    assert code == 0, err
    code, stdout, err = _cli(capsys, "inspect", "tawny owl", "--predictions", out, "--no-targets", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["role"] == "unseen" and report["ancestors"][0]["id"] == "owl"
    assert report["attribution"], "the model was found beside the propagated predictions"
    (tmp_path / "tree" / "barn owl").mkdir(parents=True)
    shutil.copy(photo, tmp_path / "tree" / "barn owl" / photo.name)
    (tmp_path / "split.txt").write_text("barn owl\ntawny owl\nmandarin duck\n")
    code, _, err = _cli(capsys, "features", tmp_path / "tree", "--backbone", "efficientnet-lite0", "--out", tmp_path / "feats",
                        "--device", "cpu", "--json")
    assert code == 0, err
    code, stdout, err = _cli(capsys, "evaluate", "--features", tmp_path / "feats", "--predictions", out, "--split",
                             tmp_path / "split.txt", "--json")
    assert code == 0, err
    assert json.loads(stdout)["graph"] == str((world / "bigger").resolve())  # hierarchical Hit@k on the grown graph
