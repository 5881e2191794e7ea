"""Exports as people have them: ZIP archives read in place, formats by content, profiles, attachments."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from memory_pipeline.cli import app
from memory_pipeline.config import Config
from memory_pipeline.datasets.build import make_examples
from memory_pipeline.errors import ParseError
from memory_pipeline.index.embedding import load_embedder
from memory_pipeline.index.search import Searcher
from memory_pipeline.index.sync import sync_index
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_kind, load_reports
from memory_pipeline.profile import latest_profile, profile_assignments, profile_documents
from memory_pipeline.records import Kind
from memory_pipeline.scoring.routing import AdapterProfile, choose_adapters, route_item
from memory_pipeline.sources import parse_detected, parse_file
from memory_pipeline.sources.archive import ArchiveLimits

TESTS = Path(__file__).resolve().parent
EXPORTS = TESTS / "fixtures" / "exports"
CHATGPT_ZIP = EXPORTS / "chatgpt_export.zip"
CLAUDE_ZIP = EXPORTS / "claude_export.zip"
NEXUS_NOTE = TESTS / "fixtures" / "dialogues" / "nexus" / "headings.md"


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, content: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in content.items():
            archive.writestr(name, data)
    return path


def dialogue_rows(config: Config, kind: Kind = Kind.DIALOGUE) -> list[dict]:
    """Stored rows of a kind, through a new store handle (a kept one may show an older table version)."""
    return DocumentStore(config.documents_dir).summary_rows(kind)


def by_format(documents) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for doc in documents:
        grouped.setdefault(doc.format, []).append(doc)
    return grouped


# --- archives in, as they are --------------------------------------------------------------------


def test_chatgpt_zip_parses_in_place_with_member_provenance():
    docs = by_format(parse_file(CHATGPT_ZIP))
    assert set(docs) == {"chatgpt_json", "chatgpt_profile"}, "chat.html, user.json, feedback, image: no documents"
    marathon, older, _ = docs["chatgpt_json"]
    assert marathon.source_path == f"{CHATGPT_ZIP}!conversations.json"
    assert marathon.external_id == "6761e0b2-aaaa-8000-9000-000000000001" and marathon.turns[0].message_id == "u1"
    texts = [t.text for t in marathon.turns]
    assert texts == [
        "Хочу пробежать марафон из 3:30. Сколько недель готовиться?",
        "Около 16 недель при базе 40 км в неделю.",
        "[image: pulse_chart.png]",
        "По графику пульс в зоне 2 — так и держи.",
    ], "thoughts, reasoning recap, code and its output left out; the image-only turn keeps its file name"
    assert older.title == "Кроссовки"


def test_chatgpt_uploads_of_any_type_keep_a_placeholder_naming_each_file():
    *_, report = by_format(parse_file(CHATGPT_ZIP))["chatgpt_json"]
    assert [t.text for t in report.turns if t.role == "user"] == [
        "[file: race_results.pdf]",
        "[file: training_log.docx]\n[file: splits.csv]",
    ], "a turn of uploads only (text part empty, files in metadata.attachments) is never silently empty"


def test_chatgpt_custom_instructions_are_one_profile_newest_wins():
    (profile,) = by_format(parse_file(CHATGPT_ZIP))["chatgpt_profile"]
    assert profile.kind is Kind.PROFILE and profile.metadata["written_by"] == "user"
    assert profile.metadata["about_user"].startswith("Я бегаю марафоны и работаю инженером-программистом")
    assert "Отвечай по-русски" in profile.metadata["about_model"]
    assert profile.created_at.year == 2025, "dated by the newest conversation that carries it"
    assert profile.metadata["seen_in"].endswith("0003")
    assert [s.heading_path for s in profile.sections] == [["About me"], ["How I want answers"]]
    assert profile.body_text().startswith("Я бегаю марафоны")


def test_claude_zip_attachments_projects_and_thinking():
    docs = by_format(parse_file(CLAUDE_ZIP))
    (dialogue,) = docs["claude_json"]
    assert "СКРЫТОЕ" not in " ".join(t.text for t in dialogue.turns)
    assert dialogue.turns[2].text == "[file: watch_export.fit]", "a files-only message says what it carried"
    (attachment,) = docs["claude_attachment"]
    assert attachment.kind is Kind.ARTICLE and attachment.title == "plan.txt"
    assert attachment.metadata["conversation_doc_id"] == dialogue.doc_id and attachment.metadata["message_id"] == "m1"
    assert "интервалы 5×1000 м" in attachment.body_text()
    (project_doc,) = docs["claude_project_doc"]
    assert project_doc.title == "Марафон 2025: zones.md" and project_doc.sections[0].heading_path == ["Марафон 2025"]
    assert project_doc.source_path.endswith("claude_export.zip!projects.json")
    instructions, memory, project_memory = docs["claude_profile"]
    assert instructions.kind is Kind.PROFILE and instructions.title == "Instructions for project Марафон 2025 (claude)"
    assert instructions.metadata["scope"] == "project Марафон 2025" and "учитывай мой пульс" in instructions.body_text()
    assert instructions.updated_at.month == 2, "dated by the project"
    assert memory.metadata == {
        "provider": "claude",
        "scope": "global",
        "written_by": "claude",
        "seen_in": "acc-1",
        "about_user": memory.body_text(),
    } and memory.body_text().startswith("**Work context**")
    assert memory.sections[0].heading_path == ["What Claude remembers about me"] and memory.updated_at is None
    assert project_memory.metadata["scope"] == "project memory proj-1" and "цель 3:30" in project_memory.body_text()


def test_parse_cli_shows_the_detector_for_archives_and_loose_files(tmp_path):
    note = tmp_path / "chat saved by hand.txt"
    shutil.copy(NEXUS_NOTE, note)
    result = CliRunner().invoke(app, ["parse", "--json", str(CHATGPT_ZIP), str(note)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["detected_by"] == "conversations.json in archive; content: JSON with 'mapping' (ChatGPT export)"
    assert lines[-1]["format"] == "nexus_md" and lines[-1]["detected_by"] == "content: nexus chat markers"


def _hostile(tmp_path: Path, name: str) -> Path:
    good = members(CHATGPT_ZIP)["conversations.json"]
    path = tmp_path / f"{name}.zip"
    if name == "traversal":
        return write_zip(path, {"conversations.json": good, "../../evil.json": good, "/etc/abs.json": good})
    if name == "nested":
        inner = tmp_path / "inner.zip"
        write_zip(inner, {"conversations.json": good})
        return write_zip(path, {"conversations.json": good, "old/export.zip": inner.read_bytes()})
    if name == "bomb":
        return write_zip(path, {"conversations.json": good, "zeros.json": b"\x00" * 20_000_000})
    if name == "overlapping":  # every entry points at the same compressed stream (zbsm-style)
        return _overlapping_bomb(path, copies=40)
    if name == "truncated":
        data = write_zip(path, {"conversations.json": good}).read_bytes()
        path.write_bytes(data[: len(data) - 30])
        return path
    if name == "not_a_zip":
        path.write_bytes(b"PK\x03\x04" + b"garbage" * 50)
        return path
    if name == "corrupt_member":
        data = bytearray(write_zip(path, {"conversations.json": good}).read_bytes())
        data[60:90] = b"\xff" * 30
        path.write_bytes(bytes(data))
        return path
    if name == "symlink":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("conversations.json", good)
            link = zipfile.ZipInfo("link.json")
            link.external_attr = 0o120777 << 16
            archive.writestr(link, "/etc/passwd")
        return path
    if name == "encrypted":  # zipfile cannot write encrypted members: set the flag in both headers
        data = bytearray(write_zip(path, {"conversations.json": good, "secret.json": b"{}"}).read_bytes())
        with zipfile.ZipFile(path) as archive:
            local = archive.getinfo("secret.json").header_offset
        central = data.rindex(b"PK\x01\x02")
        data[local + 6] |= 0x1
        data[central + 8] |= 0x1
        path.write_bytes(bytes(data))
        return path
    raise AssertionError(name)


def _overlapping_bomb(path: Path, copies: int) -> Path:
    """One deflated 3 MB member, then ``copies`` central directory entries all pointing at it."""
    write_zip(path, {"a.json": b" " * 3_000_000})
    data = path.read_bytes()
    central = data.index(b"PK\x01\x02")
    end = data.index(b"PK\x05\x06")
    entry = data[central:end]
    entries = b"".join(entry[:46] + bytes([ord("a") + i % 26]) + entry[47:] for i in range(copies))
    tail = bytearray(data[end:])
    tail[8:10] = tail[10:12] = copies.to_bytes(2, "little")
    tail[12:16] = len(entries).to_bytes(4, "little")
    path.write_bytes(data[:central] + entries + bytes(tail))
    return path


HOSTILE = {
    "traversal": ("2 member(s) refused", "unsafe member name", True),
    "nested": ("nested archive refused (NestedArchiveError)", "old/export.zip", True),
    "bomb": ("expands", "zip bomb", False),
    "overlapping": ("expands", "in all", False),
    "truncated": ("truncated or corrupt central directory", "not a readable ZIP archive", False),
    "not_a_zip": ("truncated or corrupt central directory", "not a readable ZIP archive", False),
    "corrupt_member": ("conversations.json", "", False),
    "symlink": ("symbolic link", "link.json", True),
    "encrypted": ("encrypted", "secret.json", True),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archives_give_named_errors_and_the_honest_members_still_parse(name, tmp_path):
    path = _hostile(tmp_path, name)
    first, second, keeps_good = HOSTILE[name]
    produced = []
    with pytest.raises(ParseError) as error:
        produced.extend(parse_file(path))
    assert error.value.path == str(path) and first in error.value.reason and second in error.value.reason
    assert bool(produced) == keeps_good
    assert not list(tmp_path.glob("**/evil.json")) and not Path("/etc/abs.json").exists()


def test_no_traceback_from_any_hostile_archive_through_ingest_or_parse(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in HOSTILE:
        _hostile(tmp_path, name).rename(folder / f"{name}.zip")
    good = members(CHATGPT_ZIP)["conversations.json"]
    inner = write_zip(tmp_path / "inner.zip", {"conversations.json": good})
    windows_names = {"..\\..\\evil.json": good, "C:\\evil.json": good, "conversations.json": good}
    write_zip(folder / "windows_names.zip", windows_names)
    write_zip(folder / "disguised_nested.zip", {"conversations.json": good, "notes.json": inner.read_bytes()})
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    report = ingest_kind(config, Kind.DIALOGUE)
    failed = {Path(e.path).name: e.reason for e in report.errors}
    assert sorted(failed) == sorted(p.name for p in folder.iterdir()), "every hostile archive is named"
    assert not any("Traceback" in reason or reason.startswith(("KeyError", "TypeError")) for reason in failed.values())
    assert "unsafe member name" in failed["windows_names.zip"]
    assert "NestedArchiveError" in failed["disguised_nested.zip"]
    assert {r["title"] for r in dialogue_rows(config)} >= {"Подготовка к марафону"}, "honest members still ingested"
    assert not list(tmp_path.rglob("evil.json"))
    result = CliRunner().invoke(app, ["parse", *map(str, sorted(folder.iterdir()))])
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))


def test_archive_limits_on_members_and_total_size(tmp_path):
    path = write_zip(tmp_path / "many.zip", {f"notes/{i}.md": b"# Note\n\nText.\n" for i in range(30)})
    with pytest.raises(ParseError, match=r"30 members, over the limit of 10 \(ingest.archive_max_members\)"):
        list(parse_file(path, limits=ArchiveLimits(max_members=10)))
    with pytest.raises(ParseError, match="archive_max_total_mb"):
        list(parse_file(path, limits=ArchiveLimits(max_total_bytes=100)))
    assert len(list(parse_file(path))) == 30


def test_ingest_reports_a_hostile_archive_and_ingests_the_rest(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(CLAUDE_ZIP, folder)
    shutil.copy(_hostile(tmp_path, "bomb"), folder / "bomb.zip")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    report = ingest_kind(config, Kind.DIALOGUE)
    assert [(Path(e.path).name, "zip bomb" in e.reason) for e in report.errors] == [("bomb.zip", True)]
    store = DocumentStore(config.documents_dir)
    assert {r["format"] for r in store.summary_rows(Kind.DIALOGUE)} == {"claude_json"}
    assert {r["format"] for r in store.summary_rows(Kind.ARTICLE)} == {"claude_attachment", "claude_project_doc"}
    assert len(store.summary_rows(Kind.PROFILE)) == 3


def test_an_unpacked_export_folder_skips_its_companions(tmp_path):
    folder = tmp_path / "unpacked"
    folder.mkdir()
    for name, data in members(CHATGPT_ZIP).items():
        (folder / name).write_bytes(data)
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    report = ingest_kind(config, Kind.DIALOGUE)
    assert (report.files_seen, report.errors) == (1, []), "chat.html, user.json, feedback and the image are not sources"
    assert {r["format"] for r in dialogue_rows(config)} == {"chatgpt_json"}
    assert [r["title"] for r in dialogue_rows(config, Kind.PROFILE)] == ["About me (chatgpt)"]
    assert DocumentStore(config.documents_dir).count(Kind.ARTICLE) == 0, "chat.html is not every conversation again"


def test_an_unpacked_claude_export_ingests_its_projects_and_memories_with_the_dialogues(tmp_path):
    from memory_pipeline.ingest.pipeline import assign_kinds

    folder = tmp_path / "unpacked"
    folder.mkdir()
    for name, data in members(CLAUDE_ZIP).items():
        (folder / name).write_bytes(data)
    empty = Config(storage_root=tmp_path / "elsewhere")
    assert assign_kinds(empty, [folder]) == {
        Kind.DIALOGUE: [folder / "conversations.json", folder / "memories.json"],
        Kind.ARTICLE: [folder / "projects.json"],
    }, "a memories.json under no configured folder goes with the dialogues"
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    report = ingest_kind(config, Kind.DIALOGUE)
    assert (report.files_seen, report.errors) == (3, []), "users.json holds nothing the user said; not a source"
    assert len(dialogue_rows(config, Kind.PROFILE)) == 3 and len(dialogue_rows(config, Kind.ARTICLE)) == 2


# --- a newer export beside the older one -----------------------------------------------------------


NEW_ABOUT_ME = "Я бегаю ультрамарафоны и работаю инженером-программистом."


def _newer_chatgpt_export(path: Path) -> Path:
    """The next month's export: the marathon conversation grew (and the profile with it), the shoes and
    race report ones are gone, a new one appeared."""
    content = members(CHATGPT_ZIP)
    conversations = json.loads(content["conversations.json"])
    marathon = conversations[0]
    mapping = marathon["mapping"]
    mapping["ctx"]["message"]["metadata"]["user_context_message_data"]["about_user_message"] = NEW_ABOUT_ME
    mapping["a2"]["children"] = ["u3"]
    mapping["u3"] = {
        "id": "u3",
        "parent": "a2",
        "children": [],
        "message": {
            "id": "u3",
            "author": {"role": "user"},
            "create_time": 1738000000.0,
            "content": {"content_type": "text", "parts": ["А если бежать 3:20?"]},
        },
    }
    marathon["current_node"], marathon["update_time"] = "u3", 1738000000.0
    fresh = json.loads(json.dumps(conversations[1]))
    fresh.update(
        id="6761e0b2-aaaa-8000-9000-000000000004",
        conversation_id="6761e0b2-aaaa-8000-9000-000000000004",
        title="Восстановление",
        create_time=1738100000.0,
        update_time=1738100000.0,
    )
    fresh["mapping"]["u1"]["message"]["content"]["parts"] = ["Сколько отдыхать после марафона?"]
    fresh["mapping"]["ctx"]["message"]["metadata"]["user_context_message_data"]["about_user_message"] = NEW_ABOUT_ME
    content["conversations.json"] = json.dumps([marathon, fresh], ensure_ascii=False).encode("utf-8")
    return write_zip(path, content)


def test_a_newer_export_supersedes_conversation_by_conversation_and_loses_nothing(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(CHATGPT_ZIP, folder / "2025-01 export.zip")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    ingest_kind(config, Kind.DIALOGUE)
    before = {r["title"]: r["doc_id"] for r in dialogue_rows(config)}
    _newer_chatgpt_export(folder / "2025-02 export.zip")
    report = ingest_kind(config, Kind.DIALOGUE)
    assert report.errors == []
    rows = {r["title"]: r for r in dialogue_rows(config)}
    expected = ["Восстановление", "Кроссовки", "Подготовка к марафону", "Протокол забега"]
    assert sorted(rows) == expected, "nothing duplicated or lost"
    (profile,) = profile_documents(config)
    assert profile.metadata["about_user"] == NEW_ABOUT_ME
    assert profile.source_path.endswith("2025-02 export.zip!conversations.json")
    marathon = rows["Подготовка к марафону"]
    assert marathon["doc_id"] == before["Подготовка к марафону"], "same conversation id, same lineage"
    assert marathon["n_units"] == 5, "the newer version"
    assert marathon["source_path"].endswith("2025-02 export.zip!conversations.json")
    assert rows["Кроссовки"]["source_path"].endswith("2025-01 export.zip!conversations.json")
    (folder / "2025-02 export.zip").unlink()
    ingest_kind(config, Kind.DIALOGUE)
    left = {r["title"] for r in dialogue_rows(config)}
    assert {"Подготовка к марафону", "Кроссовки"} <= left and "Восстановление" not in left
    assert all(r.errors == [] for r in load_reports(config).values())


def test_an_older_export_read_after_a_newer_one_does_not_bring_back_the_old_profile(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    _newer_chatgpt_export(folder / "a newer.zip")
    shutil.copy(CHATGPT_ZIP, folder / "b older.zip")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    assert ingest_kind(config, Kind.DIALOGUE).errors == []
    (profile,) = profile_documents(config)
    assert profile.metadata["about_user"] == NEW_ABOUT_ME, "newest wins, whichever file is read last"
    assert profile.updated_at.year == 2025 and profile.metadata["seen_in"].endswith("0004")


def test_a_profile_stored_as_a_dialogue_by_an_earlier_version_becomes_a_profile_again(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(CHATGPT_ZIP, folder / "export.zip")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    ingest_kind(config, Kind.DIALOGUE)
    store = DocumentStore(config.documents_dir)
    (profile,) = profile_documents(config)
    legacy = profile.model_copy(update={"kind": Kind.DIALOGUE, "format": "profile"})
    store.delete([profile.doc_id], Kind.PROFILE)
    store.upsert([legacy])  # what the earlier version stored

    again = ingest_kind(config, Kind.DIALOGUE)
    assert again.errors == [] and again.files_parsed == 1
    assert DocumentStore(config.documents_dir).dialogue_ids_of_format("profile") == set()
    assert [p.doc_id for p in profile_documents(config)] == [profile.doc_id]


def test_a_legacy_profile_whose_export_is_gone_is_kept_as_it_is(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(CHATGPT_ZIP, folder / "export.zip")
    shutil.copy(CLAUDE_ZIP, folder / "claude.zip")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    ingest_kind(config, Kind.DIALOGUE)
    store = DocumentStore(config.documents_dir)
    [profile] = [p for p in profile_documents(config) if p.format == "chatgpt_profile"]
    store.delete([profile.doc_id], Kind.PROFILE)
    store.upsert([profile.model_copy(update={"kind": Kind.DIALOGUE, "format": "profile"})])
    for export in folder.iterdir():  # an emptied folder keeps its documents (prune is off)
        export.unlink()

    [held] = ingest_kind(config, Kind.DIALOGUE).errors
    assert "source folder is empty" in held.reason
    assert DocumentStore(config.documents_dir).dialogue_ids_of_format("profile") == {profile.doc_id}


def test_a_moved_archive_keeps_its_documents_and_their_member_paths(tmp_path):
    folder = tmp_path / "exports"
    (folder / "old").mkdir(parents=True)
    shutil.copy(CLAUDE_ZIP, folder / "claude.zip")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    ingest_kind(config, Kind.DIALOGUE)
    (folder / "claude.zip").rename(folder / "old" / "claude.zip")
    moved = ingest_kind(config, Kind.DIALOGUE)
    assert (moved.files_moved, moved.files_parsed) == (1, 0)
    paths = {r["source_path"] for r in DocumentStore(config.documents_dir).summary_rows()}
    archive = folder / "old" / "claude.zip"
    assert paths == {f"{archive}!conversations.json", f"{archive}!projects.json", f"{archive}!memories.json"}


# --- format by content -----------------------------------------------------------------------------


def test_a_nexus_note_saved_as_txt_ingests_as_a_dialogue(tmp_path):
    note = tmp_path / "dialogues" / "заметка.txt"
    note.parent.mkdir()
    shutil.copy(NEXUS_NOTE, note)
    ((doc, detection),) = list(parse_detected(note))
    assert (doc.format, detection.detector) == ("nexus_md", "content: nexus chat markers")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [note.parent]})
    report = ingest_kind(config, Kind.DIALOGUE)
    assert report.errors == [] and report.by_format == {"nexus_md": 1}


def test_real_nexus_notes_saved_as_txt_inside_a_zip_are_repaired_dialogues(tmp_path):
    samples = sorted((TESTS / "fixtures" / "nexus_obsidian").glob("*.md"))
    path = write_zip(tmp_path / "notes.zip", {f"notes/{p.stem}.txt": p.read_bytes() for p in samples})
    docs = list(parse_file(path))
    assert [d.format for d in docs] == ["nexus_md"] * len(samples) == ["nexus_md"] * 4
    assert all(d.repair.codec == "mac_roman" and d.language == "ru" for d in docs)
    assert docs[0].source_path == f"{path}!notes/{samples[0].stem}.txt"


def test_formats_by_content_whatever_the_name(tmp_path):
    cases = {
        "conversations (1)": members(CHATGPT_ZIP)["conversations.json"],
        "export.txt": members(CLAUDE_ZIP)["conversations.json"],
        "subtitles.txt": b"1\n00:00:01,000 --> 00:00:03,000\nHello.\n\n2\n00:00:04,000 --> 00:00:06,000\nWorld.\n",
        "talk.md": b"WEBVTT\n\n00:00:01.000 --> 00:00:03.000\nHello.\n",
        "chat.txt": "Разговор о сне\n\nUser: Сколько спать перед стартом?\nAssistant: Восемь часов.\n".encode(),
        "page.txt": b"<!DOCTYPE html><html><body><p>Plain page about running easy.</p></body></html>",
    }
    expected = {
        "conversations (1)": ("chatgpt_json", "content: JSON with 'mapping' (ChatGPT export)"),
        "export.txt": ("claude_json", "content: JSON with 'chat_messages' (Claude export)"),
        "subtitles.txt": ("srt", "content: SRT cue timing line"),
        "talk.md": ("vtt", "content: WEBVTT header"),
        "chat.txt": ("chat_text", "content: User:/Assistant: transcript"),
        "page.txt": ("html", "content: HTML document"),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        doc, detection = next(iter(parse_detected(path)))
        assert (doc.format, detection.detector) == expected[name], name
    chat = next(iter(parse_file(tmp_path / "chat.txt")))
    assert [t.role for t in chat.turns] == ["user", "assistant"] and chat.title == "Разговор о сне"


def test_the_extension_decides_only_when_content_says_nothing(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("Pacing\n\nStart slow.\n", encoding="utf-8")
    ((doc, detection),) = list(parse_detected(notes))
    assert (doc.format, detection.detector) == ("text", "extension .txt")
    ((doc, detection),) = list(parse_detected(notes, Kind.LECTURE))
    assert (doc.format, detection.detector) == ("transcript", "extension .txt in a lecture folder")
    article = tmp_path / "article.md"
    shutil.copy(NEXUS_NOTE, article)
    in_articles = next(iter(parse_file(article, Kind.ARTICLE)))
    assert in_articles.format == "markdown", "the articles folder is believed over loose cues"


# --- the profile as memory ---------------------------------------------------------------------------


def test_latest_profile_and_core_always_gets_the_profiles(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(CHATGPT_ZIP, folder)
    shutil.copy(CLAUDE_ZIP, folder)
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [folder]})
    assert latest_profile(config) is None
    ingest_kind(config, Kind.DIALOGUE)
    prompt = latest_profile(config)
    assert prompt.startswith("About the user, in their own words:\nЯ бегаю марафоны и работаю инженером-программистом")
    assert "How the user wants you to answer:\nОтвечай по-русски" in prompt, "his own words over Claude's memory"
    assigned = profile_assignments(config, set())
    assert sorted((a.title, a.unit.heading) for a in assigned) == [
        ("About me (chatgpt)", "About me"),
        ("About me (chatgpt)", "How I want answers"),
        ("Instructions for project Марафон 2025 (claude)", "Instructions"),
        ("What Claude remembers about me (claude)", "What Claude remembers about me"),
        ("What Claude remembers about me in project proj-1 (claude)", "What Claude remembers about me"),
    ]
    assert all(a.adapters == ["core"] and a.kind == "profile" for a in assigned)
    assert profile_assignments(config, {a.item_id for a in assigned}) == []
    documents = {d.doc_id: d for d in profile_documents(config)}
    examples, skipped = make_examples(assigned, documents, config.adapter("core"), config.datasets)
    assert skipped == {} and len(examples) == 5 and {e.target_source for e in examples} == {"profile"}
    assert any(e.record["text"].startswith("About me\n\nЯ бегаю") for e in examples)


def test_only_claude_memory_is_offered_as_what_claude_remembers(tmp_path):
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [tmp_path / "exports"]})
    (tmp_path / "exports").mkdir()
    shutil.copy(CLAUDE_ZIP, tmp_path / "exports")
    ingest_kind(config, Kind.DIALOGUE)
    assert latest_profile(config).startswith("About the user:\n**Work context**")


def test_the_proxy_offers_the_newest_profile_as_the_default_system_prompt(tmp_path):
    from types import SimpleNamespace

    from memory_pipeline.service.proxy import worldview_prompt

    (tmp_path / "exports").mkdir()
    shutil.copy(CHATGPT_ZIP, tmp_path / "exports")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [tmp_path / "exports"]})
    ingest_kind(config, Kind.DIALOGUE)
    prompt = worldview_prompt(SimpleNamespace(state=SimpleNamespace(config=config)))
    assert prompt == latest_profile(config) and prompt.startswith("About the user, in their own words:")
    config.service.system_prompt = "Отвечай как я."
    assert worldview_prompt(SimpleNamespace(state=SimpleNamespace(config=config))) == "Отвечай как я.", "config wins"


def test_a_profile_routes_to_core_whatever_its_stance():
    core = AdapterProfile(name="core", vectors=np.zeros((0, 3)))
    routes = route_item(
        kind=Kind.PROFILE, text="Коротко.", user_text="", vector=None, profiles=[core], config=Config().promote
    )
    assert routes["core"]["score"] == 1.0 and choose_adapters(routes, 0.5, ["core"]) == ["core"]


@pytest.mark.slow
def test_a_profile_is_indexed_found_by_its_kind_scored_and_taught_to_core(tmp_path):
    from datetime import datetime

    from memory_pipeline.datasets.build import build_dataset_for_adapter
    from memory_pipeline.scoring import load_assignments, run_promotion

    (tmp_path / "exports").mkdir()
    shutil.copy(CHATGPT_ZIP, tmp_path / "exports")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [tmp_path / "exports"]})
    ingest_kind(config, Kind.DIALOGUE)
    embedder = load_embedder(config.embedding)
    sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    searcher = Searcher(config, embedder=embedder)
    for mode in ("fts", "hybrid"):
        hits = searcher.search("инженером-программистом регулярность", k=3, kind="profile", mode=mode)
        assert hits and hits[0].title == "About me (chatgpt)" and {h.kind for h in hits} == {"profile"}, mode
    run_promotion(config, now=datetime(2025, 3, 1), progress=False, embedder=embedder)
    scored = [a for a in load_assignments(config) if a.kind == "profile"]
    assert sorted(a.unit.heading for a in scored) == ["About me", "How I want answers"]
    assert all(a.created_at.year == 2025 and a.source_path.endswith("!conversations.json") for a in scored)
    result = build_dataset_for_adapter(config, "core")
    sources = result.card.sources
    assert sources.targets["profile"] >= 1 and sources.kinds["profile"] >= 1, "core is taught it whatever its score"


# --- streaming -------------------------------------------------------------------------------------

# VmHWM, not getrusage: a child's ru_maxrss starts from its parent's RSS at fork on Linux (the pytest
# process holds models by then), while VmHWM belongs to the memory the child gets at exec.
_RSS_SCRIPT = """
import re, sys
from memory_pipeline.sources import parse_file
count = sum(1 for _ in parse_file(sys.argv[1]))
with open("/proc/self/status") as status:
    print(count, re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
"""


def _message(node_id: str, role: str, content: dict, **extra) -> dict:
    return {"id": node_id, "author": {"role": role}, "create_time": 1.7e9, "content": content} | extra


def _big_chatgpt_zip(path: Path, size: int) -> tuple[int, int]:
    """A zip whose ``conversations.json`` (at least ``size`` bytes) is written into the archive piece by
    piece, one conversation at a time, never held whole; returns its uncompressed size and the number of conversations.

    Each conversation is shaped like a heavy user's: a question, a code-interpreter call with a long
    output (a skipped turn the parser must still read through) and an answer. The output repeats a
    short stretch of varied words, so the archive stays small (about 40x, under the bomb ratio).
    """
    import random

    rng = random.Random(5)
    words = [f"слово{i}" for i in range(2000)] + [f"word{i}" for i in range(2000)]
    stretch = " ".join(rng.choices(words, k=300))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("conversations.json", "w", force_zip64=True) as member:
            member.write(b"[")
            written, n = 1, 0
            while written < size:
                answer = f"Ответ {n}: " + stretch[n % 50 : n % 50 + 2000]
                chain = [
                    _message("u", "user", {"content_type": "text", "parts": [f"Вопрос {n}: сколько бегать?"]}),
                    _message("c", "assistant", {"content_type": "code", "text": "print(40)"}, recipient="python"),
                    _message("o", "tool", {"content_type": "execution_output", "text": stretch[n % 50 :] * 80}),
                    _message("a", "assistant", {"content_type": "text", "parts": [answer]}),
                ]
                mapping = {
                    m["id"]: {
                        "id": m["id"],
                        "parent": chain[k - 1]["id"] if k else None,
                        "children": [chain[k + 1]["id"]] if k + 1 < len(chain) else [],
                        "message": m,
                    }
                    for k, m in enumerate(chain)
                }
                conversation = {"title": f"Run {n}", "id": f"c{n}", "current_node": "a", "mapping": mapping}
                piece = (b"," if n else b"") + json.dumps(conversation, ensure_ascii=False).encode("utf-8")
                member.write(piece)
                written, n = written + len(piece), n + 1
            member.write(b"]")
        return archive.getinfo("conversations.json").file_size, n


def _parsed_with_peak_rss_kb(path: Path) -> tuple[int, int]:
    result = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    count, rss = result.stdout.split()
    return int(count), int(rss)


@pytest.mark.slow
def test_a_500_mb_conversations_json_inside_a_zip_streams_with_flat_memory(tmp_path):
    small, big = tmp_path / "small.zip", tmp_path / "big.zip"
    small_size, small_conversations = _big_chatgpt_zip(small, 5_000_000)
    size, conversations = _big_chatgpt_zip(big, 500_000_000)
    assert size >= 500_000_000 and big.stat().st_size < size / 20, "compressible: the archive itself stays small"
    small_count, small_rss = _parsed_with_peak_rss_kb(small)
    big_count, big_rss = _parsed_with_peak_rss_kb(big)
    assert (small_count, big_count) == (small_conversations, conversations), "every conversation parsed"
    growth_mb = (big_rss - small_rss) / 1000
    sizes = f"from a {small_size / 1e6:.0f} MB to a {size / 1e6:.0f} MB member"
    assert growth_mb < 50, f"peak RSS grew {growth_mb:.0f} MB {sizes}"
    assert big_rss * 1000 < size / 3, "peak RSS (imports included) is well below the member's size"


def test_stored_members_and_a_misnamed_archive_are_read(tmp_path):
    content = {"conversations.json": members(CLAUDE_ZIP)["conversations.json"]}
    path = write_zip(tmp_path / "export.dat", content, zipfile.ZIP_STORED)
    assert [d.format for d in parse_file(path)] == ["claude_json", "claude_attachment"]
