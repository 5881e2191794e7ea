"""The memory service: search over HTTP, durable dialogue capture, and an OpenAI-compatible memory proxy.

A long-running process keeps the embedder and the indexes loaded, so a search costs
milliseconds instead of the seconds a cold CLI spends loading the model.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from memory_pipeline import __version__
from memory_pipeline.config import TOKEN_ENV, Config
from memory_pipeline.errors import SearchError
from memory_pipeline.service.inbox import Inbox, InboxMessage, RecordResult

logger = logging.getLogger(__name__)


class SearchFilters(BaseModel):
    source_path_contains: str | None = None
    title_contains: str | None = None


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    k: int | None = Field(None, ge=1, le=1000)
    kind: Literal["dialogue", "article", "lecture"] | None = None
    mode: Literal["vector", "fts", "hybrid"] | None = None
    filters: SearchFilters | None = None


class DialogueRequest(BaseModel):
    """A conversation or its new turns, in the OpenAI ``messages`` shape plus identity."""

    conversation_id: str | None = Field(None, min_length=1, max_length=200)
    title: str | None = None
    model: str | None = None
    start_index: int = Field(0, ge=0, description="turn index of the first message when messages carry none")
    messages: list[InboxMessage] = Field(min_length=1)


def require_safe_binding(host: str, token: str | None) -> None:
    """Refuse to serve the memory off loopback without a token: it holds the user's whole life."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise SystemExit(f"refusing to bind {host} without a token: set service.token or ${TOKEN_ENV}")


def create_app(config: Config, *, searcher=None) -> FastAPI:
    """Build the app; ``searcher`` defaults to a memory_pipeline.search.Searcher loaded once."""
    from memory_pipeline.docstore import DocumentStore
    from memory_pipeline.service.proxy import register_proxy

    token = config.service.resolved_token()
    bearer = HTTPBearer(auto_error=False)

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials, token):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="memory_pipeline", version=__version__, description=__doc__)
    app.state.config = config
    app.state.inbox = Inbox(config.inbox_dir)
    app.state.searcher = searcher
    app.state.docstore = DocumentStore(config.documents_dir)

    def get_searcher():
        if app.state.searcher is None:
            from memory_pipeline.search import Searcher

            app.state.searcher = Searcher(config)
        return app.state.searcher

    app.state.get_searcher = get_searcher

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={"error": "invalid request", "detail": problems})

    @app.exception_handler(SearchError)
    async def _search_error(request: Request, exc: SearchError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": "invalid search", "detail": str(exc)})

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
        hits = get_searcher().search(request.query, k=request.k, kind=request.kind, mode=request.mode)
        if request.filters:
            f = request.filters
            hits = [
                h
                for h in hits
                if (not f.source_path_contains or f.source_path_contains in h.source_path)
                and (not f.title_contains or f.title_contains.lower() in h.title.lower())
            ]
        return {"query": request.query, "hits": [h.model_dump(mode="json") for h in hits]}

    @app.post("/dialogues", dependencies=[Depends(authorize)])
    def record_dialogue(request: DialogueRequest) -> RecordResult:
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


def serve(config: Config, *, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    host = host or config.service.host
    port = port or config.service.port
    require_safe_binding(host, config.service.resolved_token())
    app = create_app(config)
    app.state.get_searcher()
    uvicorn.run(app, host=host, port=port, log_level="info")
