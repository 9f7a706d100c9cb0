"""Stopping a reply while it streams, asked here or by another process.

A stop asked in this process resolves the delivery's stop future at once. One
asked elsewhere (``chat-tui cancel``, a second TUI) is a flag in the outbox
row, seen within ``STOP_POLL`` by the holder while it renews its lease.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..config import Settings
from ..store import Claim, Store, StoreError

log = logging.getLogger(__name__)

STOP_POLL = 0.5  # how often a sender looks for a stop asked by another process
STOP_ACTIONS = ("requeue", "cancel")  # what becomes of a message stopped before any reply


async def keep_lease(
    store: Store, settings: Settings, owner: str, claim: Claim, stop: asyncio.Future[str]
) -> None:
    """Keep the lease while a long reply streams, so nobody else takes it over,
    and notice a stop asked by another process (`chat-tui cancel`, a second TUI)."""
    interval = settings.lease_seconds / 3
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(min(STOP_POLL, interval))
        try:
            action = await store.stop_requested(claim.message.id, owner)
            if action and not stop.done():
                stop.set_result(action if action in STOP_ACTIONS else "requeue")
            if time.monotonic() - renewed < interval:
                continue
            renewed = time.monotonic()
            expires = time.time() + settings.lease_seconds
            if not await store.renew_lease(claim.message.id, owner, expires):
                return
        except StoreError:
            log.warning("could not renew the lease of message %s", claim.message.id)
