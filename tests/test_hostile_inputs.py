"""Hostile and clumsy inputs: nothing acknowledged is lost, and no single bad entry stops the memory.

Every case is generated on the fly and small; the service cases run against a real uvicorn server.
"""

import json
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_service import _free_port, running

from memory_pipeline.config import Config
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all
from memory_pipeline.records import Kind
from memory_pipeline.service.app import create_app
from memory_pipeline.service.inbox import Inbox, InboxMessage, inbox_file_name

# Ids that the old naming mapped to one file ("a_b", "_", "x"*80), or to a hidden one.
HOSTILE_IDS = [
    "a.b",
    "a,b",
    "a b",
    "a/b",
    "разговор",
    "беседа",
    ".x",
    "..",
    "../../x",
    "x" * 190 + "1",
    "x" * 190 + "2",
]


def test_concurrent_writers_over_colliding_ids_lose_nothing(tmp_path):
    """20 writers, two per id for most ids, first writes racing: every acknowledged message is ingested once."""
    config = Config(storage_root=tmp_path / "storage")
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        conversation = HOSTILE_IDS[number % len(HOSTILE_IDS)]
        offset = 100 * (number // len(HOSTILE_IDS))
        with httpx.Client(timeout=30) as client:
            for turn in range(10):
                text = f"writer {number} turn {turn} {conversation[:20]}"
                role = "user" if turn % 2 == 0 else "assistant"
                body = {
                    "conversation_id": conversation,
                    "messages": [{"role": role, "content": text, "turn_index": offset + turn}],
                }
                response = client.post(f"{base}/dialogues", json=body)
                assert response.status_code == 200, response.text
                assert response.json()["recorded"] == 1
                with lock:
                    acknowledged.append((conversation, text))

    with running(create_app(config, searcher=object())) as base:
        with ThreadPoolExecutor(20) as pool:
            list(pool.map(writer, range(20)))

    names = [p.name for p in config.inbox_dir.iterdir()]
    assert len(acknowledged) == 200
    assert not [n for n in names if n.startswith(".")], names
    assert len(names) == len(HOSTILE_IDS)
    reports = ingest_all(config)
    assert reports[Kind.DIALOGUE].files_failed == 0, reports[Kind.DIALOGUE].errors
    ingested = Counter()
    for doc in DocumentStore(config.documents_dir).iter_documents(Kind.DIALOGUE):
        for turn in doc.turns:
            ingested[(doc.external_id, turn.text)] += 1
    assert ingested == Counter(acknowledged)


def test_bad_conversation_ids_get_a_clear_4xx(tmp_path):
    config = Config(storage_root=tmp_path / "storage")
    config.service.upstream_url = "http://127.0.0.1:9/v1"
    message = [{"role": "user", "content": "hi"}]
    with running(create_app(config, searcher=object())) as base:
        for bad, reason in (
            ("a\nb", "control character"),
            ("x" * 201, "over the limit"),
            ("", "empty"),
            ("a\x00", "control"),
        ):
            response = httpx.post(f"{base}/dialogues", json={"conversation_id": bad, "messages": message})
            assert response.status_code == 422 and reason in response.text, response.text
        response = httpx.post(
            f"{base}/v1/chat/completions", json={"messages": message}, headers={"X-Conversation-Id": "x" * 300}
        )
        assert response.status_code == 400 and "X-Conversation-Id" in response.text
        response = httpx.post(f"{base}/dialogues", json={"messages": [{"role": "user", "content": None}]})
        assert response.status_code == 422 and "content is null" in response.text
    assert not config.inbox_dir.exists() or not list(config.inbox_dir.iterdir())


def test_inbox_file_names_are_distinct_visible_and_never_replace_a_file(tmp_path):
    names = {inbox_file_name(i) for i in HOSTILE_IDS}
    assert len(names) == len(HOSTILE_IDS) and not [n for n in names if n.startswith(".")]
    inbox = Inbox(tmp_path / "inbox")
    path = inbox.path_for("c")
    path.write_text(
        '{"conversation_id": "other", "turn_index": 0, "role": "user", "content": "kept"}\n', encoding="utf-8"
    )
    inbox.record([InboxMessage(role="user", content="new")], conversation_id="c")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["content"] for r in rows] == ["kept", "new"]


def test_legacy_inbox_files_keep_their_conversations(tmp_path):
    """Files named the old way: a conversation goes on in its file, and hidden ones are made visible."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    row = {"conversation_id": "old.one", "turn_index": 0, "role": "user", "content": "first"}
    (folder / "old.one.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    (folder / ".x.jsonl").write_text(json.dumps({**row, "conversation_id": ".x"}) + "\n", encoding="utf-8")
    inbox = Inbox(folder)
    assert (folder / "_.x.jsonl").is_file() and not (folder / ".x.jsonl").exists()
    result = inbox.record([InboxMessage(role="assistant", content="second", turn_index=1)], conversation_id="old.one")
    assert result.inbox_file == str(folder / "old.one.jsonl")
    result = inbox.record([InboxMessage(role="assistant", content="again", turn_index=1)], conversation_id=".x")
    assert result.inbox_file == str(folder / "_.x.jsonl")


def _write_notes(folder, count=2):
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        text = f"# Note {number}\n\nSome text worth keeping, number {number} of {folder.name}.\n"
        (folder / f"note{number}.md").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("how", ["missing", "emptied"])
def test_vanished_source_folder_is_an_error_and_keeps_its_documents(tmp_path, how):
    notes, other = tmp_path / "notes", tmp_path / "other"
    _write_notes(notes)
    _write_notes(other)
    config = Config(storage_root=tmp_path / "storage", sources={"articles": [notes, other]})
    assert ingest_all(config)[Kind.ARTICLE].documents_total == 4
    if how == "missing":
        notes.rename(tmp_path / "unmounted")
    else:
        for path in notes.iterdir():
            path.unlink()
    (other / "note0.md").unlink()
    report = ingest_all(config)[Kind.ARTICLE]
    assert [e.path for e in report.errors] == [str(notes)] and "--prune-missing" in report.errors[0].reason
    assert report.documents_total == 3 and report.documents_removed == 1  # the file deleted from `other` goes
    assert ingest_all(config)[Kind.ARTICLE].documents_total == 3  # and again on the next run
    pruned = ingest_all(config, prune_missing=True)[Kind.ARTICLE]
    assert pruned.documents_total == 1 and pruned.documents_removed == 2


def test_missing_source_folder_fails_the_cli(tmp_path):
    from typer.testing import CliRunner

    from memory_pipeline.cli import app

    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text(
        f"storage_root: {tmp_path / 'storage'}\nsources:\n  articles: [{tmp_path / 'typo'}]\n", encoding="utf-8"
    )
    result = CliRunner().invoke(app, ["--config", str(config_file), "ingest", "--no-index"])
    assert result.exit_code == 1 and "source folder is missing" in " ".join(result.output.split())


def _ingest_in_time(config, seconds=120):
    """Ingest in a thread, so a file that blocks on open fails the test instead of hanging it."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(ingest_all(config)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "ingest hung"
    return result


def test_bad_entries_are_named_failures_and_the_rest_goes_in(tmp_path):
    import os

    notes = tmp_path / "notes"
    _write_notes(notes)
    os.symlink(notes / "loop_b.md", notes / "loop_a.md")
    os.symlink(notes / "loop_a.md", notes / "loop_b.md")
    os.symlink(notes / "nowhere.md", notes / "dangling.md")
    os.symlink("/dev/null", notes / "device.md")
    os.symlink(notes, notes / "folder_loop")
    os.mkfifo(notes / "pipe.md")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(notes / "socket.md"))
    os.makedirs(os.fsencode(notes) + b"/caf\xe9")
    undecodable = os.fsencode(notes) + b"/caf\xe9/na\xefve \xff.md"
    with open(undecodable, "wb") as handle:
        handle.write("# Наивный\n\nЗаметка в папке с именем не в UTF-8.\n".encode())
    chats = tmp_path / "chats"
    chats.mkdir()
    os.mkfifo(chats / "pipe.md")
    os.mkfifo(chats / "pipe.json")
    (chats / "chat.jsonl").write_text('{"role": "user", "content": "hello there"}\n', encoding="utf-8")
    config = Config(storage_root=tmp_path / "storage", sources={"articles": [notes], "dialogues": [chats]})
    reports = _ingest_in_time(config)
    failed = {Path(e.path).name: e.reason for e in reports[Kind.ARTICLE].errors}
    assert sorted(failed) == ["dangling.md", "device.md", "loop_a.md", "loop_b.md", "pipe.md", "socket.md"], failed
    assert "loop" in failed["loop_a.md"] and "FIFO" in failed["pipe.md"] and "socket" in failed["socket.md"]
    assert "device" in failed["device.md"] and "broken link" in failed["dangling.md"]
    assert sorted(Path(e.path).name for e in reports[Kind.DIALOGUE].errors) == ["pipe.json", "pipe.md"]
    assert reports[Kind.DIALOGUE].documents_total == 1
    stored = {d.source_path: d for d in DocumentStore(config.documents_dir).iter_documents(Kind.ARTICLE)}
    assert len(stored) == 3
    odd = next(d for path, d in stored.items() if "caf" in path)
    assert odd.source_path.endswith("caf\\xe9/na\\xefve \\xff.md") and "Заметка" in odd.sections[0].text
    again = _ingest_in_time(config)[Kind.ARTICLE]
    assert again.documents_total == 3 and again.documents_removed == 0 and again.files_failed == 6


def test_unreadable_file_is_a_named_failure(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    notes = tmp_path / "notes"
    _write_notes(notes)
    (notes / "note0.md").chmod(0)
    report = ingest_all(Config(storage_root=tmp_path / "storage", sources={"articles": [notes]}))[Kind.ARTICLE]
    assert [Path(e.path).name for e in report.errors] == ["note0.md"] and report.documents_total == 1


def _slow_upstream():
    from fastapi import FastAPI

    upstream = FastAPI()

    @upstream.post("/v1/chat/completions")
    async def completions():
        import asyncio

        await asyncio.sleep(4)

    return upstream


def test_no_body_gets_a_500_and_limits_answer_4xx(tmp_path):
    port = _free_port()
    config = Config(
        storage_root=tmp_path / "storage",
        service={"upstream_url": f"http://127.0.0.1:{port}/v1"},  # itself: a loop
        limits={"max_request_mb": 0.05, "max_message_chars": 1000, "upstream_timeout_seconds": 1},
    )
    deep = "[" * 100_000 + "]" * 100_000
    user = {"role": "user", "content": "hi"}
    bodies = [
        deep,
        '{"messages": ' + deep + "}",
        '{"query": "x", "filters": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}",
        '{"messages": [{"role": "user", "content": [' + "[" * 300 + "]" * 300 + "]}]}",
        "\x00\xff{",
        "null",
        '"just a string"',
        "1e999999",
        '{"messages": [{"role": "user", "content": "' + "x" * 2000 + '"}]}',
        '{"messages": [{"role": "user", "content": "' + "x" * 60_000 + '"}]}',
    ]
    with running(create_app(config, searcher=object()), port=port) as base:
        for path in ("/search", "/dialogues", "/v1/chat/completions"):
            for body in bodies:
                response = httpx.post(
                    f"{base}{path}",
                    content=body.encode("utf-8", "surrogateescape"),
                    headers={"content-type": "application/json"},
                )
                assert 400 <= response.status_code < 500, (path, body[:60], response.status_code, response.text[:300])
                assert response.json()
        too_deep = httpx.post(
            f"{base}/dialogues", content="[" * 10_000 + "]" * 10_000, headers={"content-type": "application/json"}
        )
        assert "nested deeper than 256" in too_deep.text
        too_big = httpx.post(f"{base}/dialogues", json={"messages": [{"role": "user", "content": "x" * 60_000}]})
        assert too_big.status_code == 413 and "max_request_mb" in too_big.text
        too_long = httpx.post(
            f"{base}/dialogues", json={"messages": [user, {"role": "assistant", "content": "y" * 2000}]}
        )
        assert too_long.status_code == 422 and "message 1 is 2000 characters" in too_long.text
        loop = httpx.post(f"{base}/v1/chat/completions", json={"messages": [user]}, timeout=30)
        assert loop.status_code == 508 and "loop" in loop.text
    assert not config.inbox_dir.exists() or not list(config.inbox_dir.iterdir())


def test_proxy_caps_forwarding_time_and_refuses_itself_at_start(tmp_path):
    from memory_pipeline.service.app import serve

    with running(_slow_upstream()) as upstream:
        config = Config(
            storage_root=tmp_path / "storage",
            service={"upstream_url": f"{upstream}/v1"},
            limits={"upstream_timeout_seconds": 1},
        )
        with running(create_app(config, searcher=object())) as base:
            started = time.monotonic()
            response = httpx.post(
                f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30
            )
            assert response.status_code == 504 and "upstream_timeout_seconds" in response.text
            assert time.monotonic() - started < 10
    config = Config(
        storage_root=tmp_path / "storage", service={"upstream_url": "http://localhost:8765/v1", "port": 8765}
    )
    with pytest.raises(SystemExit, match="is this server"):
        serve(config)


def test_deep_nesting_in_source_files_is_a_named_failure(tmp_path):
    chats, pages = tmp_path / "chats", tmp_path / "pages"
    chats.mkdir()
    pages.mkdir()
    depth = 100_000
    (chats / "deep.json").write_text('[{"mapping": ' + "[" * depth + "]" * depth + "}]", encoding="utf-8")
    good_line = json.dumps({"role": "user", "content": "a line that survives"})
    (chats / "deep.jsonl").write_text(good_line + "\n" + "[" * depth + "]" * depth + "\n", encoding="utf-8")
    (pages / "deep.html").write_text(
        "<html><body>" + "<div>" * depth + "x" + "</div>" * depth + "</body></html>", encoding="utf-8"
    )
    (pages / "fine.html").write_text("<html><body><p>A fine page.</p></body></html>", encoding="utf-8")
    config = Config(storage_root=tmp_path / "storage", sources={"dialogues": [chats], "articles": [pages]})
    reports = _ingest_in_time(config, seconds=60)
    failed = {Path(e.path).name: e.reason for r in reports.values() for e in r.errors}
    assert failed == {
        "deep.json": "JSON nested deeper than 256 levels (limits.max_nesting_depth)",
        "deep.html": "HTML nested deeper than 256 elements (limits.max_nesting_depth)",
    }
    assert reports[Kind.DIALOGUE].documents_total == 1 and reports[Kind.ARTICLE].documents_total == 1


@pytest.mark.slow
def test_chunks_per_document_are_capped(tmp_path):
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.sync import sync_index

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "long.md").write_text(
        "\n\n".join(f"# Part {n}\n\n" + f"Paragraph {n} about running. " * 60 for n in range(20)), encoding="utf-8"
    )
    config = Config(
        storage_root=tmp_path / "storage", sources={"articles": [notes]}, limits={"max_chunks_per_document": 3}
    )
    ingest_all(config)
    report = sync_index(config, DocumentStore(config.documents_dir), load_embedder(config.embedding), progress=False)
    assert report.docs_truncated == 1 and report.chunks_total == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service:\n  port: true\n", "port: true is a boolean"),
        ("ingest:\n  max_file_mb: .inf\n", "finite number"),
        ("promote:\n  rag_threshold: .nan\n", "finite number"),
        ("service:\n  token: '   '\n", "token is blank"),
        ("search:\n  default_k: 5\nsearch:\n  default_k: 6\n", "'search' is given twice"),
        ("service:\n  port: 1\n  port: 2\n", "'port' is given twice"),
    ],
)
def test_strict_config_names_the_key(tmp_path, text, expected):
    from memory_pipeline.config import load_config
    from memory_pipeline.errors import ConfigError

    path = tmp_path / "memory_pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected) as raised:
        load_config(path)
    assert str(path) in str(raised.value)


def test_binary_config_and_file_storage_root_are_clear_errors(tmp_path, monkeypatch):
    from memory_pipeline.config import TOKEN_ENV, load_config
    from memory_pipeline.errors import ConfigError

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(binary)
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    config_file = tmp_path / "memory_pipeline.yaml"
    config_file.write_text("storage_root: afile\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="storage_root: .*afile is a file, not a folder"):
        load_config(config_file)
    monkeypatch.setenv(TOKEN_ENV, "  ")
    with pytest.raises(ConfigError, match="is blank"):
        Config().service.resolved_token()


def test_one_ingest_at_a_time_per_storage(tmp_path):
    from memory_pipeline.atomic import exclusive_lock
    from memory_pipeline.errors import StoreError

    notes = tmp_path / "notes"
    _write_notes(notes)
    config = Config(storage_root=tmp_path / "storage", sources={"articles": [notes]})
    with exclusive_lock(config.documents_dir / "ingest_article.lock", "an ingest of articles"):
        with pytest.raises(StoreError, match=r"an ingest of articles is already running on this storage \(pid \d+"):
            ingest_all(config)
    assert ingest_all(config)[Kind.ARTICLE].documents_total == 2


def test_parse_command_names_bad_files_without_tracebacks(tmp_path):
    import os

    from typer.testing import CliRunner

    from memory_pipeline.cli import app

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "deep.jsonl").write_text("[" * 50_000 + "]" * 50_000 + "\n", encoding="utf-8")
    export = json.dumps([{"title": "Чат", "mapping": {}}], ensure_ascii=False)
    (folder / "chatgpt.json").write_bytes(export.encode("utf-16"))
    (folder / "blank.md").write_text("  \n\n\t \n", encoding="utf-8")
    os.mkfifo(folder / "pipe.md")
    with open(os.fsencode(folder) + b"/caf\xe9.md", "wb") as handle:
        handle.write(b"# Cafe\n\nText.\n")
    result = CliRunner().invoke(app, ["parse", "--json", str(folder)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = {
        Path(row.get("path") or row["source_path"]).name: row for row in map(json.loads, result.output.splitlines())
    }
    assert "UTF-16" in rows["chatgpt.json"]["error"] and "whitespace" in rows["blank.md"]["error"]
    assert "FIFO" in rows["pipe.md"]["error"] and "deep.jsonl" in rows
    assert rows["caf\\xe9.md"]["title"] == "Cafe"


def test_inbox_files_with_null_content_are_tolerated(tmp_path):
    config = Config(storage_root=tmp_path / "storage")
    config.inbox_dir.mkdir(parents=True)
    rows = [{"conversation_id": "empty", "turn_index": 0, "role": "assistant", "content": None}]
    (config.inbox_dir / "empty.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    rows = [
        {"conversation_id": "mixed", "turn_index": i, "role": "user", "content": c}
        for i, c in enumerate([None, "", "real words"])
    ]
    (config.inbox_dir / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = ingest_all(config)[Kind.DIALOGUE]
    assert report.errors == [] and report.documents_total == 1
    assert ingest_all(config)[Kind.DIALOGUE].errors == []


def test_file_sensor_does_not_chase_a_vanished_folder(tmp_path):
    from memory_pipeline.ingest.watch import pending_changes

    notes = tmp_path / "notes"
    _write_notes(notes)
    config = Config(storage_root=tmp_path / "storage", sources={"articles": [notes]})
    ingest_all(config)
    notes.rename(tmp_path / "unmounted")
    assert pending_changes(config).empty


def test_content_part_with_a_list_for_its_type_is_skipped(tmp_path):
    """Found by bench/fuzz_parsers.py: a part whose "type" is a list failed the whole file with a TypeError."""
    from memory_pipeline.sources import parse_file

    path = tmp_path / "chat.jsonl"
    rows = [{"role": "user", "content": [{"type": ["text"], "text": "odd"}, {"type": "text", "text": "kept"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (doc,) = parse_file(path, Kind.DIALOGUE)
    assert doc.turns[0].text == "kept"


def test_subtitle_timestamp_out_of_range_is_a_parse_error(tmp_path):
    """Found by bench/fuzz_parsers.py: an OverflowError here stopped the whole ingest run."""
    from memory_pipeline.errors import ParseError
    from memory_pipeline.sources import parse_file

    path = tmp_path / "talk.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:020202020202020202,000\nHello\n", encoding="utf-8")
    with pytest.raises(ParseError, match="out of range"):
        list(parse_file(path, Kind.LECTURE))
