"""Incremental indexing: make the chunk stores equal to the document store, by diff.

Because each run compares what *should* be indexed (the docstore's document keys) with what
*is* (the chunk table's), it is idempotent and crash-safe: a run with no changes embeds
nothing; a run killed at any point leaves LanceDB at its last commit, and the next run redoes
exactly the unfinished documents. FAISS is then patched (or rebuilt) to mirror LanceDB's ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, Field

from memory_pipeline.chunking import chunk_document
from memory_pipeline.config import Config
from memory_pipeline.docstore import DocumentStore
from memory_pipeline.embedding import Embedder
from memory_pipeline.embedding_cache import EmbeddingCache, embed_with_cache
from memory_pipeline.index.faiss_store import FaissIndex
from memory_pipeline.index.lancedb_store import ChunkStore

logger = logging.getLogger(__name__)
DOC_BATCH = 200


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
    seconds: float = 0.0
    embed_seconds: float = 0.0


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
    return ChunkStore(config.lancedb_uri, model_id, dimension), FaissIndex(config.faiss_dir, model_id, dimension, config.index)


def sync_index(
    config: Config,
    docstore: DocumentStore,
    embedder: Embedder,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> IndexReport:
    log = log or logger.info
    started = time.perf_counter()
    report = IndexReport(model_id=embedder.model_id)
    store, faiss_index = open_stores(config, embedder.model_id, embedder.dimension)
    wanted = docstore.content_hashes()
    indexed = store.indexed_documents()
    stale = [d for d, key in wanted.items() if indexed.get(d) != key]
    gone = [d for d in indexed if d not in wanted]
    log(f"index {embedder.model_id}: {len(stale)} documents to (re)index, {len(gone)} to remove, {len(wanted) - len(stale)} unchanged")

    if gone:
        before = store.count()
        store.delete_documents(gone)
        report.docs_deleted = len(gone)
        report.chunks_removed += before - store.count()
    cache = EmbeddingCache(config.cache_dir / "embeddings.sqlite")
    bar = _progress(len(stale), progress)
    try:
        for start in range(0, len(stale), DOC_BATCH):
            batch_ids = stale[start : start + DOC_BATCH]
            docs = list(docstore.get_many(batch_ids))
            chunks = [
                c
                for doc in docs
                for c in chunk_document(doc, config.chunking, max_model_tokens=embedder.max_tokens, count_model_tokens=embedder.count_tokens)
            ]
            texts = {c.text_hash: c.text for c in chunks}
            old_ids = store.chunk_ids(batch_ids)
            new_ids = {c.chunk_id for c in chunks}
            t0 = time.perf_counter()
            vectors, embedded = embed_with_cache(embedder, texts, cache, show_progress=False)
            report.embed_seconds += time.perf_counter() - t0
            report.embedded += embedded
            report.cache_hits += len(texts) - embedded
            store.replace_documents({d.doc_id: wanted[d.doc_id] for d in docs}, chunks, vectors)
            report.docs_indexed += len(docs)
            report.chunks_added += len(new_ids - old_ids)
            report.chunks_removed += len(old_ids - new_ids)
            if bar is not None:
                bar.update(len(batch_ids))
            log(f"indexed {min(start + DOC_BATCH, len(stale))}/{len(stale)} documents ({report.embedded} chunks embedded, {report.cache_hits} from cache)")
    finally:
        if bar is not None:
            bar.close()
        cache.close()

    report.chunks_total = store.count()
    if stale or gone:
        store.optimize()
    else:
        store.ensure_fts_index()
    report.faiss_rebuilt = sync_faiss(store, faiss_index)
    report.faiss_ntotal = faiss_index.ntotal
    report.seconds = round(time.perf_counter() - started, 3)
    report.embed_seconds = round(report.embed_seconds, 3)
    return report


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
    from memory_pipeline.embedding import model_identity

    model_id = model_identity(config.embedding.model)
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
