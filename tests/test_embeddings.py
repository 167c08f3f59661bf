"""Word vectors: the embedded GloVe, the file formats a user may have, and the synset-vector rule."""

from __future__ import annotations

import numpy as np
import pytest

from kgzsl.errors import KgzslError
from kgzsl.graph.embeddings import load_vectors

WORDS = ["dog", "cat", "golden", "retriever", "new", "york", "ice", "cream", "panda"]


def test_default_glove_is_real(glove):
    assert glove.dim == 50 and len(glove.keyed.index_to_key) == 400000
    dog, cat, car = (glove.word(w) for w in ("dog", "cat", "car"))
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cos(dog, cat) > cos(dog, car)  # real vectors carry meaning


def test_phrase_rule(glove):
    # whole lookup first; else split on _ space - and average the words
    assert np.allclose(glove.phrase("dog"), glove.word("dog"))
    expected = (glove.word("golden") + glove.word("retriever")) / 2
    for spelling in ("golden_retriever", "golden retriever", "golden-retriever"):
        assert np.allclose(glove.phrase(spelling), expected)
    vec = glove.names(["golden retriever", "dog"])
    assert np.isclose(np.linalg.norm(vec), 1.0)
    assert glove.names(["qzxv_wkpq"]) is None  # no vector: reported, never zero-filled silently


def _subset_files(glove, tmp_path):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=glove.dim)
    kv.add_vectors(WORDS, np.stack([glove.word(w) for w in WORDS]))
    glove_txt = tmp_path / "glove.50d.txt"
    glove_txt.write_text("".join(f"{w} {' '.join(f'{x:.6f}' for x in glove.word(w))}\n" for w in WORDS))
    w2v_txt, w2v_bin = tmp_path / "vectors.w2v.txt", tmp_path / "vectors.bin"
    kv.save_word2vec_format(str(w2v_txt), binary=False)
    kv.save_word2vec_format(str(w2v_bin), binary=True)
    return glove_txt, w2v_txt, w2v_bin


def test_user_vector_formats_agree(glove, tmp_path):
    files = _subset_files(glove, tmp_path)
    loaded = [load_vectors(f) for f in files]
    for vectors in loaded:
        assert vectors.dim == 50
        assert np.allclose(vectors.names(["golden retriever"]), glove.names(["golden retriever"]), atol=1e-5)
    assert [v.source.split(":")[0] for v in loaded] == ["GloVe text", "word2vec text", "word2vec binary"]


def test_fasttext_binary(tmp_path):
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    # a tiny fastText model trained on a hand-written corpus: a unit-test fixture for the file format
    corpus = [["the", "dog", "chased", "the", "cat"], ["a", "cat", "sat"], ["dogs", "and", "cats"]] * 20
    model = FastText(vector_size=8, min_count=1, epochs=2, seed=1, workers=1)
    model.build_vocab(corpus)
    model.train(corpus, total_examples=len(corpus), epochs=2)
    path = tmp_path / "tiny.bin"
    save_facebook_model(model, str(path))
    vectors = load_vectors(path)
    assert vectors.dim == 8 and vectors.word("dog") is not None


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("vectors.txt", "dog 0.1 0.2\ncat 0.3\n", "not a word-vector file"),
        ("vectors.bin", "this is not binary vectors\n", "not a word-vector file"),
        ("vectors.kv", "x", "pickle"),
        ("vectors.txt", "", "not a word-vector file"),
    ],
)
def test_bad_vector_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(KgzslError, match=message) as info:
        load_vectors(path)
    assert str(path) in str(info.value)


def test_missing_vector_file(tmp_path):
    with pytest.raises(KgzslError, match="does not exist"):
        load_vectors(tmp_path / "nope.txt")
