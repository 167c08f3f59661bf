"""kgzsl.propagation.run: a run folder written and read back (round trip), a run folder vs its predictions file, what a
run knows (graph, backbone, model), the reusable run of the demo and Recognizer.pretrained, and the
missing or damaged files, each a KgzslError naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kgzsl.demo import reusable_run
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import graph_fingerprint
from kgzsl.propagation.run import (
    MODEL_FILE,
    RECORD_FILE,
    REUSE_FILE,
    Run,
    load_run,
    save_run,
)
from kgzsl.propagation.run_files import PREDICTIONS_FILE
from kgzsl.propagation.training import predict


@pytest.fixture
def copy(photo_run, tmp_path):
    """A copy of the photo run's folder to damage."""
    folder = tmp_path / "run"
    shutil.copytree(photo_run["run"], folder)
    return folder


def test_round_trip(photo_run):
    from kgzsl.propagation.targets import load_targets

    result, folder = photo_run["result"], photo_run["run"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([MODEL_FILE, PREDICTIONS_FILE, RECORD_FILE])
    run = load_run(folder)
    assert isinstance(run, Run) and run.folder == folder and run.source == folder
    assert torch.equal(run.predictions.pred, result.predictions) and torch.equal(run.predictions.seen, result.seen)
    assert run.record == json.loads((folder / RECORD_FILE).read_text())
    assert run.record["losses"] == result.losses and run.record["seed"] == 0 and run.model_name == "dgp"
    assert run.backbone == "efficientnet-lite0" and run.backbone_fingerprint == load_targets().fingerprint
    assert run.record["backbone"] == run.backbone  # train.json and the predictions say the same
    assert run.graph_folder() == photo_run["graph"].resolve()
    graph = run.load_graph()
    assert run.trained_on(graph) and graph_fingerprint(graph.ids, graph.edge_index) == run.record["graph_fingerprint"]
    model = run.load_model(graph)
    assert model.config() == run.record["model_config"]
    assert torch.equal(predict(model, graph), result.predictions)  # the saved weights give the saved predictions
    targets = run.load_targets()
    assert targets.source == "efficientnet-lite0" and targets.dim == run.predictions.pred.shape[1]


def test_save_run_moved_but_train_still_exports_it(photo_run):
    import kgzsl.propagation.training
    from kgzsl.propagation.run import load_checkpoint

    assert kgzsl.propagation.run.save_run is save_run and kgzsl.propagation.run.load_checkpoint is load_checkpoint
    assert not hasattr(kgzsl.propagation.training, "backbone_of")  # the backbone is recorded, never guessed from the targets' name
    with pytest.raises(AttributeError):
        kgzsl.propagation.training.no_such_thing  # noqa: B018


def test_run_folder_and_predictions_file_are_one_run(photo_run, tmp_path):
    folder = photo_run["run"]
    by_folder, by_file = load_run(folder), load_run(folder / PREDICTIONS_FILE)
    assert by_file.folder == by_folder.folder == folder and by_file.source == folder / PREDICTIONS_FILE
    assert torch.equal(by_file.predictions.pred, by_folder.predictions.pred)
    assert by_file.has_model and by_file.record == by_folder.record
    # a predictions file on its own: the predictions still know their graph and backbone, there is no model
    alone = tmp_path / "elsewhere.safetensors"
    shutil.copy(folder / PREDICTIONS_FILE, alone)
    run = load_run(alone)
    assert run.folder == tmp_path and run.record is None and not run.has_model
    assert run.load_model(run.load_graph()) is None
    assert run.backbone == "efficientnet-lite0" and run.graph_folder() == photo_run["graph"].resolve()


def test_missing_and_damaged_files_are_named(copy, tmp_path):
    with pytest.raises(KgzslError, match=f"{tmp_path}.*has no {PREDICTIONS_FILE}"):
        load_run(tmp_path)  # a folder, but not a run
    with pytest.raises(KgzslError, match="nowhere.safetensors does not exist"):
        load_run(tmp_path / "nowhere.safetensors")
    with pytest.raises(KgzslError, match=f"{copy / MODEL_FILE} is not a kgzsl predictions file"):
        load_run(copy / MODEL_FILE)

    run = load_run(copy)
    graph = run.load_graph()
    (copy / MODEL_FILE).write_bytes(b"half a file")
    with pytest.raises(KgzslError, match=str(copy / MODEL_FILE)):
        run.load_model(graph)
    (copy / RECORD_FILE).write_text('{"format": "kgzsl.tra')
    with pytest.raises(KgzslError, match=f"{copy / RECORD_FILE} is not valid JSON"):
        load_run(copy).record  # noqa: B018
    (copy / RECORD_FILE).write_text('{"format": "something.else"}')
    with pytest.raises(KgzslError, match=f"{RECORD_FILE} is not a kgzsl training record"):
        load_run(copy).load_model(graph)
    (copy / RECORD_FILE).unlink()
    assert load_run(copy).load_model(graph) is None  # no record: the model cannot be rebuilt, so there is none
    (copy / PREDICTIONS_FILE).write_bytes(b"\x00" * 16)
    with pytest.raises(KgzslError, match=str(copy / PREDICTIONS_FILE)):
        load_run(copy)


def test_the_graph_of_a_run(copy, photo_run, small_graph, tmp_path):
    run = load_run(copy)
    other = tmp_path / "other-graph"
    small_graph.save(other)
    with pytest.raises(KgzslError, match="other-graph .given with --graph. is not the graph .*fingerprints differ"):
        run.load_graph(other)
    assert run.load_graph(photo_run["graph"]).num_nodes == len(run.predictions.ids)
    moved = tmp_path / "moved"
    shutil.copytree(photo_run["graph"], moved)
    record = json.loads((copy / RECORD_FILE).read_text())
    record["graph"] = str(tmp_path / "gone")
    (copy / RECORD_FILE).write_text(json.dumps(record))
    from kgzsl.propagation.predictions import load_predictions, save_predictions

    preds = load_predictions(copy)
    for recorded, message in [(str(tmp_path / "gone"), "is not there: pass --graph"), ("", "record no graph folder")]:
        save_predictions(copy / PREDICTIONS_FILE, preds.ids, preds.pred, preds.seen, seen_true=preds.seen_true,
                         meta={**preds.meta, "graph": recorded})
        record["graph"] = recorded
        (copy / RECORD_FILE).write_text(json.dumps(record))
        with pytest.raises(KgzslError, match=message):
            load_run(copy).load_graph()
        assert load_run(copy).load_graph(moved).num_nodes == len(preds.ids)  # the graph passed where it moved to


def test_reusable_run_trains_once(photo_run, tmp_path, monkeypatch):
    import kgzsl.propagation.training
    from kgzsl.graph.class_graph import load_graph

    graph = load_graph(photo_run["graph"])
    said: list[str] = []
    run, result = reusable_run(graph, tmp_path / "cache", epochs=2, progress=False, log=said.append)
    assert result is not None and run.record["epochs_run"] == 2 and (tmp_path / "cache" / REUSE_FILE).is_file()
    monkeypatch.setattr(kgzsl.propagation.training, "train", lambda *a, **k: pytest.fail("trained again"))
    again, none = reusable_run(graph, tmp_path / "cache", epochs=2, progress=False, log=said.append)
    assert none is None and torch.equal(again.predictions.pred, run.predictions.pred)
    assert said[0].startswith("training dgp on 421 nodes") and said[1].startswith("reusing the trained dgp")
    monkeypatch.undo()
    _, retrained = reusable_run(graph, tmp_path / "cache", epochs=2, seed=1, progress=False, log=said.append)
    assert retrained is not None  # another seed: trained again, in place


def test_cli_takes_a_run_folder_or_its_predictions_file(photo_run, capsys):
    from kgzsl.cli import main
    from kgzsl.vision.samples import darknet_photo

    photo = str(darknet_photo("giraffe.jpg"))
    outputs = []
    for given in (photo_run["run"], photo_run["run"] / PREDICTIONS_FILE):
        assert main(["predict", photo, "--predictions", str(given), "--top", "3", "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out)["images"])
        assert main(["inspect", "giraffe", "--predictions", str(given), "--top", "3", "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    assert "attribution" in outputs[1]  # the model was found beside the predictions


def test_save_run_is_atomic_and_refuses_to_overwrite(photo_run, tmp_path):
    from kgzsl.graph.class_graph import load_graph

    out = save_run(photo_run["result"], load_graph(photo_run["graph"]), tmp_path / "again")
    assert out == tmp_path / "again"
    assert (out / PREDICTIONS_FILE).read_bytes() == (photo_run["run"] / PREDICTIONS_FILE).read_bytes()
    with pytest.raises(KgzslError, match="exists"):
        save_run(photo_run["result"], load_graph(photo_run["graph"]), out)
    assert [p.name for p in Path(tmp_path).iterdir()] == ["again"]  # no temporary left behind
