"""Invariants of the memory loop's output, for the Dagster asset check and the tests."""

from __future__ import annotations

from pydantic import BaseModel, Field

from memory_pipeline.config import Config
from memory_pipeline.scoring.store import ScoreStore, scores_dir
from memory_pipeline.scoring.tiers import Tier


class TierCheck(BaseModel):
    ok: bool
    items: int
    documents_indexed: int
    documents_without_items: int
    items_without_tier: int
    unknown_tiers: int
    promoted_without_adapter: int
    adapters_outside_lora: int
    problems: list[str] = Field(default_factory=list)


def check_tiers(config: Config, indexed_doc_ids: set[str]) -> TierCheck:
    """Every indexed document's items have exactly one known tier; adapters only on lora items."""
    store = ScoreStore(scores_dir(config))
    frame = store.load_frame(["item_id", "doc_id", "tier", "tier_base", "adapters"]) if store.exists() else None
    adapters = {a.name for a in config.adapters}
    valid = {t.value for t in Tier if t is not Tier.LORA} | {f"lora:{name}" for name in adapters}
    if frame is None or frame.empty:
        rows = []
    else:
        rows = frame.to_dict("records")
    scored_docs = {r["doc_id"] for r in rows}
    result = TierCheck(
        ok=True,
        items=len(rows),
        documents_indexed=len(indexed_doc_ids),
        documents_without_items=len(indexed_doc_ids - scored_docs),
        items_without_tier=sum(1 for r in rows if not r["tier"]),
        unknown_tiers=sum(
            1 for r in rows if r["tier"] and not any(r["tier"] == v or r["tier"].startswith(v + "+") for v in valid)
        ),
        promoted_without_adapter=sum(1 for r in rows if r["tier_base"] == Tier.LORA.value and not r["adapters"]),
        adapters_outside_lora=sum(1 for r in rows if r["tier_base"] != Tier.LORA.value and bool(r["adapters"])),
    )
    for field, label in (
        ("documents_without_items", "indexed documents have no scored items"),
        ("items_without_tier", "items have no tier"),
        ("unknown_tiers", "items have a tier that is not cache/rag/discard/lora:<adapter>"),
        ("promoted_without_adapter", "items are promoted to lora but to no adapter"),
        ("adapters_outside_lora", "items carry adapters but are not in a lora tier (two exclusive tiers)"),
    ):
        count = getattr(result, field)
        if count:
            result.problems.append(f"{count} {label}")
    result.ok = not result.problems
    return result
