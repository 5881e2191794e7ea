"""Search through a running memory service, so the CLI answers in milliseconds when one is up.

A cold CLI spends seconds loading the embedder and opening the indexes; the service has them
loaded already. ``service_search`` returns None whenever no usable service answers, and the
caller searches in-process instead. A service that rejects the query itself (a 4xx for the
request's content) raises the same SearchError the in-process path would: falling back would
only repeat the same mistake more slowly.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import httpx

from memory_pipeline.config import Config
from memory_pipeline.errors import SearchError

if TYPE_CHECKING:
    from memory_pipeline.index.search import Hit

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT = httpx.Timeout(1.0, connect=0.3)
_QUERY_ERRORS = (400, 413, 422)


def service_url(config: Config) -> str:
    """Where to reach the configured service; a bind-all address is reached over loopback."""
    host = config.service.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{config.service.port}"


def service_search(
    config: Config,
    query: str,
    *,
    k: int | None = None,
    kind: str | None = None,
    mode: str | None = None,
    since: str | None = None,
    until: str | None = None,
    include_discard: bool = False,
    timeout: float = 30.0,
) -> list[Hit] | None:
    """Hits (memory_pipeline.index.search.Hit) from the running service, or None when none is usable."""
    base = service_url(config)
    token = config.service.resolved_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base, headers=headers, timeout=timeout, trust_env=False) as client:
        try:
            health = client.get("/health", timeout=HEALTH_TIMEOUT)
        except httpx.HTTPError:
            return None
        if not _healthy(health, config):
            return None
        payload = {
            "query": query,
            "k": k,
            "kind": kind,
            "mode": mode,
            "since": since,
            "until": until,
            "include_discard": include_discard or None,
        }
        try:
            response = client.post("/search", json={key: value for key, value in payload.items() if value is not None})
        except httpx.HTTPError as exc:
            logger.warning("memory service at %s did not answer the search (%s); searching in-process", base, exc)
            return None
    if response.status_code in _QUERY_ERRORS:
        raise SearchError(_error_detail(response))
    if response.status_code != 200:
        logger.warning(
            "memory service at %s answered %s (%s); searching in-process",
            base,
            response.status_code,
            _error_detail(response),
        )
        return None
    from memory_pipeline.index.search import Hit

    return [Hit.model_validate(row) for row in response.json()["hits"]]


def _healthy(health: httpx.Response, config: Config) -> bool:
    """Up, ours, and embedding with the model this config names (else its vectors mean other things)."""
    try:
        body = health.json()
    except ValueError:
        return False
    if health.status_code != 200 or not isinstance(body, dict) or body.get("status") != "ok":
        return False
    if body.get("storage_root") != str(config.storage_root):
        logger.info(
            "memory service at %s serves %s, not %s; searching in-process",
            health.url,
            body.get("storage_root"),
            config.storage_root,
        )
        return False
    if body.get("embedding_model") != config.embedding.model:
        logger.warning(
            "memory service at %s embeds with %s, this config with %s; searching in-process",
            health.url,
            body.get("embedding_model"),
            config.embedding.model,
        )
        return False
    return True


def _error_detail(response: httpx.Response) -> str:
    """The service's own explanation: 'detail' is a string (400) or a list of problems (422)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or f"HTTP {response.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        return "; ".join(str(d) for d in detail)
    return str(detail or body)
