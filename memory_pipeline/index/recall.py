"""What the tiers do at recall time: which chunks a search may return and how their items rank.

- ``discard``: not recalled (unless the request asks for it explicitly);
- ``cache``: fresh items, and chunks not scored yet (a capture just indexed): recalled at once,
  with a recency prior: the fresher, the higher;
- ``rag`` and ``lora:*``: long-term memory, with the item's recall score (its score decayed by
  age in the memory and time since last use) as the prior;
- an item the user restated later ranks below the restatement (``superseded_factor``).

A hit's rank is its relevance times ``(1 - prior_weight) + prior_weight * prior``, so relevance
still leads and the prior breaks near-ties; then at most ``max_hits_per_position`` hits are kept
from one dialogue turn or document section, so one long turn cannot fill the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from memory_pipeline.config import Config
from memory_pipeline.timeutil import naive_utc

_DAY = 86400.0


@dataclass(frozen=True)
class ChunkRecall:
    """The recall-relevant facts of the item a chunk belongs to."""

    item_id: str
    tier: str
    recall_score: float
    superseded_by: str
    date: datetime | None


@dataclass(frozen=True)
class Ranked:
    row_id: int
    score: float
    relevance: float
    tier: str
    item_id: str | None
    superseded_by: str | None


class RecallView:
    """chunk_id -> its item's tier, recall score and restatement link, from the score store.

    Reloaded when the score file changes (a promotion or retier run replaced it).
    """

    def __init__(self, config: Config):
        from memory_pipeline.scoring.store import ScoreStore, scores_dir

        self.config = config
        self.store = ScoreStore(scores_dir(config))
        self._stamp: float | None = None
        self.by_chunk: dict[str, ChunkRecall] = {}

    def refresh(self) -> None:
        stamp = file_mtime(self.store.items_path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is None:
            self.by_chunk = {}
            return
        columns = [
            "item_id",
            "chunk_ids",
            "tier_base",
            "recall_score",
            "score",
            "superseded_by",
            "created_at",
            "first_seen",
        ]
        frame = self.store.load_frame(columns)
        found: dict[str, ChunkRecall] = {}
        for row in frame.itertuples(index=False):
            recall_score = (
                row.recall_score if row.recall_score == row.recall_score else row.score
            )  # NaN: an older store
            when = row.created_at if row.created_at == row.created_at else row.first_seen
            recall_score = float(recall_score or 0.0)
            info = ChunkRecall(
                row.item_id, row.tier_base or "cache", recall_score, row.superseded_by or "", _naive(when)
            )
            for chunk_id in row.chunk_ids:
                found[chunk_id] = info
        self.by_chunk = found


def freshness(date: datetime | None, now: datetime, cache_days: float) -> float:
    """1.0 just now, 0.5 after ``cache_days``: the recency prior of short-term memory."""
    if date is None:
        return 0.5
    age = max((now - date).total_seconds() / _DAY, 0.0)
    return 0.5 ** (age / max(cache_days, 1e-6))


def rank(
    candidates: dict[int, float],
    chunk_of: Callable[[int], tuple[str, tuple, datetime | None]],
    view: RecallView,
    config: Config,
    *,
    k: int,
    include_discard: bool = False,
    now: datetime | None = None,
) -> list[Ranked]:
    """The k best candidates (row_id -> relevance) after tier rules, priors and the per-position cap.

    ``chunk_of(row_id)`` gives the chunk id, its position key (doc + turn or section) and its date.
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    search = config.search
    weight = search.prior_weight
    cache_days = config.promote.cache_days
    ranked: list[Ranked] = []
    for row_id, relevance in candidates.items():
        chunk_id, _, date = chunk_of(row_id)
        info = view.by_chunk.get(chunk_id)
        if info is None:  # indexed, not scored yet: a fresh capture or import waits in the cache
            tier, prior, item_id, superseded = "cache", max(0.5, freshness(date, now, cache_days)), None, ""
        else:
            tier, item_id, superseded = info.tier, info.item_id, info.superseded_by
            if tier == "discard" and not include_discard:
                continue
            prior = info.recall_score
            if tier == "cache":
                prior = max(prior, freshness(info.date or date, now, cache_days))
        factor = (1.0 - weight) + weight * min(max(prior, 0.0), 1.0)
        if superseded:
            factor *= search.superseded_factor
        ranked.append(Ranked(row_id, relevance * factor, relevance, tier, item_id, superseded or None))
    ranked.sort(key=lambda r: (-r.score, r.row_id))
    return cap_per_position(ranked, lambda r: chunk_of(r.row_id)[1], search.max_hits_per_position)[:k]


def cap_per_position(ranked: Sequence, position: Callable, limit: int) -> list:
    """Keep ranking order, dropping hits past ``limit`` from one position (turn / section)."""
    seen: dict[tuple, int] = {}
    kept = []
    for entry in ranked:
        key = position(entry)
        if seen.get(key, 0) < limit:
            seen[key] = seen.get(key, 0) + 1
            kept.append(entry)
    return kept


def position_key(row: dict) -> tuple:
    """One dialogue turn, one article section (heading and page), or one lecture window."""
    if row.get("turn_index") is not None:
        return (row["doc_id"], "turn", row["turn_index"])
    if row.get("start") is not None:
        return (row["doc_id"], "time", row["start"])
    return (row["doc_id"], "section", row.get("heading") or "", row.get("page"))


def _naive(value) -> datetime | None:
    if value is None or value != value:
        return None
    import pandas as pd

    return naive_utc(pd.Timestamp(value).to_pydatetime())


def file_mtime(path: Path) -> float | None:
    """When a file last changed, None when it is not there: a reader's cue to reload (scores, FAISS)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None
