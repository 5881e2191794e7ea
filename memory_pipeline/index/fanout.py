"""Embedding fanned out over partitions: the expensive half of indexing, split so a cluster can share it.

Indexing is embed (slow, pure computation) then commit (one LanceDB commit per pool, then FAISS).
Only the first half fans out: each partition chunks and embeds the documents to (re)index whose id falls
in its hash range, and leaves the vectors in the embedding cache. The one committing step,
:func:`memory_pipeline.index.sync.sync_index`, then finds every vector there and only writes. Chunk text
depends on the document and the chunking config alone, so what a partition embeds is exactly what the
commit asks for; a document id is in exactly one partition, so no text of a document is embedded twice.
Keeping one writer means no concurrent LanceDB commits, which object stores do not all make safe.

Which worker runs which range step is the executor's choice, and dask does not promise each worker its share
(with 4 ranges on 2 workers its work stealing had one worker run 3 while the other idled). So with a claims
folder the steps of one run share the work: each range is cut into batches of documents, a step claims a batch
(a file created exclusively) before embedding it, takes its own range's batches first and then helps with the
other ranges'. Every batch is still embedded exactly once; a step that starts when all are claimed is done.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from memory_pipeline.batch_gc import rare_young_collections
from memory_pipeline.config import Config
from memory_pipeline.index.embedding import Embedder
from memory_pipeline.index.embedding_cache import EmbeddingCache, embed_with_cache
from memory_pipeline.index.lancedb_store import ChunkStore
from memory_pipeline.index.sync import indexed_chunks
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
    claims: Path | None = None,
    log: Callable[[str], None] = print,
) -> PartitionReport:
    """Chunk and embed this partition's documents to index into the embedding cache; writes no store.

    With ``claims`` (a folder the run's range steps share), the step then helps with the other ranges'
    batches that no step has claimed yet, so the ranges' work is shared by whichever steps run at once.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    report = PartitionReport(partition=partition, partitions=partitions)
    todo = documents_to_index(config, docstore, embedder.model_id)
    ranges = [partition] + ([(partition + k) % partitions for k in range(1, partitions)] if claims else [])
    if claims:
        _clear_other_runs(claims)
    with EmbeddingCache(config.embedding_cache_path) as cache, rare_young_collections():
        for r in ranges:
            docs = [d for d in todo if partition_of(d, partitions) == r]
            for start in range(0, len(docs), DOC_BATCH):
                if claims and not _claim(claims / f"{r}-{start}"):
                    continue
                batch = docs[start : start + DOC_BATCH]
                report.documents += len(batch)
                texts: dict[str, str] = {}
                for doc in docstore.get_many(batch):
                    chunks, _ = indexed_chunks(doc, config, embedder)  # the commit warns of a truncated one
                    report.chunks += len(chunks)
                    texts.update({c.text_hash: c.text for c in chunks})
                _, embedded = embed_with_cache(embedder, texts, cache, show_progress=False)
                report.embedded += embedded
                report.cache_hits += len(texts) - embedded
                log(
                    f"partition {partition + 1}/{partitions}: range {r + 1}, {min(start + DOC_BATCH, len(docs))}/"
                    f"{len(docs)} documents; {report.embedded} chunks embedded by this step"
                )
    report.seconds = round(time.perf_counter() - started, 3)
    report.cpu_seconds = round(time.process_time() - cpu_started, 3)
    return report


def claims_dir(config: Config, run_key: str) -> Path:
    """The claims folder of one run's range steps (per run: a crashed run's claims hold back no later run)."""
    return config.embed_claims_dir / run_key


def _claim(path: Path) -> bool:
    """True for the one step that creates the file (O_EXCL is atomic on local and NFS v3+ folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)  # another run's step may have cleared it meanwhile
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _clear_other_runs(claims: Path) -> None:
    """Earlier runs' claims; a run still going elsewhere only loses the sharing (its steps may then embed
    a batch twice into the cache, which is harmless), never a result."""
    if claims.parent.is_dir():
        for other in claims.parent.iterdir():
            if other.name != claims.name:
                shutil.rmtree(other, ignore_errors=True)
