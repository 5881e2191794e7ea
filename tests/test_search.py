"""Search over a real index: each mode, filters, Russian stemming, bad queries, logging, retrieval eval."""

import json

import pytest

from memory_pipeline.config import Config
from memory_pipeline.errors import SearchError
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.evaluation import (
    FUSION_GRID,
    AcceptedAnswer,
    EvalQuestion,
    evaluate_questions,
    evaluate_retrieval,
)
from memory_pipeline.index.fts import stem_for_fts
from memory_pipeline.index.search import Searcher, fuse, search
from memory_pipeline.index.search_log import hit_counts
from memory_pipeline.index.sync import sync_index
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    (root / "dialogues").mkdir()
    (root / "articles").mkdir()
    (root / "lectures").mkdir()
    conversations = [
        (
            "run",
            "Как мне бегать марафон?",
            "Бегать марафон стоит в ровном темпе. "
            "Первые километры держи темп медленнее целевого, чтобы не сгореть к тридцатому.",
        ),
        (
            "sleep",
            "How much sleep do athletes need?",
            "Most athletes need eight to nine hours of sleep. "
            "Recovery happens mostly during deep sleep after hard sessions.",
        ),
        (
            "llm",
            "Можно ли обучить маленькую модель на своём ноутбуке?",
            "Да, маленькую языковую модель можно дообучить на ноутбуке с LoRA. "
            "Главное — аккуратно подготовить корпус и следить за переобучением.",
        ),
    ]
    lines = []
    for conv, question, answer in conversations:
        lines.append({"conversation_id": conv, "turn_index": 0, "role": "user", "content": question})
        lines.append({"conversation_id": conv, "turn_index": 1, "role": "assistant", "content": answer})
    (root / "dialogues" / "chats.jsonl").write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8"
    )
    (root / "articles" / "pressing.md").write_text(
        "# Прессинг\n\nВысокий прессинг в футболе требует компактных линий.\n", encoding="utf-8"
    )
    (root / "lectures" / "memory.srt").write_text(
        "1\n00:00:01,000 --> 00:00:05,000\nЛектор: Интервальное повторение укрепляет долговременную память.\n\n"
        "2\n00:00:06,000 --> 00:00:09,000\nЛектор: Повторяйте материал через растущие интервалы.\n",
        encoding="utf-8",
    )
    config = Config(
        storage_root=root / "storage",
        sources={"dialogues": [root / "dialogues"], "articles": [root / "articles"], "lectures": [root / "lectures"]},
    )
    ingest_all(config)
    embedder = load_embedder(config.embedding)
    sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    return Searcher(config, embedder=embedder)


@pytest.mark.parametrize("mode", ["vector", "fts", "hybrid"])
def test_each_mode_finds_the_right_memory_with_its_position(searcher, mode):
    hits = searcher.search("sleep recovery for athletes", k=3, mode=mode)
    assert hits and hits[0].doc_id and "sleep" in hits[0].text.lower()
    assert hits[0].kind == "dialogue" and hits[0].turn_index == 0 and hits[0].source_path.endswith("chats.jsonl")
    assert all(h.mode == mode for h in hits)


def test_russian_full_text_matches_inflected_forms(searcher):
    assert stem_for_fts("бегал") == stem_for_fts("бегать")
    hits = searcher.search("бегал марафоны", k=2, mode="fts")
    assert hits and "марафон" in hits[0].text
    lecture = searcher.search("повторение памяти", k=1, kind="lecture")
    assert lecture and lecture[0].kind == "lecture" and lecture[0].start == pytest.approx(1.0)


def test_kind_filter(searcher):
    for mode in ("vector", "fts", "hybrid"):
        hits = searcher.search("прессинг футбол", k=5, kind="article", mode=mode)
        assert hits and all(h.kind == "article" for h in hits)


@pytest.mark.parametrize(
    ("query", "kwargs", "message"),
    [
        ("", {}, "empty"),
        ("   \n", {}, "empty"),
        ("x" * 10_000, {}, "max_query_chars"),
        ("бег", {"mode": "magic"}, "unknown mode"),
        ("бег", {"kind": "podcast"}, "unknown kind"),
        ("бег", {"k": 0}, "k must be"),
    ],
)
def test_bad_queries_fail_clearly(searcher, query, kwargs, message):
    with pytest.raises(SearchError, match=message):
        searcher.search(query, **kwargs)
    with pytest.raises(SearchError, match=message):
        search(searcher.config, query, **kwargs)  # rejected before any model is loaded


def test_searches_are_logged_for_the_usage_signal(searcher):
    hits = searcher.search("марафон темп", k=2)
    counts = hit_counts(searcher.config)
    assert all(counts.get(h.chunk_id, 0) >= 1 for h in hits)
    before = dict(counts)
    searcher.search("марафон темп", k=2, log=False)
    assert hit_counts(searcher.config) == before


def test_the_lance_reader_answers_exactly_as_lancedb(searcher):
    """Search reads with pylance (a cheap import) what lancedb wrote: same rows, BM25 scores and distances."""
    from memory_pipeline.index.lance_reader import ChunkReader
    from memory_pipeline.index.lancedb_store import ChunkStore

    reader, store = searcher.store, ChunkStore(searcher.config.lancedb_uri, searcher.embedder.model_id)
    assert isinstance(reader, ChunkReader) and reader.count() == store.count() > 0
    assert reader.latest_version() == store.latest_version() and reader.row_columns == store.row_columns
    since = "created_at >= TIMESTAMP '2000-01-01 00:00:00'"
    for query in ("бегал марафоны", "sleep recovery", "прессинг футбол", "память"):
        for filters in ({}, {"kind": "dialogue"}, {"where": since}, {"kind": "lecture", "where": since}):
            assert reader.fts_search(query, 50, **filters) == store.fts_search(query, 50, **filters)
    vector = searcher.embedder.embed_query("как восстанавливаться после тренировки")
    for filters in ({}, {"kind": "article"}, {"where": since}):
        assert reader.vector_search(vector, 10, **filters) == store.vector_search(vector, 10, **filters)
    columns = ["row_id", "kind", "chunk_id", "created_at", "turn_index"]
    assert sorted(reader.rows(columns), key=str) == sorted(store.rows(columns), key=str)
    vectors = lambda rows: {row["row_id"]: row["vector"].tolist() for row in rows}  # noqa: E731
    assert vectors(reader.rows(["row_id", "vector"])) == vectors(store.rows(["row_id", "vector"]))
    ids = [row["row_id"] for row in store.rows(["row_id"])][:3]
    assert reader.get_rows(ids) == store.get_rows(ids)


def test_empty_index_returns_no_hits(tmp_path):
    config = Config(storage_root=tmp_path / "empty")
    assert Searcher(config).search("что угодно") == []


def test_fusion_keeps_a_dominant_full_text_hit_and_adds_vector_only_candidates():
    fused = fuse({1: 10.0, 2: 2.0, 3: 1.0}, {2: 0.9, 4: 0.85, 1: 0.5}, fts_weight=0.7)
    assert max(fused, key=fused.get) == 1
    assert 4 in fused


def test_retrieval_eval_reports_every_mode_and_hybrid_is_not_worse(searcher):
    result = evaluate_retrieval(searcher.config, searcher=searcher, n_queries=20)
    assert result["queries"] >= 3
    modes = result["modes"]
    assert set(modes) == {"vector", "fts", "hybrid"}
    assert modes["hybrid"]["mrr"] >= max(modes["vector"]["mrr"], modes["fts"]["mrr"]) - 1e-9


def test_question_set_eval_skips_absent_answers_and_tunes_the_fusion_weight(searcher):
    def question(qid, split, text, source, contains):
        answer = AcceptedAnswer(source=source, contains=[contains])
        return EvalQuestion(id=qid, split=split, lang="en", source_lang="en", question=text, answers=[answer])

    questions = [
        question("a", "tune", "how long should athletes sleep", "chats.jsonl", "eight to nine hours"),
        question("b", "report", "высокий прессинг в футболе", "pressing.md", "компактных линий"),
        question("c", "report", "anything", "absent.md", "nowhere"),
    ]
    result = evaluate_questions(searcher.config, searcher=searcher, questions=questions)
    assert (result["answerable"], result["skipped"]) == (2, ["c"])
    assert result["modes"]["fts"]["recall@5"] == 1.0 and result["report"]["questions"] == 1
    assert set(result["modes"]["hybrid"]) == {"recall@1", "recall@5", "recall@10", "mrr"}
    assert result["fusion_tuning"]["best_fts_weight"] in FUSION_GRID
