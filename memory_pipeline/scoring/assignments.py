"""What the dataset stage reads from scoring: every item with its tier, adapters and texts."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from memory_pipeline.config import Config
from memory_pipeline.scoring.items import ItemUnit
from memory_pipeline.scoring.store import ScoreStore, scores_dir, stored_time


class ItemAssignment(BaseModel):
    """An item as the dataset stage sees it: where it is from, its tier and adapters, its texts."""

    item_id: str
    doc_id: str
    kind: str
    title: str
    source_path: str
    unit: ItemUnit
    score: float
    tier: str
    adapters: list[str]
    created_at: datetime | None
    text: str
    user_text: str = ""
    answer_text: str = ""


def load_assignments(config: Config, *, adapter: str | None = None) -> list[ItemAssignment]:
    """Every scored item (or only those promoted to ``adapter``), oldest first: the dataset stage's input.

    Empty before the first scoring run (nothing is promoted yet); an unknown adapter is a ConfigError.
    """
    if adapter is not None:
        config.adapter(adapter)
    store = ScoreStore(scores_dir(config))
    if not store.exists():
        return []
    # first_seen dates an item whose source gave no created_at
    frame = store.load_frame([*ItemAssignment.model_fields, "first_seen"])
    if adapter is not None:
        frame = frame[[adapter in adapters for adapters in frame["adapters"]]]
    frame = frame.assign(_when=frame["created_at"].fillna(frame["first_seen"])).sort_values(["_when", "item_id"])
    return [
        ItemAssignment(
            item_id=row.item_id,
            doc_id=row.doc_id,
            kind=row.kind,
            title=row.title,
            source_path=row.source_path,
            unit=ItemUnit.model_validate_json(row.unit),
            score=float(row.score),
            tier=row.tier,
            adapters=row.adapters,
            created_at=stored_time(row.created_at),
            text=row.text,
            user_text=row.user_text or "",
            answer_text=row.answer_text or "",
        )
        for row in frame.itertuples(index=False)
    ]
