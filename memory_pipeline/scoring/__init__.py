"""The memory loop: score every item, tier it (cache / rag / lora:<adapter> / discard) and route it.

``items`` cuts documents into scored units, ``signals`` computes each signal, ``tiers`` combines
them and applies the tier rule, ``routing`` picks adapters, ``store`` keeps the state on disk,
``promote`` runs it all incrementally and answers questions about the result.
"""

from memory_pipeline.scoring.promote import (
    Explanation,
    ItemAssignment,
    ItemBatch,
    PromotionReport,
    explain_item,
    load_assignments,
    retier,
    run_promotion,
    tier_summary,
    update_scores,
)
from memory_pipeline.scoring.tiers import Tier

__all__ = [
    "Explanation",
    "ItemAssignment",
    "ItemBatch",
    "PromotionReport",
    "Tier",
    "explain_item",
    "load_assignments",
    "retier",
    "run_promotion",
    "tier_summary",
    "update_scores",
]
