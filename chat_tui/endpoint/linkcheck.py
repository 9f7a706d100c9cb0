"""Is the link to an endpoint alive? Cheap checks on new connections to its first hop.

The first hop is the proxy when requests go through one, else the endpoint.
A TCP connect (no request, no TLS) is far cheaper than an HTTP probe, so it
can run every second while offline, and while a request waits in silence
(see ``Endpoint.chat``: dead-link detection).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import httpx

from .errors import transport_reason

# Dead-link detection (see `Endpoint.chat`): after this many seconds without a byte, the
# endpoint is checked on a new connection, then again every LINK_CHECK_EVERY seconds.
LINK_CHECK_AFTER = 3.0
LINK_CHECK_EVERY = 5.0
LINK_CHECK_TIMEOUT = 3.0


class FirstHop:
    """Where new connections to an endpoint go first, and checks of the way there."""

    def __init__(self, base_url: str, proxy: str | None) -> None:
        self.base_url = base_url
        self.proxy = proxy
        self._resolved: dict[tuple[str, int], list[str]] = {}  # first hop → its addresses

    def address(self) -> tuple[str, int, bool]:
        """(host, port, is_proxy)."""
        url = httpx.URL(self.proxy or self.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        return url.host, port, self.proxy is not None

    def _what(self) -> str:
        host, port, via_proxy = self.address()
        return f"the proxy {host}:{port}" if via_proxy else f"{host}:{port}"

    async def resolve(self, host: str, port: int, timeout: float) -> tuple[list[str], str]:
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

    async def check(self, timeout: float = LINK_CHECK_TIMEOUT) -> tuple[bool, str]:
        """Connect anew to the first hop; (True, "") or (False, why in plain words)."""
        host, port, _ = self.address()
        what = self._what()
        started = time.monotonic()
        # While a request runs, the name was resolved a moment ago: a slow DNS
        # server must not make a healthy link look dead, so use what it said then.
        addresses = self._resolved.get((host, port), [])
        if not addresses:
            addresses, why = await self.resolve(host, port, timeout)
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
        host, port, _ = self.address()
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
        reason = transport_reason(exc)
        host, port, via_proxy = self.address()
        if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return self.via_proxy(reason)
        addresses, why = await self.resolve(host, port, 2.0)
        if not addresses:
            return f"{why} (through the proxy)" if via_proxy else why
        return f"{reason} — {self._what()}, tried {', '.join(addresses[:3])}"

    def via_proxy(self, reason: str) -> str:
        """``reason``, naming the proxy when requests go through one."""
        if self.proxy is None:
            return reason
        host, port, _ = self.address()
        return f"{reason} (through the proxy {host}:{port})"
