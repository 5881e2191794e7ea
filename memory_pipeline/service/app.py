"""The memory service: search over HTTP, durable dialogue capture, and an OpenAI-compatible memory proxy.

A long-running process keeps the embedder and the indexes loaded, so a search costs
milliseconds instead of the seconds a cold CLI spends loading the model.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from memory_pipeline import __version__
from memory_pipeline.config import TOKEN_ENV, Config
from memory_pipeline.errors import SearchError
from memory_pipeline.index.search import Hit, Searcher, validate_request
from memory_pipeline.index.search_log import log_search
from memory_pipeline.service.inbox import (
    Inbox,
    InboxMessage,
    RecordResult,
    check_conversation_id,
    overlong_message,
    require_valid_unicode,
    turn_indexes,
)
from memory_pipeline.service.limits import RequestLimits
from memory_pipeline.service.proxy import openai_error

logger = logging.getLogger(__name__)
MAX_K = 1000
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class SearchFilters(BaseModel):
    source_path_contains: str | None = None
    title_contains: str | None = None

    def active(self) -> bool:
        return bool(self.source_path_contains or self.title_contains)

    def matches(self, hit: Hit) -> bool:
        return (not self.source_path_contains or self.source_path_contains in hit.source_path) and (
            not self.title_contains or self.title_contains.lower() in hit.title.lower()
        )


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    k: int | None = Field(None, ge=1, le=MAX_K)
    kind: Literal["dialogue", "article", "lecture", "profile"] | None = None
    mode: Literal["vector", "fts", "hybrid"] | None = None
    filters: SearchFilters | None = None
    since: str | None = Field(None, description="ISO date/time or an expression: 'last week', 'два месяца назад'")
    until: str | None = None
    include_discard: bool = Field(False, description="also recall items tiered discard")

    def recall(self) -> dict:
        return {"since": self.since, "until": self.until, "include_discard": self.include_discard}


class DialogueRequest(BaseModel):
    """A conversation or its new turns, in the OpenAI ``messages`` shape plus identity."""

    conversation_id: str | None = Field(None, description="any text without control characters, up to 200 characters")
    title: str | None = None
    model: str | None = None
    start_index: int = Field(0, ge=0, description="turn index of the first message when messages carry none")
    messages: list[InboxMessage] = Field(min_length=1)

    @field_validator("conversation_id")
    @classmethod
    def _plain_id(cls, value: str | None) -> str | None:
        return None if value is None else check_conversation_id(value)

    @field_validator("messages")
    @classmethod
    def _has_content(cls, messages: list[InboxMessage]) -> list[InboxMessage]:
        """A message without content says nothing to remember; refused here, so nothing empty is recorded."""
        empty = [position for position, message in enumerate(messages) if message.content is None]
        if empty:
            raise ValueError(f"content is null in message(s) {empty}; send the text, or leave the message out")
        return messages

    @model_validator(mode="after")
    def _storable(self) -> DialogueRequest:
        indexes = turn_indexes(self.messages, self.start_index)
        if len(set(indexes)) < len(indexes):
            raise ValueError("two messages claim the same turn index")
        require_valid_unicode(self)
        return self


def filtered_search(searcher, config: Config, request: SearchRequest) -> list[Hit]:
    """Up to k hits that pass the filters, not the few of the top k that happen to.

    The indexes know no path or title filters, so the search goes deeper (4x each round, up to
    MAX_K candidates) until k hits pass or the candidates run out; logged once, with the hits returned.
    """
    started = time.perf_counter()
    query, k, kind, mode = validate_request(config, request.query, request.k, request.kind, request.mode)
    depth = k
    while True:
        depth = min(MAX_K, depth * 4)
        candidates = searcher.search(query, k=depth, kind=kind, mode=mode, log=False, **request.recall())
        hits = [hit for hit in candidates if request.filters.matches(hit)][:k]
        if len(hits) == k or len(candidates) < depth or depth == MAX_K:
            break
    latency = (time.perf_counter() - started) * 1000
    log_search(config, query=query, mode=mode, kind=kind, k=k, hit_ids=[h.chunk_id for h in hits], latency_ms=latency)
    return hits


def require_safe_binding(host: str, token: str | None) -> None:
    """Refuse to serve the memory off loopback without a token: it holds the user's whole life."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise SystemExit(f"refusing to bind {host} without a token: set service.token or ${TOKEN_ENV}")


def create_app(config: Config, *, searcher=None, local_model: FastAPI | None = None) -> FastAPI:
    """Build the app; ``searcher`` defaults to a memory_pipeline.index.search.Searcher loaded once.

    ``local_model``: an OpenAI-compatible app the proxy calls in-process instead of ``service.upstream_url``.
    """
    from memory_pipeline.ingest.docstore import DocumentStore
    from memory_pipeline.service.proxy import register_proxy

    token = config.service.resolved_token()
    bearer = HTTPBearer(auto_error=False)

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials, token):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    # /docs and /redoc from assets shipped in fastapi-offline: FastAPI's default pages load them from a CDN,
    # and this service runs with no network (nor does Swagger UI's validator badge, an online service, show).
    app = FastAPIOffline(
        title="memory_pipeline", version=__version__, description=__doc__, swagger_ui_parameters={"validatorUrl": None}
    )
    limits = config.limits
    app.add_middleware(
        RequestLimits, max_bytes=int(limits.max_request_mb * 1_000_000), max_depth=limits.max_nesting_depth
    )
    app.state.config = config
    app.state.inbox = Inbox(config.inbox_dir)
    app.state.searcher = searcher
    app.state.local_model = local_model
    app.state.docstore = DocumentStore(config.documents_dir)

    def get_searcher():
        if app.state.searcher is None:
            app.state.searcher = Searcher(config)
        return app.state.searcher

    app.state.get_searcher = get_searcher

    # Every error in OpenAI's shape ({"error": {"message", "type", "param", "code"}}): SDKs, Open WebUI
    # and n8n show its message; a bare FastAPI error only shows as "Error code: 422".
    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        first = next((".".join(str(p) for p in e["loc"] if p != "body") for e in exc.errors()), None)
        return openai_error(
            422,
            "invalid request: " + "; ".join(problems),
            "invalid_request_error",
            param=first or None,
            code="invalid_request",
        )

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return openai_error(400, "request nested too deeply to read", "invalid_request_error", code="nesting_too_deep")

    @app.exception_handler(SearchError)
    async def _search_error(request: Request, exc: SearchError) -> JSONResponse:
        return openai_error(400, str(exc), "invalid_request_error", code="invalid_search")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = openai_error(
            exc.status_code,
            str(exc.detail),
            _ERROR_TYPES.get(exc.status_code, "server_error" if exc.status_code >= 500 else "invalid_request_error"),
        )
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return openai_error(500, f"internal error: {type(exc).__name__}", "server_error")

    @app.get("/health")
    def health() -> dict:
        searcher = app.state.searcher
        return {
            "status": "ok",
            "version": __version__,
            "embedding_model": config.embedding.model,
            "storage_root": str(config.storage_root),
            "documents": app.state.docstore.count(),
            "search_loaded": searcher is not None,
            "stores": searcher.stats() if searcher is not None else None,
        }

    @app.post("/search", dependencies=[Depends(authorize)])
    def search(request: SearchRequest) -> dict:
        if request.filters and request.filters.active():
            hits = filtered_search(get_searcher(), config, request)
        else:
            hits = get_searcher().search(
                request.query, k=request.k, kind=request.kind, mode=request.mode, **request.recall()
            )
        return {"query": request.query, "hits": [h.model_dump(mode="json") for h in hits]}

    @app.post("/dialogues", dependencies=[Depends(authorize)])
    def record_dialogue(request: DialogueRequest) -> RecordResult:
        if problem := overlong_message(request.messages, limits.max_message_chars):
            raise HTTPException(status_code=422, detail=problem)
        return app.state.inbox.record(
            request.messages,
            conversation_id=request.conversation_id,
            title=request.title,
            model=request.model,
            start_index=request.start_index,
        )

    @app.get("/documents/{doc_id}", dependencies=[Depends(authorize)])
    def get_document(doc_id: str) -> dict:
        doc = app.state.docstore.get(doc_id)
        if doc is None:
            raise HTTPException(status_code=404, detail=f"no document with id {doc_id!r}")
        return doc.model_dump(mode="json")

    register_proxy(app, config, authorize)
    return app


def serve(config: Config, *, host: str | None = None, port: int | None = None, local: bool = False) -> None:
    """Serve until stopped; ``local``: the proxy answers with the base model and current adapters in-process."""
    import uvicorn

    from memory_pipeline.service.proxy import points_at

    host = host or config.service.host
    port = port or config.service.port
    require_safe_binding(host, config.service.resolved_token())
    if not local and config.service.upstream_url and points_at(config.service.upstream_url, host, port):
        raise SystemExit(
            f"service.upstream_url {config.service.upstream_url} is this server ({host}:{port}); "
            "point it at the model server"
        )
    local_model = None
    if local:
        from memory_pipeline.service.local_model import create_local_app

        local_model = create_local_app(config)
    app = create_app(config, local_model=local_model)
    app.state.get_searcher()
    uvicorn.run(app, host=host, port=port, log_level="info")
