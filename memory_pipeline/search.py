"""Search the memory: vector (FAISS), full text (LanceDB, Russian + English stems), or hybrid.

Hybrid fuses the two candidate lists by a weighted sum of their normalised scores (see
``fuse``), then reranks. The full-text share (``search.hybrid_fts_weight``, the vector list gets
the rest) depends on how well the embedding model knows the user's languages, so it is tuned on
the tune half of the hand-written question set (``memory-pipeline eval-retrieval``, see
retrieval_eval.py) and reported on the other half.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pydantic import BaseModel

from memory_pipeline.config import Config
from memory_pipeline.embedding import Embedder, load_embedder
from memory_pipeline.errors import SearchError
from memory_pipeline.index.faiss_store import FaissIndex
from memory_pipeline.index.lancedb_store import ChunkStore

MODES = ("vector", "fts", "hybrid")
KINDS = ("dialogue", "article", "lecture")
_RELOAD_SECONDS = 1.0


class Hit(BaseModel):
    score: float
    mode: str
    chunk_id: str
    doc_id: str
    kind: str
    title: str
    source_path: str
    turn_index: int | None = None
    page: int | None = None
    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    heading: str | None = None
    source_file: str | None = None
    text: str


class Searcher:
    """Keeps the embedder and both indexes loaded for repeated queries; notices re-indexing on disk."""

    def __init__(self, config: Config, *, embedder: Embedder | None = None):
        self.config = config
        self.embedder = embedder or load_embedder(config.embedding)
        self.store = ChunkStore(config.lancedb_uri, self.embedder.model_id, self.embedder.dimension)
        self.faiss = FaissIndex(config.faiss_dir, self.embedder.model_id, self.embedder.dimension, config.index)
        self._lock = threading.Lock()
        self._faiss_stamp: float | None = None
        self._checked = 0.0
        self._table_version: int | None = None
        self._kinds: dict[int, str] = {}

    def stats(self) -> dict:
        self._refresh()
        return {"model_id": self.embedder.model_id, "chunks": self.store.count(), "faiss_ntotal": self.faiss.ntotal}

    def _refresh(self) -> None:
        """Pick up a newer LanceDB version and FAISS file, at most once a second."""
        now = time.monotonic()
        if now - self._checked < _RELOAD_SECONDS and self._faiss_stamp is not None:
            return
        with self._lock:
            self._checked = now
            stamp = _mtime(self.faiss.meta_path)
            if stamp != self._faiss_stamp:
                self.faiss.load()
                self._faiss_stamp = stamp
            if self.store.exists():
                self.store.table.checkout_latest()
                version = self.store.table.version
                if version != self._table_version:
                    self._kinds = {r["row_id"]: r["kind"] for r in self.store.rows(["row_id", "kind"])}
                    self._table_version = version

    def search(self, query: str, *, k: int | None = None, kind: str | None = None, mode: str | None = None, log: bool = True) -> list[Hit]:
        query, k, kind, mode = validate_request(self.config, query, k, kind, mode)
        started = time.perf_counter()
        self._refresh()
        if not self._kinds:
            hits: list[Hit] = []
        elif mode == "vector":
            hits = self._vector(query, k, kind)
        elif mode == "fts":
            hits = [_hit(row, float(row["_score"]), "fts") for row in self.store.fts_search(query, k, kind=kind)]
        else:
            hits = self._hybrid(query, k, kind)
        if log:
            from memory_pipeline.search_log import log_search

            latency = (time.perf_counter() - started) * 1000
            log_search(self.config, query=query, mode=mode, kind=kind, k=k, hit_ids=[h.chunk_id for h in hits], latency_ms=latency)
        return hits

    def _vector_scores(self, query: str, depth: int, kind: str | None) -> tuple[dict[int, float], dict[int, dict]]:
        """Nearest chunks as row_id -> cosine, plus any rows already read on the way.

        FAISS answers from memory; a kind filter is applied with the in-memory row_id -> kind map,
        over-fetching, and falls back to LanceDB's pre-filtered search when too few remain.
        """
        vector = self.embedder.embed_query(query)
        if self.faiss.ntotal:
            fetch = depth if kind is None else min(self.faiss.ntotal, depth * 8)
            scores, ids = self.faiss.search(vector, fetch)
            found = {int(i): float(s) for s, i in zip(scores, ids) if kind is None or self._kinds.get(int(i)) == kind}
            if len(found) >= min(depth, sum(1 for v in self._kinds.values() if kind is None or v == kind)):
                return dict(list(found.items())[:depth]), {}
        rows = self.store.vector_search(vector, depth, kind=kind)
        return {r["row_id"]: float(r["_score"]) for r in rows}, {r["row_id"]: r for r in rows}

    def _rows(self, row_ids: list[int], known: dict[int, dict]) -> dict[int, dict]:
        missing = [i for i in row_ids if i not in known]
        return {**known, **(self.store.get_rows(missing) if missing else {})}

    def _vector(self, query: str, k: int, kind: str | None) -> list[Hit]:
        scores, known = self._vector_scores(query, k, kind)
        best = sorted(scores, key=lambda i: -scores[i])[:k]
        rows = self._rows(best, known)
        return [_hit(rows[i], scores[i], "vector") for i in best if i in rows]

    def hybrid_candidates(
        self, query: str, k: int, kind: str | None = None
    ) -> tuple[dict[int, float], dict[int, float], dict[int, dict]]:
        """Full-text and vector scores (row_id -> score) of what hybrid fuses for a top ``k``, plus rows read on the way."""
        depth = max(50, 4 * k)
        self._refresh()
        fts_rows = self.store.fts_search(query, depth, kind=kind)
        vector_scores, known = self._vector_scores(query, depth, kind)
        fts_scores = {row["row_id"]: float(row["_score"]) for row in fts_rows}
        return fts_scores, vector_scores, {**known, **{row["row_id"]: row for row in fts_rows}}

    def rows_of(self, row_ids: list[int], known: dict[int, dict] | None = None) -> dict[int, dict]:
        """Rows by row_id, reading from the store only those not in ``known``."""
        return self._rows(row_ids, known or {})

    def _hybrid(self, query: str, k: int, kind: str | None) -> list[Hit]:
        fts_scores, vector_scores, known = self.hybrid_candidates(query, k, kind)
        fused = fuse(fts_scores, vector_scores, fts_weight=self.config.search.hybrid_fts_weight)
        best = ranked(fused)[:k]
        rows = self._rows(best, known)
        return [_hit(rows[i], fused[i], "hybrid") for i in best if i in rows]


def ranked(fused: dict[int, float]) -> list[int]:
    """Row ids best first; ties by row id, so a ranking is reproducible."""
    return sorted(fused, key=lambda row_id: (-fused[row_id], row_id))


def fuse(fts_scores: dict[int, float], vector_scores: dict[int, float], *, fts_weight: float) -> dict[int, float]:
    """Weighted sum of min-max normalised scores (vectors weigh ``1 - fts_weight``); missing from a list = 0 there.

    Unlike rank fusion, a full-text hit that stands far above the rest keeps its lead, while
    candidates the full text misses (paraphrases, other wording) still come in through the vectors.
    """
    fused: dict[int, float] = {}
    for weight, scores in ((fts_weight, fts_scores), (1.0 - fts_weight, vector_scores)):
        if not scores:
            continue
        low, high = min(scores.values()), max(scores.values())
        span = high - low
        for row_id, score in scores.items():
            normalised = (score - low) / span if span > 0 else 1.0
            fused[row_id] = fused.get(row_id, 0.0) + weight * normalised
    return fused


def validate_request(config: Config, query: str, k: int | None, kind: str | None, mode: str | None) -> tuple[str, int, str | None, str]:
    """Check a request before any model is loaded; fill defaults from config."""
    if not isinstance(query, str) or not query.strip():
        raise SearchError("empty query: type what to look for")
    limit = config.search.max_query_chars
    if len(query) > limit:
        raise SearchError(f"query is {len(query)} characters, over search.max_query_chars ({limit}); shorten it")
    k = config.search.default_k if k is None else k
    if k < 1 or k > 1000:
        raise SearchError(f"k must be between 1 and 1000, got {k}")
    mode = mode or config.search.default_mode
    if mode not in MODES:
        raise SearchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if kind is not None and kind not in KINDS:
        raise SearchError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    return query.strip(), k, kind, mode


def search(config: Config, query: str, *, k: int | None = None, kind: str | None = None, mode: str | None = None, embedder: Embedder | None = None, log: bool = True) -> list[Hit]:
    """One search in this process (loads the model: seconds; the service keeps it loaded)."""
    validate_request(config, query, k, kind, mode)
    return Searcher(config, embedder=embedder).search(query, k=k, kind=kind, mode=mode, log=log)


def _hit(row: dict, score: float, mode: str) -> Hit:
    return Hit(score=score, mode=mode, **{name: row.get(name) for name in Hit.model_fields if name not in ("score", "mode")})


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
