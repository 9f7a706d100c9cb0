"""SQLite storage through aiosqlite: the only code that talks SQL.

``Store`` is one object made of parts, one module each:

* ``schema``: the tables and the migrations (``PRAGMA user_version``);
* ``records``: the dataclasses callers get, the state names, the ``seq`` layout;
* ``connection``: opening, configuring, migrating, closing; the read/write guards;
* ``conversations``: conversations, drafts, learned context limits;
* ``queue``: enqueue, retry, cancel, expire, and what the queue holds;
* ``sending``: the sender's leases: claim, renew, complete, release, fail;
* ``timeline``: pages of messages, notices, search, past questions;
* ``versions``: regenerated and edited turns, branches.

Callers import everything from here (``from chat_tui.store import Store``).
The delivery contract these parts keep is described in docs/architecture.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from .connection import StoreError, StoreReplaced
from .conversations import ConversationsMixin
from .queue import QueueMixin
from .records import (
    REPLY_OFFSET,
    USER_STATES,
    Claim,
    Conversation,
    Message,
    MessageState,
    Page,
    PastQuestion,
    QueueItem,
    Role,
    SearchHit,
)
from .schema import MIGRATIONS
from .sending import SendingMixin
from .timeline import TimelineMixin, _fts_query
from .versions import VersionsMixin

__all__ = [
    "MIGRATIONS",
    "REPLY_OFFSET",
    "USER_STATES",
    "Claim",
    "Conversation",
    "Message",
    "MessageState",
    "Page",
    "PastQuestion",
    "QueueItem",
    "Role",
    "SearchHit",
    "Store",
    "StoreError",
    "StoreReplaced",
    "_fts_query",  # benchmarks/search.py counts what a query matches
    "opened",
]


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
