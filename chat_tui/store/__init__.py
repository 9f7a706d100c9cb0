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

Callers import everything from here (``from chat_tui.store import Store``). Only
the errors (``errors``) load with the package; the records, ``Store`` and the rest
(SQLite, aiosqlite, the SQL) load on first use, so the chat window's first frame,
which shows nothing stored yet, does not wait for them.
The delivery contract these parts keep is described in docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import StoreError, StoreReplaced

if TYPE_CHECKING:
    from .composed import Store, opened
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
    from .timeline import _fts_query

# Where each name lives; its module is imported the first time the name is used.
# (``__all__`` below lists the same names for static tools; a test keeps them equal.)
_RECORDS = "REPLY_OFFSET USER_STATES Claim Conversation Message MessageState Page PastQuestion"
_ON_FIRST_USE = {
    "Store": "composed",
    "opened": "composed",
    "MIGRATIONS": "schema",
    "_fts_query": "timeline",  # benchmarks/search.py counts what a query matches
    **dict.fromkeys((*_RECORDS.split(), "QueueItem", "Role", "SearchHit"), "records"),
}

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
    "_fts_query",
    "opened",
]


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
