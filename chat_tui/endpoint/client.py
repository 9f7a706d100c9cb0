"""The OpenAI-compatible chat-completions client (httpx) of one endpoint.

Failures are classified once, in ``errors`` (docs/architecture.md step 5). A
reply counts only if it ended with a ``finish_reason`` and every chunk parsed.
Partial text is handed to ``on_delta`` for display but the caller must not
store it unless ``chat()`` returns.

The parts: ``transport`` (the client, keepalive, proxy, pool), ``linkcheck``
(is the link alive), ``stream`` and ``reply`` (reading a reply within its
caps), ``side`` (the probe, the model list, small JSON requests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from ..config import Settings
from . import side
from .errors import (
    DeliveryError,
    PermanentError,
    TransientError,
    UnreachableError,
    classify_status,
    transport_reason,
)
from .linkcheck import LINK_CHECK_AFTER, LINK_CHECK_EVERY, LINK_CHECK_TIMEOUT, FirstHop
from .reply import DeltaCallback, Reply, parse_body
from .side import ProbeResult
from .stream import Activity, StreamReader, read_capped
from .transport import ClientPool, proxy_for

log = logging.getLogger(__name__)


class Endpoint:
    """One endpoint's client for the life of the process.

    Its ``pool`` holds one httpx.AsyncClient at a time, made anew (its kept-alive
    connections dropped) when the link was found dead or the local address
    changed: a pooled connection from before such a change is not trusted with
    the next request.
    """

    models_not_found = False  # the last probe's /models answered 404

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.proxy = None if transport is not None else proxy_for(settings.base_url)
        self.pool = ClientPool(settings, self.proxy, transport)
        self.hop = FirstHop(settings.base_url, self.proxy)
        # Ask streams for their token usage; a server that refuses the option is
        # asked again without it, and not asked again (the sender persists this).
        self.include_usage = True

    @property
    def pool_drops(self) -> int:
        """How many times the pooled connections were dropped (for tests and benchmarks)."""
        return self.pool.drops

    def drop_connections(self, why: str, *, abort: bool = False) -> None:
        """Stop trusting the pooled connections: the next request connects afresh
        (see ``ClientPool.drop``)."""
        self.pool.drop(why, abort=abort)

    async def aclose(self) -> None:
        await self.pool.aclose()

    def redact(self, text: str) -> str:
        """Servers may echo the Authorization header in errors; the key must not be kept."""
        key = self.settings.api_key
        return text.replace(key, "[redacted]") if key and key in text else text

    def _wrong_base_url(self, reason: str) -> str:
        """404 from /models and from /chat/completions: the path is wrong, not the message."""
        base = self.settings.base_url
        return (
            f"{reason} — wrong base URL? Both {base}/models and {base}/chat/completions "
            "answered 404; set base_url to the API root (often ending in /v1)"
        )

    # -- the link and side requests ----------------------------------------------------

    async def can_connect(self, timeout: float = 1.0) -> bool:
        """Does anything accept a TCP connection at the endpoint's host and port
        (or at the proxy's, when requests go through one)?

        Far cheaper than an HTTP probe (no request, no TLS), so it can run every
        second while offline and spot the endpoint's return quickly.
        """
        return (await self.hop.check(timeout))[0]

    async def local_address(self) -> str | None:
        """The local address new connections to the first hop leave from (None: no route)."""
        return await self.hop.local_address()

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        """``GET /models``: is the API itself answering?"""
        return await side.probe(self, timeout)

    async def fetch_json(
        self, method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 3.0
    ) -> Any:
        """A small JSON side request (e.g. the server's context size); None on any failure."""
        connect_timeout = self.settings.connect_timeout
        return await side.fetch_json(self.pool.client, connect_timeout, method, url, body, timeout)

    async def list_models(self, timeout: float = 5.0) -> list[str]:
        """The model ids ``GET /models`` lists. Raises ``DeliveryError`` if there is none."""
        return await side.list_models(self.pool.client, timeout)

    # -- chat ------------------------------------------------------------------

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        model: str,
        idempotency_key: str,
        on_delta: DeltaCallback | None = None,
        on_reasoning: DeltaCallback | None = None,
    ) -> Reply:
        """Send one chat request; return the whole reply or raise a DeliveryError.

        While it runs, a watchdog looks after the link: after LINK_CHECK_AFTER
        seconds without a byte it connects anew to the endpoint (or proxy); if
        that fails, the link is down and the request is given up at once
        (``UnreachableError``: no attempt charged) instead of after the read
        timeout. A stream that was flowing and then stays silent for
        ``stall_timeout`` is cut (the wait for the first token is not: a model
        may read a long prompt for minutes while its endpoint answers).
        """
        activity = Activity(time.monotonic())
        request = asyncio.ensure_future(
            self._chat_asking_usage(
                messages, model, idempotency_key, on_delta, on_reasoning, activity
            )
        )
        try:
            return await self._watch(request, activity)
        finally:
            if not request.done():
                request.cancel()
            await asyncio.gather(request, return_exceptions=True)

    async def _watch(self, request: asyncio.Future[Reply], activity: Activity) -> Reply:
        stall = self.settings.stall_timeout
        next_check = 0.0
        while True:
            await asyncio.wait([request], timeout=0.5)
            if request.done():
                return request.result()
            now = time.monotonic()
            silent = now - activity.last
            if activity.flowing and silent >= stall:
                raise TransientError(
                    f"the stream stalled: nothing arrived for {silent:.0f} s (stall_timeout)",
                    network=True,
                )
            if silent < LINK_CHECK_AFTER or now < next_check:
                continue
            next_check = now + LINK_CHECK_EVERY
            timeout = min(self.settings.connect_timeout, LINK_CHECK_TIMEOUT)
            check = asyncio.ensure_future(self.hop.check(timeout))
            await asyncio.wait([request, check], return_when=asyncio.FIRST_COMPLETED)
            if request.done():
                check.cancel()
                await asyncio.gather(check, return_exceptions=True)
                return request.result()
            ok, why = await check
            if not ok and activity.last < now:  # still nothing since the check began
                log.info("link check failed after %.1f s of silence: %s", silent, why)
                self.drop_connections(f"link check failed: {why}")
                raise UnreachableError(f"the link is down: {self.redact(why)}")

    async def _chat_asking_usage(
        self,
        messages: list[dict[str, str]],
        model: str,
        idempotency_key: str,
        on_delta: DeltaCallback | None,
        on_reasoning: DeltaCallback | None,
        activity: Activity,
    ) -> Reply:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if self.settings.max_reply_tokens > 0:
            body["max_tokens"] = self.settings.max_reply_tokens
        if self.settings.stream:
            body["stream"] = True
            if self.include_usage:
                body["stream_options"] = {"include_usage": True}
        try:
            return await self._chat(body, idempotency_key, on_delta, on_reasoning, activity)
        except PermanentError as exc:
            if "stream_options" not in body or "stream_options" not in exc.reason:
                raise
        # The server rejected the usage option (some older proxies): once without it.
        self.include_usage = False
        del body["stream_options"]
        return await self._chat(body, idempotency_key, on_delta, on_reasoning, activity)

    async def _chat(
        self,
        body: dict[str, Any],
        idempotency_key: str,
        on_delta: DeltaCallback | None,
        on_reasoning: DeltaCallback | None,
        activity: Activity,
    ) -> Reply:
        headers = {"Idempotency-Key": idempotency_key}
        if self.settings.stream:
            headers["Accept"] = "text/event-stream"
        try:
            with self.pool.using() as client:
                async with client.stream(
                    "POST", "chat/completions", json=body, headers=headers
                ) as response:
                    self.pool.pooled = True
                    activity.touch()
                    return await self._read_reply(response, on_delta, on_reasoning, activity)
        except DeliveryError as exc:
            if exc.status == 404 and self.models_not_found:
                exc.reason = self._wrong_base_url(exc.reason)
            exc.reason = self.redact(exc.reason)
            exc.args = (exc.reason,)
            raise
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                raise UnreachableError(self.redact(await self.hop.explain(exc))) from None
            reason = self.hop.via_proxy(transport_reason(exc))
            if isinstance(exc, httpx.ReadTimeout):
                # The server kept silent past read_timeout while the link checks
                # passed: the server's doing, so it costs an attempt.
                raise TransientError(reason, network=True) from None
            raise TransientError(reason, transport=True) from None
        except httpx.HTTPError as exc:  # e.g. DecodingError on a broken gzip body
            raise TransientError(f"bad response: {exc}") from None

    async def _read_reply(
        self,
        response: httpx.Response,
        on_delta: DeltaCallback | None,
        on_reasoning: DeltaCallback | None,
        activity: Activity,
    ) -> Reply:
        if not 200 <= response.status_code < 300:
            body = await read_capped(response, 64 * 1024)
            raise classify_status(response, body)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" in ctype:
            reader = StreamReader(self.settings, on_delta, on_reasoning, activity)
            return await reader.read(response)
        if "json" in ctype:
            limit = self.settings.max_reply_chars * 4 + 64 * 1024
            seconds = self.settings.max_reply_seconds
            try:  # a body that never ends (or drips) must not hold the sender forever
                async with asyncio.timeout(seconds):
                    body = await read_capped(response, limit, activity)
            except TimeoutError:
                raise TransientError(
                    f"the reply did not finish within {seconds:g} s (max_reply_seconds)"
                ) from None
            if len(body) >= limit:
                # A whole JSON body can't be cut and still parse, and asking
                # again brings the same body: fail once, saying what to do.
                raise PermanentError(
                    f"the reply was larger than {limit:,} bytes; with stream = true "
                    "a long reply is kept, cut and labelled"
                )
            return await parse_body(body, self.settings.max_reply_chars, on_delta, on_reasoning)
        raise UnreachableError(
            f"the server answered {ctype.split(';')[0] or 'something'} instead of the API "
            "(a captive portal or proxy login page?)",
            captive=True,
        )
