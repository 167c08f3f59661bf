"""Hedged, hierarchy-aware answers (kgzsl.hedge) on a hand-made tree with known probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kgzsl.errors import KgzslError
from kgzsl.graph import ClassGraph, ancestor_pairs
from kgzsl.hedge import (Hedger, Hierarchy, calibration_error, expected_calibration_error, fit_lambda, fit_temperature, nll,
                         plot_reliability, softmax, top1)

#             entity(0)
#        /        |          \
#   animal(1)  vehicle(7)    pet(10)  <- cat also under pet in the DAG variant
#   /     \       /   \
# canine(2) cat(6) car(8) bus(9)
#   |
#  dog(3)
#  /   \
# beagle(4) poodle(5)
NAMES = ["entity", "animal", "canine", "dog", "beagle", "poodle", "cat", "vehicle", "car", "bus", "pet"]
PARENTS = [[], [0], [1], [2], [3], [3], [1], [0], [7], [7], [0]]
CANDIDATES = ["beagle", "poodle", "cat", "car", "bus"]


def tree(parents: list[list[int]] = PARENTS) -> ClassGraph:
    n = len(parents)
    edges = np.array([(c, p) for c, ps in enumerate(parents) for p in ps], dtype=np.int64).T.reshape(2, -1)
    dense, dist = ancestor_pairs(parents)
    roles = ["unseen" if name in CANDIDATES else "internal" for name in NAMES]
    return ClassGraph(list(NAMES), [None] * n, [[x] for x in NAMES], [""] * n, roles, np.zeros((n, 2), np.float32),
                      np.ones(n, bool), edges, dense, dist)


def probs(**given: float) -> np.ndarray:
    return np.array([[given.get(c, 0.0) for c in CANDIDATES]])


def chosen_name(h: Hierarchy, p: np.ndarray, lam: float) -> str:
    col = h.choose(h.posteriors(p), lam)[0]
    return NAMES[h.nodes[col]]


def test_posteriors_sum_over_subtrees():
    h = Hierarchy(tree(), CANDIDATES)
    p = probs(beagle=0.1, poodle=0.2, cat=0.3, car=0.15, bus=0.25)
    post = h.node_posteriors(p)[0]
    expected = {"entity": 1.0, "animal": 0.6, "canine": 0.3, "dog": 0.3, "beagle": 0.1, "cat": 0.3,
                "vehicle": 0.4, "car": 0.15, "pet": 0.0}
    for name, value in expected.items():
        assert post[NAMES.index(name)] == pytest.approx(value)


def test_dag_counts_a_candidate_once_under_a_shared_ancestor():
    parents = [list(p) for p in PARENTS]
    parents[6] = [1, 10]  # cat is an animal and a pet
    h = Hierarchy(tree(parents), CANDIDATES)
    post = h.node_posteriors(probs(beagle=0.1, poodle=0.2, cat=0.3, car=0.15, bus=0.25))[0]
    assert post[0] == pytest.approx(1.0)
    assert post[10] == pytest.approx(0.3) and post[1] == pytest.approx(0.6)


def test_information_gain_depth_and_chain_deduplication():
    h = Hierarchy(tree(), CANDIDATES)
    by_name = {NAMES[v]: (g, d) for v, g, d in zip(h.nodes, h.gain, h.depth)}
    assert "canine" not in by_name and "pet" not in by_name  # same set as dog / no candidate
    assert by_name["entity"] == (0.0, 0)
    assert by_name["dog"][0] == pytest.approx(math.log2(5) - 1) and by_name["dog"][1] == 3
    assert by_name["beagle"] == (pytest.approx(math.log2(5)), 4)


def test_lambda_zero_picks_the_max_expected_reward_node():
    h = Hierarchy(tree(), CANDIDATES)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(5, 0.5), size=200)
    post = h.posteriors(p)
    for lam in (0.0, 0.7, 3.0):
        reward = (h.gain[None, :] + lam) * post
        cols = h.choose(post, lam)
        assert np.allclose(reward[np.arange(200), cols], reward.max(axis=1))


def test_known_answers_and_large_lambda_gives_the_root():
    h = Hierarchy(tree(), CANDIDATES)
    p = probs(beagle=0.3, poodle=0.3, cat=0.1, car=0.15, bus=0.15)
    # rewards at 0: beagle .3*2.32=.70, dog .6*1.32=.79, animal .7*.74=.51 -> dog
    assert chosen_name(h, p, 0.0) == "dog"
    # at 1: dog 2.32*.6=1.39 > animal 1.74*.7=1.22 > entity 1; at 2: entity 2 > dog 1.99 > animal 1.92
    assert chosen_name(h, p, 1.0) == "dog"
    assert chosen_name(h, p, 2.0) == "entity"
    assert chosen_name(h, p, 1e6) == "entity"


def test_ties_go_to_the_deeper_node_then_the_lower_index():
    h = Hierarchy(tree(), CANDIDATES)
    rest = 0.2 / 3
    assert chosen_name(h, probs(beagle=0.4, car=0.4, poodle=rest, cat=rest, bus=rest), 0.0) == "beagle"
    assert chosen_name(h, probs(cat=0.4, car=0.4, beagle=rest, poodle=rest, bus=rest), 0.0) == "cat"
    assert chosen_name(h, probs(car=0.4, cat=0.4, beagle=rest, poodle=rest, bus=rest), 0.0) == "cat"


def test_correct_means_the_true_class_is_in_the_answers_subtree():
    h = Hierarchy(tree(), CANDIDATES)
    col = {NAMES[v]: j for j, v in enumerate(h.nodes)}
    answers = np.array([col["dog"], col["dog"], col["vehicle"], col["entity"]])
    truth = np.array([0, 2, 4, 2])  # beagle, cat, bus, cat
    assert h.correct(answers, truth).tolist() == [True, False, True, True]
    top = h.flat_answers(probs(cat=0.6, car=0.4))
    assert NAMES[h.nodes[top[0]]] == "cat"


def miscalibrated(n: int = 3000, classes: int = 10, scale: float = 5.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z): calibrated logits z, reported as scale * z (overconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * 1.5
    p = softmax(z)
    truth = np.array([rng.choice(classes, p=row) for row in p])
    return scale * z, truth


def test_temperature_fitting_reduces_nll_and_ece():
    scores, truth = miscalibrated()
    t = fit_temperature(scores, truth)
    assert 4.0 < t < 6.0
    assert nll(scores, truth, t) < nll(scores, truth, 1.0) - 0.1
    before = expected_calibration_error(softmax(scores), truth)
    after = expected_calibration_error(softmax(scores, t), truth)
    assert after < before / 2 and after < 0.05
    assert fit_temperature(scores, truth) == t  # deterministic


def test_lambda_search_meets_the_target_with_the_smallest_lambda():
    h = Hierarchy(tree(), CANDIDATES)
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(5, 0.3), size=400)
    truth = np.array([rng.choice(5, p=row) for row in p])
    post = h.posteriors(p)
    for target in (0.5, 0.8, 0.95):
        lam = fit_lambda(h, post, truth, target)
        accuracy = h.correct(h.choose(post, lam), truth).mean()
        assert accuracy >= target
        if lam > 1e-6:
            assert h.correct(h.choose(post, lam - 1e-6), truth).mean() < target


def test_hedger_fit_and_predict(tmp_path):
    h = Hierarchy(tree(), CANDIDATES)
    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 5)) * 2
    truth = np.array([rng.choice(5, p=row) for row in softmax(z)])
    hedger = Hedger(h).fit(3 * z, truth, target=0.8)
    assert hedger.temperature == pytest.approx(3, rel=0.3)
    answers = hedger.predict(3 * z)
    assert len(answers) == 300 and answers[0].name in NAMES
    cols, _ = hedger.predict_columns(3 * z)
    assert h.correct(cols, truth).mean() >= 0.8
    assert set(answers[0].as_dict()) == {"node", "id", "name", "probability", "info_gain", "depth"}
    out = tmp_path / "rel.png"
    plot_reliability({"raw": top1(softmax(3 * z), truth), "calibrated": top1(softmax(3 * z, hedger.temperature), truth)}, out)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_bad_input_names_the_parameter():
    g = tree()
    with pytest.raises(KgzslError) as err:
        Hierarchy(g, ["beagle", "unicorn"])
    assert err.value.parameter == "candidate_ids"
    h = Hierarchy(g, CANDIDATES)
    with pytest.raises(KgzslError) as err:
        h.posteriors(np.ones((2, 3)))
    assert err.value.parameter == "probs"
    with pytest.raises(KgzslError) as err:
        fit_temperature(np.zeros((2, 5)), np.array([0, 7]))
    assert err.value.parameter == "truth"
    with pytest.raises(KgzslError) as err:
        fit_lambda(h, h.posteriors(probs(cat=1.0)), np.array([2]), 1.5)
    assert err.value.parameter == "target"


def test_calibration_error_by_hand():
    # bin [0.6, 0.667): two answers at 0.6 and 0.62, one right -> |0.5 - 0.61| ; bin 0.9x: one right at 0.9 -> 0.1
    conf, hit = np.array([0.6, 0.62, 0.9]), np.array([True, False, True])
    assert calibration_error(conf, hit) == pytest.approx(2 / 3 * 0.11 + 1 / 3 * 0.1)
    p = np.array([[0.7, 0.3], [0.2, 0.8]])
    assert expected_calibration_error(p, np.array([0, 0])) == pytest.approx(0.5 * 0.3 + 0.5 * 0.8)
    with pytest.raises(KgzslError) as err:
        calibration_error(np.array([1.5]), np.array([True]))
    assert err.value.parameter == "confidence"


def test_flat_answer_of_a_candidate_with_candidate_descendants_is_its_own_node():
    h = Hierarchy(tree(), ["dog", *CANDIDATES])  # dog is a candidate and so are its breeds
    p = np.array([[0.5, 0.1, 0.1, 0.1, 0.1, 0.1]])
    assert NAMES[h.nodes[h.flat_answers(p)[0]]] == "dog"
    assert h.gain[h.flat_answers(p)[0]] == pytest.approx(math.log2(6) - math.log2(3))
    assert h.node_posteriors(p)[0][NAMES.index("dog")] == pytest.approx(0.7)
