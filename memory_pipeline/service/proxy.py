"""OpenAI-compatible memory proxy: add the user's memories to the chat, forward it, record the exchange.

Any OpenAI client (Open WebUI, n8n, scripts) pointed at this proxy talks to the user's real
local model server, but every request gets the most relevant memories in its system message
and every exchange lands in the inbox, to be indexed, scored and maybe learned. Memory must
never block the chat: when retrieval fails the request goes through without memories.
"""

from __future__ import annotations

import json
import logging
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
from memory_pipeline.records import stable_id
from memory_pipeline.service.inbox import InboxMessage, message_text, require_valid_unicode

logger = logging.getLogger(__name__)
MEMORY_HEADER = "Relevant memories from the user's own notes and past conversations (cite the source when you use one):"


def memory_block(hits, budget_tokens: int) -> str:
    """Memories as a compact, sourced list that fits the token budget (cl100k tokens)."""
    from memory_pipeline.tokens import count_tokens

    lines = [MEMORY_HEADER]
    used = count_tokens(MEMORY_HEADER)
    for number, hit in enumerate(hits, start=1):
        text = " ".join(hit.text.split())
        line = f"[{number}] {text} (source: {hit.title}, {hit.source_path})"
        cost = count_tokens(line)
        if used + cost > budget_tokens:
            break
        lines.append(line)
        used += cost
    return "\n".join(lines) if len(lines) > 1 else ""


def inject_memories(messages: list[dict], block: str) -> list[dict]:
    """Put the memory block in the system message (added first when the request has none)."""
    if not block:
        return messages
    messages = [dict(m) for m in messages]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = f"{message_text(messages[0].get('content'))}\n\n{block}"
    else:
        messages.insert(0, {"role": "system", "content": block})
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

    @model_validator(mode="after")
    def _forwardable(self) -> ChatRequest:
        require_valid_unicode(self)
        return self


def register_proxy(app: FastAPI, config: Config, authorize: Callable) -> None:
    service = config.service

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
        if not service.upstream_url:
            raise HTTPException(status_code=503, detail="no upstream model server configured (service.upstream_url)")

        original = body["messages"]
        forwarded = dict(body)
        forwarded["messages"] = inject_memories(original, await run_in_threadpool(_memories_for, app, original))
        requested_model = chat.model
        if requested_model in service.model_adapters:
            forwarded["model"] = service.model_adapters[requested_model]
        conversation_id = request.headers.get("x-conversation-id")
        url = service.upstream_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {service.upstream_api_key}"} if service.upstream_api_key else {}
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0))

        def record(answer: str, model: str | None) -> None:
            messages = [InboxMessage(role=m["role"], content=m.get("content")) for m in original if m["role"] in ("user", "assistant")]
            if answer:
                messages.append(InboxMessage(role="assistant", content=answer, model=model))
            app.state.inbox.record(messages, conversation_id=conversation_id or conversation_key(original, answer), model=model)

        try:
            upstream_request = client.build_request("POST", url, json=forwarded, headers=headers)
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            return JSONResponse(status_code=502, content={"error": "upstream unreachable", "detail": f"{url}: {exc}"})

        if upstream.status_code >= 400:
            content = await upstream.aread()
            await _close(upstream, client)
            return Response(content=content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type", "application/json"))

        if chat.stream:
            return RecordedStream(upstream, client, lambda answer: record(answer, requested_model))
        content = await upstream.aread()
        await _close(upstream, client)
        try:
            payload = json.loads(content)
            answer = message_text(payload["choices"][0]["message"].get("content"))
            model = payload["model"] if isinstance(payload.get("model"), str) else requested_model
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            logger.warning("upstream answer not in OpenAI shape; exchange recorded without the answer")
            answer, model = "", requested_model
        await run_in_threadpool(record, answer, model)
        return Response(content=content, status_code=upstream.status_code, media_type="application/json")


def _memories_for(app: FastAPI, messages: list[dict]) -> str:
    config: Config = app.state.config
    if config.service.memory_k == 0:
        return ""
    try:  # retrieval must never block the chat, whatever fails in it
        query = retrieval_query(messages)
        if not query:
            return ""
        hits = app.state.get_searcher().search(query, k=config.service.memory_k, log=False)
        return memory_block(hits, config.service.memory_token_budget)
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

    def __init__(self, upstream: httpx.Response, client: httpx.AsyncClient, record: Callable[[str], None]):
        self.answer = StreamedAnswer()
        self._upstream, self._client, self._record = upstream, client, record
        super().__init__(self._relay(), status_code=upstream.status_code, media_type=upstream.headers.get("content-type", "text/event-stream"))

    async def _relay(self) -> AsyncIterator[bytes]:
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
