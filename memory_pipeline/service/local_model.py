"""``serve --local``: the proxy's upstream is the configured base model with the current adapters, in-process.

A small OpenAI-compatible app called through ``httpx.ASGITransport``, so the proxy runs exactly
as with a remote server (memories, guards, recording) and the loop works with no model server at
all. Slow on CPU (one request at a time; the model is reloaded when the requested adapter set
changes); it is for trying the loop, a real server (llama.cpp, vLLM, Ollama) is for daily use.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from memory_pipeline.config import Config

logger = logging.getLogger(__name__)
LOCAL_BASE_URL = "http://local-model/v1"
_MAX_NEW_TOKENS = 256


def available_adapters(config: Config, requested: str | None) -> list[str]:
    """The adapters named in ``requested`` (``core+sport``) that have a current version; the others are skipped."""
    from memory_pipeline.adapters import registry

    names = [n for n in (requested or "").split("+") if n in {a.name for a in config.adapters}]
    ready = [n for n in names if registry.current_version(config, n) is not None]
    if len(ready) < len(names):
        logger.info(
            "local model: no current version of %s; answering without it", ", ".join(sorted(set(names) - set(ready)))
        )
    return ready


class _LoadedModel:
    """The base with one adapter set, kept between requests for as long as the same set is asked for."""

    def __init__(self, config: Config):
        self.config = config
        self.key: tuple[str, ...] | None = None
        self.model = self.tokenizer = None
        self.lock = threading.Lock()  # one generation at a time: a CPU has no room for two

    def generate(self, adapters: list[str], messages: list[dict], max_tokens: int) -> str:
        from memory_pipeline.adapters.base_model import load_base_model
        from memory_pipeline.adapters.combine import combine_adapters, load_adapters
        from memory_pipeline.adapters.generation import generate_reply

        with self.lock:
            key = tuple(adapters)
            if key != self.key:
                self.model = self.tokenizer = None
                if adapters:
                    self.model, self.tokenizer, loaded = load_adapters(self.config, adapters)
                    if len(loaded) > 1:
                        combine_adapters(self.model, loaded)
                else:
                    training = self.config.training
                    self.model, self.tokenizer, _, _ = load_base_model(
                        training, device=training.device, cache_dir=self.config.base_models_dir
                    )
                self.key = key
            return generate_reply(
                self.model, self.tokenizer, messages, self.config.generation, max_new_tokens=max_tokens
            )


def create_local_app(config: Config) -> FastAPI:
    """``POST /v1/chat/completions`` answered by the base model plus the requested adapters."""
    app = FastAPI(title="memory_pipeline local model")
    loaded = _LoadedModel(config)
    generate = loaded.generate

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        model = body.get("model") or "base"
        adapters = available_adapters(config, model)
        messages = [
            {"role": m["role"], "content": m.get("content") or ""}
            for m in body["messages"]
            if isinstance(m.get("content"), str | None)
        ]
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or _MAX_NEW_TOKENS)
        try:
            answer = await run_in_threadpool(generate, adapters, messages, max_tokens)
        except Exception as exc:  # a broken base or adapter must come back as an error the client can read
            logger.exception("local model failed")
            return JSONResponse(
                status_code=500,
                content={
                    "error": {
                        "message": f"local model failed: {exc}",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.get("stream"):

            async def events():
                for delta, finish in (({"role": "assistant", "content": answer}, None), ({}, "stop")):
                    chunk = {
                        "id": reply_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {
            "id": reply_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        }

    return app
