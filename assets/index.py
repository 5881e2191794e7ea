"""Index group: documents -> chunks -> vectors in LanceDB and FAISS, checked to agree; retrieval eval."""

import dagster as dg

from assets.ingest import article_documents, dialogue_documents, lecture_documents
from assets.metadata import markdown_table
from assets.resources import EmbedderResource, MemoryPipelineResource, StoresResource

INDEX_GROUP = "index"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "chunks",
            deps=[dialogue_documents, article_documents, lecture_documents],
            description="Token-aware chunks with vectors and a Russian+English full-text index (LanceDB, one table per embedding model).",
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
def chunk_index(context: dg.AssetExecutionContext, pipeline: MemoryPipelineResource, embedder: EmbedderResource, stores: StoresResource):
    """Bring the chunk stores in line with the document store; only changed documents are re-embedded."""
    from memory_pipeline.indexer import sync_index

    report = sync_index(pipeline.config, stores.documents, embedder.embedder, progress=True, log=context.log.info)
    figures = report.model_dump(mode="json")
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
            "report": dg.MetadataValue.json(figures),
        },
    )
    yield dg.MaterializeResult(
        asset_key="faiss_index",
        metadata={"ntotal": dg.MetadataValue.int(report.faiss_ntotal), "model_id": report.model_id},
    )


@dg.asset_check(asset="faiss_index", description="LanceDB and FAISS agree: same count and ids; no empty or duplicate chunks.")
def faiss_index_matches_chunks(pipeline: MemoryPipelineResource) -> dg.AssetCheckResult:
    from memory_pipeline.indexer import check_consistency

    consistency = check_consistency(pipeline.config)
    return dg.AssetCheckResult(passed=consistency.ok, metadata=consistency.model_dump(mode="json"))


@dg.asset(
    group_name=INDEX_GROUP,
    deps=["chunks", "faiss_index"],
    description="Self-supervised retrieval evaluation: recall@1/5/10 and MRR per search mode on the indexed dialogues. "
    "Declarative automation re-runs it whenever the chunks change, whichever run changed them.",
    kinds={"python"},
    automation_condition=dg.AutomationCondition.eager(),
)
def retrieval_eval(pipeline: MemoryPipelineResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    from memory_pipeline.retrieval_eval import evaluate_retrieval
    from memory_pipeline.search import Searcher

    config = pipeline.config
    result = evaluate_retrieval(config, searcher=Searcher(config, embedder=embedder.embedder))
    rows = [{"mode": mode, **figures} for mode, figures in result.get("modes", {}).items()]
    return dg.MaterializeResult(
        metadata={
            "queries": dg.MetadataValue.int(int(result.get("queries", 0))),
            "by_mode": markdown_table(rows),
            "result": dg.MetadataValue.json(result),
        }
    )


defs = dg.Definitions(assets=[chunk_index, retrieval_eval], asset_checks=[faiss_index_matches_chunks])
