"""The OpenAI-compatible chat-completions client (httpx), and what its failures mean.

Every failure is classified once, here, as docs/architecture.md step 5 says:

* ``UnreachableError``: nothing answered (connect failed, DNS, a captive
  portal). The endpoint is offline; waiting costs the message no attempt.
* ``TransientError``: the server was there but the reply did not arrive whole
  (5xx, 408/409/425/429, a timeout, a reset, a cut or malformed stream, no
  ``finish_reason``). Retried with backoff; costs an attempt.
* ``PermanentError``: the server refused this request (400, 404, 413, 422,
  429 ``insufficient_quota``…). The message fails with the server's reason.
* ``AuthError``: 401/403. Delivery pauses for every conversation.

A reply counts only if it ended with a ``finish_reason`` and every chunk
parsed. Partial text is handed to ``on_delta`` for display but the caller must
not store it unless ``chat()`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx

from . import __version__
from .backoff import parse_retry_after
from .config import Settings
from .sanitize import StreamSanitizer, sanitize

log = logging.getLogger(__name__)

TRANSIENT_STATUS = {408, 409, 425, 429}
# Dead-link detection (see `Endpoint.chat`): after this many seconds without a byte, the
# endpoint is checked on a new connection, then again every LINK_CHECK_EVERY seconds.
LINK_CHECK_AFTER = 3.0
LINK_CHECK_EVERY = 5.0
LINK_CHECK_TIMEOUT = 3.0
# TCP keepalive: a connection whose path died fails by itself after about
# KEEPALIVE_IDLE + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL seconds (25 s), even while
# the request waits for a slow model (the peer's kernel answers the probes).
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
AUTH_STATUS = {401, 403}
CAP_MARKER = "\n\n[chat-tui: reply cut at {limit} — {why}]"


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
        # request's, so it costs the message no attempt (DESIGN "Bounds").
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


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    finish_reason: str
    model: str | None = None
    capped: bool = False
    reasoning: str = ""  # the model's thinking: stored with the reply, never sent back
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """What the server said the request cost, and how fast the reply came."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_second": self.tokens_per_second,
        }


def read_usage(data: dict[str, Any], seconds: float | None = None) -> Usage | None:
    """``usage`` (OpenAI and most servers) or llama.cpp's ``timings``, whichever is there.

    llama.cpp's ``timings.prompt_n`` counts only the prompt tokens it did not
    have cached, so ``cache_n`` is added back for the whole prompt.
    """
    usage = data.get("usage")
    timings = data.get("timings")
    prompt = completion = None
    rate: float | None = None
    if isinstance(usage, dict):
        prompt = _int_or_none(usage.get("prompt_tokens"))
        completion = _int_or_none(usage.get("completion_tokens"))
    if isinstance(timings, dict):
        if prompt is None and _int_or_none(timings.get("prompt_n")) is not None:
            prompt = (_int_or_none(timings.get("prompt_n")) or 0) + (
                _int_or_none(timings.get("cache_n")) or 0
            )
        if completion is None:
            completion = _int_or_none(timings.get("predicted_n"))
        per_second = timings.get("predicted_per_second")
        if isinstance(per_second, int | float) and per_second > 0:
            rate = float(per_second)
    if prompt is None and completion is None:
        return None
    if rate is None and completion and seconds and seconds > 0:
        rate = completion / seconds
    return Usage(prompt, completion, round(rate, 1) if rate is not None else None)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0 and value == int(value):
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    state: str  # online | offline | captive | auth_error
    detail: str
    latency: float | None = None


DeltaCallback = Callable[[str], Awaitable[None] | None]


def _error_reason(response: httpx.Response, body: bytes) -> tuple[str, str | None]:
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


def _looks_like_json(response: httpx.Response) -> bool:
    ctype = response.headers.get("content-type", "")
    return "json" in ctype


def classify_status(response: httpx.Response, body: bytes) -> DeliveryError:
    """Map a non-2xx answer to its failure class."""
    status = response.status_code
    reason, code = _error_reason(response, body)
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


def keepalive_options() -> list[tuple[int, int, int]]:
    """Socket options for TCP keepalive (and a user timeout for unacknowledged data),
    where the platform has them."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPALIVE", KEEPALIVE_IDLE),  # macOS spells the idle time this way
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        # Data sent into a dead path (a request on a stale pooled connection) is
        # retransmitted for minutes by default; give up with the keepalive instead.
        ("TCP_USER_TIMEOUT", (KEEPALIVE_IDLE + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL) * 1000),
    ):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def proxy_for(url: str, environ: dict[str, str] | None = None) -> str | None:
    """The proxy (from HTTP(S)_PROXY/ALL_PROXY, minus NO_PROXY) a request to ``url`` goes
    through, as httpx itself would pick it; None for a direct connection."""
    parsed = httpx.URL(url)
    if environ is None:
        proxies = urllib.request.getproxies_environment()
        bypass = urllib.request.proxy_bypass_environment(parsed.host)
    else:  # tests pass their own environment
        proxies = {k.lower()[: -len("_proxy")]: v for k, v in environ.items() if v}
        proxies = {k: v for k, v in proxies.items() if k in ("http", "https", "all", "no")}
        bypass = urllib.request.proxy_bypass_environment(parsed.host, proxies)
    if bypass:
        return None
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


@dataclass
class _Activity:
    """When bytes last arrived for a request, and whether its reply had begun flowing."""

    last: float
    flowing: bool = False

    def touch(self) -> None:
        self.last = time.monotonic()


def classify_error_object(err: object) -> DeliveryError:
    """An error the server sent inside a 200 answer (a JSON body, an SSE ``event: error``,
    a ``data:`` line with ``error``): classified as its HTTP status would be (DESIGN
    step 5). Without a usable status it is the server failing: transient."""
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


class Endpoint:
    """One httpx.AsyncClient at a time for the life of the process.

    The client is made anew (its pool of kept-alive connections dropped) when
    the link was found dead or the local address changed: a pooled connection
    from before such a change is not trusted with the next request.
    """

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self._transport = transport
        self.proxy = None if transport is not None else proxy_for(settings.base_url)
        self._client = self._make_client()
        self._retired: set[asyncio.Task[None]] = set()
        self._resolved: dict[tuple[str, int], list[str]] = {}  # first hop → its addresses
        self._pooled = False  # a response came on this client: it may hold kept-alive connections
        self._users: dict[httpx.AsyncClient, int] = {}  # client → requests running on it
        self._retiring: set[httpx.AsyncClient] = set()  # dropped, closed when its last is done
        self.pool_drops = 0  # counted for the tests and benchmarks
        # Ask streams for their token usage; a server that refuses the option is
        # asked again without it, and not asked again (the outbox persists this).
        self.include_usage = True

    def _make_client(self) -> httpx.AsyncClient:
        settings = self.settings
        headers = {"User-Agent": f"chat-tui/{__version__}"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        transport = self._transport
        if transport is None:
            # Our own transport, for the keepalive socket options. httpx ignores
            # the proxy environment when given a transport, so pass the proxy here.
            transport = httpx.AsyncHTTPTransport(
                verify=settings.verify_tls,
                proxy=self.proxy,
                socket_options=keepalive_options(),
            )
        return httpx.AsyncClient(
            base_url=settings.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=settings.connect_timeout,
                pool=settings.connect_timeout,
            ),
            verify=settings.verify_tls,
            follow_redirects=False,
            transport=transport,
        )

    models_not_found = False  # the last probe's /models answered 404

    def _wrong_base_url(self, reason: str) -> str:
        """404 from /models and from /chat/completions: the path is wrong, not the message."""
        base = self.settings.base_url
        return (
            f"{reason} — wrong base URL? Both {base}/models and {base}/chat/completions "
            "answered 404; set base_url to the API root (often ending in /v1)"
        )

    def drop_connections(self, why: str, *, abort: bool = False) -> None:
        """Stop trusting the pooled connections: the next request connects afresh.

        Requests still running on the old connections go on (each has its own
        watchdog), unless ``abort``: after a change of the local address they are
        dead for sure, and fail now as a transport error (no attempt charged).
        The old client is closed once its last request is done.
        """
        if self._transport is not None:
            return  # a test's own transport: nothing pooled of ours to drop
        if not self._pooled:
            return  # nothing answered since the last drop: no connection to distrust
        self._pooled = False
        old, self._client = self._client, self._make_client()
        self.pool_drops += 1
        log.info("dropped pooled connections: %s", why)
        if abort or not self._users.get(old):
            self._close_later(old)
        else:
            self._retiring.add(old)

    def _close_later(self, client: httpx.AsyncClient) -> None:
        self._retiring.discard(client)
        self._users.pop(client, None)
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    @contextlib.contextmanager
    def _using(self) -> Iterator[httpx.AsyncClient]:
        """The current client, counted as in use for the length of one request."""
        client = self._client
        self._users[client] = self._users.get(client, 0) + 1
        try:
            yield client
        finally:
            left = self._users.get(client, 1) - 1
            if client in self._users:
                self._users[client] = left
            if client in self._retiring and left <= 0:
                self._close_later(client)

    async def aclose(self) -> None:
        for client in list(self._retiring):
            self._close_later(client)
        await self._client.aclose()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)

    # -- reachability ----------------------------------------------------------

    def _redact(self, text: str) -> str:
        """Servers may echo the Authorization header in errors; the key must not be kept."""
        key = self.settings.api_key
        return text.replace(key, "[redacted]") if key and key in text else text

    def first_hop(self) -> tuple[str, int, bool]:
        """Where a new connection goes first: the proxy if there is one, else the endpoint
        (host, port, is_proxy)."""
        url = httpx.URL(self.proxy or self.settings.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        return url.host, port, self.proxy is not None

    async def can_connect(self, timeout: float = 1.0) -> bool:
        """Does anything accept a TCP connection at the endpoint's host and port
        (or at the proxy's, when requests go through one)?

        Far cheaper than an HTTP probe (no request, no TLS), so it can run every
        second while offline and spot the endpoint's return quickly.
        """
        return (await self.check_link(timeout))[0]

    async def _resolve(self, host: str, port: int, timeout: float) -> tuple[list[str], str]:
        """The addresses of ``host``, or ([], why the lookup failed)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            return [], f"looking up {host} timed out (DNS)"
        except OSError as exc:
            return [], f"cannot resolve {host} (DNS: {exc.strerror or exc})"
        return list(dict.fromkeys(str(info[4][0]) for info in infos)), ""

    async def check_link(self, timeout: float = LINK_CHECK_TIMEOUT) -> tuple[bool, str]:
        """Connect anew to the first hop; (True, "") or (False, why in plain words)."""
        host, port, via_proxy = self.first_hop()
        what = f"the proxy {host}:{port}" if via_proxy else f"{host}:{port}"
        started = time.monotonic()
        # While a request runs, the name was resolved a moment ago: a slow DNS
        # server must not make a healthy link look dead, so use what it said then.
        addresses = self._resolved.get((host, port), [])
        if not addresses:
            addresses, why = await self._resolve(host, port, timeout)
            if not addresses:
                return False, why
            self._resolved[(host, port)] = addresses
        tried = ", ".join(addresses[:3])
        why = ""
        for address in addresses[:3]:  # e.g. ::1 then 127.0.0.1 for "localhost"
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                why = why or "timed out"
                break
            try:
                async with asyncio.timeout(left):
                    _, writer = await asyncio.open_connection(address, port)
            except TimeoutError:
                why = "timed out"
                break
            except (OSError, ValueError) as exc:
                why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True, ""
        self._resolved.pop((host, port), None)  # the name may point elsewhere now
        if why == "timed out":
            return False, f"connecting to {what} timed out (tried {tried})"
        return False, f"cannot connect to {what}: {why} (tried {tried})"

    async def local_address(self) -> str | None:
        """The local address new connections to the first hop leave from (None if
        there is no route). A UDP "connect" sends nothing; it only asks the routing table."""
        host, port, _ = self.first_hop()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(1.0):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (OSError, TimeoutError):
            return None
        family, _, _, _, address = infos[0]
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            return str(sock.getsockname()[0])
        return None

    async def explain(self, exc: httpx.TransportError) -> str:
        """A connect failure in plain words, naming the proxy, DNS or the addresses tried.

        Only a name lookup is added (no second connection): while offline the
        number of connection attempts stays what the probe schedule allows.
        """
        reason = _transport_reason(exc)
        host, port, via_proxy = self.first_hop()
        if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return self._via_proxy(reason)
        addresses, why = await self._resolve(host, port, 2.0)
        if not addresses:
            return f"{why} (through the proxy)" if via_proxy else why
        what = f"the proxy {host}:{port}" if via_proxy else f"{host}:{port}"
        return f"{reason} — {what}, tried {', '.join(addresses[:3])}"

    def _via_proxy(self, reason: str) -> str:
        if self.proxy is None:
            return reason
        host, port, _ = self.first_hop()
        return f"{reason} (through the proxy {host}:{port})"

    async def probe(self, timeout: float = 5.0) -> ProbeResult:
        """``GET /models``: is the API itself answering?"""
        result = await self._probe(timeout)
        return replace(result, detail=self._redact(result.detail))

    async def _probe(self, timeout: float) -> ProbeResult:
        started = time.monotonic()
        try:
            response = await self._client.get(
                "models",
                timeout=httpx.Timeout(min(self.settings.connect_timeout, timeout), read=timeout),
            )
        except httpx.TransportError as exc:
            return ProbeResult("offline", await self.explain(exc))
        except httpx.HTTPError as exc:  # e.g. a broken gzip body: something odd answered
            return ProbeResult("captive", f"unreadable answer to /models: {exc}")
        self._pooled = True
        latency = time.monotonic() - started
        self.models_not_found = response.status_code == 404
        if response.status_code in (404, 405):
            # The server is there; it may just have no /models (some local servers).
            # If /chat/completions says 404 too, the base URL is wrong (see chat()).
            return ProbeResult("online", f"HTTP {response.status_code} for /models", latency)
        if response.status_code in AUTH_STATUS:
            reason, _ = _error_reason(response, response.content)
            return ProbeResult("auth_error", reason, latency)
        if _looks_like_json(response) and not 300 <= response.status_code < 400:
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
        self, method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 3.0
    ) -> Any:
        """A small JSON side request (e.g. the server's context size); None on any failure.

        Bounded in time as a whole and in size: a server that answers something
        else (a stream, an endless body) must not hold up the request it precedes.
        """
        limit = 1024 * 1024
        try:
            async with asyncio.timeout(timeout + self.settings.connect_timeout):
                async with self._client.stream(
                    method,
                    url,
                    json=body,
                    timeout=httpx.Timeout(
                        min(self.settings.connect_timeout, timeout), read=timeout
                    ),
                ) as response:
                    if response.status_code != 200 or not _looks_like_json(response):
                        return None
                    data = b""
                    async for piece in response.aiter_bytes():
                        data += piece
                        if len(data) > limit:
                            return None
            return json.loads(data)
        except (httpx.HTTPError, ValueError, TimeoutError):
            return None

    async def list_models(self, timeout: float = 5.0) -> list[str]:
        """The model ids ``GET /models`` lists (for the settings screen's picker).
        Raises ``DeliveryError`` if the answer is not a model list."""
        try:
            response = await self._client.get("models", timeout=timeout)
        except httpx.HTTPError as exc:
            raise UnreachableError(
                _transport_reason(exc) if isinstance(exc, httpx.TransportError) else str(exc)
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
        return sorted(
            {sanitize(str(m["id"])) for m in items if isinstance(m, dict) and m.get("id")}
        )

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
        activity = _Activity(time.monotonic())
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

    async def _watch(self, request: asyncio.Future[Reply], activity: _Activity) -> Reply:
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
            check = asyncio.ensure_future(self.check_link(timeout))
            await asyncio.wait([request, check], return_when=asyncio.FIRST_COMPLETED)
            if request.done():
                check.cancel()
                await asyncio.gather(check, return_exceptions=True)
                return request.result()
            ok, why = await check
            if not ok and activity.last < now:  # still nothing since the check began
                log.info("link check failed after %.1f s of silence: %s", silent, why)
                self.drop_connections(f"link check failed: {why}")
                raise UnreachableError(f"the link is down: {self._redact(why)}")

    async def _chat_asking_usage(
        self,
        messages: list[dict[str, str]],
        model: str,
        idempotency_key: str,
        on_delta: DeltaCallback | None,
        on_reasoning: DeltaCallback | None,
        activity: _Activity,
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
        activity: _Activity,
    ) -> Reply:
        headers = {"Idempotency-Key": idempotency_key}
        if self.settings.stream:
            headers["Accept"] = "text/event-stream"
        try:
            with self._using() as client:
                async with client.stream(
                    "POST", "chat/completions", json=body, headers=headers
                ) as response:
                    self._pooled = True
                    activity.touch()
                    return await self._read_reply(response, on_delta, on_reasoning, activity)
        except DeliveryError as exc:
            if exc.status == 404 and self.models_not_found:
                exc.reason = self._wrong_base_url(exc.reason)
            exc.reason = self._redact(exc.reason)
            exc.args = (exc.reason,)
            raise
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                raise UnreachableError(self._redact(await self.explain(exc))) from None
            reason = self._via_proxy(_transport_reason(exc))
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
        activity: _Activity,
    ) -> Reply:
        if not 200 <= response.status_code < 300:
            body = await _read_capped(response, 64 * 1024)
            raise classify_status(response, body)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" in ctype:
            return await self._read_stream(response, on_delta, on_reasoning, activity)
        if "json" in ctype:
            limit = self.settings.max_reply_chars * 4 + 64 * 1024
            seconds = self.settings.max_reply_seconds
            try:  # a body that never ends (or drips) must not hold the sender forever
                async with asyncio.timeout(seconds):
                    body = await _read_capped(response, limit, activity)
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
            return await self._parse_body(body, on_delta, on_reasoning)
        raise UnreachableError(
            f"the server answered {ctype.split(';')[0] or 'something'} instead of the API "
            "(a captive portal or proxy login page?)",
            captive=True,
        )

    async def _parse_body(
        self, body: bytes, on_delta: DeltaCallback | None, on_reasoning: DeltaCallback | None
    ) -> Reply:
        try:
            # Decode leniently, as the stream path does: invalid UTF-8 from
            # the server becomes U+FFFD instead of an endless transient retry.
            data = json.loads(body.decode("utf-8", "replace"), strict=False)
        except ValueError:
            raise TransientError("the reply was not a complete chat completion") from None
        if isinstance(data, dict) and "error" in data and not data.get("choices"):
            raise classify_error_object(data["error"])
        try:
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            thinking = message.get("reasoning_content") or message.get("reasoning") or ""
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise TransientError("the reply was not a complete chat completion") from None
        if not finish:
            raise TransientError("the reply has no finish_reason")
        splitter = ThinkSplitter()
        inline_thinking, text = splitter.feed(str(text))
        tail_thinking, tail = splitter.flush()
        text = sanitize(text + tail)
        reasoning = sanitize(str(thinking) + inline_thinking + tail_thinking)
        capped = len(text) > self.settings.max_reply_chars
        if capped:
            text = self._cap(text[: self.settings.max_reply_chars], "too long")
        reasoning = reasoning[: self.settings.max_reply_chars]
        if on_reasoning is not None and reasoning:
            result = on_reasoning(reasoning)
            if result is not None:
                await result
        if on_delta is not None:
            result = on_delta(text)  # non-streaming: the whole reply is one delta
            if result is not None:
                await result
        return Reply(text, str(finish), data.get("model"), capped, reasoning, read_usage(data))

    def _cap(self, text: str, why: str) -> str:
        return text + CAP_MARKER.format(limit=f"{len(text):,} characters", why=why)

    def _cut_for_time(self, parts: list[str], model: str | None, reasoning: str = "") -> Reply:
        """A stream past max_reply_seconds: keep what came, labelled; nothing is no reply.

        Reasoning is progress too: a model that thought the whole time gets its
        thinking kept (a reply with reasoning only), not a retry that thinks again.
        """
        seconds = self.settings.max_reply_seconds
        text = "".join(parts)
        if not text.strip() and not reasoning.strip():
            raise TransientError(f"the stream sent no text in {seconds:g} s")
        return Reply(
            self._cap(text, f"still streaming after {seconds:.0f} s"),
            "length",
            model,
            True,
            reasoning,
        )

    async def _read_stream(
        self,
        response: httpx.Response,
        on_delta: DeltaCallback | None,
        on_reasoning: DeltaCallback | None,
        activity: _Activity,
    ) -> Reply:
        from httpx_sse import EventSource, SSEError

        limit = self.settings.max_reply_chars
        started = time.monotonic()
        deadline = started + self.settings.max_reply_seconds
        cleaner = StreamSanitizer()
        thought_cleaner = StreamSanitizer()
        splitter = ThinkSplitter()
        parts: list[str] = []
        thoughts: list[str] = []
        size = 0
        finish: str | None = None
        done = False
        model: str | None = None
        usage_data: dict[str, Any] = {}
        first_at: float | None = None

        async def emit(raw: str) -> None:
            nonlocal size
            activity.flowing = True  # from the first token on, silence is a stall
            clean = cleaner.feed(raw)
            if clean:
                parts.append(clean)
                size += len(clean)
                if on_delta is not None:
                    result = on_delta(clean)
                    if result is not None:
                        await result

        async def think(raw: str) -> None:
            nonlocal size
            activity.flowing = True  # thinking is the reply making progress
            clean = thought_cleaner.feed(raw)
            if clean:
                thoughts.append(clean)
                size += len(clean)
                if on_reasoning is not None:
                    result = on_reasoning(clean)
                    if result is not None:
                        await result

        async def content(raw: str) -> None:
            thinking, answer = splitter.feed(raw)
            if thinking:
                await think(thinking)
            if answer:
                await emit(answer)

        guard = _GuardedStream(response, deadline, 8 * limit + 64 * 1024, activity)
        events = EventSource(guard).aiter_sse()  # type: ignore[arg-type]
        try:
            async for event in events:
                guard.pending = 0
                data = event.data.strip()
                if event.event == "error":
                    try:
                        payload: object = json.loads(data, strict=False) if data else data
                    except ValueError:
                        payload = data
                    if isinstance(payload, dict) and "error" in payload:
                        payload = payload["error"]
                    raise classify_error_object(payload or "an error event")
                if not data:
                    continue
                if data == "[DONE]":
                    done = True
                    await _drain(events)
                    break
                try:
                    chunk = json.loads(data, strict=False)
                except ValueError:
                    raise TransientError("the stream had a malformed chunk") from None
                if not isinstance(chunk, dict):
                    raise TransientError("the stream had a malformed chunk")
                if "error" in chunk:
                    raise classify_error_object(chunk["error"])
                model = chunk.get("model") or model
                # Usage comes in a chunk of its own (empty choices) or on the last one;
                # llama.cpp adds its timings there too.
                for key in ("usage", "timings"):
                    if isinstance(chunk.get(key), dict):
                        usage_data[key] = chunk[key]
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict):
                        raise TransientError("the stream had a malformed chunk")
                    delta = choice.get("delta") or {}
                    if isinstance(delta, dict):
                        thinking = delta.get("reasoning_content") or delta.get("reasoning")
                        if thinking and isinstance(thinking, str):
                            first_at = first_at or time.monotonic()
                            await think(thinking)
                        text = delta.get("content")
                        if text:
                            first_at = first_at or time.monotonic()
                            await content(str(text))
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
                if size > limit:
                    text = "".join(parts)[:limit]
                    return Reply(
                        self._cap(text, "too long"), "length", model, True, "".join(thoughts)
                    )
                if time.monotonic() > deadline:
                    return self._cut_for_time(parts, model, "".join(thoughts))
        except SSEError as exc:
            raise TransientError(f"bad stream: {exc}") from None
        except _StreamDeadline:  # bytes kept coming, but no event (comments, one endless line)
            return self._cut_for_time(parts, model, "".join(thoughts))
        if finish is None and not done:
            raise TransientError("the stream ended before the reply was finished")
        thinking, answer = splitter.flush()
        if thinking:
            await think(thinking)
        if answer:
            await emit(answer)
        for cleaner_, sink in ((cleaner, parts), (thought_cleaner, thoughts)):
            tail = cleaner_.flush()
            if tail:
                sink.append(tail)
        # `[DONE]` after chunks whose finish_reason was null or "" is a whole reply
        # (Ollama has sent "", LiteLLM drops the field); only a stream with neither
        # ended early.
        seconds = time.monotonic() - first_at if first_at is not None else None
        return Reply(
            "".join(parts),
            finish or "stop",
            model,
            reasoning="".join(thoughts),
            usage=read_usage(usage_data, seconds),
        )


class ThinkSplitter:
    """Separates inline ``<think>…</think>`` at the start of a reply from its answer.

    Fed piece by piece as a stream arrives; a tag split across pieces is held
    back until it is whole. Only a block that opens the reply counts: a
    ``<think>`` later in an answer is the answer's text (code, a quote).
    """

    OPEN = "<think>"
    CLOSE = "</think>"

    def __init__(self) -> None:
        self._state = "start"  # start → thinking → after (</think> seen) → answer
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """Returns (thinking, answer) text ready to show."""
        if self._state == "answer":
            return "", text
        if self._state == "after":  # the line break after </think> may come in later pieces
            text = text.lstrip("\n")
            if text:
                self._state = "answer"
            return "", text
        held = self._held + text
        self._held = ""
        if self._state == "start":
            stripped = held.lstrip()
            if stripped.startswith(self.OPEN):
                self._state = "thinking"
                held = stripped[len(self.OPEN) :]
            elif self.OPEN.startswith(stripped):  # maybe the start of the tag: wait
                self._held = held
                return "", ""
            else:
                self._state = "answer"
                return "", held
        end = held.find(self.CLOSE)
        if end >= 0:
            self._state = "after"
            return held[:end], self.feed(held[end + len(self.CLOSE) :])[1]
        keep = _partial_suffix(held, self.CLOSE)
        if keep:
            self._held = held[-keep:]
            held = held[:-keep]
        return held, ""

    def flush(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        if self._state == "thinking":
            return held, ""  # the model never closed its thinking
        return "", held


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could start ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class _StreamDeadline(Exception):
    """max_reply_seconds passed while the stream was still sending."""


class _GuardedStream:
    """The response as EventSource reads it, with limits between two events.

    The checks after each event cannot run while a hostile stream sends no
    event at all (one endless line, data lines without the blank line that
    ends an event, only comments): memory would grow, or time run, unbounded.
    """

    def __init__(
        self, response: httpx.Response, deadline: float, max_pending: int, activity: _Activity
    ) -> None:
        self._response = response
        self._activity = activity
        self.headers = response.headers
        self.deadline = deadline
        self.max_pending = max_pending
        self.pending = 0  # characters received since the last complete event

    async def aiter_text(self) -> AsyncIterator[str]:
        async for text in self._response.aiter_text():
            self._activity.touch()
            self.pending += len(text)
            if self.pending > self.max_pending:
                raise TransientError(
                    f"the stream sent {self.pending:,} characters without a complete event"
                )
            if time.monotonic() > self.deadline:
                raise _StreamDeadline
            yield text


async def _drain(events: AsyncIterator[object], *, most: int = 16, seconds: float = 0.5) -> None:
    """Read the little that follows ``[DONE]`` (the end of the chunked body), so the
    connection goes back to the pool instead of being closed. A server that keeps
    talking after ``[DONE]`` gets half a second; then the connection is dropped."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            for _ in range(most):
                await anext(events)


async def _read_capped(
    response: httpx.Response, limit: int, activity: _Activity | None = None
) -> bytes:
    """Read at most ``limit`` bytes of a body: a hostile server can't exhaust memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if activity is not None:
            activity.touch()
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[:limit]


def _transport_reason(exc: httpx.TransportError) -> str:
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
