"""Search the memory: vector (FAISS), full text (LanceDB, Russian + English stems), or hybrid.

Hybrid fuses the two candidate lists by a weighted sum of their normalised scores (see
``fuse``). The full-text share (``search.hybrid_fts_weight``, the vector list gets the rest)
depends on how well the embedding model knows the user's languages, so it is tuned on the tune
half of the hand-written question set (``memory-pipeline eval-retrieval``, see
index/evaluation.py) and reported on the other half.

Every mode then goes through recall (memory_pipeline/index/recall.py): the tiers decide what may be
returned and the item scores act as a ranking prior; a time span (``since``/``until``, or one
the query names: "last week", "два месяца назад") filters by the chunk's date.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel

from memory_pipeline.config import Config
from memory_pipeline.errors import SearchError
from memory_pipeline.index.embedding import Embedder, load_embedder
from memory_pipeline.index.faiss_store import FaissIndex
from memory_pipeline.index.lance_reader import open_for_search
from memory_pipeline.index.recall import RecallView, file_mtime, position_key, rank
from memory_pipeline.index.timespan import TimeSpan, bounds, find_in_query

MODES = ("vector", "fts", "hybrid")
KINDS = ("dialogue", "article", "lecture", "profile")
_RELOAD_SECONDS = 1.0
_QUERY_VECTORS_KEPT = 32
_META_COLUMNS = ["row_id", "kind", "chunk_id", "doc_id", "turn_index", "heading", "page", "start", "created_at"]


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
    created_at: datetime | None = None
    tier: str | None = None
    item_id: str | None = None
    superseded_by: str | None = None
    relevance: float | None = None
    similarity: float | None = None  # cosine to the query, when the vector side saw the chunk
    text: str


class Searcher:
    """Keeps the embedder and both indexes loaded for repeated queries; notices re-indexing on disk."""

    def __init__(self, config: Config, *, embedder: Embedder | None = None):
        self.config = config
        self.embedder = embedder or load_embedder(config.embedding)
        self.store = open_for_search(config.lancedb_uri, self.embedder.model_id, self.embedder.dimension)
        self.faiss = FaissIndex(config.faiss_dir, self.embedder.model_id, self.embedder.dimension, config.index)
        self._lock = threading.Lock()
        self._faiss_stamp: float | None = None
        self._checked = 0.0
        self._table_version: int | None = None
        self._meta: dict[int, tuple[str, str, tuple, datetime | None]] = {}
        self.recall = RecallView(config)
        self._query_vectors: dict[str, np.ndarray] = {}
        self._vectors_lock = threading.Lock()

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
            stamp = file_mtime(self.faiss.meta_path)
            if stamp != self._faiss_stamp:
                self.faiss.load()
                self._faiss_stamp = stamp
            if self.store.exists():
                version = self.store.latest_version()
                if version != self._table_version:
                    self._meta = {
                        r["row_id"]: (r["kind"], r["chunk_id"], position_key(r), r["created_at"])
                        for r in self.store.rows(_META_COLUMNS)
                    }
                    self._table_version = version
            self.recall.refresh()

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        kind: str | None = None,
        mode: str | None = None,
        log: bool = True,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        include_discard: bool = False,
        now: datetime | None = None,
    ) -> list[Hit]:
        """The k best hits the tiers allow.

        ``since``/``until`` (dates or expressions) or a span the query names filter by date.
        """
        query, k, kind, mode = validate_request(self.config, query, k, kind, mode)
        now = now or datetime.now(UTC).replace(tzinfo=None)
        span = bounds(since, until, now=now, timezone=self.config.schedule.timezone)
        if span is None and self.config.search.time_expressions:
            named = find_in_query(query, now=now, timezone=self.config.schedule.timezone)
            if named is not None:
                query, span = named
        started = time.perf_counter()
        self._refresh()
        if not self._meta:
            hits: list[Hit] = []
        else:
            depth = max(50, 4 * k)
            cosines: dict[int, float] = {}
            if mode == "vector":
                candidates, known = self._vector_scores(query, depth, kind, span)
                cosines = candidates
            elif mode == "fts":
                rows = self.store.fts_search(query, depth, kind=kind, where=span.where() if span else None)
                candidates, known = {r["row_id"]: float(r["_score"]) for r in rows}, {r["row_id"]: r for r in rows}
            else:
                candidates, known, cosines = self._hybrid(query, depth, kind, span)
            ranked = rank(
                candidates, self._chunk_of, self.recall, self.config, k=k, include_discard=include_discard, now=now
            )
            rows = self._rows([r.row_id for r in ranked], known)
            hits = [_hit(rows[r.row_id], r, mode, cosines.get(r.row_id)) for r in ranked if r.row_id in rows]
        if log:
            from memory_pipeline.index.search_log import log_search

            latency = (time.perf_counter() - started) * 1000
            log_search(
                self.config,
                query=query,
                mode=mode,
                kind=kind,
                k=k,
                hit_ids=[h.chunk_id for h in hits],
                latency_ms=latency,
            )
        return hits

    def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding, remembered for the last few queries.

        The proxy routes and retrieves with the same text.
        """
        with self._vectors_lock:
            vector = self._query_vectors.get(query)
        if vector is None:
            vector = self.embedder.embed_query(query)
            with self._vectors_lock:
                self._query_vectors[query] = vector
                while len(self._query_vectors) > _QUERY_VECTORS_KEPT:
                    self._query_vectors.pop(next(iter(self._query_vectors)))
        return vector

    def _chunk_of(self, row_id: int) -> tuple[str, tuple, datetime | None]:
        _, chunk_id, position, created = self._meta.get(row_id, ("", "", (row_id,), None))
        return chunk_id, position, created

    def _allowed(self, row_id: int, kind: str | None, span: TimeSpan | None) -> bool:
        meta = self._meta.get(row_id)
        if meta is None:
            return kind is None and span is None
        return (kind is None or meta[0] == kind) and (span is None or span.contains(meta[3]))

    def _vector_scores(
        self, query: str, depth: int, kind: str | None, span: TimeSpan | None = None
    ) -> tuple[dict[int, float], dict[int, dict]]:
        """Nearest chunks as row_id -> cosine, plus any rows already read on the way.

        FAISS answers from memory; kind and time filters are applied with the in-memory row map,
        over-fetching, and fall back to LanceDB's pre-filtered search when too few remain.
        """
        vector = self.query_vector(query)
        if self.faiss.ntotal:
            filtered = kind is not None or span is not None
            fetch = depth if not filtered else min(self.faiss.ntotal, depth * 8)
            scores, ids = self.faiss.search(vector, fetch)
            found = {
                int(i): float(s)
                for s, i in zip(scores, ids, strict=True)
                if int(i) >= 0 and (not filtered or self._allowed(int(i), kind, span))
            }
            # FAISS is exact here: what passed the filter is the true top of the allowed rows, so a quarter of the
            # depth (at least the k asked for) is enough to rank; fewer means the filter is narrow: ask LanceDB.
            if len(found) >= (depth if not filtered else depth // 4) or fetch >= self.faiss.ntotal:
                return dict(list(found.items())[:depth]), {}
        rows = self.store.vector_search(vector, depth, kind=kind, where=span.where() if span else None)
        return {r["row_id"]: float(r["_score"]) for r in rows}, {r["row_id"]: r for r in rows}

    def _rows(self, row_ids: list[int], known: dict[int, dict]) -> dict[int, dict]:
        missing = [i for i in row_ids if i not in known]
        return {**known, **(self.store.get_rows(missing) if missing else {})}

    def hybrid_candidates(
        self, query: str, k: int, kind: str | None = None
    ) -> tuple[dict[int, float], dict[int, float], dict[int, dict]]:
        """Full-text and vector scores (row_id -> score) of what hybrid fuses for a top ``k``.

        Also the rows read on the way.
        """
        depth = max(50, 4 * k)
        self._refresh()
        fts_rows = self.store.fts_search(query, depth, kind=kind)
        vector_scores, known = self._vector_scores(query, depth, kind)
        fts_scores = {row["row_id"]: float(row["_score"]) for row in fts_rows}
        return fts_scores, vector_scores, {**known, **{row["row_id"]: row for row in fts_rows}}

    def rows_of(self, row_ids: list[int], known: dict[int, dict] | None = None) -> dict[int, dict]:
        """Rows by row_id, reading from the store only those not in ``known``."""
        return self._rows(row_ids, known or {})

    def _hybrid(self, query: str, depth: int, kind: str | None, span: TimeSpan | None):
        """Fused scores, rows read on the way, and the vector side's cosines."""
        fts_rows = self.store.fts_search(query, depth, kind=kind, where=span.where() if span else None)
        vector_scores, known = self._vector_scores(query, depth, kind, span)
        fused = fuse(
            {row["row_id"]: float(row["_score"]) for row in fts_rows},
            vector_scores,
            fts_weight=self.config.search.hybrid_fts_weight,
        )
        return fused, {**known, **{row["row_id"]: row for row in fts_rows}}, vector_scores


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


def validate_request(
    config: Config, query: str, k: int | None, kind: str | None, mode: str | None
) -> tuple[str, int, str | None, str]:
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


def search(
    config: Config,
    query: str,
    *,
    k: int | None = None,
    kind: str | None = None,
    mode: str | None = None,
    embedder: Embedder | None = None,
    log: bool = True,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    include_discard: bool = False,
) -> list[Hit]:
    """One search in this process (loads the model: seconds; the service keeps it loaded)."""
    validate_request(config, query, k, kind, mode)
    bounds(since, until, timezone=config.schedule.timezone)
    return Searcher(config, embedder=embedder).search(
        query, k=k, kind=kind, mode=mode, log=log, since=since, until=until, include_discard=include_discard
    )


def _hit(row: dict, entry, mode: str, similarity: float | None = None) -> Hit:
    fields = {name: row.get(name) for name in Hit.model_fields if name in row}
    return Hit(
        **fields,
        score=entry.score,
        relevance=entry.relevance,
        similarity=similarity,
        mode=mode,
        tier=entry.tier,
        item_id=entry.item_id,
        superseded_by=entry.superseded_by,
    )
