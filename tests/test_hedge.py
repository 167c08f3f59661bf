"""Hedged, hierarchy-aware answers (kgzsl.recognition.hedge) on a hand-made tree with known probabilities."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ClassGraph, ancestor_pairs
from kgzsl.inspection.plots import plot_reliability
from kgzsl.recognition.hedge.hierarchy import Hierarchy
from kgzsl.recognition.hedge.rules import Hedger, fit_lambda
from kgzsl.recognition.hedge.temperature import (
    calibration_error,
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
    top1,
)

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


# ------------------------------------------------------------------------------------ threshold rule
def above_name(h: Hierarchy, p: np.ndarray, threshold: float) -> str:
    return NAMES[h.nodes[h.choose_above(h.posteriors(p), threshold)[0]]]


def test_threshold_rule_gives_the_deepest_node_meeting_the_threshold():
    h = Hierarchy(tree(), CANDIDATES)
    p = probs(beagle=0.45, poodle=0.25, cat=0.1, car=0.15, bus=0.05)
    # posteriors: beagle .45, dog .70, animal .80, entity 1, vehicle .20
    assert above_name(h, p, 0.4) == "beagle"
    assert above_name(h, p, 0.5) == "dog"
    assert above_name(h, p, 0.7) == "dog"  # exactly at the threshold qualifies
    assert above_name(h, p, 0.75) == "animal"
    assert above_name(h, p, 0.9) == "entity"
    assert above_name(h, p, 1.0) == "entity"
    assert above_name(h, p, 0.0) == "beagle"  # every node qualifies: the most informative candidate


def test_threshold_rule_ties_go_to_the_deeper_node_then_the_lower_index():
    h = Hierarchy(tree(), CANDIDATES)
    # beagle and car both 0.4: equal gain, equal depth? beagle is deeper (4) than car (2): beagle
    assert above_name(h, probs(beagle=0.4, car=0.4, poodle=0.1, cat=0.05, bus=0.05), 0.4) == "beagle"
    # cat (6) and car (8) both 0.4 at depth 2: the lower node index, cat, in either order of the columns
    assert above_name(h, probs(cat=0.4, car=0.4, beagle=0.1, poodle=0.05, bus=0.05), 0.4) == "cat"
    assert above_name(h, probs(car=0.4, cat=0.4, bus=0.1, poodle=0.05, beagle=0.05), 0.4) == "cat"


def test_fit_threshold_meets_the_target_with_the_lowest_threshold():
    from kgzsl.recognition.hedge.rules import fit_rule, fit_threshold

    h = Hierarchy(tree(), CANDIDATES)
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(5, 0.6), size=300)
    truth = np.array([rng.choice(5, p=row) for row in p])
    post = h.posteriors(p)
    for target in (0.5, 0.8, 0.95):
        t = fit_threshold(h, post, truth, target)
        assert fit_rule(h, post, truth, target, "threshold") == t
        assert h.correct(h.choose_above(post, t), truth).mean() >= target
        if t > 1e-6:
            assert h.correct(h.choose_above(post, t - 1e-6), truth).mean() < target
    with pytest.raises(KgzslError) as err:
        fit_rule(h, post, truth, 0.9, "deepest")
    assert err.value.parameter == "rule"


def test_hedger_rules_and_gamma_are_kept():
    h = Hierarchy(tree(), CANDIDATES)
    rng = np.random.default_rng(3)
    z = rng.normal(size=(200, 5)) * 2
    truth = np.array([rng.choice(5, p=row) for row in softmax(z)])
    for rule in ("threshold", "darts"):
        hedger = Hedger(h, rule=rule, gamma=0.5).fit(z, truth, target=0.8)
        cols, prob = hedger.predict_columns(z)
        assert hedger.rule == rule and hedger.gamma == 0.5 and h.correct(cols, truth).mean() >= 0.8
        if rule == "threshold":  # every answer is at least as probable as the threshold
            assert (prob >= hedger.parameter - 1e-9).all()


def test_version_1_calibration_files_are_read_as_darts(tmp_path):
    import json

    from kgzsl.recognition.hedge.storage import read_hedge_record

    path = tmp_path / "hedge.json"
    path.write_text(json.dumps({"format": "kgzsl.hedge", "version": 1, "temperature": 0.5, "lambdas": {"0.9": 2.0},
                                "calibration_accuracy": {"0.9": 0.91}}))
    record = read_hedge_record(path)
    assert record["rules"] == {"darts": {"0.9": 2.0}} and record["default_rule"] == "darts" and record["gamma"] == 0.0
    path.write_text(json.dumps({"format": "kgzsl.hedge", "version": 7}))
    with pytest.raises(KgzslError, match="version 7"):
        read_hedge_record(path)


# ------------------------------------------------------------------------------------ shipped calibrations
def test_shipped_calibration_is_installed_only_for_its_run_and_never_over_a_users(tmp_path):
    import json

    from kgzsl.recognition.hedge.storage import (
        SHIPPED_FORMAT,
        install_shipped_calibration,
    )

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    key = {"model": "dgp", "seed": 0, "exclude": [], "epochs": None, "graph_fingerprint": "abc"}
    record = {"format": "kgzsl.hedge", "version": 2, "temperature": 0.4}
    (shipped / "dgp-x.json").write_text(json.dumps({"format": SHIPPED_FORMAT, "run": key,
                                                    "calibrations": {"unseen": record, "all": {**record, "gamma": 1.0}}}))
    run = tmp_path / "run"
    run.mkdir()
    assert install_shipped_calibration(run, {**key, "seed": 1}, shipped) == []  # another run: nothing
    assert not any(run.iterdir())
    (run / "hedge.json").write_text('{"mine": 1}')
    assert install_shipped_calibration(run, key, shipped) == ["hedge-all.json"]
    assert json.loads((run / "hedge.json").read_text()) == {"mine": 1}  # the user's own calibration stays
    assert json.loads((run / "hedge-all.json").read_text()) == {**record, "gamma": 1.0, "shipped": "dgp-x.json"}


def test_shipped_calibrations_hold_for_the_shipped_graph():
    """Each file of data/calibration names a run on the shipped graph, and its candidate sets are that run's:
    a rebuilt graph or a changed candidate rule makes this fail (rerun scripts/calibrate_default.py)."""
    from kgzsl.core.files import read_json
    from kgzsl.demo import DEFAULT_GRAPH
    from kgzsl.graph.class_graph import graph_fingerprint, load_graph
    from kgzsl.recognition.hedge.storage import SHIPPED_DIR, candidate_digest

    files = sorted(SHIPPED_DIR.glob("*.json"))
    assert {f.name for f in files} >= {"dgp-pretrained.json", "dgp-demo.json"}
    graph = load_graph(DEFAULT_GRAPH)
    for path in files:
        shipped = read_json(path)
        key = shipped["run"]
        assert key["graph_fingerprint"] == graph_fingerprint(graph.ids, graph.edge_index), path.name
        held = set(key["exclude"])
        unseen = [i for i, r in zip(graph.ids, graph.roles) if r == "unseen" or (r == "seen" and i in held)]
        classes = [i for i, r in zip(graph.ids, graph.roles) if r != "internal"]
        for candidates, ids in (("unseen", unseen), ("all", classes)):
            record = shipped["calibrations"][candidates]
            assert record["candidate_sha256"] == candidate_digest(ids), (path.name, candidates)
            assert record["temperature"] > 0 and set(record["rules"]) == {"threshold", "darts"}
        for check in ("cross_validation_unseen", "cross_validation_all"):  # the stored checks met their targets
            for rule, per_target in shipped[check].items():
                for target, s in per_target.items():
                    assert s["accuracy"] >= float(target) - 0.05, (path.name, check, rule, target)


def test_hedging_on_a_user_taxonomy(glove):
    """The shipped bird taxonomy (free and pinned names, no WordNet ids for some nodes): posteriors, answers."""
    from kgzsl.core.idlists import read_id_list
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

    folder = Path(__file__).resolve().parent.parent / "data" / "taxonomies"
    graph = build_taxonomy_graph(load_taxonomy(folder / "birds.csv"), seen=list(read_id_list(folder / "birds-seen.txt")),
                                 vectors=glove)
    name_of = {i: names[0] for i, names in zip(graph.ids, graph.names)}
    unseen = [i for i, r in zip(graph.ids, graph.roles) if r == "unseen"]
    assert {name_of[i] for i in unseen} >= {"golden eagle", "barn owl", "wood duck", "house finch"}
    h = Hierarchy(graph, unseen)
    p = np.full((1, len(unseen)), 0.0)
    share = {"golden eagle": 0.5, "barn owl": 0.35, "wood duck": 0.15}
    for j, i in enumerate(unseen):
        p[0, j] = share.get(name_of[i], 0.0)
    post = h.node_posteriors(p)[0]
    node = {name_of[i]: v for v, i in enumerate(graph.ids)}
    assert post[node["raptor"]] == pytest.approx(0.85) and post[node["bird"]] == pytest.approx(1.0)
    answer = lambda t: h.answer(int(h.choose_above(h.posteriors(p), t)[0]), 0.0).name  # noqa: E731
    assert answer(0.5) == "golden eagle" and answer(0.8) == "raptor" and answer(0.95) == "bird"


# ------------------------------------------------------------------------------------ fitting a pass at a time
@pytest.mark.parametrize("shape", ["tree", "dag", "forest"])
@pytest.mark.parametrize("grid", [True, False])
def test_answer_records_give_the_accuracy_of_every_posterior(shape, grid):
    """A few numbers an image (AnswerRecords) decide both rules' accuracy, and so their fitted parameters, as the whole
    posteriors do, float for float, ties included (with ``grid``, probabilities on a grid of 0.05), images added in
    blocks; in a forest no answer holds every candidate, and where no node reaches the threshold the first column
    answers, as Hierarchy.choose_above does. The answers' moves they find give the answers' mean information gain at
    fixed parameters (GainSums: the accuracy-specificity curve a calibration record keeps) to float noise, fed by
    AnswerRecords.add or by images of their own, in blocks."""
    from kgzsl.recognition.hedge.rules import SEARCHES, AnswerRecords, GainSums

    parents = [list(p) for p in PARENTS]
    if shape == "dag":
        parents[6] = [1, 10]
    if shape == "forest":
        parents[1], parents[7] = [], []  # animal and vehicle are roots: no node holds every candidate
    h = Hierarchy(tree(parents), CANDIDATES)
    assert h.root_like.any() == (shape != "forest")
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.full(5, 0.4), size=500)
    if grid:
        p = np.round(p * 20) / 20
        p[p.sum(axis=1) == 0, 0] = 1.0
        p /= p.sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(5, p=row) for row in p])
    post = h.posteriors(p)
    thresholds = [0.0, 1e-12, 0.05, 0.1, 0.25, 1 / 3, 0.5, 0.6, 0.75, 0.9, 0.95, 1.0, 1.5, *rng.uniform(0, 1, 30)]
    lams = [0.0, 1e-9, 0.1, 0.5, 1.0, 2.0, 7.0, 1e3, 1e9, *np.exp(rng.uniform(-7, 7, 30))]
    records = AnswerRecords(h)
    gains, alone = (GainSums(h, {"threshold": thresholds, "darts": lams}) for _ in range(2))
    for i in range(0, 500, 128):
        records.add(post[i:i + 128], truth[i:i + 128], gains)
        alone.add(post[i:i + 128], truth[i:i + 128])
    assert len(records) == 500
    kept = _arrays_in({k: v for k, v in vars(records).items() if k not in ("hierarchy", "order", "root_at")})
    turns = {rule: sum(len(part[0]) for part in records.parts[rule]) for rule in records.parts}
    # the turns only (a posterior, or two columns and two slopes) and two numbers an image a rule: no moves
    assert sum(a.nbytes for a in kept) == 8 * turns["threshold"] + 24 * turns["darts"] + 2 * 500 * (1 + 4)
    assert gains.mean("threshold") == alone.mean("threshold") and gains.mean("darts") == alone.mean("darts")
    for threshold, gain in zip(thresholds, gains.mean("threshold")):
        assert records.accuracy("threshold", threshold) == h.correct(h.choose_above(post, threshold), truth).mean()
        assert gain == pytest.approx(h.gain[h.choose_above(post, threshold)].mean(), rel=1e-12, abs=1e-12)
    for lam, gain in zip(lams, gains.mean("darts")):
        assert records.accuracy("darts", lam) == h.correct(h.choose(post, lam), truth).mean()
        assert gain == pytest.approx(h.gain[h.choose(post, lam)].mean(), rel=1e-12, abs=1e-12)
    for rule, target in [(r, t) for r in ("threshold", "darts") for t in (0.5, 0.8, 0.95)]:
        every = lambda value, rule=rule: float(h.correct(h.answers(post, rule, value), truth).mean())  # noqa: E731
        try:
            expected = SEARCHES[rule](every, target)
        except KgzslError:  # out of reach (a forest's thresholds): so it is from the records
            with pytest.raises(KgzslError, match="out of reach"):
                records.fit(rule, target)
        else:
            assert records.fit(rule, target) == expected


def _arrays_in(value: Any) -> list[np.ndarray]:
    """The distinct numpy arrays in nested dicts, lists and tuples."""
    found: dict[int, np.ndarray] = {}
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            found[id(item)] = item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return list(found.values())


def golden_temperature(scores: np.ndarray, truth: np.ndarray, low: float = 1e-4, high: float = 1e4) -> float:
    """kgzsl's temperature search before it streamed: a 41-point grid on log T, then 60 golden-section steps."""
    f = lambda log_t: nll(scores, truth, math.exp(log_t))  # noqa: E731
    grid = np.linspace(math.log(low), math.log(high), 41)
    best = int(np.argmin([f(x) for x in grid]))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(60):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return math.exp((a + b) / 2)


@pytest.mark.parametrize("scale", [0.02, 0.3, 1.0, 5.0, 60.0])
def test_newton_temperature_is_the_golden_section_minimum_in_few_passes(scale):
    """The NLL's minimum found from its derivatives, a pass over the images each (here summed over blocks of 700),
    equals a golden-section search over the whole NLL to its float noise, within a dozen passes."""
    from kgzsl.recognition.hedge.temperature import search_temperature, temperature_terms

    scores, truth = miscalibrated(scale=scale, seed=5)
    calls = []

    def terms(beta):
        calls.append(beta)
        return sum(temperature_terms(scores[i:i + 700], truth[i:i + 700], beta) for i in range(0, len(truth), 700))

    t = search_temperature(terms)
    assert t == pytest.approx(golden_temperature(scores, truth), rel=1e-6)
    assert len(calls) <= 12
    assert fit_temperature(scores, truth) == pytest.approx(t, rel=1e-12)


def test_temperature_at_a_bound_where_the_nll_keeps_falling():
    """Every image's true class scores best: the NLL falls all the way to T -> 0, so the lowest temperature, at
    once (as the golden-section search ends there); an NLL rising all the way gives the highest."""
    from kgzsl.recognition.hedge.temperature import search_temperature, temperature_terms

    truth = np.arange(60) % 6
    scores = np.eye(6)[truth] * 0.01 + np.random.default_rng(0).normal(size=(60, 6)) * 1e-4
    calls = []
    assert search_temperature(lambda b: calls.append(b) or temperature_terms(scores, truth, b)) == 1e-4
    assert len(calls) == 1 and golden_temperature(scores, truth) == pytest.approx(1e-4)
    assert fit_temperature(-scores, truth) == 1e4
