"""Answers about the scored items for a person: why one item has its tier, and what each tier holds."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
from pydantic import BaseModel, Field

from memory_pipeline.config import Config
from memory_pipeline.display import one_line, position_of
from memory_pipeline.errors import StoreError
from memory_pipeline.scoring import signals as sg
from memory_pipeline.scoring.items import ItemUnit
from memory_pipeline.scoring.store import ScoreStore, scores_dir, stored_time
from memory_pipeline.scoring.tiers import Tier, contributions, validate_weights

_SAMPLES = 5
_REF_COLUMNS = ["item_id", "title", "unit", "created_at", "first_seen"]


class SignalExplanation(BaseModel):
    name: str
    value: float
    weight: float
    contribution: float
    reason: str


class ItemRef(BaseModel):
    """An item as a person finds it again: its title, date and position in its document."""

    item_id: str
    title: str
    date: str | None = Field(None, description="when it was said or written (first seen when unknown), ISO date")
    position: str = Field("", description="'turn 3', 'p. 4 · Intro', '00:01:05–00:02:10'; empty for a whole document")


class Explanation(BaseModel):
    """Why an item has its score and tier, signal by signal."""

    item_id: str
    doc_id: str
    kind: str
    title: str
    unit: ItemUnit
    created_at: datetime | None
    score: float
    tier: str
    adapters: list[str]
    tier_rule: str
    signals: list[SignalExplanation]
    routes: dict[str, dict]
    preview: str
    recall_score: float = Field(
        0.0, description="the score decayed by age in the memory and time since last use: recall's prior"
    )
    superseded_by: str = Field(
        "", description="a later item restating this view on the same topic: preferred in recall"
    )
    restated_from: list[str] = Field(default_factory=list, description="earlier items this one restates")
    history: list[dict] = Field(
        default_factory=list, description="tier changes, oldest first: at, from_tier, to_tier, reason"
    )
    related: dict[str, ItemRef] = Field(
        default_factory=dict,
        description="the other items named above (nearest earlier, duplicate keeper, restatements), by id",
    )


def explain_item(config: Config, item_id: str) -> Explanation:
    """Each signal's value, weight and contribution with a one-line reason, and the tier rule that decided."""
    store = ScoreStore(scores_dir(config))
    match = store.load_frame(item_ids=[item_id])
    if match.empty:
        raise StoreError(f"{scores_dir(config)}: no scored item {item_id!r}")
    row = match.iloc[0]
    weights = validate_weights(config.promote.weights)
    values = {name: float(row[name]) for name in sg.SIGNALS}
    parts = contributions(values, weights)
    restated_from = _restated_from(store, item_id)
    named = [row["novelty_neighbour"], row["cluster_keeper"], row["superseded_by"], *restated_from]
    return Explanation(
        item_id=item_id,
        doc_id=row["doc_id"],
        kind=row["kind"],
        title=row["title"],
        unit=ItemUnit.model_validate_json(row["unit"]),
        created_at=stored_time(row["created_at"]),
        score=float(row["score"]),
        tier=row["tier"],
        adapters=row["adapters"],
        tier_rule=row["tier_rule"],
        signals=[
            SignalExplanation(
                name=name,
                value=round(values[name], 4),
                weight=weights[name],
                contribution=round(parts[name], 4),
                reason=signal_reason(name, row, config),
            )
            for name in sg.SIGNALS
        ],
        routes=json.loads(row["routes"] or "{}"),
        preview=one_line(row["text"], 400),
        recall_score=float(row["recall_score"]) if pd.notna(row["recall_score"]) else 0.0,
        superseded_by=row["superseded_by"] or "",
        restated_from=restated_from,
        history=[
            {"at": stored_time(h["at"]), "from_tier": h["from_tier"], "to_tier": h["to_tier"], "reason": h["reason"]}
            for h in store.load_history(item_id).to_dict("records")
        ],
        related=_refs(store, {n for n in named if n and n != item_id}),
    )


def _refs(store: ScoreStore, item_ids: set[str]) -> dict[str, ItemRef]:
    if not item_ids:
        return {}
    frame = store.load_frame(_REF_COLUMNS, item_ids=sorted(item_ids))
    return {row["item_id"]: _ref(row) for _, row in frame.sort_values("item_id").iterrows()}


def _ref(row: pd.Series) -> ItemRef:
    when = stored_time(row["created_at"]) or stored_time(row["first_seen"])
    return ItemRef(
        item_id=row["item_id"],
        title=row["title"],
        date=when.date().isoformat() if when else None,
        position=position_of(ItemUnit.model_validate_json(row["unit"])),
    )


def _restated_from(store: ScoreStore, item_id: str) -> list[str]:
    frame = store.load_frame(["item_id", "superseded_by"])
    return sorted(frame.loc[frame["superseded_by"] == item_id, "item_id"].tolist())


def signal_reason(name: str, row: pd.Series, config: Config) -> str:
    """Why signal ``name`` has its value for the item in ``row``: one line a person can check against the item."""
    promote = config.promote
    if name == "novelty":
        if not row["has_vector"]:
            return "not indexed yet: unknown"
        if row["novelty_neighbour"]:
            nearest, cosine = row["novelty_neighbour"], row["novelty_sim"]
            return f"closest earlier (or already learned) item {nearest} at cosine {cosine:.2f}"
        return "nothing earlier is similar"
    if name == "redundancy":
        if row["cluster_keeper"] != row["item_id"]:
            what = "exact" if row["exact_duplicate"] else "near"
            return f"{what} duplicate of {row['cluster_keeper']} (cluster of {row['cluster_size']})"
        return f"keeper of a cluster of {row['cluster_size']}" if row["cluster_size"] > 1 else "no duplicates"
    if name == "recurrence":
        if not row["recurrence_docs"]:
            return f"a one-off: no other document within cosine {promote.recurrence_radius}"
        return f"topic returns in {row['recurrence_docs']} other documents over {row['recurrence_span_days']:.0f} days"
    if name == "density":
        ratio, entropy = row["compress_ratio"], row["token_entropy"]
        return f"{row['n_chars']} chars, compression ratio {ratio:.2f}, word entropy {entropy:.2f}"
    if name == "importance":
        markers, tags = row["markers"], row["tags"]
        own = sg.own_importance(row["kind"], row["text"], row["user_text"] or "", promote)
        stance = f"own stance {own.stance:g} ({', '.join(own.stance_reasons)}) x stance_importance"
        found = [
            f"markers: {', '.join(markers)}" if markers else "",
            f"tags: {', '.join('#' + t for t in tags)}" if tags else "",
            f"{stance} {promote.stance_importance:g}" if own.stance else "",
        ]
        return "; ".join(p for p in found if p) or "no importance markers, tags or stance of the user's own"
    if name == "quality":
        return ", ".join(row["quality_reasons"]) or "no refusal, truncation or code dump"
    if name == "usage":
        return f"{max(int(row['hits']), 0)} search hits on its chunks"
    created = stored_time(row["created_at"]) or stored_time(row["first_seen"])
    return f"from {created:%Y-%m-%d} (half-life {promote.recency_half_life_days:g} days)" if created else "date unknown"


def tier_summary(config: Config) -> dict:
    """Counts per tier, per tier label and per adapter, with a few sample item ids of each (zeros before the first run).

    ``examples`` describes the same samples for a person: title, date and position in the document.
    """
    store = ScoreStore(scores_dir(config))
    if not store.exists():
        return {
            "items": 0,
            "tiers": {t.value: 0 for t in Tier},
            "labels": {},
            "adapters": {a.name: 0 for a in config.adapters},
            "samples": {},
            "examples": {},
        }
    frame = store.load_frame(
        ["item_id", "tier", "tier_base", "adapters", "score", "title", "unit", "created_at", "first_seen"]
    )
    ordered = frame.sort_values(["score", "item_id"], ascending=[False, True])
    per_adapter: dict[str, list[str]] = {a.name: [] for a in config.adapters}
    for item_id, adapters in zip(ordered["item_id"], ordered["adapters"], strict=True):
        for name in adapters:
            per_adapter.setdefault(name, []).append(item_id)
    samples = {
        **{t.value: ordered.loc[ordered["tier_base"] == t.value, "item_id"].head(_SAMPLES).tolist() for t in Tier},
        **{f"lora:{name}": ids[:_SAMPLES] for name, ids in per_adapter.items()},
    }
    rows = ordered.set_index("item_id", drop=False)
    return {
        "items": len(frame),
        "tiers": {t.value: int((frame["tier_base"] == t.value).sum()) for t in Tier},
        "labels": {str(k): int(v) for k, v in frame["tier"].value_counts().items()},
        "adapters": {name: len(ids) for name, ids in per_adapter.items()},
        "samples": samples,
        "examples": {group: [_example(rows.loc[item_id]) for item_id in ids] for group, ids in samples.items()},
    }


def _example(row: pd.Series) -> dict:
    """A sampled item as a person finds it again (title, date, position in its document) and its score."""
    return {**_ref(row).model_dump(), "score": round(float(row["score"]), 4)}
