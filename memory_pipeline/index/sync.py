"""Incremental indexing: make the chunk stores equal to the document store, by diff.

Because each run compares what *should* be indexed (the docstore's document keys) with what
*is* (the chunk table's), it is idempotent and crash-safe: a run with no changes embeds
nothing; a run killed at any point leaves LanceDB at its last commit, and the next run redoes
exactly the unfinished documents. An edited file is a new document that takes over the lineage
of the version it replaces, so its unchanged chunks keep their ids (see ``plan_lineages``).
FAISS is then patched (or rebuilt) to mirror LanceDB's ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, Field

from memory_pipeline.atomic import exclusive_lock
from memory_pipeline.batch_gc import rare_young_collections
from memory_pipeline.config import Config
from memory_pipeline.index.chunking import chunk_document
from memory_pipeline.index.embedding import Embedder
from memory_pipeline.index.embedding_cache import EmbeddingCache
from memory_pipeline.index.faiss_store import FaissIndex
from memory_pipeline.index.lancedb_store import ChunkStore
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.records import Chunk, Document, Kind, stable_id

logger = logging.getLogger(__name__)
T = TypeVar("T")
DOC_BATCH = 200
EMBED_POOL = 2048
"""Chunks pooled per embedding call and LanceDB commit. The pool is sorted by length before it is
cut into batches, so a larger pool pads less; 2,048 chunks of text and vectors are a few MB, and a
crash costs at most one pool of work (the embedding cache keeps what was embedded)."""
FIRST_POOL = 256
"""Chunks in the first pool of a run: it is chunked before anything can overlap it, so it is small
(a later pool is chunked while the one before it is embedded)."""
LAST_POOL = 256
"""Chunks in the last pool of a run: nothing overlaps its commit, which is short when the pool is small."""


class IndexReport(BaseModel):
    """Figures of one indexing run, shown in the UI and the CLI."""

    model_id: str
    docs_indexed: int = 0
    docs_deleted: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0
    embedded: int = 0
    cache_hits: int = 0
    faiss_ntotal: int = 0
    faiss_rebuilt: bool = False
    faiss_index_type: str = ""
    faiss_path: str = ""
    seconds: float = 0.0
    embed_seconds: float = 0.0
    migrated_from: dict[str, int] = Field(
        default_factory=dict,
        description="model switch: chunk table of an earlier model -> its documents this run embedded into this one's",
    )
    not_migrated: int = Field(
        0, description="documents of those tables, still in the document store, that this table lacks after the run"
    )
    docs_truncated: int = Field(
        0, description="documents with more chunks than limits.max_chunks_per_document; only the first were indexed"
    )

    def migration_line(self) -> str:
        """One line for the CLI and the logs; '' when this run was no model switch."""
        if not self.migrated_from:
            return ""
        tables = ", ".join(f"{name} ({n} documents)" for name, n in sorted(self.migrated_from.items()))
        return (
            f"model switch: re-embedded the documents of {tables} with {self.model_id}; "
            f"{self.not_migrated} documents not migrated; the earlier tables are kept (switching back costs nothing)"
        )


class ConsistencyReport(BaseModel):
    ok: bool
    lancedb_rows: int
    faiss_ntotal: int
    missing_in_faiss: int
    extra_in_faiss: int
    duplicate_chunk_ids: int
    empty_texts: int
    problems: list[str] = Field(default_factory=list)


def open_stores(config: Config, model_id: str, dimension: int) -> tuple[ChunkStore, FaissIndex]:
    return ChunkStore(config.lancedb_uri, model_id, dimension), FaissIndex(
        config.faiss_dir, model_id, dimension, config.index
    )


def sync_index(
    config: Config,
    docstore: DocumentStore,
    embedder: Embedder,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> IndexReport:
    """Index what changed in ``docstore`` since the last run, holding the storage's index lock.

    One indexer at a time: first-time documents are appended without a merge, which would land
    twice if two runs appended them; a second run fails at once, naming the first.
    """
    with exclusive_lock(config.index_lock_path, "an indexing run"), rare_young_collections():
        return _sync_index(config, docstore, embedder, progress=progress, log=log or logger.info)


def _sync_index(
    config: Config, docstore: DocumentStore, embedder: Embedder, *, progress: bool, log: Callable[[str], None]
) -> IndexReport:
    started = time.perf_counter()
    report = IndexReport(model_id=embedder.model_id)
    store, faiss_index = open_stores(config, embedder.model_id, embedder.dimension)
    store.ensure_columns()
    wanted = docstore.content_hashes()
    indexed = store.indexed_documents()
    stale = [d for d, key in wanted.items() if indexed.get(d) != key]
    gone = [d for d in indexed if d not in wanted]
    plan = plan_lineages(store, docstore, stale, gone)
    # A model switch: documents other models' tables hold that this one never had are embedded below
    # (an edited document this table had is ordinary incremental work, even if an old table has it too).
    arriving = set(stale) - set(indexed)
    earlier = {name: docs & arriving for name, docs in store.other_model_documents().items()} if arriving else {}
    earlier = {name: docs for name, docs in earlier.items() if docs}
    log(
        f"index {embedder.model_id}: {len(stale)} documents to (re)index "
        f"({len(plan.replaces)} replacing an earlier version), "
        f"{len(gone)} to remove, {len(wanted) - len(stale)} unchanged"
    )

    report.docs_deleted = len(gone)
    replaced = set(plan.replaces.values())
    removed = [d for d in gone if d not in replaced]  # the replaced ones leave with their new versions
    if removed:
        before = store.count()
        store.delete_documents(removed)
        report.chunks_removed += before - store.count()
    # Two connections: the writer's commit of pool N (WAL) never holds up the lookups for pool N+1.
    cache, writer_cache = EmbeddingCache(config.embedding_cache_path), EmbeddingCache(config.embedding_cache_path)
    bar = _progress(len(stale), progress)
    # While the main thread embeds pool N+1, one writer thread commits pool N and one chunker thread reads
    # and chunks pool N+2: the encoder's workers spend most of their time in numpy without the GIL, so the
    # stemming, LanceDB and chunking work costs them little, and only the first pool's chunking is serial.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer")
    chunker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-chunker")
    written: Future | None = None

    def write(
        docs: list[Document], chunks: list[Chunk], vectors: dict[str, np.ndarray], fresh: dict[str, np.ndarray]
    ) -> None:
        """Cache the new vectors, then replace these documents' chunks in one LanceDB commit (in that
        order: a crash in between leaves the vectors cached for the next run)."""
        doc_ids = [d.doc_id for d in docs]
        earlier = [plan.replaces[d] for d in doc_ids if d in plan.replaces]
        had_rows = [*(d for d in doc_ids if d in indexed), *earlier]  # a first-time document has none to read
        old_ids = store.chunk_ids(had_rows) if had_rows else set()
        new_ids = {c.chunk_id for c in chunks}
        if fresh:
            writer_cache.put_many(embedder.model_id, fresh)
        if had_rows:
            store.replace_documents({d: wanted[d] for d in doc_ids}, chunks, vectors, replaced=earlier)
        else:
            store.add_documents({d: wanted[d] for d in doc_ids}, chunks, vectors)
        report.docs_indexed += len(docs)
        report.chunks_added += len(new_ids - old_ids)
        report.chunks_removed += len(old_ids - new_ids)
        if bar is not None:
            bar.update(len(docs))
        log(
            f"indexed {report.docs_indexed}/{len(stale)} documents "
            f"({report.embedded} chunks embedded, {report.cache_hits} from cache)"
        )

    def embed(pool: list[tuple[Document, list[Chunk]]]) -> tuple:
        """The pool's documents and chunks, all their vectors and the newly embedded ones. One call for
        the pool: the embedder batches it by length, fuller batches than small calls."""
        docs = [doc for doc, _ in pool]
        chunks = [c for _, doc_chunks in pool for c in doc_chunks]
        texts = {c.text_hash: c.text for c in chunks}
        t0 = time.perf_counter()
        vectors = cache.get_many(embedder.model_id, list(texts))
        missing = [h for h in texts if h not in vectors]
        fresh: dict[str, np.ndarray] = {}
        if missing:
            fresh = dict(zip(missing, embedder.embed_passages([texts[h] for h in missing]), strict=True))
        vectors.update(fresh)
        report.embed_seconds += time.perf_counter() - t0
        report.embedded += len(missing)
        report.cache_hits += len(texts) - len(missing)
        return docs, chunks, vectors, fresh

    def hand_to_writer(embedded: tuple) -> None:
        nonlocal written
        if written is not None:
            written.result()
        written = writer.submit(write, *embedded)

    def chunked_pools() -> Iterator[list[tuple[Document, list[Chunk]]]]:
        """The stale documents read and chunked, in pools of EMBED_POOL chunks or more (the first of
        FIRST_POOL); the last one split."""
        pool: list[tuple[Document, list[Chunk]]] = []
        size, enough = 0, min(FIRST_POOL, EMBED_POOL)
        docs = docstore.get_many(stale)
        for start in range(0, len(stale), DOC_BATCH):
            for doc in islice(docs, DOC_BATCH):
                doc_chunks, all_chunks = indexed_chunks(doc, config, embedder, lineage=plan.lineages[doc.doc_id])
                if all_chunks > len(doc_chunks):
                    logger.warning(
                        "%s (%s): %d chunks, only the first %d indexed (limits.max_chunks_per_document)",
                        doc.source_path,
                        doc.doc_id,
                        all_chunks,
                        len(doc_chunks),
                    )
                    report.docs_truncated += 1
                pool.append((doc, doc_chunks))
                size += len(doc_chunks)
            if start + DOC_BATCH >= len(stale):
                yield from split_last_pool(pool, min(LAST_POOL, EMBED_POOL))
            elif size >= enough:
                yield pool
                pool, size, enough = [], 0, EMBED_POOL

    try:
        embedded = None
        for pool in read_ahead(chunked_pools(), chunker):
            if embedded is not None:  # pool N is committed while N+1 is embedded, not while N+1 is chunked
                hand_to_writer(embedded)
            embedded = embed(pool)
        if embedded is not None:
            hand_to_writer(embedded)
        if written is not None:
            written.result()
    finally:
        chunker.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        if bar is not None:
            bar.close()
        cache.close()
        writer_cache.close()

    report.chunks_total = store.count()
    if earlier:
        present = set(store.indexed_documents())
        report.migrated_from = {name: len(docs & present) for name, docs in earlier.items()}
        report.not_migrated = len(set().union(*earlier.values()) - present)
        log(report.migration_line())
    # FAISS reads the committed rows while LanceDB builds or folds its indexes: both wait mostly in
    # native code, and a compaction keeps every row_id, so the mirror matches the optimized table.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-faiss") as side:
        faiss_synced = side.submit(sync_faiss, store, faiss_index)
        if stale or gone:
            store.optimize()
        else:
            store.ensure_fts_index()
        report.faiss_rebuilt = faiss_synced.result()
    report.faiss_ntotal = faiss_index.ntotal
    report.faiss_index_type, report.faiss_path = faiss_index.kind, str(faiss_index.path)
    report.seconds = round(time.perf_counter() - started, 3)
    report.embed_seconds = round(report.embed_seconds, 3)
    return report


def indexed_chunks(
    doc: Document, config: Config, embedder: Embedder, *, lineage: str | None = None
) -> tuple[list[Chunk], int]:
    """The chunks of ``doc`` that are indexed (the first ``limits.max_chunks_per_document``), and how many it has.

    The embedding fan-out embeds exactly these, so the commit finds every vector it needs in the cache.
    """
    chunks = chunk_document(
        doc,
        config.chunking,
        lineage=lineage,
        max_model_tokens=embedder.max_tokens,
        count_model_tokens=embedder.count_tokens,
    )
    return chunks[: config.limits.max_chunks_per_document], len(chunks)


def read_ahead(items: Iterator[T], executor: ThreadPoolExecutor) -> Iterator[T]:
    """``items``, each next one produced on ``executor`` while the caller works on the current one;
    an error producing one is raised to the caller when it asks for that item."""
    end = object()
    pending = executor.submit(next, items, end)
    while (item := pending.result()) is not end:
        pending = executor.submit(next, items, end)
        yield item


def split_last_pool(pool: list[tuple[Document, list[Chunk]]], end: int) -> list[list[tuple[Document, list[Chunk]]]]:
    """The run's last pool as two, the second of its last documents holding about ``end`` chunks (where
    the pool has more than twice that): the first one's commit then overlaps the second's embedding."""
    tail = 0
    for cut in range(len(pool), 0, -1):
        tail += len(pool[cut - 1][1])
        if tail >= end:
            break
    if sum(len(chunks) for _, chunks in pool) - tail < end:
        return [pool] if pool else []
    return [pool[: cut - 1], pool[cut - 1 :]]


@dataclass(frozen=True)
class LineagePlan:
    """For each document to (re)index: the lineage its chunk ids derive from, and the indexed
    earlier version it replaces, where it replaces one (that version leaves in the same commit)."""

    lineages: dict[str, str]
    replaces: dict[str, str]


def plan_lineages(store: ChunkStore, docstore: DocumentStore, stale: Sequence[str], gone: Sequence[str]) -> LineagePlan:
    """Choose the lineage of every document to (re)index (``stale``), given the indexed ones that left (``gone``).

    Why lineages: a document's id is a hash of its file's bytes wherever the export has no id of its
    own (articles, lectures, notes), so an edited file is a new document. Chunk ids made from that
    id would all change with one edited paragraph: FAISS would drop and re-add every chunk, and the
    search log's usage of the unchanged ones (kept by chunk id) would be orphaned. So chunk ids
    derive from a lineage that survives edits:

    - a document already indexed keeps its lineage (a moved or retitled file is the same document);
    - a new document takes the lineage of the one it replaces: the gone document from the same
      source (same kind and path), where that source now gives exactly one new document and gave
      exactly one gone one (a file of several conversations without ids starts new lineages);
    - any other document starts a lineage of its own, its doc_id, which is also what chunk ids
      derived from before lineages existed, so an older table keeps its ids.

    The lineage is kept with the chunk rows rather than derived from the ingest manifest, because
    by the time the index runs the manifest has forgotten the replaced version, and a moved file
    shows up there under a new path; only the chunk table still knows what was indexed before.
    Lineages stay unique among indexed documents (a new one that clashes with a lineage in use,
    e.g. a copy of a file's first version, gets one derived from it), so chunk ids never collide
    between documents: two files with the same paragraph give it two chunk ids.
    """
    known = store.lineages(stale)
    lineages = {d: known[d]["lineage"] for d in stale if d in known}
    new = [d for d in stale if d not in known]
    earlier = store.lineages(gone) if new and gone else {}
    replaces = _same_source(docstore, new, earlier)
    for doc_id, old in replaces.items():
        lineages[doc_id] = earlier[old]["lineage"]
    used = set(lineages.values())
    released = set(gone)  # documents leaving in this run: their lineages are free, or passed on (hence used)
    fresh = sorted(d for d in new if d not in lineages)
    owners = store.lineage_owners(fresh)

    def taken(lineage: str) -> bool:
        owner = owners.get(lineage)
        return lineage in used or (owner is not None and owner not in released)

    for doc_id in fresh:
        lineage = doc_id
        while taken(lineage):
            lineage = stable_id(doc_id, lineage)
            owners.update(store.lineage_owners([lineage]))
        lineages[doc_id] = lineage
        used.add(lineage)
    return LineagePlan(lineages, replaces)


def _same_source(docstore: DocumentStore, new: Sequence[str], gone: dict[str, dict]) -> dict[str, str]:
    """new doc_id -> the gone document of the same kind and source path, where each side has exactly one."""
    wanted = set(new)
    arrived: dict[tuple[str, str], list[str]] = {}
    for kind in {row["kind"] for row in gone.values()}:
        for row in docstore.summary_rows(Kind(kind)):
            if row["doc_id"] in wanted:
                arrived.setdefault((kind, row["source_path"]), []).append(row["doc_id"])
    left: dict[tuple[str, str], list[str]] = {}
    for doc_id, row in gone.items():
        left.setdefault((row["kind"], row["source_path"]), []).append(doc_id)
    return {
        docs[0]: left[source][0]
        for source, docs in arrived.items()
        if len(docs) == 1 and len(left.get(source, ())) == 1
    }


def sync_faiss(store: ChunkStore, faiss_index: FaissIndex) -> bool:
    """Make the FAISS file hold exactly LanceDB's ids; returns True when it had to be rebuilt."""
    loaded = faiss_index.load()
    lance_ids = store.row_ids()
    target_kind = faiss_index.wanted_kind(len(lance_ids))
    if not loaded or faiss_index.kind != target_kind:
        faiss_index.rebuild(store.iter_vectors())
        faiss_index.save()
        return True
    faiss_ids = faiss_index.ids()
    missing = np.setdiff1d(lance_ids, faiss_ids, assume_unique=False)
    extra = np.setdiff1d(faiss_ids, lance_ids, assume_unique=False)
    if not len(missing) and not len(extra):
        return False
    if not faiss_index.remove(extra):
        faiss_index.rebuild(store.iter_vectors())
        faiss_index.save()
        return True
    for ids, vectors in store.iter_vectors(missing.tolist()):
        faiss_index.add(ids, vectors)
    faiss_index.save()
    return False


def check_consistency(config: Config) -> ConsistencyReport:
    """LanceDB and FAISS agree (same count and ids); no empty or duplicate chunks. Loads no model."""
    from memory_pipeline.index.embedding import embedder_model_id

    model_id = embedder_model_id(config.embedding)
    store = ChunkStore(config.lancedb_uri, model_id)
    dimension = store.table.schema.field("vector").type.list_size if store.exists() else 0
    faiss_index = FaissIndex(config.faiss_dir, model_id, dimension, config.index)
    faiss_index.load()
    rows = store.rows(["row_id", "chunk_id", "text"])
    lance_ids = np.array([r["row_id"] for r in rows], dtype=np.int64)
    faiss_ids = faiss_index.ids()
    chunk_ids = [r["chunk_id"] for r in rows]
    report = ConsistencyReport(
        ok=True,
        lancedb_rows=len(rows),
        faiss_ntotal=faiss_index.ntotal,
        missing_in_faiss=int(len(np.setdiff1d(lance_ids, faiss_ids))),
        extra_in_faiss=int(len(np.setdiff1d(faiss_ids, lance_ids))),
        duplicate_chunk_ids=len(chunk_ids) - len(set(chunk_ids)) + len(lance_ids) - len(np.unique(lance_ids)),
        empty_texts=sum(1 for r in rows if not (r["text"] or "").strip()),
    )
    if report.lancedb_rows != report.faiss_ntotal:
        report.problems.append(f"LanceDB has {report.lancedb_rows} rows, FAISS {report.faiss_ntotal} vectors")
    if report.missing_in_faiss or report.extra_in_faiss:
        report.problems.append(f"ids differ: {report.missing_in_faiss} missing in FAISS, {report.extra_in_faiss} extra")
    if report.duplicate_chunk_ids:
        report.problems.append(f"{report.duplicate_chunk_ids} duplicate chunk ids")
    if report.empty_texts:
        report.problems.append(f"{report.empty_texts} empty chunks")
    report.ok = not report.problems
    return report


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="indexing documents", unit="doc")
