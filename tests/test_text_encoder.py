"""Sentence-encoder node features: all-MiniLM-L6-v2 loaded offline from its PyPI wheel, the node
texts it reads, its cache, concatenation with GloVe, and taxonomy descriptions."""

from __future__ import annotations

import numpy as np
import pytest

from kgzsl.graph.embeddings import (
    GLOVE_50D,
    ConcatenatedFeatures,
    NodeTexts,
    SentenceFeatures,
    load_vectors,
    node_text,
)


@pytest.fixture(scope="module")
def encoder():
    from kgzsl.graph.text_encoder import SentenceEncoder

    return SentenceEncoder(cache=False)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_encoder_loads_offline_and_embeddings_behave(encoder):
    dog, puppy, violin, cat = encoder.encode(["dog", "puppy", "violin", "cat"])
    assert encoder.dim == 384 and dog.shape == (384,)
    assert np.allclose(np.linalg.norm([dog, puppy, violin]), np.sqrt(3), atol=1e-4)  # unit rows
    assert _cos(dog, puppy) > _cos(dog, violin) + 0.2
    assert _cos(dog, cat) > _cos(dog, violin)


def test_gloss_separates_homonyms(encoder):
    """'jack' the card and 'jack' the car tool share a name; their definitions tell them apart."""
    card, lift, king = encoder.encode([
        node_text(["jack", "knave"], "one of four face cards in a deck bearing a picture of a young prince"),
        node_text(["jack"], "a tool for exerting pressure or lifting"),
        node_text(["king"], "one of the four playing cards in a deck bearing the picture of a king"),
    ])
    assert _cos(card, king) > _cos(lift, king)


def test_node_text_forms():
    assert node_text(["dog", "domestic dog"], "a canine", ["canine"], ("names",)) == "dog, domestic dog"
    assert node_text(["dog"], "a canine", ["canine"]) == "dog: a canine"
    assert node_text(["dog"], "a canine", ["canine"], ("names", "gloss", "parents")) == "dog (a kind of canine): a canine"
    assert node_text(["robin"], "", []) == "robin"


def test_cache_reuses_vectors_and_encodes_only_new_texts(tmp_path, monkeypatch):
    import kgzsl.core.resources
    from kgzsl.graph.text_encoder import SentenceEncoder

    enc = SentenceEncoder()  # the model folder comes from the real cache; the text cache goes to tmp_path
    monkeypatch.setattr(kgzsl.core.resources, "cache_dir", lambda: tmp_path)
    first = enc.encode(["a red fox", "a grey wolf"])
    assert (tmp_path / "text-embeddings" / "all-MiniLM-L6-v2.safetensors").is_file()
    encoded: list[list[str]] = []
    original = enc._encode_batch
    monkeypatch.setattr(enc, "_encode_batch", lambda texts: encoded.append(list(texts)) or original(texts))
    again = enc.encode(["a grey wolf", "a red fox", "an arctic hare"])
    assert encoded == [["an arctic hare"]]  # the two cached texts were not encoded again
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[1], first[0])


def test_load_vectors_names_and_concatenation():
    minilm = load_vectors("minilm")
    assert isinstance(minilm, SentenceFeatures) and minilm.fields == ("names", "gloss")
    assert load_vectors("minilm-names").fields == ("names",)
    assert load_vectors(None).source == f"{GLOVE_50D}+minilm"  # the default
    both = load_vectors(f"{GLOVE_50D}+minilm")
    assert isinstance(both, ConcatenatedFeatures)
    texts = NodeTexts([["dog"], ["zzqxv"]], ["a domesticated canine", "a made-up word"], [[], []])
    features, has_vector = both.embed_nodes(texts)
    assert features.shape == (2, 50 + 384) and has_vector.tolist() == [True, True]
    assert np.allclose(np.linalg.norm(features[0, :50]), 1, atol=1e-5) and np.allclose(np.linalg.norm(features[0, 50:]), 1, atol=1e-5)
    assert np.all(features[1, :50] == 0)  # GloVe knows no such word: its part stays zero, the sentence part is there


def test_taxonomy_descriptions_build_and_change_features(tmp_path):
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

    csv = tmp_path / "kitchen.csv"
    csv.write_text(
        "child,parent,synset,description\n"
        "utensil,,,a tool used in the kitchen\n"
        "whisk,utensil,,a wire loop tool for beating eggs and cream\n"
        "ladle,utensil,,a deep long-handled spoon for serving soup\n"
        "spatula,utensil,\n"
    )
    taxonomy = load_taxonomy(csv)
    assert taxonomy.descriptions == {"utensil": "a tool used in the kitchen", "whisk": "a wire loop tool for beating eggs and cream",
                                     "ladle": "a deep long-handled spoon for serving soup"}
    vectors = load_vectors("minilm")
    graph = build_taxonomy_graph(taxonomy, seen=["whisk"], vectors=vectors)
    assert graph.features.shape[1] == 384 and graph.has_vector.all()
    assert graph.glosses[graph.ids.index("ladle")] == "a deep long-handled spoon for serving soup"
    names_only = load_vectors("minilm-names").embed_nodes(NodeTexts([["ladle"]], [""], [[]]))[0][0]
    assert not np.allclose(graph.features[graph.ids.index("ladle")], names_only)


def test_nested_taxonomy_descriptions_are_checked(tmp_path):
    from kgzsl.errors import KgzslError
    from kgzsl.graph.taxonomy import load_taxonomy

    path = tmp_path / "t.json"
    path.write_text('{"tree": {"tool": ["whisk"]}, "descriptions": {"whisk": "beats eggs", "ghost": "x"}}')
    with pytest.raises(KgzslError, match="descriptions given for undeclared names: ghost"):
        load_taxonomy(path)
    path.write_text('{"tree": {"tool": ["whisk"]}, "descriptions": {"whisk": "beats eggs"}}')
    assert load_taxonomy(path).descriptions == {"whisk": "beats eggs"}
