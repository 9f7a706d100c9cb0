"""The store, endpoint client, reachability watcher and outbox, opened and closed together.

The TUI and every CLI verb use this one bundle, so there is exactly one way
to start and stop delivery (and to release leases on the way out).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .config import Settings
from .endpoint import Endpoint
from .outbox import Listener, Outbox
from .reachability import Reachability, ReachabilityState
from .store import Store


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        listener: Listener | None = None,
        on_reachability: Callable[[ReachabilityState], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.endpoint = Endpoint(settings)
        self.reachability = Reachability(
            self.endpoint, probe_cap=settings.probe_cap, on_change=on_reachability
        )
        self.outbox = Outbox(store, self.endpoint, self.reachability, settings, listener=listener)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        listener: Listener | None = None,
        on_reachability: Callable[[ReachabilityState], None] | None = None,
    ) -> Engine:
        store = await Store.open(settings.db_path)
        return cls(settings, store, listener=listener, on_reachability=on_reachability)

    def start_watching(self) -> None:
        """Start the reachability watcher (probes at once)."""
        self._tasks.append(asyncio.create_task(self.reachability.run(), name="reachability"))

    def start_delivery(self) -> asyncio.Task[None]:
        """Start the sender; it runs until `close()`."""
        task = asyncio.create_task(self.outbox.run(), name="outbox")
        self._tasks.append(task)
        return task

    async def close(self) -> None:
        """Stop sending, give back leases, close the client and the database."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.store.release_all(self.outbox.owner)
        await self.endpoint.aclose()
        await self.store.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
