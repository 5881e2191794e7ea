"""Promote group: score every item (the memory loop) and route it to cache, RAG, a LoRA set or discard."""

import dagster as dg

from assets.metadata import counts_table, histogram, table
from assets.resources import EmbedderResource, MemoryPipelineResource
from memory_pipeline.display import position_of

PROMOTE_GROUP = "promote"
# Each signal's value is left to `memory-pipeline explain ITEM_ID`: nine more figures per row make the table
# too wide to read.
_ITEM_COLUMNS = ["score", "tier", "tier_rule", "title", "position", "date", "preview", "item_id"]
_ITEM_CELL_CHARS = 120


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "item_scores",
            deps=["chunks"],
            description="Every item (dialogue exchange, article section, lecture window) with its signals: novelty, "
            "redundancy, recurrence, density, importance, quality, usage, recency; computed incrementally.",
            kinds={"python"},
        ),
        dg.AssetSpec(
            "item_tiers",
            deps=["item_scores"],
            description="Each item's tier (`cache` / `rag` / `lora:<adapter>` / `discard`) and adapters, "
            "from the combined score and the thresholds in config; a config change re-tiers without re-embedding.",
            kinds={"python"},
        ),
    ],
    group_name=PROMOTE_GROUP,
    can_subset=False,
)
def item_promotion(context: dg.AssetExecutionContext, pipeline: MemoryPipelineResource, embedder: EmbedderResource):
    from memory_pipeline.scoring.engine import run_promotion

    config = pipeline.config
    report = run_promotion(config, progress=True, embedder=embedder.embedder, log=context.log.info)
    context.log.info(
        f"scored {report.items_total} items ({report.items_new} new, {report.items_changed} changed, "
        f"{report.items_rescored} rescored) in {report.seconds:.1f}s"
    )
    yield dg.MaterializeResult(
        asset_key="item_scores",
        metadata={
            "items_total": dg.MetadataValue.int(report.items_total),
            "items_new": dg.MetadataValue.int(report.items_new),
            "items_changed": dg.MetadataValue.int(report.items_changed),
            "items_rescored": dg.MetadataValue.int(report.items_rescored),
            "items_removed": dg.MetadataValue.int(report.items_removed),
            "signals_computed": counts_table(report.signals_computed, "signal", "items"),
            "seconds": dg.MetadataValue.float(report.seconds),
            "score_histogram": histogram(
                report.histogram,
                rag_threshold=config.promote.rag_threshold,
                lora_threshold=config.promote.lora_threshold,
            ),
            "top_items": table([_item_row(i) for i in report.top], _ITEM_COLUMNS, cell_chars=_ITEM_CELL_CHARS),
            "bottom_items": table([_item_row(i) for i in report.bottom], _ITEM_COLUMNS, cell_chars=_ITEM_CELL_CHARS),
        },
    )
    yield dg.MaterializeResult(
        asset_key="item_tiers",
        metadata={
            "per_tier": counts_table(report.tiers, "tier", "items"),
            "per_adapter": counts_table(report.adapters, "adapter", "items"),
            **{f"tier_{name.replace(':', '_')}": dg.MetadataValue.int(count) for name, count in report.tiers.items()},
            **{f"adapter_{name}": dg.MetadataValue.int(count) for name, count in report.adapters.items()},
        },
    )


def _item_row(item) -> dict:
    return {
        "score": round(item.score, 3),
        "tier": item.tier,
        "tier_rule": item.tier_rule,
        "title": item.title,
        "position": position_of(item.unit),
        "date": item.created_at.date().isoformat() if item.created_at else "",
        "preview": item.preview,
        "item_id": item.item_id,
    }


@dg.asset_check(
    asset="item_tiers",
    description="Every indexed item has exactly one tier, and no item is both promoted and discarded.",
)
def item_tiers_complete_and_exclusive(pipeline: MemoryPipelineResource) -> dg.AssetCheckResult:
    from memory_pipeline.index.embedding import embedder_model_id
    from memory_pipeline.index.lancedb_store import ChunkStore
    from memory_pipeline.scoring.checks import check_tiers

    config = pipeline.config
    store = ChunkStore(config.lancedb_uri, embedder_model_id(config.embedding))
    result = check_tiers(config, {row["doc_id"] for row in store.rows(["doc_id"])})
    return dg.AssetCheckResult(passed=result.ok, metadata=result.model_dump(mode="json"))


defs = dg.Definitions(assets=[item_promotion], asset_checks=[item_tiers_complete_and_exclusive])
