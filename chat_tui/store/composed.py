"""``Store``, made of one part per concern (the package's docstring lists them), and
``opened``, a store closed however the block that uses it ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from .conversations import ConversationsMixin
from .queue import QueueMixin
from .sending import SendingMixin
from .timeline import TimelineMixin
from .versions import VersionsMixin


class Store(ConversationsMixin, QueueMixin, SendingMixin, TimelineMixin, VersionsMixin):
    """The only code that talks SQL. Create with ``await Store.open(path)``.

    Each part is a mixin over ``StoreConnection`` (one connection, one lock);
    they share nothing else, so each can be read on its own.
    """


@contextlib.asynccontextmanager
async def opened(path: Path | str) -> AsyncIterator[Store]:
    """``async with opened(path) as store``: a store that is closed however the block ends."""
    store = await Store.open(path)
    try:
        yield store
    finally:
        await store.close()
