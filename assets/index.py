"""Index group: documents -> chunks -> vectors in LanceDB and FAISS, checked to agree; retrieval eval."""

import dagster as dg

from assets.ingest import article_documents, dialogue_documents, lecture_documents
from assets.metadata import counts_table, table
from assets.resources import EmbedderResource, MemoryPipelineResource, StoresResource
from memory_pipeline.display import position
from memory_pipeline.index.lancedb_store import ChunkStore
from memory_pipeline.records import Kind

INDEX_GROUP = "index"
_PREVIEW_PER_KIND = 3
_PREVIEW_COLUMNS = ["title", "kind", "ordinal", "turn_index", "page", "start", "end", "heading", "text"]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "chunks",
            deps=[dialogue_documents, article_documents, lecture_documents, "chunk_embeddings"],
            description="Token-aware chunks with vectors and a Russian+English full-text index "
            "(LanceDB, one table per embedding model).",
            kinds={"lancedb"},
        ),
        dg.AssetSpec(
            "faiss_index",
            deps=["chunks"],
            description="FAISS index mirroring the LanceDB vectors with the same int64 ids; written atomically.",
            kinds={"faiss"},
        ),
    ],
    group_name=INDEX_GROUP,
    can_subset=False,
)
def chunk_index(
    context: dg.AssetExecutionContext,
    pipeline: MemoryPipelineResource,
    embedder: EmbedderResource,
    stores: StoresResource,
):
    """Bring the chunk stores in line with the document store; only changed documents are re-embedded."""
    from memory_pipeline.index.sync import sync_index

    model = embedder.embedder
    report = sync_index(pipeline.config, stores.documents, model, progress=True, log=context.log.info)
    if report.not_migrated:
        context.log.error(report.migration_line())
    store = stores.chunks()
    yield dg.MaterializeResult(
        asset_key="chunks",
        metadata={
            "model_id": report.model_id,
            "chunks_total": dg.MetadataValue.int(report.chunks_total),
            "chunks_added": dg.MetadataValue.int(report.chunks_added),
            "chunks_removed": dg.MetadataValue.int(report.chunks_removed),
            "documents_indexed": dg.MetadataValue.int(report.docs_indexed),
            "documents_deleted": dg.MetadataValue.int(report.docs_deleted),
            "embedded": dg.MetadataValue.int(report.embedded),
            "cache_hits": dg.MetadataValue.int(report.cache_hits),
            "seconds": dg.MetadataValue.float(report.seconds),
            "migrated_from": counts_table(report.migrated_from, "earlier table", "documents"),
            "not_migrated": dg.MetadataValue.int(report.not_migrated),
            "chunks_per_kind": counts_table(_chunks_per_kind(store), "kind", "chunks"),
            "preview": table(_chunk_samples(store), ["title", "kind", "position", "text"], cell_chars=160),
        },
    )
    yield dg.MaterializeResult(
        asset_key="faiss_index",
        metadata={
            "ntotal": dg.MetadataValue.int(report.faiss_ntotal),
            "index_type": report.faiss_index_type,
            "dimension": dg.MetadataValue.int(model.dimension),
            "rebuilt": report.faiss_rebuilt,
            "path": dg.MetadataValue.path(report.faiss_path),
            "model_id": report.model_id,
        },
    )


def _chunks_per_kind(store: ChunkStore) -> dict[str, int]:
    if not store.exists():
        return {}
    return {kind.value: store.table.count_rows(f"kind = '{kind.value}'") for kind in Kind}


def _chunk_samples(store: ChunkStore) -> list[dict]:
    """The first few chunks of each kind, with where each sits in its document."""
    if not store.exists():
        return []
    rows = [
        row
        for kind in Kind
        for row in store.table.search()
        .where(f"kind = '{kind.value}'")
        .select(_PREVIEW_COLUMNS)
        .limit(_PREVIEW_PER_KIND)
        .to_list()
    ]
    return [{"title": r["title"], "kind": r["kind"], "position": _position(r), "text": r["text"]} for r in rows]


def _position(row: dict) -> str:
    """Chunk number, plus the exchange, page, time span or heading its kind has (as search shows them)."""
    where = position(**{name: row[name] for name in ("turn_index", "page", "start", "end", "heading")})
    return " · ".join(part for part in (f"chunk {row['ordinal']}", where) if part)


@dg.asset_check(
    asset="faiss_index", description="LanceDB and FAISS agree: same count and ids; no empty or duplicate chunks."
)
def faiss_index_matches_chunks(pipeline: MemoryPipelineResource) -> dg.AssetCheckResult:
    from memory_pipeline.index.sync import check_consistency

    consistency = check_consistency(pipeline.config)
    return dg.AssetCheckResult(passed=consistency.ok, metadata=consistency.model_dump(mode="json"))


@dg.asset(
    group_name=INDEX_GROUP,
    deps=["chunks", "faiss_index"],
    description="Retrieval evaluation per search mode: the bundled hand-written question set (the questions whose "
    "answers are in this memory; fusion weight tuned on its tune split, reported on the other) and self-supervised "
    "sentences from the indexed dialogues. Declarative automation re-runs it whenever the chunks change, "
    "whichever run changed them.",
    kinds={"python"},
    automation_condition=dg.AutomationCondition.eager(),
)
def retrieval_eval(pipeline: MemoryPipelineResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    from memory_pipeline.index.evaluation import evaluate_questions, evaluate_retrieval
    from memory_pipeline.index.search import Searcher

    config = pipeline.config
    searcher = Searcher(config, embedder=embedder.embedder)
    questions = evaluate_questions(config, searcher=searcher)
    result = evaluate_retrieval(config, searcher=searcher)
    rows = [{"mode": mode, **figures} for mode, figures in result.get("modes", {}).items()]
    columns = list(dict.fromkeys(column for row in rows for column in row)) or ["mode"]
    question_rows = [
        {"part": label, "questions": questions[part]["questions"], "mode": mode, **questions[part][mode]}
        for part, label in (("modes", "all"), ("report", "report split"), ("cross_lingual", "cross-lingual"))
        for mode in ("vector", "fts", "hybrid")
    ]
    question_columns = list(dict.fromkeys(column for row in question_rows for column in row))
    tuning = questions["fusion_tuning"]
    return dg.MaterializeResult(
        metadata={
            "queries": dg.MetadataValue.int(int(result.get("queries", 0))),
            "model_id": str(result.get("model_id", "")),
            "by_mode": table(rows, columns),
            "question_set_answerable": dg.MetadataValue.int(questions["answerable"]),
            "question_set_by_mode": table(question_rows, question_columns),
            "hybrid_fts_weight": dg.MetadataValue.float(float(questions["hybrid_fts_weight"])),
            "hybrid_fts_weight_tuned": dg.MetadataValue.float(float(tuning["best_fts_weight"])),
        }
    )


defs = dg.Definitions(assets=[chunk_index, retrieval_eval], asset_checks=[faiss_index_matches_chunks])
