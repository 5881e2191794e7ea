"""Embedding fanned out over partitions: the expensive half of indexing, split so a cluster can share it.

Indexing is embed (slow, pure computation) then commit (one LanceDB commit per pool, then FAISS).
Only the first half fans out: each partition chunks and embeds the documents to (re)index whose id falls
in its hash range, and leaves the vectors in the embedding cache. The one committing step,
:func:`memory_pipeline.index.sync.sync_index`, then finds every vector there and only writes. Chunk text
depends on the document and the chunking config alone, so what a partition embeds is exactly what the
commit asks for; a document id is in exactly one partition, so no text of a document is embedded twice.
Keeping one writer means no concurrent LanceDB commits, which object stores do not all make safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel

from memory_pipeline.config import Config
from memory_pipeline.index.chunking import chunk_document
from memory_pipeline.index.embedding import Embedder
from memory_pipeline.index.embedding_cache import EmbeddingCache, embed_with_cache
from memory_pipeline.index.lancedb_store import ChunkStore
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.records import partition_of

DOC_BATCH = 200


class PartitionReport(BaseModel):
    """Figures of one partition's embedding work."""

    partition: int
    partitions: int
    documents: int = 0
    chunks: int = 0
    embedded: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the whole process meanwhile: on a loaded machine wall time says little


def documents_to_index(config: Config, docstore: DocumentStore, model_id: str) -> list[str]:
    """Documents whose chunks are missing or were built from another version of them (as sync_index sees it)."""
    wanted = docstore.content_hashes()
    store = ChunkStore(config.lancedb_uri, model_id)
    indexed = store.indexed_documents() if store.exists() else {}
    return sorted(d for d, key in wanted.items() if indexed.get(d) != key)


def embed_partition(
    config: Config,
    docstore: DocumentStore,
    embedder: Embedder,
    partition: int,
    partitions: int,
    *,
    log: Callable[[str], None] = print,
) -> PartitionReport:
    """Chunk and embed this partition's documents to index into the embedding cache; writes no store."""
    started, cpu_started = time.perf_counter(), time.process_time()
    report = PartitionReport(partition=partition, partitions=partitions)
    mine = [
        d for d in documents_to_index(config, docstore, embedder.model_id) if partition_of(d, partitions) == partition
    ]
    report.documents = len(mine)
    with EmbeddingCache(config.embedding_cache_path) as cache:
        for start in range(0, len(mine), DOC_BATCH):
            texts: dict[str, str] = {}
            for doc in docstore.get_many(mine[start : start + DOC_BATCH]):
                chunks = chunk_document(
                    doc, config.chunking, max_model_tokens=embedder.max_tokens, count_model_tokens=embedder.count_tokens
                )[: config.limits.max_chunks_per_document]  # the commit indexes no more of a document (it warns)
                report.chunks += len(chunks)
                texts.update({c.text_hash: c.text for c in chunks})
            _, embedded = embed_with_cache(embedder, texts, cache, show_progress=False)
            report.embedded += embedded
            report.cache_hits += len(texts) - embedded
            log(
                f"partition {partition + 1}/{partitions}: {min(start + DOC_BATCH, len(mine))}/{len(mine)} documents, "
                f"{report.embedded} chunks embedded"
            )
    report.seconds = round(time.perf_counter() - started, 3)
    report.cpu_seconds = round(time.process_time() - cpu_started, 3)
    return report
