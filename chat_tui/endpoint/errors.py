"""What a failed request means: every failure is classified once, here.

As docs/architecture.md step 5 says:

* ``UnreachableError``: nothing answered (connect failed, DNS, a captive
  portal). The endpoint is offline; waiting costs the message no attempt.
* ``TransientError``: the server was there but the reply did not arrive whole
  (5xx, 408/409/425/429, a timeout, a reset, a cut or malformed stream, no
  ``finish_reason``). Retried with backoff; costs an attempt.
* ``PermanentError``: the server refused this request (400, 404, 413, 422,
  429 ``insufficient_quota``…). The message fails with the server's reason.
* ``AuthError``: 401/403. Delivery pauses for every conversation.
"""

from __future__ import annotations

import json

import httpx

from ..backoff import parse_retry_after
from ..sanitize import sanitize

TRANSIENT_STATUS = {408, 409, 425, 429}
AUTH_STATUS = {401, 403}


class DeliveryError(Exception):
    """Base of every classified failure; ``reason`` is shown to the user."""

    kind = "error"

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TransientError(DeliveryError):
    kind = "transient"

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        network: bool = False,
        transport: bool = False,
    ) -> None:
        super().__init__(reason, status=status)
        self.retry_after = retry_after
        self.network = network or transport  # the connection failed: the link may be down
        # The transport itself broke (reset, cut, dead link): the network's doing, not the
        # request's, so it costs the message no attempt (docs/architecture.md step 7).
        self.transport = transport


class UnreachableError(TransientError):
    """Nothing that speaks the API answered. ``captive`` when something else did."""

    kind = "unreachable"

    def __init__(self, reason: str, *, captive: bool = False) -> None:
        super().__init__(reason)
        self.captive = captive


class PermanentError(DeliveryError):
    kind = "permanent"


class AuthError(DeliveryError):
    kind = "auth"


def error_reason(response: httpx.Response, body: bytes) -> tuple[str, str | None]:
    """The server's own words for a failure, and its error code if it gave one."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    code: str | None = None
    message: str | None = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail")
            raw_code = err.get("code") or err.get("type")
            code = str(raw_code) if raw_code is not None else None
        elif isinstance(err, str):
            message = err
    if not message:
        text = body[:200].decode("utf-8", "replace").strip()
        message = text or response.reason_phrase or "no reason given"
    return f"HTTP {response.status_code}: {sanitize(str(message))[:300]}", code


def looks_like_json(response: httpx.Response) -> bool:
    ctype = response.headers.get("content-type", "")
    return "json" in ctype


def classify_status(response: httpx.Response, body: bytes) -> DeliveryError:
    """Map a non-2xx answer to its failure class."""
    status = response.status_code
    reason, code = error_reason(response, body)
    if status in AUTH_STATUS:
        return AuthError(reason, status=status)
    if 300 <= status < 400:
        # Portals redirect every request to their login page.
        return UnreachableError(
            f"redirected to {response.headers.get('location', '?')}", captive=True
        )
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 429 and code and "insufficient_quota" in code:
        return PermanentError(reason, status=status)
    if status in TRANSIENT_STATUS or status >= 500:
        return TransientError(reason, status=status, retry_after=retry_after)
    return PermanentError(reason, status=status)


def classify_error_object(err: object) -> DeliveryError:
    """An error the server sent inside a 200 answer (a JSON body, an SSE ``event: error``,
    a ``data:`` line with ``error``): classified as its HTTP status would be
    (docs/architecture.md step 5). Without a usable status it is the server failing:
    transient."""
    message: object = err
    status: int | None = None
    code = ""
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or err.get("error") or "no reason given"
        for key in ("status", "code", "status_code"):
            value = err.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
                status = value
                break
            if isinstance(value, str) and value.isdigit() and 100 <= int(value) < 600:
                status = int(value)
                break
        code = " ".join(str(err.get(k) or "") for k in ("code", "type"))
    reason = f"the server failed: {sanitize(str(message))[:300]}"
    if "context_length_exceeded" in code or "exceed_context_size" in code:
        return PermanentError(reason, status=status or 400)
    if status in AUTH_STATUS:
        return AuthError(reason, status=status)
    if status == 429 and "insufficient_quota" in code:
        return PermanentError(reason, status=status)
    if status is not None and 400 <= status < 500 and status not in TRANSIENT_STATUS:
        return PermanentError(reason, status=status)
    return TransientError(reason, status=status)


def transport_reason(exc: httpx.TransportError) -> str:
    """A failure of the connection itself, in plain words."""
    names = {
        httpx.ConnectTimeout: "connecting timed out",
        httpx.ReadTimeout: "the server stopped sending (read timeout)",
        httpx.WriteTimeout: "sending timed out",
        httpx.PoolTimeout: "no connection available",
        httpx.RemoteProtocolError: "the connection was cut",
    }
    for cls, text in names.items():
        if isinstance(exc, cls):
            return text
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {detail}"
    if isinstance(exc, httpx.ReadError | httpx.WriteError) and not str(exc):
        # No words from the OS: a reset, or keepalive probes left unanswered.
        return f"the connection broke ({detail})"
    return f"network error: {detail}"
