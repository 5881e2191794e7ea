"""Every search, logged: how often a memory is looked up is a signal of what matters to the user.

SQLite in WAL mode: the service and the CLI can log concurrently, and scoring reads counts
with one indexed query.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from memory_pipeline.config import Config


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS searches (id INTEGER PRIMARY KEY, ts REAL, query TEXT, mode TEXT, kind TEXT, "
        "k INTEGER, latency_ms REAL, hit_ids TEXT)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS hits (search_id INTEGER, chunk_id TEXT)")
    db.execute("CREATE INDEX IF NOT EXISTS hits_chunk ON hits (chunk_id)")
    return db


def log_search(
    config: Config, *, query: str, mode: str, kind: str | None, k: int, hit_ids: Sequence[str], latency_ms: float
) -> None:
    db = _connect(config.search_log_path)
    try:
        with db:
            cursor = db.execute(
                "INSERT INTO searches (ts, query, mode, kind, k, latency_ms, hit_ids) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), query, mode, kind, k, latency_ms, json.dumps(list(hit_ids))),
            )
            db.executemany("INSERT INTO hits VALUES (?, ?)", [(cursor.lastrowid, h) for h in hit_ids])
    finally:
        db.close()


def hit_counts(config: Config) -> dict[str, int]:
    """chunk_id -> how many logged searches returned it."""
    return _per_chunk(config, "SELECT chunk_id, COUNT(*) FROM hits GROUP BY chunk_id")


def last_hit_times(config: Config) -> dict[str, float]:
    """chunk_id -> when (unix seconds) a logged search last returned it: lack of use decays recall."""
    return _per_chunk(
        config,
        "SELECT hits.chunk_id, MAX(searches.ts) FROM hits JOIN searches ON searches.id = hits.search_id "
        "GROUP BY hits.chunk_id",
    )


def _per_chunk(config: Config, sql: str) -> dict:
    """One figure per chunk id from the log; none before the first logged search."""
    path = config.search_log_path
    if not path.is_file():
        return {}
    db = _connect(path)
    try:
        return dict(db.execute(sql))
    finally:
        db.close()
