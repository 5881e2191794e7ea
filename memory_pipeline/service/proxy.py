"""OpenAI-compatible memory proxy: add the user's memories to the chat, forward it, record the exchange.

Any OpenAI client (Open WebUI, n8n, scripts) pointed at this proxy talks to the user's real
local model server, but every request gets the user's worldview prompt, the guards of the active
adapters and the relevant memories in its system message, and every exchange lands in the
inbox, to be indexed, scored and maybe learned. ``model: "auto"`` picks the adapters by the
request's content with the scoring router. Memory must never block the chat: when retrieval
fails the request goes through without memories.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Literal

import anyio
import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from memory_pipeline.config import Config
from memory_pipeline.display import position_of
from memory_pipeline.index.timespan import TimeSpan, bounds
from memory_pipeline.records import stable_id
from memory_pipeline.service.inbox import (
    InboxMessage,
    check_conversation_id,
    message_text,
    overlong_message,
    require_valid_unicode,
)
from memory_pipeline.service.local_model import LOCAL_BASE_URL

logger = logging.getLogger(__name__)
VIA_HEADER = "x-memory-pipeline-via"  # proxies a request passed through: a loop back to one is refused
MEMORY_HEADER = "Relevant memories from the user's own notes and past conversations (cite the source when you use one):"
AUTO_MODEL = "auto"
ADAPTERS_HEADER = "X-Memory-Adapters"
MEMORY_FIELDS = ("since", "until")  # request fields of ours, not OpenAI's


def select_memories(hits, messages: list[dict], min_similarity: float | None) -> list:
    """The hits worth injecting: relevant enough, one per turn or section, none the conversation already holds.

    ``min_similarity`` applies to the hit's cosine to the query; a hit the vector side did not
    see (found by its words only, below the vector candidates) does not pass it. None: no threshold.
    """
    said = " ".join(" ".join(message_text(m.get("content")).split()) for m in messages)
    seen_positions: set[tuple] = set()
    seen_texts: set[str] = set()
    chosen = []
    for hit in hits:
        text = " ".join(hit.text.split())
        position = (hit.doc_id, hit.turn_index, hit.page, hit.heading, hit.start)
        if min_similarity is not None and (hit.similarity is None or hit.similarity < min_similarity):
            continue
        if position in seen_positions or text in seen_texts or (text and text in said):
            continue
        seen_positions.add(position)
        seen_texts.add(text)
        chosen.append(hit)
    return chosen


def memory_block(hits, budget_tokens: int) -> str:
    """Memories as a compact list, each with its date and source, that fits the token budget (cl100k tokens)."""
    from memory_pipeline.tokens import count_tokens

    lines = [MEMORY_HEADER]
    used = count_tokens(MEMORY_HEADER)
    for number, hit in enumerate(hits, start=1):
        text = " ".join(hit.text.split())
        date = f"{hit.created_at:%Y-%m-%d}" if getattr(hit, "created_at", None) else "undated"
        where = ", ".join(p for p in (hit.kind, position_of(hit), hit.source_path) if p)
        line = f"[{number}] ({date}; {hit.title}; {where}) {text}"
        cost = count_tokens(line)
        if used + cost > budget_tokens:
            break
        lines.append(line)
        used += cost
    return "\n".join(lines) if len(lines) > 1 else ""


def guard_text(config: Config, adapters: list[str]) -> str:
    """The active adapters' guards as instructions the model must follow."""
    parts = []
    for name in adapters:
        guard = next((a.guard for a in config.adapters if a.name == name), None)
        if guard is None:
            continue
        if guard.disclaimer:
            parts.append(f"When you answer from the {name} views, say so and add this warning: {guard.disclaimer}")
        if guard.decline_topics:
            parts.append(f"Politely decline to advise on: {', '.join(guard.decline_topics)}.")
    return "\n".join(parts)


def inject_system(messages: list[dict], *, before: str = "", after: str = "") -> list[dict]:
    """The system message becomes ``before`` + the client's own system text + ``after``.

    One is added first when there is none. The worldview prompt and the guards go before the client's
    instructions, so every chat starts from them; memories go after, next to the conversation they serve.
    """
    if not before and not after:
        return messages
    messages = [dict(m) for m in messages]
    own = message_text(messages[0].get("content")) if messages and messages[0].get("role") == "system" else ""
    content = "\n\n".join(p for p in (before, own, after) if p)
    if own or (messages and messages[0].get("role") == "system"):
        messages[0]["content"] = content
    else:
        messages.insert(0, {"role": "system", "content": content})
    return messages


def retrieval_query(messages: list[dict]) -> str:
    """The last user turn, with the one before it as context when it is short."""
    user_turns = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    user_turns = [t for t in user_turns if t.strip()]
    if not user_turns:
        return ""
    query = user_turns[-1]
    if len(query) < 40 and len(user_turns) > 1:
        query = f"{user_turns[-2]}\n{query}"
    return query[-2000:]


def worldview_prompt(app: FastAPI) -> str:
    """``service.system_prompt``, else the user's newest account-wide profile (his custom instructions), read once."""
    config: Config = app.state.config
    if config.service.system_prompt.strip():
        return config.service.system_prompt.strip()
    if getattr(app.state, "worldview", None) is None:
        from memory_pipeline.profile import latest_profile

        try:
            app.state.worldview = latest_profile(config) or ""
        except Exception:  # the chat must go on without it
            logger.exception("reading the user's profile failed; no worldview prompt")
            app.state.worldview = ""
    return app.state.worldview


def list_models(config: Config) -> dict:
    """GET /v1/models: the configured model names and ``auto``, in OpenAI's list shape."""
    names = [*config.service.model_adapters, AUTO_MODEL]
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "memory_pipeline"}
            for name in dict.fromkeys(names)
        ],
    }


def choose_adapters_for(app: FastAPI, requested: str | None, query: str) -> tuple[list[str], str | None]:
    """(active adapters, model name for the upstream) for a request.

    ``auto``: core (the user's worldview is always on) plus the topic adapter the scoring router
    picks for the request's text, so a question is routed like an item of the same content;
    the upstream gets the adapters' combined name (``core+sport``), as vLLM's --lora-modules names it.
    A configured name maps through ``service.model_adapters``; any other name passes unchanged.
    """
    config: Config = app.state.config
    if requested == AUTO_MODEL:
        adapters = ["core", *auto_topics(app, query)]
        return adapters, "+".join(adapters)
    if requested in config.service.model_adapters:
        label = config.service.model_adapters[requested]
        return [a for a in label.split("+") if a], label
    return [], requested


def auto_topics(app: FastAPI, query: str) -> list[str]:
    """The topic adapter(s) the router sends this text to.

    [] when retrieval or routing fails (the chat goes on with core).
    """
    from memory_pipeline.records import Kind
    from memory_pipeline.scoring.routing import choose_adapters, route_item

    config: Config = app.state.config
    if not query:
        return []
    try:
        searcher = app.state.get_searcher()
        if getattr(app.state, "adapter_profiles", None) is None:
            from memory_pipeline.scoring.engine import adapter_profiles
            from memory_pipeline.scoring.store import ScoreStore, scores_dir

            app.state.adapter_profiles = adapter_profiles(config, searcher.embedder, ScoreStore(scores_dir(config)))
        vector = searcher.query_vector(
            query
        )  # a question against passage-embedded profiles, as in retrieval; shared with it
        routes = route_item(
            kind=Kind.DIALOGUE,
            text=query,
            user_text=query,
            vector=vector,
            profiles=app.state.adapter_profiles,
            config=config.promote,
        )
        names = [a.name for a in config.adapters]
        return [a for a in choose_adapters(routes, config.promote.route_threshold, names) if a != "core"]
    except Exception:
        logger.exception("adapter routing failed; answering with core only")
        return []


class ChatMessage(BaseModel):
    """The part of an OpenAI message the proxy reads; other fields (name, tool_calls, ...) pass through as sent."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict] | None = None


class ChatRequest(BaseModel):
    """Checked before anything else runs, so a malformed request gets a 422 naming the field, not a 500."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    stream: bool | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    since: str | None = Field(None, description="recall only memories from then on: an ISO date or 'last week'")
    until: str | None = Field(None, description="recall only memories up to then: an ISO date or 'два месяца назад'")

    @model_validator(mode="after")
    def _forwardable(self) -> ChatRequest:
        require_valid_unicode(self)
        return self


def points_at(upstream_url: str, host: str, port: int) -> bool:
    """Whether the upstream is this very server (same port, an address of this machine): every
    request would come back to the proxy and recurse until memory runs out."""
    import ipaddress
    import socket

    import psutil

    url = httpx.URL(upstream_url)
    upstream_port = url.port or (443 if url.scheme == "https" else 80)
    if upstream_port != port:
        return False
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(url.host, upstream_port)}
    except (socket.gaierror, UnicodeError):
        return False
    local = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    bound_anywhere = host in ("0.0.0.0", "::", "")
    return any(ipaddress.ip_address(a).is_loopback or a == host or (bound_anywhere and a in local) for a in resolved)


def register_proxy(app: FastAPI, config: Config, authorize: Callable) -> None:
    service = config.service
    proxy_id = uuid.uuid4().hex[:12]
    timeout = config.limits.upstream_timeout_seconds

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    def models() -> dict:
        return list_models(config)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(status_code=400, detail="request body is not valid JSON") from None
        try:
            chat = ChatRequest.model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        conversation_id = request.headers.get("x-conversation-id")
        if conversation_id is not None:
            try:
                check_conversation_id(conversation_id)
            except ValueError as exc:
                raise HTTPException(status_code=400, detail=f"X-Conversation-Id: {exc}") from None
        if problem := overlong_message(chat.messages, config.limits.max_message_chars):
            raise HTTPException(status_code=422, detail=problem)
        local = app.state.local_model
        if not service.upstream_url and local is None:
            raise HTTPException(
                status_code=503, detail="no upstream model server configured (service.upstream_url, or `serve --local`)"
            )
        via = [hop for hop in request.headers.get(VIA_HEADER, "").split(",") if hop]
        if proxy_id in via:
            loop = "service.upstream_url leads back to this proxy (a loop); point it at the model server"
            raise HTTPException(status_code=508, detail=loop)

        original = body["messages"]
        # since/until steer recall only; the model server never sees them (some refuse unknown fields).
        forwarded = {key: value for key, value in body.items() if key not in MEMORY_FIELDS}
        span = bounds(chat.since, chat.until, timezone=config.schedule.timezone)
        requested_model = chat.model
        adapters, upstream_model = await run_in_threadpool(
            choose_adapters_for, app, requested_model, retrieval_query(original)
        )
        if upstream_model is not None:
            forwarded["model"] = upstream_model
        if requested_model == AUTO_MODEL:
            logger.info("model auto: adapters %s", "+".join(adapters))
        memories = await run_in_threadpool(_memories_for, app, original, span)
        before = "\n\n".join(
            p for p in (await run_in_threadpool(worldview_prompt, app), guard_text(config, adapters)) if p
        )
        forwarded["messages"] = inject_system(original, before=before, after=memories)
        extra_headers = {ADAPTERS_HEADER: "+".join(adapters)} if adapters else {}
        url = (service.upstream_url if local is None else LOCAL_BASE_URL).rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {service.upstream_api_key}"} if service.upstream_api_key else {}
        headers[VIA_HEADER] = ",".join([*via, proxy_id])
        transport = httpx.ASGITransport(app=local) if local is not None else None
        client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)), transport=transport)

        def record(answer: str, model: str | None) -> None:
            messages = [
                InboxMessage(role=m["role"], content=m.get("content"))
                for m in original
                if m["role"] in ("user", "assistant")
            ]
            if answer:
                messages.append(InboxMessage(role="assistant", content=answer, model=model))
            app.state.inbox.record(
                messages, conversation_id=conversation_id or conversation_key(original, answer), model=model
            )

        deadline = anyio.current_time() + timeout
        try:
            upstream_request = client.build_request("POST", url, json=forwarded, headers=headers)
            with anyio.fail_after(timeout):
                upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            return openai_error(
                502, f"upstream model server unreachable: {url}: {exc}", "upstream_error", code="upstream_unreachable"
            )
        except TimeoutError:
            await client.aclose()
            return openai_error(
                504,
                f"upstream model server timed out: {url}: no answer in {timeout:g}s (limits.upstream_timeout_seconds)",
                "upstream_error",
                code="upstream_timeout",
            )

        if upstream.status_code >= 400:
            content = await upstream.aread()
            await _close(upstream, client)
            return upstream_error(upstream.status_code, content)

        if chat.stream:
            return RecordedStream(
                upstream,
                client,
                lambda answer: record(answer, requested_model),
                headers=extra_headers,
                deadline=deadline,
            )
        try:
            with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                content = await upstream.aread()
        except (TimeoutError, httpx.HTTPError) as exc:
            await _close(upstream, client)
            if isinstance(exc, TimeoutError):
                return openai_error(
                    504,
                    f"upstream model server timed out: {url}: no whole answer in {timeout:g}s "
                    "(limits.upstream_timeout_seconds)",
                    "upstream_error",
                    code="upstream_timeout",
                )
            return openai_error(
                502, f"upstream model server failed: {url}: {exc}", "upstream_error", code="upstream_unreachable"
            )
        await _close(upstream, client)
        try:
            payload = json.loads(content)
            answer = message_text(payload["choices"][0]["message"].get("content"))
            model = payload["model"] if isinstance(payload.get("model"), str) else requested_model
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            logger.warning("upstream answer not in OpenAI shape; exchange recorded without the answer")
            answer, model = "", requested_model
        await run_in_threadpool(record, answer, model)
        return Response(
            content=content, status_code=upstream.status_code, media_type="application/json", headers=extra_headers
        )


def openai_error(
    status: int, message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> JSONResponse:
    """An error in OpenAI's shape, so SDKs and UIs show its message (not only "Error code: 422")."""
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": error_type, "param": param, "code": code}}
    )


def upstream_error(status: int, content: bytes) -> JSONResponse:
    """The upstream's error, passed through when it is already in OpenAI's shape, wrapped in it when not."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str):
        error = body["error"]
        return openai_error(
            status,
            error["message"],
            str(error.get("type") or "upstream_error"),
            param=error.get("param"),
            code=error.get("code"),
        )
    text = content.decode("utf-8", errors="replace").strip()[:500] or f"HTTP {status}"
    return openai_error(status, f"upstream model server: {text}", "upstream_error")


def _memories_for(app: FastAPI, messages: list[dict], span: TimeSpan | None = None) -> str:
    config: Config = app.state.config
    if config.service.memory_k == 0:
        return ""
    try:  # retrieval must never block the chat, whatever fails in it
        query = retrieval_query(messages)
        if not query:
            return ""
        searcher = app.state.get_searcher()
        since, until = (span.since, span.until) if span else (None, None)
        hits = searcher.search(query, k=config.service.memory_k * 2, log=False, since=since, until=until)
        threshold = None if config.search.default_mode == "fts" else config.service.memory_min_similarity
        chosen = select_memories(hits, messages, threshold)[: config.service.memory_k]
        return memory_block(chosen, config.service.memory_token_budget)
    except Exception:
        logger.exception("memory retrieval failed; answering without memories")
        return ""


class StreamedAnswer:
    """The answer text of an SSE stream as it passes through, whole or cut off."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.parts.extend(_delta_text(line))

    def text(self) -> str:
        return "".join(self.parts + _delta_text(self._buffer))


class RecordedStream(StreamingResponse):
    """Relays the upstream SSE bytes unchanged and records the exchange exactly once when the stream ends
    for any reason (finished, upstream failed, client gone), with as much of the answer as was streamed.

    The recording sits in ``__call__``'s ``finally``, shielded from cancellation: Starlette cancels a
    stream whose client disconnects, possibly before its body iterator has started, so a ``finally``
    in the iterator could run late or never.
    """

    def __init__(
        self,
        upstream: httpx.Response,
        client: httpx.AsyncClient,
        record: Callable[[str], None],
        headers: dict[str, str] | None = None,
        *,
        deadline: float,
    ):
        self.answer = StreamedAnswer()
        self._upstream, self._client, self._record, self._deadline = upstream, client, record, deadline
        super().__init__(
            self._relay(),
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "text/event-stream"),
            headers=headers,
        )

    async def _relay(self) -> AsyncIterator[bytes]:
        """The upstream's bytes until it ends or the forwarding time (limits.upstream_timeout_seconds) is spent."""
        with anyio.move_on_after(max(0.0, self._deadline - anyio.current_time())):
            async for chunk in self._upstream.aiter_raw():
                self.answer.feed(chunk)
                yield chunk

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await _close(self._upstream, self._client)
                await run_in_threadpool(self._record, self.answer.text())


def _delta_text(line: bytes) -> list[str]:
    line = line.strip()
    if not line.startswith(b"data:"):
        return []
    data = line[5:].strip()
    if data == b"[DONE]":
        return []
    try:
        deltas = [choice.get("delta") or {} for choice in json.loads(data).get("choices") or []]
        return [delta["content"] for delta in deltas if isinstance(delta.get("content"), str)]
    except (ValueError, AttributeError, TypeError):  # not JSON, not UTF-8, or not the OpenAI shape
        return []


async def _close(upstream: httpx.Response, client: httpx.AsyncClient) -> None:
    await upstream.aclose()
    await client.aclose()


def conversation_key(messages: list[dict], answer: str) -> str:
    """An id for a client that sends no X-Conversation-Id, from the conversation's opening.

    Clients resend the whole history with each request, so the system message, the first user turn
    and the first answer to it (from the history once there is one, else the answer just produced)
    are the same in every request of one chat, while two chats that open with the same words part
    at their first answers at the latest. Whitespace is ignored: clients trim what they store.
    """
    first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), len(messages))
    system = next((m for m in messages[:first_user] if m.get("role") in ("system", "developer")), {})
    user = messages[first_user] if first_user < len(messages) else {}
    reply = next((m for m in messages[first_user + 1 :] if m.get("role") == "assistant"), {"content": answer})
    opening = [" ".join(message_text(m.get("content")).split()) for m in (system, user, reply)]
    return "proxy-" + stable_id("proxy", *opening)
