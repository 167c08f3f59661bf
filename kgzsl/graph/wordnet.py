"""WordNet 3.0 noun synsets by wnid (``n`` + 8-digit offset), through nltk.

Only noun synsets are used. A wnid names the synset at that byte offset of ``data.noun``.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING

from kgzsl.core.resources import wordnet_dir
from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

WNID_PATTERN = re.compile(r"^n\d{8}$")


@lru_cache(maxsize=1)
def reader() -> "WordNetCorpusReader":
    """The (cached) nltk WordNet 3.0 reader over kgzsl's prepared copy of the database."""
    import nltk  # lazy: nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader  # lazy: nltk

    folder = wordnet_dir()
    data_root = str(folder.parent.parent)  # nltk only reads below a folder on its data path
    if data_root not in nltk.data.path:
        nltk.data.path.insert(0, data_root)
    with warnings.catch_warnings():  # "multilingual functions are not available": we use none
        warnings.simplefilter("ignore")
        return _reader_class(WordNetCorpusReader)(str(folder), None)


def _reader_class(base: type) -> type:
    """nltk's reader without its map to other WordNet versions (for multilingual data kgzsl never reads), which
    costs about 10 s each process."""

    class EnglishReader(base):  # type: ignore[misc, valid-type]
        def map_wn(self, version: str = "wordnet") -> dict:
            return {}

    return EnglishReader


def wnid_of(synset: "Synset") -> str:
    """The wnid of a noun synset."""
    return f"n{synset.offset():08d}"


def is_wnid(text: str) -> bool:
    """True if ``text`` has the shape of a noun wnid (``n`` + 8 digits)."""
    return bool(WNID_PATTERN.match(text))


def synset(wnid: str, where: str = "") -> "Synset":
    """The noun synset of ``wnid``; a clear error for a malformed or unknown id (``where`` names the input)."""
    prefix = f"{where}: " if where else ""
    if not is_wnid(wnid):
        raise KgzslError(f"{prefix}{wnid!r} is not a WordNet noun id (expected 'n' followed by 8 digits, e.g. n02084071)")
    found = _synset_or_none(wnid)
    if found is None:
        raise KgzslError(f"{prefix}{wnid} is not a noun synset of WordNet 3.0 (unknown offset)")
    return found


@lru_cache(maxsize=None)
def _synset_or_none(wnid: str) -> "Synset | None":
    from nltk.corpus.reader.wordnet import WordNetError  # lazy: nltk

    wn = reader()
    try:
        with warnings.catch_warnings():  # nltk warns "No WordNet synset found"; we raise our own error
            warnings.simplefilter("ignore")
            found = wn.synset_from_pos_and_offset("n", int(wnid[1:]))
    except (WordNetError, ValueError, IndexError):  # an offset inside a line or past the end
        return None
    return found if found is not None and found.offset() == int(wnid[1:]) else None


def synset_by_name(name: str, where: str = "") -> "Synset":
    """Resolve ``dog.n.01`` or a wnid to a noun synset."""
    if is_wnid(name):
        return synset(name, where)
    try:
        found = reader().synset(name)
    except Exception:
        found = None
    if found is None or found.pos() != "n":
        prefix = f"{where}: " if where else ""
        raise KgzslError(f"{prefix}{name!r} is neither a wnid nor a WordNet noun synset name like 'dog.n.01'")
    return found


def hypernym_wnids(wnid: str, instance: bool = False) -> list[str]:
    """Direct noun hypernyms of ``wnid`` (plus instance hypernyms if ``instance``), sorted.

    Sorted because nltk keeps a synset's pointers in a set, whose order changes with PYTHONHASHSEED:
    unsorted, every build would give another edge order.
    """
    s = synset(wnid)
    parents = s.hypernyms() + (s.instance_hypernyms() if instance else [])
    return sorted({wnid_of(p) for p in parents})


def lemma_names(wnid: str) -> list[str]:
    """The synset's lemma names as WordNet spells them (``_`` for spaces)."""
    return list(synset(wnid).lemma_names())


def gloss(wnid: str) -> str:
    """The synset's definition."""
    return synset(wnid).definition()
