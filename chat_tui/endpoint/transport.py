"""The HTTP client under an endpoint: TCP keepalive, the proxy, and its pool of connections.

One ``httpx.AsyncClient`` at a time serves an endpoint. It is made anew (its
pool of kept-alive connections dropped) when the link was found dead or the
local address changed: a pooled connection from before such a change is not
trusted with the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import urllib.request
from collections.abc import Iterator

import httpx

from .. import __version__
from ..config import Settings

log = logging.getLogger(__name__)

# TCP keepalive: a connection whose path died fails by itself after about
# KEEPALIVE_IDLE + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL seconds (25 s), even while
# the request waits for a slow model (the peer's kernel answers the probes).
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


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


def make_client(
    settings: Settings,
    proxy: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A client for the endpoint ``settings`` describe (a test may pass its own transport)."""
    headers = {"User-Agent": f"chat-tui/{__version__}"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    if transport is None:
        # Our own transport, for the keepalive socket options. httpx ignores
        # the proxy environment when given a transport, so pass the proxy here.
        transport = httpx.AsyncHTTPTransport(
            verify=settings.verify_tls,
            proxy=proxy,
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


class ClientPool:
    """The current client of an endpoint, and the dropped ones until their last request ends."""

    def __init__(
        self,
        settings: Settings,
        proxy: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._proxy = proxy
        self._transport = transport
        self.client = make_client(settings, proxy, transport)
        self.pooled = False  # a response came on this client: it may hold kept-alive connections
        self.drops = 0  # counted for the tests and benchmarks
        self._users: dict[httpx.AsyncClient, int] = {}  # client → requests running on it
        self._retiring: set[httpx.AsyncClient] = set()  # dropped, closed when its last is done
        self._retired: set[asyncio.Task[None]] = set()

    def drop(self, why: str, *, abort: bool = False) -> None:
        """Stop trusting the pooled connections: the next request connects afresh.

        Requests still running on the old connections go on (each has its own
        watchdog), unless ``abort``: after a change of the local address they are
        dead for sure, and fail now as a transport error (no attempt charged).
        The old client is closed once its last request is done.
        """
        if self._transport is not None:
            return  # a test's own transport: nothing pooled of ours to drop
        if not self.pooled:
            return  # nothing answered since the last drop: no connection to distrust
        self.pooled = False
        old, self.client = self.client, make_client(self._settings, self._proxy)
        self.drops += 1
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
    def using(self) -> Iterator[httpx.AsyncClient]:
        """The current client, counted as in use for the length of one request."""
        client = self.client
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
        await self.client.aclose()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
