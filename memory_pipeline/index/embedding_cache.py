"""Embedding cache keyed by (model id, chunk text hash): nothing is embedded twice.

SQLite (WAL) because it is transactional, needs no server and lets readers run while a writer
commits; a crash loses at most the batch being written and never corrupts what was cached before.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from memory_pipeline.index.embedding import Embedder

# SQLite allows at most 32766 bound parameters per statement; stay well below.
_LOOKUP_BATCH = 900
PAGE_SIZE = 8192
"""Two 2 KB vectors (512 float32) and their keys fit a page; at SQLite's default 4 KB every row spills."""
_CREATE = (
    "CREATE TABLE IF NOT EXISTS {table} ("
    "model_id TEXT NOT NULL, text_hash TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model_id, text_hash))"
)
"""A rowid table: the key index stays small and the vectors sit in the table's leaves. Caches written
before kept the rows WITHOUT ROWID, vectors inside the key's B-tree, which SQLite advises against
for rows over 1/20 of a page: a commit of 2,048 vectors cost about 3x the CPU."""


class EmbeddingCache:
    """float32 vectors by (model_id, text_hash) in one SQLite file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only in a new file
        self._use_wal()
        # In WAL mode NORMAL can lose the last commits on power loss, but never corrupts the file.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_CREATE.format(table="vectors"))
        self._db.commit()
        self._leave_without_rowid()

    def _use_wal(self) -> None:
        """Switch to WAL, waiting for another process doing the same: range steps open a new cache at once,
        and SQLite answers this pragma "database is locked" without waiting for the busy timeout."""
        deadline = time.monotonic() + 60
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _leave_without_rowid(self) -> None:
        """Move a cache written WITHOUT ROWID (before the table above) into a rowid table, in one
        transaction: a crash leaves the old table whole, and a second process finds the move done."""
        if not self._without_rowid():
            return
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if not self._without_rowid():  # another process moved it meanwhile
                return
            self._db.execute(_CREATE.format(table="vectors_rowid"))
            self._db.execute("INSERT INTO vectors_rowid SELECT model_id, text_hash, vector FROM vectors")
            self._db.execute("DROP TABLE vectors")
            self._db.execute("ALTER TABLE vectors_rowid RENAME TO vectors")

    def _without_rowid(self) -> bool:
        (sql,) = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'vectors'").fetchone()
        return "WITHOUT ROWID" in sql.upper()

    def get_many(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors of those hashes that are cached (read-only arrays)."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self._lock:
            for start in range(0, len(unique), _LOOKUP_BATCH):
                batch = unique[start : start + _LOOKUP_BATCH]
                marks = ",".join("?" * len(batch))
                rows = self._db.execute(
                    f"SELECT text_hash, vector FROM vectors WHERE model_id = ? AND text_hash IN ({marks})",
                    [model_id, *batch],
                )
                for text_hash, blob in rows:
                    found[text_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, items: Mapping[str, np.ndarray]) -> None:
        """Store vectors in one transaction: all of them or, after a crash, none."""
        rows = [(model_id, h, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for h, v in items.items()]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def count(self, model_id: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM vectors WHERE model_id = ?", [model_id]).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embed_with_cache(
    embedder: Embedder,
    texts_by_hash: Mapping[str, str],
    cache: EmbeddingCache,
    *,
    batch_size: int = 256,
    show_progress: bool = False,
) -> tuple[dict[str, np.ndarray], int]:
    """Vectors for every text hash, embedding only those the cache lacks; returns (vectors, n_embedded).

    New vectors are committed to the cache batch by batch, so a crash costs at most one batch
    and the next run picks up where this one stopped.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    vectors = cache.get_many(embedder.model_id, list(texts_by_hash))
    # Longest first, so each batch holds texts of similar length: the model pads a batch to its
    # longest text (and memory trouble shows on the first batch, not the last).
    missing = sorted((h for h in texts_by_hash if h not in vectors), key=lambda h: -len(texts_by_hash[h]))
    with tqdm(total=len(missing), desc="embedding", unit="chunk", disable=not show_progress or not missing) as progress:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            embedded = embedder.embed_passages([texts_by_hash[h] for h in batch])
            fresh = dict(zip(batch, embedded, strict=True))
            cache.put_many(embedder.model_id, fresh)
            vectors.update(fresh)
            progress.update(len(batch))
    return vectors, len(missing)
