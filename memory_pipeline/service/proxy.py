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

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from memory_pipeline.config import Config
from memory_pipeline.service.inbox import InboxMessage, message_text

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


def register_proxy(app: FastAPI, config: Config, authorize: Callable) -> None:
    service = config.service

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(status_code=400, detail="request body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise HTTPException(status_code=400, detail="'messages' must be a non-empty list of {role, content}")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in body["messages"]):
            raise HTTPException(status_code=400, detail="every message needs a 'role'")
        if not service.upstream_url:
            raise HTTPException(status_code=503, detail="no upstream model server configured (service.upstream_url)")

        original = body["messages"]
        forwarded = dict(body)
        forwarded["messages"] = inject_memories(original, await run_in_threadpool(_memories_for, app, original))
        requested_model = body.get("model")
        if requested_model in service.model_adapters:
            forwarded["model"] = service.model_adapters[requested_model]
        conversation_id = request.headers.get("x-conversation-id") or body.get("user") or None
        url = service.upstream_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {service.upstream_api_key}"} if service.upstream_api_key else {}
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0))

        def record(answer: str, model: str | None) -> None:
            messages = [InboxMessage(role=m["role"], content=m.get("content")) for m in original if m["role"] in ("user", "assistant")]
            if answer:
                messages.append(InboxMessage(role="assistant", content=answer, model=model))
            app.state.inbox.record(messages, conversation_id=conversation_id or _conversation_key(original), model=model)

        try:
            upstream_request = client.build_request("POST", url, json=forwarded, headers=headers)
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            return JSONResponse(status_code=502, content={"error": "upstream unreachable", "detail": f"{url}: {exc}"})

        if upstream.status_code >= 400:
            content = await upstream.aread()
            await upstream.aclose()
            await client.aclose()
            return Response(content=content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type", "application/json"))

        if body.get("stream"):
            return StreamingResponse(
                _relay_stream(upstream, record, requested_model),
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type", "text/event-stream"),
                background=BackgroundTask(_close, upstream, client),
            )
        content = await upstream.aread()
        await _close(upstream, client)
        try:
            payload = json.loads(content)
            answer = message_text(payload["choices"][0]["message"].get("content"))
            model = payload.get("model") or requested_model
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            logger.warning("upstream answer not in OpenAI shape; exchange recorded without the answer")
            answer, model = "", requested_model
        await run_in_threadpool(record, answer, model)
        return Response(content=content, status_code=upstream.status_code, media_type="application/json")


def _memories_for(app: FastAPI, messages: list[dict]) -> str:
    config: Config = app.state.config
    query = retrieval_query(messages)
    if not query or config.service.memory_k == 0:
        return ""
    try:
        hits = app.state.get_searcher().search(query, k=config.service.memory_k, log=False)
        return memory_block(hits, config.service.memory_token_budget)
    except Exception:  # retrieval must never block the chat
        logger.exception("memory retrieval failed; answering without memories")
        return ""


async def _relay_stream(upstream: httpx.Response, record: Callable[[str, str | None], None], model: str | None) -> AsyncIterator[bytes]:
    """Pass SSE bytes through unchanged while collecting the answer's deltas to record at the end."""
    parts: list[str] = []
    buffer = b""
    async for chunk in upstream.aiter_raw():
        yield chunk
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            parts.extend(_delta_text(line))
    parts.extend(_delta_text(buffer))
    record("".join(parts), model)


def _delta_text(line: bytes) -> list[str]:
    line = line.strip()
    if not line.startswith(b"data:"):
        return []
    data = line[5:].strip()
    if data == b"[DONE]":
        return []
    try:
        event = json.loads(data)
        return [c.get("delta", {}).get("content") or "" for c in event.get("choices", [])]
    except (json.JSONDecodeError, AttributeError):
        return []


async def _close(upstream: httpx.Response, client: httpx.AsyncClient) -> None:
    await upstream.aclose()
    await client.aclose()


def _conversation_key(messages: list[dict]) -> str:
    """A stable id for a client that sends none: the hash of the conversation's first user turn."""
    from memory_pipeline.records import stable_id

    first_user = next((message_text(m.get("content")) for m in messages if m.get("role") == "user"), "")
    return "proxy-" + stable_id("proxy", first_user)
