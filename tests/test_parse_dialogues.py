"""Dialogue parsers: ChatGPT and Claude JSON exports, nexus Obsidian notes of every generation, chat JSONL."""

import json
import logging
import re
import shutil
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memory_pipeline.errors import ParseError
from memory_pipeline.records import Kind, stable_id
from memory_pipeline.service.inbox import Inbox, InboxMessage
from memory_pipeline.sources import _dialogue, discover_sources, parse_file
from memory_pipeline.sources.chat_jsonl import parse_chat_jsonl
from memory_pipeline.sources.chatgpt import parse_chatgpt_export
from memory_pipeline.sources.claude import parse_claude_export
from memory_pipeline.sources.nexus import (
    claimed_by_conversation_note,
    conversation_note_members,
    parse_nexus_markdown,
)

TESTS = Path(__file__).resolve().parent
SAMPLES = TESTS / "fixtures" / "nexus_obsidian"
DIALOGUES = TESTS / "fixtures" / "dialogues"
NEXUS = DIALOGUES / "nexus"
FOLDER_NOTE = NEXUS / "Марафон за 4 часа.md"
FIRST_MESSAGE_TIMES = {
    "honest_self_assessment": datetime(2025, 6, 30, 12, 10),
    "learning_local_ai": datetime(2025, 6, 16, 21, 34),
    "theory_vs_practice": datetime(2025, 7, 24, 6, 56),
    "training_protocols": datetime(2025, 6, 16, 19, 11),
}
MOJIBAKE = re.compile(r"–[^\s\d]|Ã|Ð|‚Ä")


def only(documents):
    documents = list(documents)
    assert len(documents) == 1
    return documents[0]


def roles(document):
    return [t.role for t in document.turns]


def misdecode_cp1252(text: str) -> str:
    """UTF-8 bytes read as cp1252 (undefined bytes kept as C1 controls, as browsers do)."""
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in text.encode("utf-8"))


# --- nexus: the four real samples (generation a, double-encoded) ---------------------------------


def test_real_samples_are_present():
    assert sorted(p.stem for p in SAMPLES.glob("*.md")) == sorted(FIRST_MESSAGE_TIMES)


@pytest.mark.parametrize("stem", sorted(FIRST_MESSAGE_TIMES))
def test_real_sample_parses_into_one_repaired_conversation(stem):
    path = SAMPLES / f"{stem}.md"
    doc = only(parse_file(path))
    assert doc.kind is Kind.DIALOGUE and doc.format == "nexus_md"
    assert roles(doc) == ["user", "assistant"]
    assert [t.timestamp for t in doc.turns] == [FIRST_MESSAGE_TIMES[stem]] * 2
    assert doc.created_at == FIRST_MESSAGE_TIMES[stem]
    assert doc.repair.repaired and doc.repair.codec == "mac_roman"
    assert doc.language == "ru" and doc.title == stem.replace("_", " ")
    assert doc.doc_id == stable_id("nexus_md", doc.source_hash)
    for turn in doc.turns:
        assert not MOJIBAKE.search(turn.text)
        assert len(re.findall("[а-яё]", turn.text, re.I)) > 100
        assert "[[" not in turn.text and "<!--" not in turn.text and "nexus_" not in turn.text
        assert not turn.text.startswith(">"), "the callout's quoting is gone"
        assert re.fullmatch(r"[0-9a-f-]{36}", turn.message_id)


def test_real_sample_message_text_keeps_markdown():
    doc = only(parse_nexus_markdown(SAMPLES / "learning_local_ai.md"))
    question, answer = doc.turns
    assert question.text.startswith("я думаю, если я буду понемногу изучать мир локальных ИИ")
    assert question.text.endswith("просто что-то обучить")
    assert answer.text.startswith("Ты **абсолютно вытянешь**, даже с нуля.")
    assert "| Этап | Что это | Как можно делать |" in answer.text
    assert "> Твоя сила — не в том, чтобы делать как OpenAI," in answer.text.split("\n")
    assert not any(line.startswith("> >") for line in answer.text.split("\n"))


def test_wiki_link_between_messages_is_not_message_text():
    doc = only(parse_nexus_markdown(SAMPLES / "training_protocols.md"))
    assert doc.turns[0].text.endswith("13.1.4 Разделение между ядром и обёртками")
    assert doc.turns[1].text.startswith("### 📘 Раздел 13. Протоколы обучения")
    assert all("подготовка_корпуса" not in t.text for t in doc.turns)


@pytest.mark.parametrize("stem", sorted(FIRST_MESSAGE_TIMES))
def test_correct_utf8_copy_parses_to_identical_turns_unrepaired(stem, tmp_path):
    garbled = (SAMPLES / f"{stem}.md").read_text(encoding="utf-8")
    fixed = "\n".join(line.encode("mac_roman").decode("utf-8") for line in garbled.split("\n"))
    copy = tmp_path / f"{stem}.md"
    copy.write_text(fixed, encoding="utf-8")
    original, clean = only(parse_nexus_markdown(SAMPLES / f"{stem}.md")), only(parse_nexus_markdown(copy))
    assert clean.turns == original.turns
    assert clean.title == original.title
    assert not clean.repair.repaired and clean.repair.codec is None


# --- nexus: other generations --------------------------------------------------------------------


def test_heading_generation_with_plain_text():
    doc = only(parse_nexus_markdown(NEXUS / "headings.md"))
    assert roles(doc) == ["user", "assistant", "user", "assistant"]
    assert doc.title == "Интервалы или длинные пробежки"
    answer = doc.turns[1].text
    assert "### Итог" in answer, "a heading inside an answer is not a message header"
    assert "```python\n### User\npace = 5.5" in answer, "nor is a heading inside code"
    assert answer.endswith("> Сначала объём, потом скорость.")
    assert all("[[" not in t.text and "---" not in t.text for t in doc.turns)
    assert doc.turns[3].text == "Три-четыре, с разгрузочной неделей."


def test_quoted_heading_generation():
    doc = only(parse_nexus_markdown(NEXUS / "quoted_headings.md"))
    assert roles(doc) == ["user", "assistant", "user", "assistant"]
    assert doc.turns[0].text == "Сравни Месси и Роналду.\n> Говорят, что Месси лучше в дриблинге."
    assert (
        doc.turns[1].text
        == "Оба великие, но по-разному:\n\n- Месси — дриблинг и пас;\n- Роналду — удар и игра головой."
    )
    assert doc.turns[1].author == "ChatGPT"
    assert [t.message_id for t in doc.turns] == ["aaa1-user", "bbb2-assistant", "ccc3-user", "ddd4-assistant"]
    assert doc.turns[2].timestamp == datetime(2024, 4, 5, 10, 20)


def test_front_matter_generation_with_iso_times_and_model_labels():
    doc = only(parse_nexus_markdown(NEXUS / "front_matter.md"))
    assert doc.external_id == "6650f0aa-1111-4222-8333-944455556666"
    assert doc.doc_id == stable_id("nexus_md", doc.external_id)
    assert doc.title == "Pacing: negative split"
    assert doc.created_at == datetime(2024, 5, 24, 16, 28, tzinfo=UTC)
    assert doc.updated_at == datetime(2024, 5, 24, 16, 40, tzinfo=UTC)
    assert roles(doc) == ["user", "assistant"], "consecutive assistant messages are one turn"
    user, assistant = doc.turns
    assert user.timestamp == datetime(2024, 5, 24, 16, 28) and user.model is None
    assert assistant.model == "gpt-4o" and assistant.author == "Assistant"
    assert "| Negative split | steady, strong finish |" in assistant.text
    assert assistant.text.endswith("Try it once in a 10K.")
    assert doc.metadata["provider"] == "chatgpt"
    assert doc.language == "en"


def test_bold_label_generation():
    doc = only(parse_nexus_markdown(NEXUS / "bold_labels.md"))
    assert roles(doc) == ["user", "assistant", "user", "assistant"]
    assert [t.model for t in doc.turns] == [None, "gpt-4o-mini", None, "gpt-4o-mini"]
    assert "**Важно:** VAR вмешивается только при явной ошибке." in doc.turns[1].text
    assert doc.turns[2].timestamp == datetime(2024, 10, 5, 19, 40)
    assert doc.title == "Зачем нужен VAR"


def test_conversation_note_with_exchange_folder_is_one_conversation():
    members = conversation_note_members(FOLDER_NOTE)
    assert [m.name for m in members] == ["01_хочу_пробежать_марафон.md", "02_а_если_добавить_силовые.md"]
    assert all(claimed_by_conversation_note(m) for m in members)
    doc = only(parse_file(FOLDER_NOTE))
    assert roles(doc) == ["user", "assistant", "user", "assistant"]
    assert [t.message_id for t in doc.turns] == ["e1-user", "e1-assistant", "e2-user", "e2-assistant"]
    assert doc.title == "Марафон за 4 часа"
    assert doc.external_id == "0c0c0c0c-1234-4567-89ab-cdef00000042"
    assert doc.turns[3].timestamp == datetime(2025, 2, 1, 10, 16)
    assert doc.source_hash == _dialogue.files_sha256([FOLDER_NOTE, *members])
    assert [t.source_file for t in doc.turns] == [str(members[0])] * 2 + [str(members[1])] * 2


def test_chunks_of_a_folder_conversation_name_the_exchange_file_they_come_from():
    from memory_pipeline.config import ChunkingConfig
    from memory_pipeline.index.chunking import chunk_document

    members = conversation_note_members(FOLDER_NOTE)
    chunks = chunk_document(only(parse_file(FOLDER_NOTE)), ChunkingConfig())
    assert [(c.turn_index, c.source_file) for c in chunks] == [(0, str(members[0])), (2, str(members[1]))]
    assert all(c.source_path == str(FOLDER_NOTE) for c in chunks)
    single = only(parse_file(SAMPLES / "honest_self_assessment.md"))
    assert all(t.source_file is None for t in single.turns)


def test_exchange_folder_changes_update_the_same_conversation(tmp_path):
    shutil.copytree(NEXUS, tmp_path / "nexus")
    note = tmp_path / "nexus" / FOLDER_NOTE.name
    before = only(parse_nexus_markdown(note))
    third = note.with_suffix("") / "10_и_ещё_вопрос.md"
    third.write_text(">[!nexus_user] **User** - 01.02.2025 at 10:30\n> Сколько спать?\n", encoding="utf-8")
    after = only(parse_nexus_markdown(note))
    assert after.doc_id == before.doc_id and after.source_hash != before.source_hash
    assert after.turns[-1].text == "Сколько спать?", "10_ sorts after 02_"


def test_discovery_parses_exchange_files_through_their_note():
    units = {u.path.name: u for u in discover_sources(NEXUS, Kind.DIALOGUE)}
    assert FOLDER_NOTE.name in units and len(units[FOLDER_NOTE.name].members) == 2
    assert "01_хочу_пробежать_марафон.md" not in units
    assert {"01_сколько_пить_на_трассе.md", "02_а_гели.md"} <= set(units), "exchange files without a note stand alone"
    alone = only(parse_file(NEXUS / "exchanges_without_note" / "02_а_гели.md"))
    assert alone.title == "а гели" and roles(alone) == ["user", "assistant"]


def test_folder_beside_an_ordinary_note_is_not_claimed(tmp_path):
    (tmp_path / "Бег.md").write_text("# Бег\n\nМои заметки о беге, см. [[Бег/план]].\n", encoding="utf-8")
    (tmp_path / "Бег").mkdir()
    plan = tmp_path / "Бег" / "план.md"
    plan.write_text("### User\nКак бегать?\n\n### Assistant\nМедленно.\n", encoding="utf-8")
    assert conversation_note_members(tmp_path / "Бег.md") == []
    assert not claimed_by_conversation_note(plan)
    assert roles(only(parse_nexus_markdown(plan))) == ["user", "assistant"]


def test_markdown_without_messages_is_a_parse_error(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Просто заметка\n\nНикакого диалога.\n", encoding="utf-8")
    with pytest.raises(ParseError, match="notes.md.*no User/Assistant messages"):
        list(parse_nexus_markdown(path))


# --- ChatGPT -------------------------------------------------------------------------------------


def test_chatgpt_keeps_the_current_branch_and_drops_hidden_system_and_tool_messages(caplog):
    path = DIALOGUES / "chatgpt_branches.json"
    with caplog.at_level(logging.WARNING):
        docs = list(parse_chatgpt_export(path))
    assert [d.external_id for d in docs] == ["conv-halfmarathon-1", "conv-tempo-2"]
    assert any("chatgpt_branches.json" in r.getMessage() and "conv-broken-3" in r.getMessage() for r in caplog.records)
    doc = docs[0]
    assert doc.doc_id == stable_id("chatgpt_json", "conv-halfmarathon-1")
    assert doc.title == "Подготовка к полумарафону"
    assert roles(doc) == ["user", "assistant", "user", "assistant"]
    texts = "\n".join(t.text for t in doc.turns)
    for dropped in ("СТАРЫЙ ОТВЕТ", "Отвечай кратко", "print(55/10)", "5.5", "Готово."):
        assert dropped not in texts
    assert doc.turns[1].text.startswith("За 12 недель реально") and doc.turns[1].model == "gpt-4o"
    assert doc.turns[2].text == "Вот мой план на неделю, посчитай темп для 10 км за 55 минут."
    assert doc.turns[3].text == "Считаю темп.\n\nТемп 5:30 на километр.", "consecutive assistant messages merge"
    assert doc.turns[0].timestamp == datetime(2024, 6, 16, 18, 40, tzinfo=UTC)
    assert doc.created_at == datetime(2024, 6, 16, 18, 40, tzinfo=UTC)
    assert docs[1].title == "What is a tempo run?", "empty title: first words of the first question"
    assert docs[1].turns[1].model == "gpt-4o-mini"


def test_chatgpt_single_conversation_object():
    doc = only(parse_file(DIALOGUES / "chatgpt_single.json"))
    assert doc.format == "chatgpt_json" and doc.external_id == "conv-single-4" and doc.title == "Tempo runs"


def test_chatgpt_reexport_with_more_turns_keeps_the_document_id(tmp_path):
    conversation = json.loads((DIALOGUES / "chatgpt_single.json").read_text(encoding="utf-8"))
    first = only(parse_chatgpt_export(_write_json(tmp_path / "a.json", [conversation])))
    mapping = conversation["mapping"]
    mapping["a"]["children"] = ["q2"]
    mapping["q2"] = {
        "id": "q2",
        "parent": "a",
        "children": [],
        "message": {
            "id": "q2",
            "author": {"role": "user"},
            "content": {"content_type": "text", "parts": ["How often?"]},
        },
    }
    conversation["current_node"] = "q2"
    second = only(parse_chatgpt_export(_write_json(tmp_path / "b.json", [conversation])))
    assert second.doc_id == first.doc_id and second.content_hash != first.content_hash
    assert len(second.turns) == len(first.turns) + 1


def test_chatgpt_double_encoded_messages_are_repaired_per_conversation(tmp_path):
    question, answer = "Сколько отдыхать после марафона?", "Неделю лёгкого бега — минимум."
    conversation = {
        "title": misdecode_cp1252("Отдых"),
        "id": "c-mojibake",
        "current_node": "a",
        "mapping": {
            "q": {
                "id": "q",
                "parent": None,
                "children": ["a"],
                "message": {
                    "id": "q",
                    "author": {"role": "user"},
                    "content": {"content_type": "text", "parts": [misdecode_cp1252(question)]},
                },
            },
            "a": {
                "id": "a",
                "parent": "q",
                "children": [],
                "message": {
                    "id": "a",
                    "author": {"role": "assistant"},
                    "content": {"content_type": "text", "parts": [misdecode_cp1252(answer)]},
                },
            },
        },
    }
    doc = only(parse_chatgpt_export(_write_json(tmp_path / "conversations.json", [conversation])))
    assert [t.text for t in doc.turns] == [question, answer] and doc.title == "Отдых"
    assert doc.repair.repaired and doc.repair.codec == "cp1252"


def test_chatgpt_without_current_node_keeps_the_newest_branch(tmp_path):
    conversation = json.loads((DIALOGUES / "chatgpt_branches.json").read_text(encoding="utf-8"))[0]
    del conversation["current_node"]
    doc = only(parse_chatgpt_export(_write_json(tmp_path / "c.json", conversation)))
    assert "СТАРЫЙ ОТВЕТ" not in "".join(t.text for t in doc.turns)
    assert doc.turns[-1].text.endswith("Темп 5:30 на километр.")


def test_json_parsers_use_the_c_backend_of_ijson():
    assert _dialogue._IJSON.backend_name == "yajl2_c"


def test_chatgpt_export_streams_in_bounded_memory(tmp_path):
    """A ~30 MB export parses with peak Python memory far below the file size (one conversation at a time)."""
    path = tmp_path / "conversations.json"
    paragraph = "Easy run, 10 km at 6:00 per km, heart rate 135, felt good, legs fresh after rest day. " * 300
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for n in range(120):
            mapping = {"root": {"id": "root", "parent": None, "children": ["m0"], "message": None}}
            for i in range(10):
                message = {
                    "id": f"m{i}",
                    "author": {"role": "user" if i % 2 == 0 else "assistant"},
                    "create_time": 1.7e9 + n * 100 + i,
                    "content": {"content_type": "text", "parts": [f"{n}/{i} {paragraph}"]},
                }
                parent, children = ("root" if i == 0 else f"m{i - 1}"), ([f"m{i + 1}"] if i < 9 else [])
                mapping[f"m{i}"] = {"id": f"m{i}", "parent": parent, "children": children, "message": message}
            handle.write(
                ("," if n else "")
                + json.dumps({"title": f"Run {n}", "id": f"c{n}", "current_node": "m9", "mapping": mapping})
            )
        handle.write("]")
    size = path.stat().st_size
    assert size > 30_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in parse_chatgpt_export(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 120
    assert peak < size / 10, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


# --- Claude --------------------------------------------------------------------------------------


def test_claude_prefers_text_blocks_and_drops_thinking_and_tools(caplog):
    with caplog.at_level(logging.WARNING):
        docs = list(parse_file(DIALOGUES / "claude_export.json"))
    assert [d.format for d in docs] == ["claude_json", "claude_json"]
    assert any("c1a2b3c4-0000-4000-8000-000000000003" in r.getMessage() for r in caplog.records), "empty one skipped"
    football = docs[0]
    assert football.doc_id == stable_id("claude_json", "c1a2b3c4-0000-4000-8000-000000000001")
    assert football.title == "Футбол: прессинг против низкого блока"
    assert football.turns[0].text.startswith("Почему высокий прессинг"), "content blocks win over 'text'"
    assert football.turns[1].text == (
        "Потому что прессинговать некого: низкий блок не строит атаку от вратаря.\n\n"
        "Важнее позиционная атака и быстрые фланги."
    )
    assert football.turns[0].timestamp == datetime(2025, 3, 2, 18, 5, 11, 901000, tzinfo=UTC)
    running = docs[1]
    assert running.title == "Is it worth running every day as a"
    assert roles(running) == ["user", "assistant", "user"]
    assert running.turns[2].text == "And one more thing\n\nabout rest days?", (
        "'text' is the fallback; same-side messages merge"
    )


# --- chat JSONL ----------------------------------------------------------------------------------


def test_jsonl_messages_group_dedupe_and_skip_a_truncated_last_line(caplog):
    with caplog.at_level(logging.WARNING):
        docs = list(parse_file(DIALOGUES / "chat_messages.jsonl"))
    assert any(
        "truncated last line" in r.getMessage() and "chat_messages.jsonl:9" in r.getMessage() for r in caplog.records
    )
    inbox, other = docs
    assert inbox.external_id == "inbox-42" and inbox.doc_id == stable_id("chat_jsonl", "inbox-42")
    assert inbox.title == "Темп марафона"
    assert roles(inbox) == ["user", "assistant", "user"], "duplicate turn 2 appears once; system and tool dropped"
    assert inbox.turns[1].text == "По твоим заметкам — 5:40 на километр, финиш за 3:59."
    assert inbox.turns[1].model == "qwen2.5-7b-instruct"
    assert inbox.turns[1].timestamp == datetime(2025, 5, 1, 9, 0, 5, tzinfo=UTC), "epoch timestamps"
    assert inbox.turns[2].timestamp == datetime(2025, 5, 1, 9, 1, tzinfo=UTC)
    assert other.external_id == "other-7" and other.turns[0].timestamp == datetime(2025, 5, 2, 10, 0)


def test_jsonl_whole_conversations():
    docs = list(parse_chat_jsonl(DIALOGUES / "chat_conversations.jsonl"))
    assert len(docs) == 3
    warmup = docs[0]
    assert warmup.external_id == "ft-1" and warmup.title == "Warm-up"
    assert [t.text for t in warmup.turns] == [
        "Best warm-up before intervals?",
        "Fifteen minutes easy, drills, then four strides.",
        "And after?",
        "Ten minutes of easy jogging.",
    ], "a re-sent longer conversation adds only its new turns"
    assert {t.model for t in warmup.turns if t.role == "assistant"} == {"llama-3.1-8b"}
    assert warmup.created_at == datetime(2025, 1, 10, 8, tzinfo=UTC)
    untitled = docs[1:]
    assert [d.external_id for d in untitled] == [None, None]
    assert len({d.doc_id for d in untitled}) == 2, "conversation lines without an id are separate documents"
    assert untitled[0].title == "Сколько отдыхать между интервалами 400 м?"


def test_service_inbox_files_parse_idempotently(tmp_path):
    inbox = Inbox(tmp_path)
    question = "Как восстановиться после 30 км?"
    first = [InboxMessage(role="system", content="memory"), InboxMessage(role="user", content=question)]
    inbox.record(first, conversation_id="live-1", title="Восстановление", model="local-7b")
    path = Path(inbox.record(first, conversation_id="live-1").inbox_file)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(
            json.dumps({"conversation_id": "live-1", "turn_index": 1, "role": "user", "content": question}) + "\n"
        )
        handle.write('{"conversation_id": "live-1", "turn_index": 2, "role": "assis')
    before = only(parse_chat_jsonl(path))
    reply = [*first, InboxMessage(role="assistant", content=[{"type": "text", "text": "Сон, углеводы и лёгкий день."}])]
    Inbox(tmp_path).record(reply, conversation_id="live-1", model="local-7b")
    after = only(parse_chat_jsonl(path))
    assert roles(before) == ["user"] and roles(after) == ["user", "assistant"]
    assert after.doc_id == before.doc_id == stable_id("chat_jsonl", "live-1")
    assert after.turns[1].text == "Сон, углеводы и лёгкий день." and after.turns[1].model == "local-7b"
    assert after.title == "Восстановление"


def test_jsonl_mojibake_behind_json_escapes_is_repaired(tmp_path):
    question = "Какой пульс считать зоной 2?"
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"role": "user", "content": misdecode_cp1252(question)}) + "\n", encoding="ascii")
    doc = only(parse_chat_jsonl(path))
    assert doc.turns[0].text == question and doc.repair.codec == "cp1252"


def test_jsonl_without_any_chat_line_is_a_parse_error(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"event": "start"}\n\n{"event": "stop"}\n', encoding="utf-8")
    with pytest.raises(ParseError, match="notes.jsonl"):
        list(parse_chat_jsonl(path))


# --- bad inputs ----------------------------------------------------------------------------------


def _write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


BAD_JSON = {
    "empty": (b"", "empty file"),
    "blank": (b"  \n ", "empty file"),
    "invalid": (b'[{"title": "x", "mapping": {}, }]', "invalid JSON"),
    "truncated": (
        b'[{"title": "x", "mapping": {"a": {"id": "a", "message": {"content": {"parts": ["hal',
        "truncated JSON",
    ),
    "wrong_shape_object": (b'{"foo": [1, 2]}', "no readable conversation"),
    "wrong_shape_array": (b"[1, 2, 3]", "no readable conversation"),
    "wrong_shape_scalar": (b'"mapping chat_messages"', "not a JSON array or object"),
    "empty_array": (b"[]", "no conversations"),
    "binary": (bytes(range(256)) * 8, "not a JSON array or object"),
    "binary_in_brackets": (b"[\x00\x01\xff\xfe\x89PNG]", "invalid JSON"),
}


@pytest.mark.parametrize("parser", [parse_chatgpt_export, parse_claude_export], ids=["chatgpt", "claude"])
@pytest.mark.parametrize("name", sorted(BAD_JSON))
def test_bad_json_is_a_parse_error_naming_the_file(parser, name, tmp_path):
    data, reason = BAD_JSON[name]
    path = tmp_path / f"{name}.json"
    path.write_bytes(data)
    with pytest.raises(ParseError, match=re.escape(reason)) as error:
        list(parser(path))
    assert error.value.path == str(path) and str(path) in str(error.value)


@pytest.mark.parametrize("name", sorted(BAD_JSON))
def test_bad_json_through_dispatch_is_a_parse_error(name, tmp_path):
    path = tmp_path / f"{name}.json"
    path.write_bytes(BAD_JSON[name][0])
    with pytest.raises(ParseError) as error:
        list(parse_file(path))
    assert str(path) in str(error.value)


@pytest.mark.parametrize("parser", [parse_chatgpt_export, parse_claude_export, parse_chat_jsonl, parse_nexus_markdown])
def test_missing_file_is_a_parse_error(parser, tmp_path):
    with pytest.raises(ParseError, match="missing"):
        list(parser(tmp_path / "missing.json"))


def test_binary_jsonl_is_a_parse_error(tmp_path):
    path = tmp_path / "inbox.jsonl"
    path.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(ParseError, match="inbox.jsonl.*binary"):
        list(parse_chat_jsonl(path))
