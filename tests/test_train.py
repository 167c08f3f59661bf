"""Training on a real WordNet subgraph with real EfficientNet-Lite0 classifier rows; checkpoints; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import graph_fingerprint
from kgzsl.propagation.predictions import load_predictions, save_predictions
from kgzsl.propagation.run import load_checkpoint, save_run
from kgzsl.propagation.targets import Targets, load_targets
from kgzsl.propagation.training import l2_loss, predict, train

FAST = {"gcnz": {"hidden_channels": (256, 256, 128, 128, 64)}, "sgcn": {}, "dgp": {}}


@pytest.fixture(scope="module")
def mid_graph(glove):
    """A real WordNet graph of 200 ImageNet-1k and 209 ImageNet-21k classes, closed upward (1,105 nodes)."""
    from kgzsl.core.imagenet import imagenet1k_wnids, imagenet21k_unseen_wnids
    from kgzsl.graph.class_graph import build_wordnet_graph

    return build_wordnet_graph(imagenet1k_wnids()[::5], imagenet21k_unseen_wnids()[::100], vectors=glove)


@pytest.fixture(scope="module")
def lite0() -> Targets:
    return load_targets()


@pytest.fixture(scope="module")
def dgp_run(mid_graph, lite0):
    return train(mid_graph, lite0, model="dgp", epochs=25, seed=3, val_fraction=0.05, progress=False)


@pytest.mark.parametrize("name", ["gcnz", "sgcn", "dgp"])
def test_each_model_learns_and_predicts_unseen_classes(name, mid_graph, lite0):
    result = train(mid_graph, lite0, model=name, epochs=30, seed=0, val_fraction=0.05, patience=None, progress=False, **FAST[name])
    assert result.epochs_run == 30 and len(result.losses) == len(result.val_losses) == 30
    assert np.mean(result.losses[-5:]) < 0.95 * np.mean(result.losses[:3])  # the loss falls
    assert result.seen_loss < 0.95
    pred = result.predictions
    assert pred.shape == (mid_graph.num_nodes, 1281)
    unseen = torch.from_numpy(mid_graph.mask("unseen"))
    assert torch.isfinite(pred[unseen]).all()
    torch.testing.assert_close(pred[unseen].norm(dim=1), torch.ones(int(unseen.sum())))
    # the unseen classifiers moved away from what the untrained model gives, and are not all alike
    torch.manual_seed(0)
    from kgzsl.propagation.models import build_model

    untrained = build_model(name, 50, 1281, **FAST[name])
    before = predict(untrained, mid_graph)
    assert ((pred[unseen] - before[unseen]).norm(dim=1) > 0.1).all()
    cosine = pred[unseen] @ pred[unseen].T
    assert cosine.min() < 0.99
    assert result.config["counts"]["train"] + result.config["counts"]["val"] == 200
    assert result.seen.sum() == 200 and not result.seen[unseen].any()


def test_seed_reproducibility(mid_graph, lite0, dgp_run):
    again = train(mid_graph, lite0, model="dgp", epochs=25, seed=3, val_fraction=0.05, progress=False)
    assert again.losses == dgp_run.losses and again.val_losses == dgp_run.val_losses
    assert torch.equal(again.predictions, dgp_run.predictions)
    other = train(mid_graph, lite0, model="dgp", epochs=25, seed=4, val_fraction=0.05, progress=False)
    assert other.losses != dgp_run.losses
    assert other.config["val_ids"] != dgp_run.config["val_ids"]


def test_best_validation_weights_are_kept(mid_graph, lite0):
    result = train(mid_graph, lite0, model="sgcn", epochs=400, lr=3e-2, patience=3, seed=0, progress=False)
    assert result.epochs_run < 400  # early stopping: a high lr soon stops improving
    best = result.best_epoch
    assert result.epochs_run == best + 3
    assert result.val_losses[best - 1] == min(result.val_losses)
    assert result.val_loss == pytest.approx(result.val_losses[best - 1], abs=1e-5)  # the final model is the best one


def test_excluded_classes_are_not_used(mid_graph, lite0):
    held_out = [w for w, r in zip(mid_graph.ids, mid_graph.roles) if r == "seen"][:20]
    result = train(mid_graph, lite0, model="dgp", epochs=3, exclude=held_out, seed=0, progress=False, hidden_channels=64)
    counts = result.config["counts"]
    assert counts["excluded"] == 20 and counts["train"] + counts["val"] == 180
    index = mid_graph.index()
    assert not result.seen[[index[w] for w in held_out]].any()
    assert not set(held_out) & set(result.config["val_ids"])
    with pytest.raises(KgzslError, match="no targets left"):
        train(mid_graph, lite0, model="dgp", epochs=1, exclude=list(mid_graph.ids), progress=False)


def test_bf16_training_runs(mid_graph, lite0):
    result = train(mid_graph, lite0, model="dgp", epochs=20, bf16=True, seed=0, progress=False)
    assert all(np.isfinite(result.losses)) and result.losses[-1] < result.losses[0]
    assert result.predictions.dtype == torch.float32 and result.config["bf16"] is True
    again = train(mid_graph, lite0, model="dgp", epochs=20, bf16=True, seed=0, progress=False)
    assert again.losses == result.losses and torch.equal(again.predictions, result.predictions)  # seeded: repeats bitwise
    fp32 = train(mid_graph, lite0, model="dgp", epochs=20, seed=0, progress=False)
    unseen = ~fp32.seen
    cosine = (fp32.predictions[unseen] * result.predictions[unseen]).sum(dim=1)  # unit rows
    assert cosine.mean() > 0.99  # the same training, to bf16 rounding
    assert max(abs(a - b) for a, b in zip(result.losses, fp32.losses)) < 0.01


def test_device_names_are_checked(mid_graph, lite0):
    with pytest.raises(KgzslError, match="not a torch device name"):
        train(mid_graph, lite0, model="sgcn", epochs=1, device="gpu0", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(KgzslError, match="sees no CUDA GPU"):
            train(mid_graph, lite0, model="sgcn", epochs=1, device="cuda", progress=False)


def test_plans_moved_to_a_device_give_the_same_outputs(mid_graph):
    """``Plan.to`` copies every tensor and sparse operator; on the CPU it must change nothing."""
    from kgzsl.graph.class_graph import node_features
    from kgzsl.propagation.models import build_model

    x = node_features(mid_graph)
    nodes = torch.arange(0, mid_graph.num_nodes, 7)
    for name in ("gcnz", "sgcn", "dgp"):
        torch.manual_seed(0)
        net = build_model(name, x.size(1), 33, **FAST[name]).eval()
        plan = net.plan(nodes, *net.graph_inputs(mid_graph), num_nodes=mid_graph.num_nodes)
        moved = plan.to("cpu")
        assert moved is not plan and moved.layers[0]["adj"] is not plan.layers[0]["adj"]
        with torch.no_grad():
            assert torch.equal(net.forward_plan(x, moved), net.forward_plan(x, plan))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("name", ["gcnz", "sgcn", "dgp"])
def test_gpu_training_matches_cpu(name, mid_graph, lite0):
    """Same seed, same initial weights (built on the CPU): the GPU run follows the CPU run closely."""
    kw = dict(model=name, epochs=15, seed=0, patience=None, progress=False, dropout=0.0, **FAST[name])
    on_cpu = train(mid_graph, lite0, **kw)
    on_gpu = train(mid_graph, lite0, device="cuda", **kw)
    assert on_gpu.config["device"].startswith("cuda") and on_gpu.predictions.device.type == "cpu"
    assert np.allclose(on_cpu.losses, on_gpu.losses, atol=1e-4)
    assert (on_cpu.predictions * on_gpu.predictions).sum(1).min() > 0.999


def test_checkpoint_and_predictions_round_trip(tmp_path, mid_graph, small_graph, lite0, dgp_run):
    out = save_run(dgp_run, mid_graph, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "predictions.safetensors", "train.json"]
    info = json.loads((out / "train.json").read_text())
    assert info["seed"] == 3 and info["best_epoch"] == dgp_run.best_epoch and len(info["losses"]) == 25
    assert info["graph_fingerprint"] == graph_fingerprint(mid_graph.ids, mid_graph.edge_index)
    assert info["targets"] == "efficientnet-lite0" and info["model_config"]["max_distance"] == 4
    model, loaded_info = load_checkpoint(out, mid_graph, lite0)
    assert loaded_info["model"] == "dgp"
    torch.testing.assert_close(predict(model, mid_graph), dgp_run.predictions)
    preds = load_predictions(out / "predictions.safetensors")
    assert preds.ids == mid_graph.ids and torch.equal(preds.pred, dgp_run.predictions)
    assert torch.equal(preds.seen, dgp_run.seen)
    assert preds.meta["model"] == "dgp" and preds.meta["graph_fingerprint"] == info["graph_fingerprint"]
    assert preds.index["n02084071"] == mid_graph.index()["n02084071"]
    torch.testing.assert_close(preds.rows(["n02084071"])[0], dgp_run.predictions[mid_graph.index()["n02084071"]])
    with pytest.raises(KgzslError, match="already exists"):
        save_run(dgp_run, mid_graph, out)
    with pytest.raises(KgzslError, match="trained on another graph"):
        load_checkpoint(out, small_graph)
    narrow = Targets(lite0.wnids[:3], lite0.weights[:3, :100], "hand-written narrow targets")
    with pytest.raises(KgzslError, match="predicts 1281-d classifiers but the targets .* are 100-d"):
        load_checkpoint(out, mid_graph, narrow)


def test_predictions_file_checks(tmp_path):
    ids = ["a", "b", "c"]  # hand-written unit-test fixture
    pred = torch.nn.functional.normalize(torch.randn(3, 5), dim=1)
    path = save_predictions(tmp_path / "p.safetensors", ids, pred, torch.tensor([True, False, False]), {"model": "dgp", "epoch": 7, "note": "7"})
    loaded = load_predictions(path)
    assert loaded.meta == {"model": "dgp", "epoch": 7, "note": "7"}
    assert loaded.seen.tolist() == [True, False, False]
    with pytest.raises(KgzslError, match="pred must be"):
        save_predictions(tmp_path / "q.safetensors", ids, pred[:2], torch.ones(3), {})
    from kgzsl.core.files import save_tensors

    save_tensors(tmp_path / "other.safetensors", {"pred": pred}, metadata={"format": "something.else"})
    with pytest.raises(KgzslError, match="not a kgzsl predictions file"):
        load_predictions(tmp_path / "other.safetensors")


def test_fingerprint_tracks_ids_and_edges(small_graph):
    base = graph_fingerprint(small_graph.ids, small_graph.edge_index)
    assert base == graph_fingerprint(list(small_graph.ids), small_graph.edge_index.copy())
    edges = small_graph.edge_index.copy()
    edges[1, 0] = (edges[1, 0] + 1) % small_graph.num_nodes
    assert graph_fingerprint(small_graph.ids, edges) != base
    assert graph_fingerprint(list(reversed(small_graph.ids)), small_graph.edge_index) != base


def test_l2_loss_is_dgp_loss():
    generator = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    expected = ((pred / pred.norm(dim=1, keepdim=True) - target / target.norm(dim=1, keepdim=True)) ** 2).sum() / 8
    torch.testing.assert_close(l2_loss(pred, target), expected)
    torch.testing.assert_close(l2_loss(3 * pred, target), expected)  # scale-free


def test_cli_train(tmp_path, mid_graph, capsys):
    mid_graph.save(tmp_path / "graph")
    (tmp_path / "exclude.txt").write_text("n01440764\n")
    out = tmp_path / "run"
    args = ["train", "--graph", str(tmp_path / "graph"), "--model", "sgcn", "--epochs", "4", "--seed", "1",
            "--exclude", str(tmp_path / "exclude.txt"), "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "sgcn" and summary["epochs_run"] == 4 and summary["seed"] == 1
    assert {"best_epoch", "seen_loss", "val_loss", "seconds"} <= summary.keys()
    assert summary["train_classes"] + summary["val_classes"] == 199  # one of the 200 seen classes excluded
    preds = load_predictions(out / "predictions.safetensors")
    assert not preds.seen[preds.index["n01440764"]]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args[:-3] + ["--out", str(tmp_path / "bad"), "--backbone", str(tmp_path / "missing.pth"), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kgzsl: error:") and "missing.pth" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_refit_uses_every_seen_classifier_for_the_chosen_epochs(mid_graph, lite0):
    kw = dict(model="sgcn", epochs=60, lr=1e-2, patience=10, seed=1, progress=False)
    chosen = train(mid_graph, lite0, refit=False, **kw)
    refit = train(mid_graph, lite0, **kw)  # refit is the default
    n_seen = int(chosen.seen.sum())
    assert chosen.config["refit"] is None
    assert refit.config["refit"] == {**refit.config["refit"], "epochs": chosen.best_epoch, "classes": n_seen}
    assert refit.best_epoch == chosen.best_epoch and refit.val_losses == chosen.val_losses  # the same selection run
    assert refit.val_loss == pytest.approx(min(chosen.val_losses))  # the loss that chose the epoch, not a trained-on loss
    val = torch.tensor([mid_graph.index()[i] for i in refit.config["val_ids"]])
    # the refit model has seen the validation classes' real classifiers: it fits them better
    assert l2_loss(refit.predictions[val], lite0.weights[[lite0.wnids.index(i) for i in refit.config["val_ids"]]]) < \
        l2_loss(chosen.predictions[val], lite0.weights[[lite0.wnids.index(i) for i in chosen.config["val_ids"]]])
    assert torch.equal(train(mid_graph, lite0, **kw).predictions, refit.predictions)  # repeatable


def test_runs_keep_the_real_seen_classifiers_for_generalized_recognition(tmp_path, mid_graph, lite0, dgp_run):
    seen_nodes = dgp_run.seen.nonzero().view(-1)
    assert dgp_run.seen_targets.shape == (len(seen_nodes), lite0.dim)
    preds = load_predictions(save_run(dgp_run, mid_graph, tmp_path / "run") / "predictions.safetensors")
    real = preds.classifiers("real")
    row = lite0.wnids.index(mid_graph.ids[int(seen_nodes[0])])
    torch.testing.assert_close(real[seen_nodes[0]], torch.nn.functional.normalize(lite0.weights[row], dim=0))
    assert torch.equal(real[~preds.seen], preds.pred[~preds.seen])  # unseen rows stay predicted
    assert torch.equal(preds.classifiers("predicted"), preds.pred)
    with pytest.raises(KgzslError, match="seen_rows"):
        preds.classifiers("true")
    with pytest.raises(KgzslError, match="seen_true must be"):
        save_predictions(tmp_path / "bad.safetensors", preds.ids, preds.pred, preds.seen, seen_true=torch.zeros(2, 3))


def test_model_schedules_are_the_defaults(mid_graph, lite0):
    """DGP's default is a fixed schedule on every seen class (no validation slice); SGCN keeps validation choice."""
    from kgzsl.propagation.training import SCHEDULES

    dgp = train(mid_graph, lite0, model="dgp", epochs=3, seed=0, progress=False, hidden_channels=64)
    assert dgp.config["lr"] == SCHEDULES["dgp"].lr and dgp.config["val_fraction"] == 0.0
    assert dgp.config["counts"]["val"] == 0 and dgp.val_losses == [] and dgp.best_epoch == 3
    sgcn = train(mid_graph, lite0, model="sgcn", epochs=3, seed=0, progress=False, hidden_channels=64)
    assert sgcn.config["lr"] == SCHEDULES["sgcn"].lr and sgcn.config["counts"]["val"] == 10
    assert train(mid_graph, lite0, model="dgp", epochs=2, lr=0.01, seed=0, progress=False, hidden_channels=64).config["lr"] == 0.01


def test_select_targets_uses_the_seen_classes_with_a_real_row(small_graph, lite0, caplog):
    """Target selection alone: seen classes with a row, minus exclusions; the counts say what was dropped."""
    from conftest import SMALL_SEEN

    from kgzsl.propagation.supervision import select_targets, unit_targets

    index = small_graph.index()
    with caplog.at_level("WARNING", logger="kgzsl"):
        nodes, target_of, counts = select_targets(small_graph, lite0)
    with_row = [w for w in SMALL_SEEN if w in lite0.wnids]  # bird (n01503061) is no ImageNet-1k class
    assert len(with_row) == 7 and "n01503061 (bird)" in caplog.text
    assert nodes.tolist() == sorted(index[w] for w in with_row)
    # three ImageNet-1k classes of the graph are unseen nodes (jaguar, Indian elephant, Labrador retriever)
    assert counts == {"targets": 1000, "in_graph": 10, "not_seen_role": 3, "excluded": 0, "seen_without_target": 1}
    for node in nodes.tolist():
        assert torch.equal(target_of[node], lite0.weights[lite0.wnids.index(small_graph.ids[node])])
    rows = unit_targets(target_of, nodes)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(len(nodes)))
    lion = "n02129165"
    nodes, target_of, counts = select_targets(small_graph, lite0, exclude=[lion])
    assert index[lion] not in nodes.tolist() and index[lion] not in target_of and counts["excluded"] == 1
    with pytest.raises(KgzslError, match="no node id or wnid"):
        select_targets(small_graph, lite0, exclude=["n99999999"])
    with pytest.raises(KgzslError, match="none of the 1 seen classes .* has a target row"):
        select_targets(small_graph, lite0, exclude=with_row)  # only the bird is left
    with pytest.raises(KgzslError, match="no targets left"):
        select_targets(small_graph, lite0, exclude=SMALL_SEEN)
    only_bird = Targets(["n02084071"], lite0.weights[:1], "one unseen-node row")
    with pytest.raises(KgzslError, match="none of the 8 seen classes"):
        select_targets(small_graph, only_bird)


def test_fit_stands_alone_and_is_the_loop_train_runs(mid_graph, lite0):
    """A researcher's loop: seeded model, plan, unit target rows, fit(); the same as train() without a validation slice."""
    from kgzsl.graph.class_graph import node_features
    from kgzsl.propagation.models import build_model
    from kgzsl.propagation.supervision import select_targets, unit_targets
    from kgzsl.propagation.training import fit

    kw = dict(model="sgcn", epochs=6, seed=2, val_fraction=0.0, patience=None, progress=False, hidden_channels=64)
    run = train(mid_graph, lite0, **kw)
    nodes, target_of, _ = select_targets(mid_graph, lite0)
    nodes = torch.sort(nodes).values
    x = node_features(mid_graph)
    torch.manual_seed(2)
    net = build_model("sgcn", x.size(1), lite0.dim, hidden_channels=64)
    plan = net.plan(nodes, *net.graph_inputs(mid_graph), num_nodes=mid_graph.num_nodes)
    log = fit(net, x, plan, unit_targets(target_of, nodes), epochs=6, lr=run.config["lr"])
    assert log.losses == run.losses and log.best_epoch == 6 and log.best_state is None and log.val_losses == []
    assert torch.equal(predict(net, mid_graph), run.predictions)
    val = nodes[:20]
    torch.manual_seed(2)
    net = build_model("sgcn", x.size(1), lite0.dim, hidden_channels=64)
    inputs = net.graph_inputs(mid_graph)
    log = fit(net, x, net.plan(nodes[20:], *inputs, num_nodes=mid_graph.num_nodes), unit_targets(target_of, nodes[20:]),
              net.plan(val, *inputs, num_nodes=mid_graph.num_nodes), unit_targets(target_of, val), epochs=5, lr=1e-2, patience=2)
    assert len(log.val_losses) == len(log.losses) <= 5 and log.val_losses[log.best_epoch - 1] == min(log.val_losses)
    assert log.best_state is not None and set(log.best_state) == set(net.state_dict())


def test_cli_train_distance_lr_reaches_the_run_record(tmp_path, mid_graph, capsys):
    """``kgzsl train --distance-lr`` trains DGP with it and train.json records it; with GCNZ it is refused by name,
    before anything is written."""
    mid_graph.save(tmp_path / "graph")
    base = ["train", "--graph", str(tmp_path / "graph"), "--epochs", "2", "--json"]
    assert main([*base, "--model", "dgp", "--distance-lr", "4", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "run" / "train.json").read_text())["distance_lr"] == 4.0
    assert main([*base, "--model", "gcnz", "--distance-lr", "4", "--out", str(tmp_path / "gcnz")]) == 2
    err = capsys.readouterr().err
    assert "gcnz has no distance weights" in err and "Traceback" not in err
    assert not (tmp_path / "gcnz").exists()
