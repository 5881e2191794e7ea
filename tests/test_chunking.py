"""Chunking rules per kind, budgets in the model's own tokens (cl100k without a model), and stable chunk ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from memory_pipeline.config import ChunkingConfig, EmbeddingConfig
from memory_pipeline.index.chunking import chunk_document, exchanges
from memory_pipeline.records import Document, Kind, Section, Segment, Turn, sha256_text
from memory_pipeline.tokens import count_tokens, split_by_tokens


def dialogue(*turns: tuple[str, str], doc_id: str = "dlg", language: str = "en") -> Document:
    start = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    return Document(
        doc_id=doc_id,
        kind=Kind.DIALOGUE,
        format="chat_jsonl",
        title="A chat",
        source_path="chat.jsonl",
        source_hash="0" * 64,
        language=language,
        turns=[
            Turn(role=role, text=text, timestamp=start + timedelta(minutes=i))  # type: ignore[arg-type]
            for i, (role, text) in enumerate(turns)
        ],
    )


def article(*sections: Section, language: str = "en") -> Document:
    return Document(
        doc_id="art",
        kind=Kind.ARTICLE,
        format="pdf",
        title="An article",
        source_path="a.pdf",
        source_hash="0" * 64,
        created_at=datetime(2023, 5, 1),
        language=language,
        sections=list(sections),
    )


def lecture(*segments: Segment) -> Document:
    return Document(
        doc_id="lec",
        kind=Kind.LECTURE,
        format="srt",
        title="A lecture",
        source_path="l.srt",
        source_hash="0" * 64,
        segments=list(segments),
    )


def paragraph(topic: str, sentences: int = 6) -> str:
    return " ".join(f"{topic} sentence {i} explains one more detail of the plan." for i in range(sentences))


@pytest.fixture(scope="module")
def embedder():
    from memory_pipeline.index.embedding import load_embedder

    return load_embedder(EmbeddingConfig(device="cpu"))


@pytest.fixture(scope="module")
def minilm():
    from memory_pipeline.index.embedding import load_embedder

    return load_embedder(EmbeddingConfig(model="packaged:all-MiniLM-L6-v2", device="cpu"))


# --- tokens --------------------------------------------------------------------------------------


def test_tokens_count_offline_cl100k_and_cut_on_character_boundaries():
    assert count_tokens("hello world") == 2
    assert count_tokens("") == 0
    assert count_tokens("<|endoftext|>") > 1  # special-token text in user data is plain text
    text = "Привет, мир! 世界 " * 40
    pieces = split_by_tokens(text, 7)
    assert "".join(pieces) == text
    assert all(count_tokens(p) <= 8 and "\ufffd" not in p for p in pieces)


# --- dialogues -----------------------------------------------------------------------------------


def test_dialogue_one_chunk_per_exchange_with_turn_index_and_time():
    doc = dialogue(
        ("assistant", "Hi! How can I help?"),
        ("user", "How do I pace a marathon?"),
        ("assistant", "Start slower than goal pace."),
        ("user", "And the last 10 km?"),
        ("assistant", "Speed up if you feel good."),
        ("assistant", "Also: drink at every station."),
        ("user", "Thanks."),
    )
    chunks = chunk_document(doc, ChunkingConfig())
    assert [c.turn_index for c in chunks] == [0, 1, 3, 6]
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]
    assert chunks[0].text == "Assistant: Hi! How can I help?"
    assert chunks[1].text == "User: How do I pace a marathon?\n\nAssistant: Start slower than goal pace."
    assert "Speed up" in chunks[2].text and "drink at every station" in chunks[2].text
    assert chunks[3].text == "User: Thanks."
    assert chunks[1].created_at == datetime(2024, 3, 1, 12, 1)  # the user turn's time, as naive UTC
    assert all(c.kind is Kind.DIALOGUE and c.language == "en" and c.text_hash == sha256_text(c.text) for c in chunks)


def test_exchanges_group_turns():
    turns = [Turn(role="user", text="a"), Turn(role="user", text="b"), Turn(role="assistant", text="c")]
    assert [(i, u.text if u else None, [a.text for a in answers]) for i, u, answers in exchanges(turns)] == [
        (0, "a", []),
        (1, "b", ["c"]),
    ]


def test_long_answer_split_on_paragraphs_and_headings_keeps_question_on_every_piece():
    question = "What is the training plan for my first marathon?"
    answer = "\n\n".join(f"## Week {w}\n\n{paragraph(f'Week{w}')}" for w in range(1, 6))
    config = ChunkingConfig(max_tokens=128, overlap_tokens=0)
    chunks = chunk_document(dialogue(("user", question), ("assistant", answer)), config)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text.startswith(f"User: {question}\n\nAssistant: ")
        assert count_tokens(chunk.text) <= config.max_tokens
        assert chunk.turn_index == 0
    answers = [c.text.split("Assistant: ", 1)[1] for c in chunks]
    # Cut at paragraph / heading boundaries: every piece starts a heading or a paragraph.
    assert all(a.startswith(("## Week", "Week")) for a in answers)
    for w in range(1, 6):
        assert any(f"## Week {w}" in a for a in answers)
        assert any(f"Week{w} sentence 5" in a for a in answers)


def test_huge_question_is_truncated_as_context_and_indexed_in_full():
    question = " ".join(f"q{i} word" for i in range(600))
    answer = "\n\n".join(paragraph(f"Answer{i}") for i in range(4))
    config = ChunkingConfig(max_tokens=200, overlap_tokens=0)
    chunks = chunk_document(dialogue(("user", question), ("assistant", answer)), config)
    assert all(count_tokens(c.text) <= 200 for c in chunks)
    answer_pieces = [c for c in chunks if "Assistant: " in c.text]
    question_pieces = [c for c in chunks if "Assistant: " not in c.text]
    assert answer_pieces and question_pieces
    for chunk in answer_pieces:
        context = chunk.text.split("\n\nAssistant: ")[0]
        assert context.startswith("User: q0 word q1 word") and context.endswith("…")
        assert count_tokens(context) <= 200 // 3
    indexed = " ".join(c.text for c in question_pieces)
    assert all(f"q{i} word" in indexed for i in range(600))


def test_unchanged_exchange_keeps_its_chunk_id():
    turns = [
        ("user", "First question?"),
        ("assistant", "First answer."),
        ("user", "Second?"),
        ("assistant", "Second answer."),
    ]
    turns += [("user", "Third?"), ("assistant", "Third answer.")]
    before = chunk_document(dialogue(*turns), ChunkingConfig())
    turns[3] = ("assistant", "Second answer, edited.")
    after = chunk_document(dialogue(*turns), ChunkingConfig())
    assert before[0].chunk_id == after[0].chunk_id
    assert before[2].chunk_id == after[2].chunk_id
    assert before[1].chunk_id != after[1].chunk_id
    other_doc = chunk_document(dialogue(*turns, doc_id="other"), ChunkingConfig())
    assert other_doc[0].chunk_id != after[0].chunk_id


def test_chunk_ids_follow_the_lineage_so_a_new_version_of_a_document_keeps_them():
    turns = [
        ("user", "First question?"),
        ("assistant", "First answer."),
        ("user", "Second?"),
        ("assistant", "Second answer."),
    ]
    before = chunk_document(dialogue(*turns, doc_id="v1"), ChunkingConfig())
    assert {c.lineage for c in before} == {"v1"}  # a document starts its own lineage
    turns[3] = ("assistant", "Second answer, edited.")
    after = chunk_document(dialogue(*turns, doc_id="v2"), ChunkingConfig(), lineage="v1")
    assert after[0].chunk_id == before[0].chunk_id and after[1].chunk_id != before[1].chunk_id
    assert all(c.doc_id == "v2" and c.lineage == "v1" for c in after)
    assert chunk_document(dialogue(*turns, doc_id="v2"), ChunkingConfig())[0].chunk_id != before[0].chunk_id


def test_duplicate_texts_in_one_document_get_distinct_ids():
    doc = dialogue(("user", "ping"), ("assistant", "pong"), ("user", "ping"), ("assistant", "pong"))
    first, second = chunk_document(doc, ChunkingConfig())
    assert first.text == second.text and first.text_hash == second.text_hash
    assert first.chunk_id != second.chunk_id
    assert [c.chunk_id for c in chunk_document(doc, ChunkingConfig())] == [first.chunk_id, second.chunk_id]


def test_no_empty_chunks():
    doc = dialogue(("user", "   "), ("assistant", "\n\n"), ("user", "Real question"), ("assistant", " \t "))
    assert [c.text for c in chunk_document(doc, ChunkingConfig())] == ["User: Real question"]
    assert chunk_document(dialogue(("user", " "), ("assistant", "\n")), ChunkingConfig()) == []
    assert chunk_document(article(Section(heading_path=["H"], text="\n \n")), ChunkingConfig()) == []
    assert chunk_document(lecture(Segment(start=0, end=1, text="  ")), ChunkingConfig()) == []


def test_timezone_aware_times_become_naive_utc():
    doc = dialogue(("user", "q"), ("assistant", "a"))
    doc.turns[0].timestamp = datetime(2024, 1, 1, 15, 0, tzinfo=timezone(timedelta(hours=3)))
    assert chunk_document(doc, ChunkingConfig())[0].created_at == datetime(2024, 1, 1, 12, 0)


# --- articles ------------------------------------------------------------------------------------


def test_article_chunks_carry_heading_path_page_and_overlap():
    config = ChunkingConfig(max_tokens=96, overlap_tokens=16)
    doc = article(
        Section(
            heading_path=["Training", "Long runs"], text="\n\n".join(paragraph(f"P{i}", 3) for i in range(3)), page=4
        ),
        Section(
            heading_path=["Training", "Long runs"], text="\n\n".join(paragraph(f"Q{i}", 3) for i in range(3)), page=5
        ),
        Section(heading_path=["Nutrition"], text="Eat carbohydrates the evening before.", page=6),
    )
    chunks = chunk_document(doc, config)
    long_runs = [c for c in chunks if c.heading == "Training > Long runs"]
    assert len(long_runs) >= 3
    assert all(c.text.startswith("Training > Long runs\n\n") for c in long_runs)
    assert all(count_tokens(c.text) <= config.max_tokens for c in chunks)
    assert long_runs[0].page == 4 and long_runs[-1].page == 5
    assert [c.page for c in long_runs] == sorted(c.page for c in long_runs)
    for previous, current in zip(long_runs, long_runs[1:], strict=False):
        body = current.text.removeprefix("Training > Long runs\n\n")
        shared = body.split("\n\n")[0]
        assert previous.text.endswith(shared), "each chunk starts with the previous chunk's tail"
        assert 0 < count_tokens(shared) <= config.overlap_tokens
        assert shared[0].isupper() and previous.text[: -len(shared)].rstrip()[-1] in ".!?", (
            "the tail is whole sentences"
        )
    nutrition = chunks[-1]
    assert nutrition.heading == "Nutrition" and nutrition.page == 6
    assert nutrition.text == "Nutrition\n\nEat carbohydrates the evening before."  # no overlap across sections
    assert nutrition.created_at == datetime(2023, 5, 1)


def test_article_without_overlap_and_without_heading():
    config = ChunkingConfig(max_tokens=64, overlap_tokens=0)
    text = "\n\n".join(paragraph(f"P{i}", 2) for i in range(4))
    chunks = chunk_document(article(Section(text=text, page=None)), config)
    assert all(c.heading is None and c.page is None for c in chunks)
    assert "\n\n".join(c.text for c in chunks) == text


# --- lectures ------------------------------------------------------------------------------------


def test_lecture_windows_by_time_with_positions_and_speakers():
    segments = [
        Segment(start=i * 20.0, end=i * 20.0 + 18, speaker="Anna" if i < 5 else "Boris", text=f"Point number {i}.")
        for i in range(9)
    ]
    chunks = chunk_document(lecture(*segments), ChunkingConfig(lecture_window_seconds=60))
    assert [(c.start, c.end) for c in chunks] == [(0.0, 58.0), (60.0, 118.0), (120.0, 178.0)]
    assert [c.speaker for c in chunks] == ["Anna", "Anna, Boris", "Boris"]
    assert chunks[1].text == "Anna: Point number 3.\nPoint number 4.\nBoris: Point number 5."
    assert all(c.end - c.start <= 60 for c in chunks)


def test_lecture_windows_also_bounded_by_tokens_and_untimed_segments_pack():
    segments = [Segment(text=paragraph(f"S{i}", 2)) for i in range(8)]
    config = ChunkingConfig(max_tokens=64, overlap_tokens=0)
    chunks = chunk_document(lecture(*segments), config)
    assert len(chunks) > 1
    assert all(count_tokens(c.text) <= 64 and c.start is None and c.speaker is None for c in chunks)
    assert "\n".join(c.text for c in chunks) == "\n".join(s.text for s in segments)


# --- budgets -------------------------------------------------------------------------------------


RUSSIAN_ANSWER = "\n\n".join(
    "Марафонская подготовка требует терпения и постепенного увеличения объёма. " * 8
    + f"Абзац номер {i}: восстановление после длительных тренировок не менее важно, чем сами тренировки."
    for i in range(6)
)


def test_budget_is_counted_in_the_models_own_tokens(minilm):
    """MiniLM's English WordPiece takes Russian apart: cl100k counts would overflow its 256 tokens."""
    doc = dialogue(("user", "Как подготовиться к марафону?"), ("assistant", RUSSIAN_ANSWER), language="ru")
    config = ChunkingConfig(max_tokens=512, overlap_tokens=32)
    plain = chunk_document(doc, config)
    assert any(minilm.count_tokens(c.text) > minilm.max_tokens for c in plain), "cl100k alone lets it overflow"
    chunks = chunk_document(doc, config, max_model_tokens=minilm.max_tokens, count_model_tokens=minilm.count_tokens)
    assert len(chunks) > len(plain)
    assert all(minilm.count_tokens(c.text) <= minilm.max_tokens for c in chunks)
    assert all(c.text.startswith("User: Как подготовиться к марафону?") and c.language == "ru" for c in chunks)
    articles = chunk_document(
        article(Section(heading_path=["Марафон"], text=RUSSIAN_ANSWER), language="ru"),
        config,
        max_model_tokens=minilm.max_tokens,
        count_model_tokens=minilm.count_tokens,
    )
    assert all(minilm.count_tokens(c.text) <= minilm.max_tokens for c in articles)


def test_an_exchange_that_fits_the_default_model_is_one_chunk(embedder):
    """USE's multilingual SentencePiece holds a Russian exchange in fewer tokens than cl100k."""
    answer = "\n\n".join(RUSSIAN_ANSWER.split("\n\n")[:2])
    doc = dialogue(("user", "Как подготовиться к марафону?"), ("assistant", answer), language="ru")
    config = ChunkingConfig()
    assert count_tokens(answer) > config.max_tokens >= embedder.count_tokens(answer) + 20
    assert len(chunk_document(doc, config)) > 1
    chunks = chunk_document(doc, config, max_model_tokens=embedder.max_tokens, count_model_tokens=embedder.count_tokens)
    assert [c.text for c in chunks] == [f"User: Как подготовиться к марафону?\n\nAssistant: {answer}"]
    assert chunks[0].turn_index == 0 and chunks[0].created_at == datetime(2024, 3, 1, 12, 0)


def test_text_without_boundaries_is_cut_on_tokens_as_last_resort():
    blob = "ab9f" * 600
    chunks = chunk_document(article(Section(text=blob)), ChunkingConfig(max_tokens=50, overlap_tokens=0))
    assert len(chunks) > 1
    assert all(count_tokens(c.text) <= 50 for c in chunks)
    assert "".join(c.text for c in chunks) == blob


def test_model_length_caps_the_cl100k_budget():
    chunks = chunk_document(
        article(Section(text="\n\n".join(paragraph(f"P{i}") for i in range(6)))),
        ChunkingConfig(max_tokens=1024, overlap_tokens=0),
        max_model_tokens=60,
    )
    assert all(count_tokens(c.text) <= 60 for c in chunks)
