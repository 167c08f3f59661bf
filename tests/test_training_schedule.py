"""Learning-rate shapes of a training schedule (warm-up, cosine decay) on a real WordNet subgraph with Lite0 rows."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import pytest
import torch

from kgzsl.errors import KgzslError
from kgzsl.propagation.targets import load_targets
from kgzsl.propagation.schedules import DECAYS, SCHEDULES, Schedule, lr_factor
from kgzsl.propagation.training import train


def test_lr_factor_shapes():
    """Constant stays at the peak; cosine starts there, halves at the middle, falls every epoch and stays above zero;
    a warm-up rises linearly to the peak first; an unknown shape is refused by name."""
    assert [lr_factor(e, 10) for e in range(1, 11)] == [1.0] * 10
    cosine = [lr_factor(e, 100, "cosine") for e in range(1, 101)]
    assert cosine[0] == 1.0 and math.isclose(cosine[50], 0.5)
    assert all(a > b for a, b in pairwise(cosine)) and 0 < cosine[-1] < 1e-3
    warm = [lr_factor(e, 100, "cosine", warmup=4) for e in range(1, 101)]
    assert warm[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and warm[4] == 1.0 and warm[5] < 1.0
    assert [lr_factor(e, 10, "constant", warmup=1) for e in (1, 2, 10)] == [0.5, 1.0, 1.0]
    with pytest.raises(KgzslError, match="unknown learning-rate decay 'linear'"):
        lr_factor(3, 10, "linear")
    assert set(DECAYS) == {"constant", "cosine"}


def test_a_schedule_shape_is_used_recorded_and_deterministic(small_graph, monkeypatch):
    """train() follows the model's schedule shape: a cosine run's first step is the constant run's (factor 1),
    later ones differ; two seeded runs are bitwise equal; the record names the shape; a bad shape is refused."""
    lite0 = load_targets()
    kw = {"model": "dgp", "epochs": 6, "seed": 1, "progress": False, "hidden_channels": 32}
    constant = replace(SCHEDULES["dgp"], decay="constant", warmup=0)
    cosine = replace(SCHEDULES["dgp"], decay="cosine", warmup=0)
    monkeypatch.setitem(SCHEDULES, "dgp", constant)
    flat = train(small_graph, lite0, **kw)
    flat_one = train(small_graph, lite0, **{**kw, "epochs": 1})
    monkeypatch.setitem(SCHEDULES, "dgp", cosine)
    runs = [train(small_graph, lite0, **kw) for _ in range(2)]
    one = train(small_graph, lite0, **{**kw, "epochs": 1})
    assert torch.equal(runs[0].predictions, runs[1].predictions) and runs[0].losses == runs[1].losses
    assert torch.equal(one.predictions, flat_one.predictions)  # epoch 1 runs at the peak either way
    assert runs[0].losses[:2] == flat.losses[:2] and runs[0].losses[2:] != flat.losses[2:]
    assert runs[0].config["lr_decay"] == "cosine" and flat.config["lr_decay"] == "constant"
    monkeypatch.setitem(SCHEDULES, "dgp", replace(cosine, warmup=3))
    warm = train(small_graph, lite0, **kw)
    assert warm.config["lr_warmup"] == 3 and warm.losses[1] != runs[0].losses[1]
    monkeypatch.setitem(SCHEDULES, "dgp", Schedule(epochs=5, lr=1e-3, val_fraction=0.0, decay="step"))
    with pytest.raises(KgzslError, match="dgp's schedule: decay must be one of constant, cosine"):
        train(small_graph, lite0, **kw)


def test_distance_lr_moves_only_the_distance_weights_faster(small_graph):
    """``distance_lr=k`` gives DGP's group logits k times the lr: Adam's first step moves each logit by about lr (its
    gradient's sign), so by k lr with k; every other weight takes the same first step bitwise; later epochs differ;
    the record keeps k; 1 is today's run; a model without distance weights and a bad multiple are refused by name."""
    lite0 = load_targets()
    kw = {"model": "dgp", "seed": 2, "progress": False, "hidden_channels": 32}
    plain, fast = (train(small_graph, lite0, epochs=1, distance_lr=k, **kw) for k in (1.0, 4.0))
    lr = plain.config["lr"]
    assert plain.config["distance_lr"] == 1.0 and fast.config["distance_lr"] == 4.0
    for name, value in plain.model.state_dict().items():
        other = fast.model.state_dict()[name]
        if name.startswith("att_"):  # initialised to 1.0; the first step is +-lr (Adam), here +-4 lr
            assert torch.allclose((value - 1.0).abs(), torch.full_like(value, lr), rtol=1e-3)
            assert torch.allclose((other - 1.0), 4.0 * (value - 1.0), rtol=1e-3)
        else:
            assert torch.equal(value, other), name
    assert torch.equal(train(small_graph, lite0, epochs=3, **kw).predictions, train(small_graph, lite0, epochs=3, distance_lr=1.0, **kw).predictions)
    assert train(small_graph, lite0, epochs=3, distance_lr=4.0, **kw).losses[1:] != train(small_graph, lite0, epochs=3, **kw).losses[1:]
    with pytest.raises(KgzslError, match="gcnz has no distance weights: distance_lr applies to dgp only"):
        train(small_graph, lite0, model="gcnz", epochs=1, distance_lr=2.0, progress=False)
    with pytest.raises(KgzslError, match="distance_lr must be a positive multiple of lr, got -1.0"):
        train(small_graph, lite0, epochs=1, distance_lr=-1.0, **kw)


def test_distance_lr_follows_the_schedule_shape(small_graph, monkeypatch):
    """Under a cosine schedule both parameter groups follow the shape: the distance weights stay at k times the lr."""
    from kgzsl.propagation import training

    seen = []
    real_adam = training._adam

    def recording_adam(net, lr, weight_decay, distance_lr=1.0):
        optimizer = real_adam(net, lr, weight_decay, distance_lr)
        step = optimizer.step

        def recorded_step(*args, **kwargs):
            seen.append([group["lr"] for group in optimizer.param_groups])
            return step(*args, **kwargs)

        optimizer.step = recorded_step
        return optimizer

    monkeypatch.setattr(training, "_adam", recording_adam)
    monkeypatch.setitem(SCHEDULES, "dgp", replace(SCHEDULES["dgp"], decay="cosine"))
    train(small_graph, load_targets(), model="dgp", epochs=4, distance_lr=3.0, progress=False, hidden_channels=16)
    lr = SCHEDULES["dgp"].lr
    assert [len(groups) for groups in seen] == [2] * 4
    assert [groups[0] for groups in seen] == pytest.approx([lr * lr_factor(e, 4, "cosine") for e in range(1, 5)])
    assert all(groups[1] == pytest.approx(3.0 * groups[0]) for groups in seen)
