"""Request limits for every endpoint, enforced before any body is parsed.

A pure ASGI middleware, so streamed proxy answers pass through untouched: the request body is
read up to ``limits.max_request_mb`` (413 beyond, from Content-Length alone when it is declared),
JSON bodies nested past ``limits.max_nesting_depth`` get 400 before a parser recurses into them,
and the body is then handed on to the app as it came.
"""

from __future__ import annotations

import json

from memory_pipeline.ingest.limits import JsonNestingGauge, NestingTooDeep


class RequestLimits:
    def __init__(self, app, *, max_bytes: int, max_depth: int):
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = (
                f"request body is {int(declared)} bytes, over the limit of {self.max_bytes} (limits.max_request_mb)"
            )
            await _refuse(send, 413, message, "request_too_large")
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                message = f"request body is over the limit of {self.max_bytes} bytes (limits.max_request_mb)"
                await _refuse(send, 413, message, "request_too_large")
                return
        content_type = headers.get(b"content-type", b"").lower()
        if not content_type or b"json" in content_type:
            gauge = JsonNestingGauge(self.max_depth)
            try:
                for chunk in chunks:
                    gauge.feed(chunk)
            except NestingTooDeep as exc:
                await _refuse(send, 400, str(exc), "nesting_too_deep")
                return
        await self.app(scope, _replay(chunks, None, receive), send)


def _replay(chunks: list[bytes], pending: dict | None, receive):
    """A receive() that gives the buffered body once, then whatever the client sends next (a disconnect)."""
    queue = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}] if pending is None else [pending]

    async def replayed():
        return queue.pop(0) if queue else await receive()

    return replayed


async def _refuse(send, status: int, message: str, code: str) -> None:
    """An error in OpenAI's shape, as every other error of the service."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
