"""Shared test fixtures: real WordNet, real GloVe vectors, a small real WordNet subgraph."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgzsl.resources import reference_dir

# A small real WordNet neighbourhood: dogs, cats, big cats and a few other animals.
SMALL_SEEN = [
    "n02085620",  # Chihuahua
    "n02099601",  # golden retriever
    "n02110958",  # pug
    "n02123045",  # tabby cat
    "n02129165",  # lion
    "n02129604",  # tiger
    "n01503061",  # bird
    "n02504458",  # African elephant
]
SMALL_UNSEEN = [
    "n02084071",  # dog
    "n02121808",  # domestic cat
    "n02128925",  # jaguar
    "n02504013",  # Indian elephant
    "n02099712",  # Labrador retriever
]


@pytest.fixture(scope="session")
def reference() -> Path:
    """The standard ImageNet wnid/split lists of ../shared/reference (skipped where absent)."""
    path = reference_dir()
    if path is None:
        pytest.skip("reference lists absent: set KGZSL_REFERENCE or put them at ../shared/reference")
    return path


@pytest.fixture(scope="session")
def glove():
    """The embedded real GloVe 6B 50-d vectors."""
    from kgzsl.embeddings import GLOVE_50D, load_vectors

    return load_vectors(GLOVE_50D)


@pytest.fixture(scope="session")
def small_graph(glove):
    """A small real WordNet graph (closed upward to entity) over a few animal classes."""
    from kgzsl.graph import build_wordnet_graph

    return build_wordnet_graph(SMALL_SEEN, SMALL_UNSEEN, vectors=glove)
