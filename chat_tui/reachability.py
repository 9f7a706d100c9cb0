"""Is the endpoint there? One watcher per process, shared by the UI and the sender.

States: ``unknown`` (starting), ``online``, ``offline``, ``captive`` (something
answered, but not the API), ``auth_error`` (401/403). Delivery runs only while
``online``. While not online the watcher probes ``GET /models`` on a jittered
schedule from about 1 s up to ``probe_cap`` (15 s); a submit or the user's
"retry now" probes at once. While ``offline`` it also tries a bare TCP connect
each second between those probes, and probes at once when one succeeds, so a
returning endpoint is noticed within about a second even after a long outage.
A network error during a delivery makes the state ``offline`` immediately,
without waiting for the next probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .backoff import ProbeSchedule
from .endpoint import Endpoint, ProbeResult
from .events import ReachabilityState

log = logging.getLogger(__name__)

STATES = ("unknown", "online", "offline", "captive", "auth_error")
ONLINE_RECHECK = 30.0  # seconds between probes while all is well
TCP_CHECK_INTERVAL = 1.0  # while offline: a bare connect this often between HTTP probes
ADDRESS_CHECK_INTERVAL = 2.0  # while online: has the local address (Wi-Fi → phone) changed?


class Reachability:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        probe_cap: float = 15.0,
        on_change: Callable[[ReachabilityState], None] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._schedule = ProbeSchedule(first=min(1.0, probe_cap), cap=probe_cap)
        self._on_change = on_change
        self._wake = asyncio.Event()
        self._online = asyncio.Event()
        self._changed = asyncio.Condition()
        self._probe_at = 0.0  # monotonic; 0 = probe now
        self._probing = False
        # A bare connect succeeded but the HTTP probe it triggered failed (a proxy
        # that accepts and then fails, a port answering something else): no more bare
        # connects until the next scheduled probe, so the backoff holds.
        self._tcp_misled = False
        self._tcp_triggered = False  # the pending probe was asked for by a bare connect
        self._local_address: str | None = None
        self._last_attempt = 0.0  # monotonic time of the last probe or bare connect
        self.current = ReachabilityState("unknown", "", time.time(), None)

    @property
    def state(self) -> str:
        return self.current.state

    @property
    def online(self) -> bool:
        return self.current.state == "online"

    # -- what the rest of the program tells us ---------------------------------------

    def probe_now(self) -> None:
        """Check at once (a submit, or the user pressed retry-now)."""
        if not self.online:
            self._probe_at = 0.0
            self._wake.set()

    def report_success(self) -> None:
        if not self.online:
            self._set("online", "a reply arrived")
            self._probe_at = time.monotonic() + ONLINE_RECHECK

    def report_unreachable(self, reason: str, *, captive: bool = False) -> None:
        if self.state in ("offline", "captive") and self._probe_at > time.monotonic():
            return  # already waiting for the next probe; don't push it further out
        self._probe_at = time.monotonic() + self._schedule.next_delay()
        self._set("captive" if captive else "offline", reason)
        self._wake.set()

    def report_auth_error(self, reason: str) -> None:
        self._probe_at = time.monotonic() + self._schedule.next_delay()
        self._set("auth_error", reason)
        self._wake.set()

    async def wait_online(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._online.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_change(self, timeout: float | None = None) -> None:
        """Return when the state changes (or after ``timeout``)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    # -- the watcher -------------------------------------------------------------------

    async def run(self) -> None:
        """Probe forever on the schedule. Run it as one long-lived task."""
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any surprise
                log.exception("reachability watcher step failed")
                await asyncio.sleep(TCP_CHECK_INTERVAL)

    async def _step(self) -> None:
        delay = self._probe_at - time.monotonic()
        if delay > 0:
            offline = self.state == "offline"
            self._wake.clear()
            tick = delay
            if offline and not self._tcp_misled:
                tick = min(delay, TCP_CHECK_INTERVAL)
            elif self.online:
                tick = min(delay, ADDRESS_CHECK_INTERVAL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            if self._wake.is_set() or self._probe_at <= time.monotonic():
                return
            if self.online:
                await self._check_local_address()
            # Between the backed-off HTTP probes, a bare connect each second:
            # when something listens again, ask the API at once.
            elif offline and not self._tcp_misled and await self._tcp_check():
                self._probe_at = 0.0
                self._tcp_triggered = True
            return
        if self.state == "offline" and not self._tcp_triggered and not self._wake.is_set():
            # A probe right after a bare connect waits for the rest of the second:
            # never more than about one connection attempt a second while offline.
            spacing = self._last_attempt + TCP_CHECK_INTERVAL - time.monotonic()
            if spacing > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), spacing)
        self._last_attempt = time.monotonic()
        by_tcp, self._tcp_triggered = self._tcp_triggered, False
        self._probing = True
        self._publish()
        try:
            result = await self._endpoint.probe()
        except Exception as exc:  # the watcher must outlive any surprise
            log.exception("probe failed unexpectedly")
            result = ProbeResult("offline", f"probe failed: {type(exc).__name__}")
        self._probing = False
        if result.state == "online":
            self._schedule.reset()
            self._tcp_misled = False
            self._probe_at = time.monotonic() + ONLINE_RECHECK
            if self._local_address is None:
                self._local_address = await self._endpoint.local_address()
        else:
            if by_tcp:
                # The bare connect said "something listens" and the API said no (a
                # proxy that accepts and then fails, another service on the port):
                # bare connects tell nothing here until the endpoint answers again.
                self._tcp_misled = True
            if result.state == "offline":
                self._drop_pool(f"probe failed: {result.detail}")
            self._probe_at = time.monotonic() + self._schedule.next_delay()
        self._set(result.state, result.detail, force=True)

    async def _tcp_check(self) -> bool:
        self._last_attempt = time.monotonic()
        return await self._endpoint.can_connect(timeout=TCP_CHECK_INTERVAL)

    async def _check_local_address(self) -> None:
        """The laptop moved networks: connections kept alive from the old address are
        dead even though the endpoint answers. Drop them and check at once."""
        address = await self._endpoint.local_address()
        before, self._local_address = self._local_address, address
        if before is not None and address != before:
            log.info("local address changed from %s to %s", before, address)
            self._drop_pool(f"local address changed to {address}", abort=True)
            self._probe_at = 0.0

    def _drop_pool(self, why: str, *, abort: bool = False) -> None:
        drop = getattr(self._endpoint, "drop_connections", None)
        if drop is not None:  # a test's stand-in endpoint may have no pool
            drop(why, abort=abort)

    def _next_probe_wall(self) -> float | None:
        if self._probing:
            return None
        return time.time() + max(0.0, self._probe_at - time.monotonic())

    def _set(self, state: str, detail: str, *, force: bool = False) -> None:
        changed = state != self.current.state
        if not changed and not force and detail == self.current.detail:
            return
        since = time.time() if changed else self.current.since
        if changed:
            log.info("endpoint %s: %s", state, detail)
        self.current = ReachabilityState(state, detail, since, self._next_probe_wall())
        if state == "online":
            self._online.set()
        else:
            self._online.clear()
        self._publish(refresh=False)
        if changed:
            asyncio.get_running_loop().create_task(self._notify_waiters())

    def _publish(self, *, refresh: bool = True) -> None:
        if refresh:
            self.current = ReachabilityState(
                self.current.state,
                self.current.detail,
                self.current.since,
                self._next_probe_wall(),
            )
        if self._on_change is not None:
            self._on_change(self.current)

    async def _notify_waiters(self) -> None:
        async with self._changed:
            self._changed.notify_all()
