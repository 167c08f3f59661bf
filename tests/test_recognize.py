"""Recognition maths: scores, ranks with ties, GZSL calibration, transductive refinement, evaluation."""

from __future__ import annotations

import pytest
import torch

from kgzsl.errors import KgzslError
from kgzsl.inspection.plots import plot_seen_unseen
from kgzsl.recognition.evaluate import evaluate_split
from kgzsl.recognition.scoring import (
    calibrate,
    class_scores,
    gzsl_at_gamma,
    hit_at_k,
    mutual_neighbours,
    ranks_of_true,
    transductive_scores,
)


def test_scores_equal_hand_computed_dot_product():
    features = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    weights = torch.tensor([[0.1, 0.2, 0.3], [-1.0, 0.0, 2.0], [0.0, 1.0, -0.5]])  # last column = bias
    scores = class_scores(features, weights)
    # image 0, class 1: 1*-1 + 2*0 + 1*2 = 1.0; image 1, class 2: 0.5*0 + -1*1 + 1*-0.5 = -1.5
    assert scores[0, 1].item() == pytest.approx(1.0)
    assert scores[1, 2].item() == pytest.approx(-1.5)
    assert scores[0, 0].item() == pytest.approx(1 * 0.1 + 2 * 0.2 + 0.3)


def test_dim_mismatch_is_a_clear_error():
    with pytest.raises(KgzslError, match="features are 3-d but the predicted classifiers are 1-d"):
        class_scores(torch.zeros(2, 3), torch.zeros(4, 2))


def test_ties_count_against():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.2, 0.9, 0.9]])
    truth = torch.tensor([0, 2])
    assert ranks_of_true(scores, truth).tolist() == [2, 2]
    hits = hit_at_k(scores, truth, ks=(1, 2))
    assert hits == {1: 0.0, 2: 1.0}


def _gzsl_case(seed=0):
    """Hand-made fixture: seen classes score systematically higher, the classic GZSL bias."""
    g = torch.Generator().manual_seed(seed)
    seen_columns = torch.tensor([True] * 5 + [False] * 5)
    truth = torch.cat([torch.randint(0, 5, (200,), generator=g), torch.randint(5, 10, (200,), generator=g)])
    scores = torch.randn(400, 10, generator=g)
    scores[torch.arange(400), truth] += 2.5  # the true class is favoured ...
    scores[:, seen_columns] += 2.0  # ... but every seen class gets a bias
    return scores, truth, seen_columns


def test_calibration_moves_accuracy_the_right_way(tmp_path):
    scores, truth, seen_columns = _gzsl_case()
    raw = gzsl_at_gamma(scores, truth, seen_columns, gamma=0.0)
    val = calibrate(scores[::2], truth[::2], seen_columns)
    test = gzsl_at_gamma(scores[1::2], truth[1::2], seen_columns, gamma=val.gamma)
    assert val.gamma > 0  # the bias is toward seen classes, so a positive constant is removed
    assert test.unseen_accuracy > raw.unseen_accuracy  # unseen accuracy goes up
    assert test.seen_accuracy <= raw.seen_accuracy  # seen accuracy pays for it
    assert test.harmonic_mean > raw.harmonic_mean
    # the curve is monotone: more gamma, never more seen accuracy
    seen_accs = [s for _, s, _ in sorted(val.curve)]
    assert all(a >= b - 1e-9 for a, b in zip(seen_accs, seen_accs[1:]))
    png = tmp_path / "suc.png"
    plot_seen_unseen(test, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_gzsl_split_is_calibration_on_one_half_and_accuracy_on_the_other():
    """evaluate_gzsl_split = gzsl_scores (unseen columns, then seen) + calibrate on a seeded half + gzsl_at_gamma."""
    import numpy as np

    from kgzsl.recognition.evaluate import evaluate_gzsl_split, gzsl_scores

    g = torch.Generator().manual_seed(1)
    class_ids = ["s1", "u1", "s2", "u2", "x"]
    weights, features = torch.randn(5, 4, generator=g), torch.randn(40, 3, generator=g)
    labels = ["u1", "s1", "u2", "s2", "other"] * 8
    scores, truth, seen = gzsl_scores(features, labels, class_ids, weights, ["u1", "u2"], ["s1", "s2", "u2"])
    assert seen.tolist() == [False, False, True, True]  # u2, listed on both sides, is unseen
    kept = [i for i, label in enumerate(labels) if label != "other"]
    torch.testing.assert_close(scores, class_scores(features[kept], weights[[1, 3, 0, 2]]))
    assert truth.tolist() == [["u1", "u2", "s1", "s2"].index(labels[i]) for i in kept]
    test, chosen = evaluate_gzsl_split(features, labels, class_ids, weights, ["u1", "u2"], ["s1", "s2"], seed=3)
    order = torch.from_numpy(np.random.default_rng(3).permutation(len(kept)))
    cal, rest = order[:16], order[16:]
    assert chosen == calibrate(scores[cal], truth[cal], seen)
    assert test == gzsl_at_gamma(scores[rest], truth[rest], seen, chosen.gamma)
    with pytest.raises(KgzslError, match="both seen and unseen"):
        gzsl_scores(features, ["u1"] * 40, class_ids, weights, ["u1"], ["s1"])
    with pytest.raises(KgzslError, match="no image is labelled"):
        gzsl_scores(features, ["x"] * 40, class_ids, weights, ["u1"], ["s1"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transductive_label_propagation_fixes_noisy_scores_of_clustered_images(seed):
    """Hand-made case: images cluster by class; each image's scores are its class's plus heavy noise."""
    g = torch.Generator().manual_seed(seed)
    classes, per_class, candidates = 10, 6, 200
    labels = torch.arange(classes).repeat_interleave(per_class)
    centres = torch.randn(classes, 16, generator=g) * 3
    features = centres[labels] + 0.5 * torch.randn(len(labels), 16, generator=g)
    scores = 1.5 * torch.nn.functional.one_hot(labels, candidates).float() + torch.randn(len(labels), candidates, generator=g)
    before = (ranks_of_true(scores, labels) <= 1).float().mean()
    after = (ranks_of_true(transductive_scores(features, scores), labels) <= 1).float().mean()
    assert after > before + 0.1


def test_transductive_keeps_an_isolated_image_and_alpha_zero():
    features = torch.tensor([[0.0, 10.0], [1.0, 0.0], [1.1, 0.0], [1.0, 0.1]])
    scores = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    w = mutual_neighbours(features, k=1)
    assert torch.equal(w, w.T) and w[0].abs().sum() == 0  # image 0 has no mutual neighbour
    out = transductive_scores(features, scores, neighbours=1)
    assert torch.equal(out[0].argsort(), scores[0].argsort())  # its ranking is unchanged
    assert torch.allclose(out[0], scores[0], atol=1e-5)
    assert torch.equal(transductive_scores(features, scores, alpha=0.0), scores)
    with pytest.raises(KgzslError, match="alpha"):
        transductive_scores(features, scores, alpha=1.0)


def test_evaluate_split_and_with_seen():
    class_ids = ["u1", "u2", "s1"]
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.5]])
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.9], [5.0, 5.0]])
    labels = ["u1", "u2", "u1", "s1"]
    result = evaluate_split(features, labels, class_ids, weights, ["u1", "u2", "absent"], ks=(1, 2))
    assert result.images == 3 and result.candidates == 2 and result.missing_classes == ["absent"]
    assert result.hit[1] == pytest.approx(2 / 3) and result.hit[2] == 1.0
    plus = evaluate_split(features, labels, class_ids, weights, ["u1", "u2"], seen_ids=["s1"], with_seen=True, ks=(1, 2))
    assert plus.candidates == 3 and plus.hit[1] == 0.0  # s1 scores above every unseen class here
    with pytest.raises(KgzslError, match="no image has a label"):
        evaluate_split(features, ["x"] * 4, class_ids, weights, ["u1"])


def _hand_written_predictions(seed=0):
    """A hand-written unit-test fixture: 7 nodes (one internal, three seen with real rows), 4-d features."""
    from kgzsl.propagation.predictions import Predictions

    g = torch.Generator().manual_seed(seed)
    seen = torch.tensor([True, False, True, False, False, True, False])
    return Predictions(ids=[f"n{i}" for i in range(7)], pred=torch.randn(7, 5, generator=g), seen=seen,
                       meta={"roles": ["seen", "unseen", "seen", "internal", "unseen", "seen", "unseen"]},
                       seen_true=torch.randn(3, 5, generator=g))


@pytest.mark.parametrize("candidates", ["unseen", "all", ["n1", "n2", "n6"]])
def test_candidate_scores_are_the_same_floats_call_after_call(candidates):
    """Masks and columns are kept between calls (the warm one-photo path): the scores must stay exactly those of the
    full computation, and a caller changing a returned mask or score matrix must not change the next call's."""
    from kgzsl.recognition.scoring import candidate_mask, candidate_scores

    predictions = _hand_written_predictions()
    features = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    columns = candidate_mask(_hand_written_predictions(), candidates).nonzero().view(-1)
    weights = _hand_written_predictions().classifiers("real")[columns]
    seen = _hand_written_predictions().seen[columns].float().view(1, -1)
    for gamma in (0.0, -0.0, 0.7):
        expected = class_scores(features, weights) - gamma * seen
        for _ in range(2):
            scores, got_columns = candidate_scores(features, predictions, candidates, gamma)
            assert torch.equal(got_columns, columns)
            assert torch.equal(scores, expected) and torch.equal(scores.signbit(), expected.signbit())
            scores.fill_(float("nan"))  # the caller's to change
            candidate_mask(predictions, candidates).fill_(False)
    if candidates == "unseen":
        assert [predictions.ids[int(c)] for c in columns] == ["n1", "n4", "n6"]  # not internal n3, not the seen ones
