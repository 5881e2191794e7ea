"""The memory loop as a lifecycle, over a real index: tiers change what is recalled, time filters, restatements.

A small corpus with known tiers: a goodbye (junk: discard), an old view and its later
restatement, a long turn that splits into many chunks, and an exchange captured through the
service's inbox (fresh: cache) that is recalled before any scoring run, after it, and after
promotion moves it out of the cache.
"""

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from memory_pipeline.config import Config
from memory_pipeline.errors import SearchError
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.search import Searcher
from memory_pipeline.index.sync import sync_index
from memory_pipeline.index.timespan import bounds, find_in_query
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all
from memory_pipeline.scoring import explain_item, retier, run_promotion
from memory_pipeline.service.inbox import Inbox, InboxMessage

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
OLD_VIEW = (
    "I think running every single day without rest days is the best way to build endurance for a marathon; "
    "rest is for the lazy.",
    "That is a common belief among beginners, but most coaches plan easy days and full rest days into every week.",
)
NEW_VIEW = (
    "I changed my mind: running every single day without rest days is a mistake, "
    "rest days build endurance for a marathon.",
    "Yes, adaptation happens during recovery, so rest days are part of the training, not a break from it.",
)
BREAD = " ".join(
    f"Sourdough step {n}: feed the starter with rye flour, wait until it doubles, fold the dough every thirty minutes, "
    f"and bake the loaf in a hot Dutch oven with the lid on for the first twenty minutes of baking number {n}."
    for n in range(40)
)


def _conversation(cid: str, when: datetime, *exchanges: tuple[str, str]) -> str:
    messages = [
        m
        for user, answer in exchanges
        for m in ({"role": "user", "content": user}, {"role": "assistant", "content": answer})
    ]
    return json.dumps(
        {"conversation_id": cid, "title": cid, "created_at": when.isoformat() + "Z", "messages": messages},
        ensure_ascii=False,
    )


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle")
    chats = root / "dialogues"
    chats.mkdir()
    two_months_ago = (pd.Timestamp(NOW) - pd.DateOffset(months=2)).to_pydatetime()
    lines = [
        _conversation("bye", NOW - timedelta(days=300), ("Спасибо, до встречи.", "Пока!")),
        _conversation("old-view", NOW - timedelta(days=400), OLD_VIEW),
        _conversation("new-view", two_months_ago, NEW_VIEW),
        _conversation("bread", NOW - timedelta(days=200), (BREAD, "Sounds like a good routine for a crusty loaf.")),
    ]
    (chats / "chats.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = Config(storage_root=root / "storage", sources={"dialogues": [chats]})
    config.promote.restate_similarity = 0.6
    embedder = load_embedder(config.embedding)

    def sync():
        ingest_all(config)
        sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)

    sync()
    run_promotion(config, now=NOW, progress=False, embedder=embedder)
    return config, embedder, sync


def _item(hits, doc_fragment: str):
    return next(h for h in hits if doc_fragment in h.text)


def test_discard_is_not_recalled_unless_asked(memory):
    config, embedder, _ = memory
    searcher = Searcher(config, embedder=embedder)
    hits = searcher.search("Спасибо, до встречи", k=10, mode="fts", now=NOW)
    assert not any("до встречи" in h.text for h in hits)
    shown = searcher.search("Спасибо, до встречи", k=10, mode="fts", now=NOW, include_discard=True)
    goodbye = _item(shown, "до встречи")
    assert goodbye.tier == "discard" and "junk" in explain_item(config, goodbye.item_id).tier_rule


def test_restated_view_ranks_above_the_earlier_one_and_both_stay(memory):
    config, embedder, _ = memory
    hits = Searcher(config, embedder=embedder).search(
        "running every day without rest days marathon endurance", k=10, now=NOW
    )
    old, new = _item(hits, "rest is for the lazy"), _item(hits, "I changed my mind")
    assert hits.index(new) < hits.index(old) and old.superseded_by == new.item_id
    explained = explain_item(config, old.item_id)
    assert explained.superseded_by == new.item_id and explain_item(config, new.item_id).restated_from == [old.item_id]


def test_hits_carry_dates_and_a_time_span_filters_them(memory):
    config, embedder, _ = memory
    searcher = Searcher(config, embedder=embedder)
    everything = searcher.search("rest days marathon", k=10, now=NOW)
    assert all(h.created_at is not None for h in everything)
    recent = searcher.search("rest days marathon", k=10, now=NOW, since=(NOW - timedelta(days=100)).date().isoformat())
    assert recent and all(h.created_at >= NOW - timedelta(days=101) for h in recent)
    named = searcher.search("what did I say about rest days two months ago", k=10, now=NOW)
    assert named and {h.doc_id for h in named} == {_item(everything, "I changed my mind").doc_id}
    with pytest.raises(SearchError, match="since"):
        searcher.search("rest days", since="not a date at all", now=NOW)


def test_at_most_two_hits_from_one_turn(memory):
    config, embedder, _ = memory
    hits = Searcher(config, embedder=embedder).search("sourdough starter rye flour Dutch oven", k=10, now=NOW)
    per_turn = pd.Series([(h.doc_id, h.turn_index) for h in hits]).value_counts()
    assert per_turn.max() <= config.search.max_hits_per_position == 2


def test_captured_exchange_is_recalled_at_once_in_cache_and_after_promotion(memory):
    config, embedder, sync = memory
    Inbox(config.inbox_dir).record(
        [
            InboxMessage(
                role="user",
                content="My new swimming plan: open water on Wednesdays, pool intervals on Saturdays, "
                "nothing on Mondays.",
            ),
            InboxMessage(
                role="assistant", content="Noted: open water Wednesdays, pool intervals Saturdays, Mondays off."
            ),
        ],
        conversation_id="capture-1",
    )
    sync()
    searcher = Searcher(config, embedder=embedder)
    before = _item(searcher.search("swimming plan open water Wednesdays", k=5, now=NOW), "open water on Wednesdays")
    assert before.tier == "cache" and before.item_id is None  # indexed, not scored yet
    run_promotion(config, now=NOW, progress=False, embedder=embedder)
    scored = _item(
        Searcher(config, embedder=embedder).search("swimming plan open water Wednesdays", k=5, now=NOW),
        "open water on Wednesdays",
    )
    assert scored.tier == "cache" and "fresh" in explain_item(config, scored.item_id).tier_rule
    later = NOW + timedelta(days=config.promote.cache_days + 1)
    retier(config, now=later)
    promoted = _item(
        Searcher(config, embedder=embedder).search("swimming plan open water Wednesdays", k=5, now=later),
        "open water on Wednesdays",
    )
    assert promoted.tier in ("rag", "lora")
    history = explain_item(config, promoted.item_id).history
    assert [(h["from_tier"], h["to_tier"].split(":")[0]) for h in history] == [("", "cache"), ("cache", promoted.tier)]
    assert history[1]["at"] == later and history[1]["reason"]


def test_decay_fades_an_unused_item_out_of_recall_but_keeps_it_stored(memory):
    config, embedder, _ = memory
    far = NOW + timedelta(days=20 * 365)
    retier(config, now=far)
    try:
        hits = Searcher(config, embedder=embedder).search("sourdough starter rye flour", k=10, now=far)
        assert not any("Sourdough step" in h.text for h in hits)
        shown = Searcher(config, embedder=embedder).search(
            "sourdough starter rye flour", k=10, now=far, include_discard=True
        )
        bread = _item(shown, "Sourdough step")
        assert bread.tier == "discard" and "faded" in explain_item(config, bread.item_id).tier_rule
    finally:
        retier(config, now=NOW)


def test_relative_expressions_resolve_to_the_period_they_name():
    now = datetime(2026, 12, 2, 10)
    rest, span = find_in_query("о чём мы говорили два месяца назад про марафон", now=now)
    assert rest == "о чём мы говорили про марафон" and (span.since, span.until) == (
        datetime(2026, 10, 1),
        datetime(2026, 11, 1),
    )
    _, week = find_in_query("что я писал на прошлой неделе", now=now)
    assert (week.since, week.until) == (datetime(2026, 11, 23), datetime(2026, 11, 30))
    _, last_week = find_in_query("what did we discuss last week", now=now)
    assert last_week == week.__class__(week.since, week.until, "last week")
    assert find_in_query("как пробежать марафон за 3 часа 30 минут", now=now) is None
    explicit = bounds("2024-03-01", "2024-03-31")
    assert (explicit.since, explicit.until) == (datetime(2024, 3, 1), datetime(2024, 4, 1))
    moscow = bounds("last month", "last month", now=now, timezone="Europe/Moscow")
    assert (moscow.since, moscow.until) == (datetime(2026, 10, 31, 21), datetime(2026, 11, 30, 21))
