"""Renderings a person reads in the CLI: a hit's text on one line."""

from datetime import datetime

from memory_pipeline import cli
from memory_pipeline.display import hit_preview
from memory_pipeline.index.search import Hit

QUESTION = "Как мне описать свои убеждения и способы мышления, чтобы мой ИИ думал так же? " * 3


def test_a_dialogue_chunks_question_is_cut_short_so_its_own_answer_part_shows():
    first = hit_preview(f"User: {QUESTION}\n\nAssistant: Начнём с ценностей: что для вас важно.", 300)
    later = hit_preview(f"User: {QUESTION}\n\nAssistant: Третий шаг: гипотезы, которые вы проверяете.", 300)
    assert first.startswith("User: Как мне описать") and len(first.split("Assistant:")[0]) <= 101
    assert "Начнём с ценностей" in first and "Третий шаг: гипотезы" in later and first != later


def test_other_texts_are_one_line_as_before():
    assert (
        hit_preview("Темп в день старта\n\nРассчитайте   целевой темп.", 300)
        == "Темп в день старта Рассчитайте целевой темп."
    )
    assert hit_preview("Assistant: ответ без вопроса", 12) == "Assistant: …"
    assert hit_preview(None, 10) == ""


def test_search_output_prints_a_hits_text_literally_even_when_it_looks_like_markup(capsys):
    hit = Hit(
        chunk_id="c1",
        doc_id="d1",
        kind="article",
        title="Заметка [red]",
        mode="hybrid",
        source_path="/notes/n.md",
        text="User: что значит [bold] и [/x]?\n\nAssistant: это просто скобки [/link]",
        score=0.5,
        created_at=datetime(2025, 1, 2),
    )
    cli._print_hits([hit], as_json=False)
    out = " ".join(capsys.readouterr().out.split())
    assert "1. Заметка [red]" in out
    assert "User: что значит [bold] и [/x]? Assistant: это просто скобки [/link]" in out
