"""The memory service on a real loopback port: search, dialogue capture, proxy, auth, bad requests."""

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from memory_pipeline import atomic as atomic_module
from memory_pipeline.config import Config
from memory_pipeline.index.search import Hit
from memory_pipeline.ingest.docstore import DocumentStore
from memory_pipeline.ingest.pipeline import ingest_all
from memory_pipeline.service import inbox as inbox_module
from memory_pipeline.service.app import create_app, require_safe_binding
from memory_pipeline.service.inbox import Inbox, InboxMessage
from memory_pipeline.service.proxy import MEMORY_HEADER

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(app: FastAPI, port: int | None = None):
    port = port or _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _upstream_app(seen: list[dict]) -> FastAPI:
    """A small OpenAI-compatible server: answers from the request, streams when asked."""
    upstream = FastAPI()

    @upstream.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        seen.append(body)
        if body.get("model") == "overloaded":
            return JSONResponse(status_code=429, content={"error": {"message": "rate limited"}})
        answer = "Темп лёгкого бега — разговорный."
        if "seed" in body:
            answer = f"Ответ {body['seed']}.{len(body['messages'])}"
        if body.get("stream"):

            async def events():
                for piece in ("Темп лёгкого бега", " — разговорный."):
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}], "model": body["model"]}
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
                    if body["model"] == "slow":
                        await asyncio.sleep(30)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        }

    return upstream


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    from memory_pipeline.index.embedding import load_embedder
    from memory_pipeline.index.sync import sync_index

    root = tmp_path_factory.mktemp("service")
    notes = root / "articles"
    notes.mkdir()
    (notes / "running.md").write_text(
        "# Бег\n\nЛёгкий бег в разговорном темпе развивает аэробную базу марафонца.\n\n"
        "# Football\n\nA pressing game needs compact lines and fast recovery runs.\n",
        encoding="utf-8",
    )
    config = Config(storage_root=root / "storage", sources={"articles": [notes]})
    ingest_all(config)
    embedder = load_embedder(config.embedding)
    sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)
    return config, embedder


class NoMemories:
    def search(self, *args, **kwargs):
        return []


class RankedSearcher:
    """Forty hits: thirty from notes.md, all ranked above the ten from wanted.md."""

    def search(self, query, *, k, kind=None, mode=None, log=True, **recall):
        hits = [
            Hit(
                score=1 - i / 100,
                mode="hybrid",
                chunk_id=f"c{i}",
                doc_id=f"d{i}",
                kind="article",
                title="Notes" if i < 30 else "Wanted",
                source_path=f"/notes/{'notes' if i < 30 else 'wanted'}.md",
                text=f"piece {i}",
            )
            for i in range(40)
        ]
        return hits[:k]


def _inbox_rows(config) -> list[dict]:
    rows = [
        json.loads(line)
        for path in sorted(config.inbox_dir.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    return sorted(rows, key=lambda r: (r["conversation_id"], r["turn_index"]))


def _conversations(config) -> list[list[tuple[str, str]]]:
    """Each recorded conversation as its (role, content) turns, in a stable order."""
    by_id: dict[str, list[tuple[str, str]]] = {}
    for row in _inbox_rows(config):
        by_id.setdefault(row["conversation_id"], []).append((row["role"], row["content"]))
    return sorted(by_id.values())


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.05)


def _reindex(config, embedder):
    from memory_pipeline.index.sync import sync_index

    ingest_all(config)
    sync_index(config, DocumentStore(config.documents_dir), embedder, progress=False)


def test_search_round_trip_and_auth(indexed):
    config, _ = indexed
    config = config.model_copy(deep=True)
    config.service.token = TOKEN
    with running(create_app(config)) as base:
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        assert httpx.post(f"{base}/search", json={"query": "бег"}).status_code == 401
        assert (
            httpx.post(f"{base}/search", json={"query": "бег"}, headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
        response = httpx.post(f"{base}/search", json={"query": "бегать марафон", "k": 3}, headers=AUTH)
        assert response.status_code == 200
        hits = response.json()["hits"]
        assert hits and hits[0]["source_path"].endswith("running.md")
        doc = httpx.get(f"{base}/documents/{hits[0]['doc_id']}", headers=AUTH)
        assert doc.status_code == 200 and doc.json()["title"]
        assert httpx.get(f"{base}/documents/nope", headers=AUTH).status_code == 404


def test_malformed_requests_get_clear_4xx(indexed):
    config, _ = indexed
    config = config.model_copy(deep=True)
    config.service.upstream_url = "http://127.0.0.1:9/v1"
    with running(create_app(config)) as base:
        cases = [
            ("/search", {"content": b"not json", "headers": {"content-type": "application/json"}}),
            ("/search", {"json": {}}),
            ("/search", {"json": {"query": ""}}),
            ("/search", {"json": {"query": "x", "mode": "magic"}}),
            ("/search", {"json": {"query": "x" * 100_000}}),
            ("/search", {"json": {"query": "   "}}),
            ("/search", {"json": {"query": 123}}),
            ("/search", {"json": ["бег"]}),
            ("/search", {"json": {"query": "x", "k": "many"}}),
            ("/search", {"json": {"query": "x", "k": 0}}),
            ("/search", {"json": {"query": "x", "filters": "running"}}),
            ("/search", {"json": {"query": "x", "filters": {"title_contains": 5}}}),
            ("/dialogues", {"json": {"messages": []}}),
            ("/dialogues", {"json": {"messages": [{"role": "wizard", "content": "hi"}]}}),
            ("/dialogues", {"json": {"messages": [{"role": "user", "content": 123}]}}),
            ("/dialogues", {"json": {"messages": [{"role": "user", "content": [1]}]}}),
            ("/dialogues", {"json": {"conversation_id": 5, "messages": [{"role": "user", "content": "hi"}]}}),
            (
                "/dialogues",
                {
                    "json": {
                        "messages": [
                            {"role": "user", "content": "a", "turn_index": 1},
                            {"role": "user", "content": "b", "turn_index": 1},
                        ]
                    }
                },
            ),
            (
                "/dialogues",
                {
                    "content": b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
                    "headers": {"content-type": "application/json"},
                },
            ),
            ("/v1/chat/completions", {"content": b"{oops", "headers": {"content-type": "application/json"}}),
            ("/v1/chat/completions", {"json": {"model": "m"}}),
            ("/v1/chat/completions", {"json": {"messages": ["hi"]}}),
            ("/v1/chat/completions", {"json": ["hi"]}),
            ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": 123}]}}),
            ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": [1]}]}}),
            ("/v1/chat/completions", {"json": {"messages": [{"role": "wizard", "content": "hi"}]}}),
            ("/v1/chat/completions", {"json": {"messages": [{"role": 5, "content": "hi"}]}}),
            ("/v1/chat/completions", {"json": {"model": ["m"], "messages": [{"role": "user", "content": "hi"}]}}),
            ("/v1/chat/completions", {"json": {"stream": "maybe", "messages": [{"role": "user", "content": "hi"}]}}),
            (
                "/v1/chat/completions",
                {
                    "content": b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
                    "headers": {"content-type": "application/json"},
                },
            ),
        ]
        for path, kwargs in cases:
            response = httpx.post(f"{base}{path}", **kwargs)
            assert 400 <= response.status_code < 500, (path, kwargs, response.status_code, response.text)
            assert response.json(), (path, response.text)
        for doc_id in ("a'b", "%00", "x" * 5000, "');DROP"):
            response = httpx.get(f"{base}/documents/{doc_id}")
            assert response.status_code == 404 and response.json(), (doc_id, response.text)


def test_dialogues_are_durable_idempotent_and_become_searchable(indexed):
    config, embedder = indexed
    messages = [
        {"role": "user", "content": "Запомни: мой любимый вид спорта — гребля на байдарке."},
        {"role": "assistant", "content": "Запомнил: гребля на байдарке — твой любимый спорт."},
    ]
    with running(create_app(config)) as base:
        first = httpx.post(f"{base}/dialogues", json={"conversation_id": "kayak-1", "messages": messages}).json()
        again = httpx.post(f"{base}/dialogues", json={"conversation_id": "kayak-1", "messages": messages}).json()
        assert (first["recorded"], again["recorded"], again["duplicates"]) == (2, 0, 2)
        lines = [json.loads(line) for line in open(first["inbox_file"], encoding="utf-8")]
        assert [(r["conversation_id"], r["turn_index"]) for r in lines] == [("kayak-1", 0), ("kayak-1", 1)]
        _reindex(config, embedder)
        hits = httpx.post(f"{base}/search", json={"query": "гребля на байдарке", "k": 3}).json()["hits"]
        assert any("байдарке" in h["text"] for h in hits)


@pytest.mark.parametrize("stream", [False, True])
def test_proxy_injects_memories_forwards_and_records(indexed, stream):
    config, _ = indexed
    seen: list[dict] = []
    with running(_upstream_app(seen)) as upstream:
        config = config.model_copy(deep=True)
        config.service.upstream_url = f"{upstream}/v1"
        config.service.model_adapters = {"my-model": "core+sport"}
        with running(create_app(config)) as base:
            conversation = f"proxy-{stream}"
            body = {
                "model": "my-model",
                "stream": stream,
                "messages": [{"role": "user", "content": "Какой темп для лёгкого бега?"}],
            }
            response = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"X-Conversation-Id": conversation})
            assert response.status_code == 200
            if stream:
                assert "data: [DONE]" in response.text
            else:
                assert response.json()["choices"][0]["message"]["content"].startswith("Темп")
            forwarded = seen[-1]
            assert forwarded["model"] == "core+sport"
            assert forwarded["messages"][0]["role"] == "system" and MEMORY_HEADER in forwarded["messages"][0]["content"]
            assert "running.md" in forwarded["messages"][0]["content"]
            inbox_file = config.inbox_dir / inbox_module.inbox_file_name(conversation)
            deadline = time.time() + 10
            while not inbox_file.exists() and time.time() < deadline:
                time.sleep(0.05)
            rows = [json.loads(line) for line in inbox_file.read_text(encoding="utf-8").splitlines()]
            assert [r["role"] for r in rows] == ["user", "assistant"]
            assert rows[1]["content"] == "Темп лёгкого бега — разговорный."


def test_filtered_search_returns_k_matches_ranked_below_the_top_k(tmp_path):
    config = Config(storage_root=tmp_path / "storage")
    with running(create_app(config, searcher=RankedSearcher())) as base:
        wanted = httpx.post(
            f"{base}/search", json={"query": "x", "k": 5, "filters": {"source_path_contains": "wanted.md"}}
        ).json()["hits"]
        assert [h["chunk_id"] for h in wanted] == ["c30", "c31", "c32", "c33", "c34"]
        every = httpx.post(
            f"{base}/search", json={"query": "x", "k": 50, "filters": {"title_contains": "WANTED"}}
        ).json()["hits"]
        assert len(every) == 10 and all(h["title"] == "Wanted" for h in every)
        unfiltered = httpx.post(f"{base}/search", json={"query": "x", "k": 5, "filters": {}}).json()["hits"]
        assert [h["chunk_id"] for h in unfiltered] == ["c0", "c1", "c2", "c3", "c4"]


def test_inbox_branches_a_disagreeing_history_and_stays_idempotent(tmp_path, monkeypatch):
    synced: list = []
    monkeypatch.setattr(inbox_module, "fsync_dir", synced.append)
    monkeypatch.setattr(atomic_module, "fsync_dir", synced.append)
    inbox = Inbox(tmp_path / "inbox")
    synced.clear()

    def turns(*texts):
        return [
            InboxMessage(role=role, content=text) for role, text in zip(("user", "assistant") * 3, texts, strict=False)
        ]

    first = inbox.record(turns("Hello", "Hi! How can I help?"), conversation_id="c")
    assert synced == [tmp_path / "inbox"]
    again = inbox.record(turns("Hello", "  Hi!  How can I help?\n"), conversation_id="c")
    assert synced == [tmp_path / "inbox"]
    assert (first.recorded, again.recorded, again.duplicates, again.conflicts) == (2, 0, 2, 0)
    other = inbox.record(turns("Hello", "Hey there.", "Tell me a joke"), conversation_id="c")
    assert other.conversation_id.startswith("c~") and (other.recorded, other.conflicts) == (3, 1)
    resent = inbox.record(turns("Hello", "Hey there.", "Tell me a joke"), conversation_id="c")
    assert (resent.conversation_id, resent.recorded, resent.duplicates) == (other.conversation_id, 0, 3)
    assert synced == [tmp_path / "inbox", tmp_path / "inbox"]  # once more, for the branch's new file
    fresh = Inbox(tmp_path / "inbox")
    assert fresh.record(turns("Hello", "Hey there.", "Tell me a joke"), conversation_id="c").recorded == 0
    texts = sorted(
        json.loads(line)["content"]
        for path in (tmp_path / "inbox").glob("*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    )
    assert texts == sorted(["Hello", "Hi! How can I help?", "Hello", "Hey there.", "Tell me a joke"])


def test_proxy_keeps_apart_chats_that_open_alike_and_resends_record_nothing(tmp_path):
    config = Config(storage_root=tmp_path / "storage")
    with running(_upstream_app([])) as upstream:
        config.service.upstream_url = f"{upstream}/v1"
        with running(create_app(config, searcher=NoMemories())) as base:

            def chat(messages: list[dict], seed: int) -> str:
                response = httpx.post(
                    f"{base}/v1/chat/completions",
                    json={"model": "m", "seed": seed, "messages": messages, "user": "same-person"},
                )
                assert response.status_code == 200, response.text
                return response.json()["choices"][0]["message"]["content"]

            hello = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
            first, second = chat(hello, 1), chat(hello, 2)
            follow_up = [*hello, {"role": "assistant", "content": first}, {"role": "user", "content": "And then?"}]
            third = chat(follow_up, 1)
            recorded = _inbox_rows(config)
            assert chat(follow_up, 1) == third
            assert _inbox_rows(config) == recorded
    assert _conversations(config) == sorted(
        [
            [("user", "Hello"), ("assistant", first), ("user", "And then?"), ("assistant", third)],
            [("user", "Hello"), ("assistant", second)],
        ]
    )


def test_stream_cut_off_by_the_client_is_recorded_once(tmp_path):
    config = Config(storage_root=tmp_path / "storage")
    with running(_upstream_app([])) as upstream:
        config.service.upstream_url = f"{upstream}/v1"
        with running(create_app(config, searcher=NoMemories())) as base:
            body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "Какой темп?"}]}
            with httpx.stream(
                "POST", f"{base}/v1/chat/completions", json=body, headers={"X-Conversation-Id": "cut"}
            ) as response:
                assert next(line for line in response.iter_lines() if line.startswith("data:"))
            _wait_for(lambda: _inbox_rows(config))
            time.sleep(0.5)
            assert _conversations(config) == [[("user", "Какой темп?"), ("assistant", "Темп лёгкого бега")]]


def test_upstream_errors_pass_through_and_retrieval_failure_does_not_block(indexed):
    config, _ = indexed

    class BrokenSearcher:
        def search(self, *args, **kwargs):
            raise RuntimeError("index is being rebuilt")

    seen: list[dict] = []
    with running(_upstream_app(seen)) as upstream:
        config = config.model_copy(deep=True)
        config.service.upstream_url = f"{upstream}/v1"
        with running(create_app(config, searcher=BrokenSearcher())) as base:
            ok = httpx.post(
                f"{base}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "привет"}]}
            )
            assert ok.status_code == 200
            assert seen[-1]["messages"] == [{"role": "user", "content": "привет"}]
            limited = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "overloaded", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert limited.status_code == 429 and "rate limited" in limited.text


def test_refuses_to_bind_off_loopback_without_token():
    require_safe_binding("127.0.0.1", None)
    require_safe_binding("0.0.0.0", "token")
    with pytest.raises(SystemExit, match="token"):
        require_safe_binding("0.0.0.0", None)


def test_api_docs_load_every_asset_from_the_service_itself(tmp_path):
    """/docs and /redoc work offline: every script, style, icon and the schema they reference is served here."""
    import re
    from urllib.parse import urljoin

    app = create_app(Config(storage_root=tmp_path / "storage"), searcher=NoMemories())
    with running(app) as base:
        for page in ("/docs", "/redoc"):
            html = httpx.get(base + page, timeout=10).text
            references = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']|\burl: ?'([^']+)'""", html)
            urls = {urljoin(base + page, a or b) for a, b in references}
            assert len(urls) >= 3, f"{page}: {html}"
            assert not re.search(r"https?://(?!127\.0\.0\.1)", html.replace(base, "")), f"{page} points off the machine"
            for url in urls:
                assert url.startswith(base), url
                response = httpx.get(url, timeout=10)
                assert response.status_code == 200, url
                assert response.content, url
        assert "swagger-ui" in httpx.get(base + "/docs", timeout=10).text
        assert httpx.get(base + "/openapi.json", timeout=10).json()["paths"]["/search"]
