"""Embedding cache keyed by (model id, chunk text hash): nothing is embedded twice.

SQLite (WAL) because it is transactional, needs no server and handles concurrent readers; a
crash loses at most the batch being written, never corrupts what was cached before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from memory_pipeline.embedding import Embedder

_LOOKUP_BATCH = 500


class EmbeddingCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (model_id TEXT, text_hash TEXT, vector BLOB, PRIMARY KEY (model_id, text_hash)) WITHOUT ROWID")
        self._db.commit()

    def get_many(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), _LOOKUP_BATCH):
            batch = unique[start : start + _LOOKUP_BATCH]
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(f"SELECT text_hash, vector FROM vectors WHERE model_id = ? AND text_hash IN ({marks})", [model_id, *batch])
            for text_hash, blob in rows:
                found[text_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, items: Mapping[str, np.ndarray]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(model_id, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()],
            )

    def count(self, model_id: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM vectors WHERE model_id = ?", [model_id]).fetchone()[0]

    def close(self) -> None:
        self._db.close()


def embed_with_cache(
    embedder: Embedder,
    texts_by_hash: Mapping[str, str],
    cache: EmbeddingCache,
    *,
    batch_size: int = 512,
    show_progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Vectors for every text hash, embedding only the ones the cache lacks; returns (vectors, n_embedded).

    New vectors are written to the cache batch by batch, so a crash costs at most one batch.
    """
    vectors = cache.get_many(embedder.model_id, list(texts_by_hash))
    missing = [h for h in texts_by_hash if h not in vectors]
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        embedded = embedder.embed_passages([texts_by_hash[h] for h in batch], show_progress=show_progress)
        fresh = dict(zip(batch, embedded))
        cache.put_many(embedder.model_id, fresh)
        vectors.update(fresh)
        if on_batch:
            on_batch(start + len(batch), len(missing))
    return vectors, len(missing)
