"""kgzsl.recognition.baselines: ConSE on hand-made cases where the answer is known (the other baselines are exercised by scripts/h1k.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kgzsl.errors import KgzslError
from kgzsl.recognition.baselines import (
    CONSE_MISSING_SCORE,
    conse_embedding,
    conse_scores,
)


def _case():
    """Hand-made: 3 seen classes with orthogonal vectors (2 e0, 3 e1, e2 in 4-d, normalised inside ConSE);
    identity classifiers with biases (0, 0.5, 0), so the logits are the features plus those: image 0 has
    logits (ln 4, ln 2, 0), i.e. p = (4, 2, 1) / 7; image 1 has logits (0, 0.5, 1)."""
    features = torch.tensor([[math.log(4.0), math.log(2.0) - 0.5, 0.0], [0.0, 0.0, 1.0]])
    weights = torch.cat([torch.eye(3), torch.tensor([[0.0], [0.5], [0.0]])], dim=1)
    seen_vectors = torch.tensor([[2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 1.0, 0]])
    candidates = torch.tensor([
        [1.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 2.0],
        [1.0, 0.0, 0.0, 0.1],  # nearest to seen class 0
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # no word vector
        [0.0, 0.3, 1.0, 0.0],
    ])
    return features, weights, seen_vectors, candidates


def _numpy_conse(features, weights, seen_vectors, candidates, top):
    x = np.hstack([features.numpy(), np.ones((features.shape[0], 1))]).astype(np.float64)
    logits = x @ weights.numpy().astype(np.float64).T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    s = seen_vectors.numpy() / np.linalg.norm(seen_vectors.numpy(), axis=1, keepdims=True)
    f = np.zeros((x.shape[0], s.shape[1]))
    for i in range(x.shape[0]):
        best = np.argsort(-p[i])[:top]
        f[i] = (p[i, best, None] * s[best]).sum(0) / p[i, best].sum()
    c = candidates.numpy().astype(np.float64)
    norms = np.linalg.norm(c, axis=1)
    cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (c / np.where(norms > 0, norms, 1)[:, None]).T
    cos[:, norms == 0] = CONSE_MISSING_SCORE
    return f, cos


@pytest.mark.parametrize("top", [1, 2, 3])
def test_conse_matches_numpy(top):
    features, weights, seen_vectors, candidates = _case()
    f_ref, scores_ref = _numpy_conse(features, weights, seen_vectors, candidates, top)
    f = conse_embedding(features, weights, seen_vectors, top=top)
    scores = conse_scores(features, weights, seen_vectors, candidates, top=top)
    assert scores.shape == (2, 6) and scores.dtype == torch.float32
    np.testing.assert_allclose(f.numpy(), f_ref, atol=1e-6)
    np.testing.assert_allclose(scores.numpy(), scores_ref, atol=1e-6)


def test_conse_known_embedding():
    features, weights, seen_vectors, _ = _case()
    f = conse_embedding(features, weights, seen_vectors, top=3)
    assert f[0].tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0], abs=1e-6)
    f2 = conse_embedding(features, weights, seen_vectors, top=2)
    assert f2[0].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0, 0.0], abs=1e-6)
    # image 1: logits (0, 0.5, 1): p proportional to (1, e^0.5, e)
    e = np.array([1.0, math.exp(0.5), math.e])
    assert f[1].tolist() == pytest.approx((e / e.sum()).tolist() + [0.0], abs=1e-6)


def test_conse_top1_picks_candidate_nearest_the_most_probable_seen_class():
    features, weights, seen_vectors, candidates = _case()
    scores = conse_scores(features, weights, seen_vectors, candidates, top=1)
    assert int(scores[0].argmax()) == 2  # seen class 0 (e0) is most probable; candidate 2 is nearest e0
    assert int(scores[1].argmax()) == 5  # seen class 2 (e2); candidate 5 is nearest e2
    assert float(scores[0, 2]) == pytest.approx(1 / math.sqrt(1.01), abs=1e-6)


def test_conse_missing_candidates_rank_last_and_top_is_clipped():
    features, weights, seen_vectors, candidates = _case()
    scores = conse_scores(features, weights, seen_vectors, candidates, top=50)
    assert torch.equal(scores, conse_scores(features, weights, seen_vectors, candidates, top=3))
    assert (scores[:, 4] == CONSE_MISSING_SCORE).all() and (scores[:, 4] < -1.0).all()
    assert (scores.argsort(dim=1)[:, 0] == 4).all()


def test_conse_batches_agree():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(37, 5, generator=gen)
    weights = torch.randn(8, 6, generator=gen)
    seen_vectors = torch.randn(8, 7, generator=gen)
    candidates = torch.randn(11, 7, generator=gen)
    whole = conse_scores(features, weights, seen_vectors, candidates, top=4, batch_size=1024)
    assert torch.allclose(whole, conse_scores(features, weights, seen_vectors, candidates, top=4, batch_size=5), atol=1e-6)
    assert whole.abs().max() <= 1.0 + 1e-5


def test_conse_skips_seen_classes_without_vectors():
    features, weights, seen_vectors, candidates = _case()
    seen_vectors = seen_vectors.clone()
    seen_vectors[0] = 0  # the most probable class of image 0 has no vector: the next ones stand in
    f = conse_embedding(features, weights, seen_vectors, top=1)
    assert f[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_conse_shape_errors_name_the_argument():
    features, weights, seen_vectors, candidates = _case()
    with pytest.raises(KgzslError, match="features"):
        conse_scores(features[0], weights, seen_vectors, candidates)
    with pytest.raises(KgzslError, match="seen_weights"):
        conse_scores(features, weights[:, :3], seen_vectors, candidates)
    with pytest.raises(KgzslError, match="seen_vectors"):
        conse_scores(features, weights, seen_vectors[:2], candidates)
    with pytest.raises(KgzslError, match="candidate_vectors"):
        conse_scores(features, weights, seen_vectors, candidates[:, :3])
    with pytest.raises(KgzslError, match="top"):
        conse_scores(features, weights, seen_vectors, candidates, top=0)
    with pytest.raises(KgzslError, match="all zero"):
        conse_scores(features, weights, torch.zeros_like(seen_vectors), candidates)


# ------------------------------------------------------------------ H1K's regression baselines
def test_ridge_interpolates_its_training_classes_when_features_outnumber_them():
    """With more feature dimensions than training classes and a vanishing alpha, ridge fits every training row."""
    from kgzsl.recognition.baselines import ridge_predict

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12))
    t = torch.as_tensor(rng.normal(size=(6, 5)), dtype=torch.float32)
    pred = ridge_predict(x, np.arange(6), t, alpha=1e-9)
    torch.testing.assert_close(pred[:6], torch.nn.functional.normalize(t, dim=1), atol=1e-4, rtol=1e-4)
    assert torch.allclose(pred.norm(dim=1), torch.ones(8))


def test_knn_averages_the_nearest_training_targets_leaving_itself_out():
    from kgzsl.recognition.baselines import knn_predict

    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    pred = knn_predict(x, np.array([0, 1, 2]), t[:3], k=1)
    torch.testing.assert_close(pred[0], torch.tensor([0.0, 1.0, 0.0]))  # its own target is excluded
    torch.testing.assert_close(pred[3], torch.tensor([0.0, 0.0, 1.0]))  # node 3 is nearest node 2


def test_wordnet_neighbour_takes_the_nearest_trained_classes_in_the_graph():
    """A chain 0-1-2-3 plus 4 hanging off 1: node 3's nearest trained class is 2; node 4's are 0 and 2 (two hops)."""
    from kgzsl.recognition.baselines import wordnet_neighbour_predict

    edges = np.array([[1, 2, 3, 4], [0, 1, 2, 1]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # targets of trained nodes 0 and 2
    pred = wordnet_neighbour_predict(edges, 5, np.array([0, 2]), t, query=np.array([3, 4]))
    torch.testing.assert_close(pred[3], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(pred[4], torch.nn.functional.normalize(torch.tensor([1.0, 1.0]), dim=0))
    assert pred[0].abs().sum() == 0  # rows outside the query stay zero
