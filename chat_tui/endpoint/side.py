"""Requests beside the chat: the reachability probe, the model list, small JSON asks.

Each is bounded in time and size and never raises for a network failure
where its caller only wants an answer or none (``probe``, ``fetch_json``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx

from ..sanitize import sanitize
from .errors import (
    AUTH_STATUS,
    TransientError,
    UnreachableError,
    classify_status,
    error_reason,
    looks_like_json,
    transport_reason,
)

if TYPE_CHECKING:
    from .client import Endpoint


@dataclass(frozen=True, slots=True)
class ProbeResult:
    state: str  # online | offline | captive | auth_error
    detail: str
    latency: float | None = None


async def probe(endpoint: Endpoint, timeout: float) -> ProbeResult:
    """``GET /models``: is the API itself answering?"""
    result = await _probe(endpoint, timeout)
    return replace(result, detail=endpoint.redact(result.detail))


async def _probe(endpoint: Endpoint, timeout: float) -> ProbeResult:
    started = time.monotonic()
    try:
        response = await endpoint.pool.client.get(
            "models",
            timeout=httpx.Timeout(min(endpoint.settings.connect_timeout, timeout), read=timeout),
        )
    except httpx.TransportError as exc:
        return ProbeResult("offline", await endpoint.hop.explain(exc))
    except httpx.HTTPError as exc:  # e.g. a broken gzip body: something odd answered
        return ProbeResult("captive", f"unreadable answer to /models: {exc}")
    endpoint.pool.pooled = True
    latency = time.monotonic() - started
    endpoint.models_not_found = response.status_code == 404
    if response.status_code in (404, 405):
        # The server is there; it may just have no /models (some local servers).
        # If /chat/completions says 404 too, the base URL is wrong (see chat()).
        return ProbeResult("online", f"HTTP {response.status_code} for /models", latency)
    if response.status_code in AUTH_STATUS:
        reason, _ = error_reason(response, response.content)
        return ProbeResult("auth_error", reason, latency)
    if looks_like_json(response) and not 300 <= response.status_code < 400:
        try:
            json.loads(response.content)
        except ValueError:
            return ProbeResult("captive", "the answer to /models was not valid JSON", latency)
        return ProbeResult("online", f"HTTP {response.status_code}", latency)
    ctype = response.headers.get("content-type", "?").split(";")[0]
    return ProbeResult(
        "captive",
        f"HTTP {response.status_code} {ctype} instead of the API (a login page?)",
        latency,
    )


async def fetch_json(
    client: httpx.AsyncClient,
    connect_timeout: float,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    timeout: float,
) -> Any:
    """A small JSON side request (e.g. the server's context size); None on any failure.

    Bounded in time as a whole and in size: a server that answers something
    else (a stream, an endless body) must not hold up the request it precedes.
    """
    limit = 1024 * 1024
    try:
        async with asyncio.timeout(timeout + connect_timeout):
            async with client.stream(
                method,
                url,
                json=body,
                timeout=httpx.Timeout(min(connect_timeout, timeout), read=timeout),
            ) as response:
                if response.status_code != 200 or not looks_like_json(response):
                    return None
                data = b""
                async for piece in response.aiter_bytes():
                    data += piece
                    if len(data) > limit:
                        return None
        return json.loads(data)
    except (httpx.HTTPError, ValueError, TimeoutError):
        return None


async def list_models(client: httpx.AsyncClient, timeout: float) -> list[str]:
    """The model ids ``GET /models`` lists (for the settings screen's picker).
    Raises ``DeliveryError`` if the answer is not a model list."""
    try:
        response = await client.get("models", timeout=timeout)
    except httpx.HTTPError as exc:
        raise UnreachableError(
            transport_reason(exc) if isinstance(exc, httpx.TransportError) else str(exc)
        ) from None
    if response.status_code != 200:
        raise classify_status(response, response.content)
    try:
        data = json.loads(response.content)
    except ValueError:
        raise TransientError("the answer to /models was not JSON") from None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise TransientError("the answer to /models has no model list")
    return sorted({sanitize(str(m["id"])) for m in items if isinstance(m, dict) and m.get("id")})
