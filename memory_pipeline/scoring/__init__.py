"""The memory loop: score every item, tier it (cache / rag / lora:<adapter> / discard) and route it.

``items`` cuts documents into scored units, ``signals`` computes each signal, ``tiers`` combines
them and applies the tier rule, ``routing`` picks adapters, ``store`` keeps the state on disk,
``engine`` runs it all incrementally, ``explain`` answers a person's questions about the result and
``assignments`` is what the dataset stage reads.
"""

from memory_pipeline.scoring.assignments import ItemAssignment, load_assignments
from memory_pipeline.scoring.engine import ItemBatch, PromotionReport, retier, run_promotion, update_scores
from memory_pipeline.scoring.explain import Explanation, explain_item, tier_summary
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
