"""The store's records: the dataclasses callers get, how rows become them, and
the vocabulary (roles, message states) the store's Python and SQL are written in.

Ordering: user messages take ``seq`` 10, 20, 30… in their conversation. A
reply to the user message at ``seq`` s is stored at s+5 and notices about it at
s+1…s+4. So a conversation reads in order by ``seq`` alone, and the unique
index on ``(conversation_id, seq)`` makes a second reply to the same message
impossible at the database level. This layout belongs to the store: callers
order by ``seq`` but should not compute with it (``Store.page`` says whether
older messages exist; a reply or notice names its question in ``reply_to``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the driver is imported with the connection, not with the records
    import sqlite3

    import aiosqlite


SEQ_STEP = 10
REPLY_OFFSET = 5
MAX_NOTICES_PER_MESSAGE = 4


class _SqlName(StrEnum):
    """A name stored as its value; it compares equal to that string."""

    @property
    def sql(self) -> str:
        """The value as an SQL literal, e.g. ``'queued'``."""
        return f"'{self.value}'"


class Role(_SqlName):
    """Who wrote a message."""

    USER = "user"
    ASSISTANT = "assistant"
    NOTICE = "notice"  # a local message (an offline or fallback answer): never sent as context


class MessageState(_SqlName):
    """Where a message stands (docs/architecture.md, "States")."""

    # a user message
    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # a reply or a notice
    COMPLETE = "complete"
    STOPPED = "stopped"  # the user stopped it: the partial text is the reply


ROLES = frozenset(Role)
_S = MessageState
USER_STATES = (_S.QUEUED, _S.SENDING, _S.DELIVERED, _S.FAILED, _S.EXPIRED, _S.CANCELLED)
SETTLED_STATES = (_S.DELIVERED, _S.CANCELLED)  # no longer hold their conversation back
PENDING_STATES = (_S.QUEUED, _S.SENDING, _S.FAILED, _S.EXPIRED)  # in the outbox, not answered
OUTGOING_STATES = (_S.QUEUED, _S.SENDING)  # will go out without the user's help
HELD_STATES = (_S.FAILED, _S.EXPIRED)  # wait for the user: retry, edit or cancel


def sql_list(names: Iterable[_SqlName]) -> str:
    """Names as an SQL list: ``('delivered', 'cancelled')``."""
    return "(" + ", ".join(name.sql for name in names) + ")"


def _unsettled(alias: str) -> str:
    return f"{alias}role = {Role.USER.sql} AND {alias}state NOT IN {sql_list(SETTLED_STATES)}"


# A user message that is not settled: the condition of the partial index
# ``messages_unsettled`` (schema.py). A query must say exactly this (with its
# table alias) for SQLite to use that index.
UNSETTLED = _unsettled("")

# "An earlier user message of m's conversation is not settled": what holds a
# message back (order). Written once; with the partial index it is one seek
# however long the history is.
EARLIER_UNSETTLED = (
    "EXISTS (SELECT 1 FROM messages p WHERE p.conversation_id = m.conversation_id "
    f"AND {_unsettled('p.')} AND p.seq < m.seq)"
)


@dataclass(frozen=True, slots=True)
class Conversation:
    id: int
    title: str
    model: str | None
    system_prompt: str | None
    created_at: float
    updated_at: float
    # The user-message seqs that bound the last request's context (the oldest
    # turn sent, and the question): where the model's memory starts.
    context_from_seq: int | None = None
    context_to_seq: int | None = None
    endpoint: str | None = None  # the named endpoint; None: the default (flat settings)
    branch_of: int | None = None  # the conversation this one was branched from
    branch_seq: int | None = None  # …at the user message with this seq (edited here)


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    conversation_id: int
    seq: int
    role: str
    content: str
    state: str
    created_at: float
    updated_at: float
    error: str | None = None
    reply_to: int | None = None
    key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    next_attempt_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The shape `chat-tui show --json` promises (replies add reasoning and usage)."""
        data = {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "state": self.state,
            "created_at": self.created_at,
            "error": self.error,
        }
        # A reply's thinking and token usage (null for other messages).
        data["reasoning"] = self.meta.get("reasoning") or None
        data["usage"] = self.meta.get("usage") if self.role == Role.ASSISTANT else None
        return data


@dataclass(frozen=True, slots=True)
class Claim:
    """A message this process holds the lease on, with the request context."""

    message: Message
    conversation: Conversation
    history: list[dict[str, str]]  # earlier delivered turns, oldest first, excluding this one
    owner: str
    lease_expires: float
    history_seqs: list[int] = field(default_factory=list)  # each history pair's user seq


@dataclass(frozen=True, slots=True)
class QueueItem:
    message: Message
    conversation_title: str
    lease_owner: str | None
    lease_expires: float | None

    def as_json(self) -> dict[str, Any]:
        m = self.message
        return {
            "message_id": m.id,
            "conversation_id": m.conversation_id,
            "conversation_title": self.conversation_title,
            "state": m.state,
            "attempts": m.attempts,
            "next_attempt_at": m.next_attempt_at,
            "last_error": m.error,
            "created_at": m.created_at,
            "preview": m.content[:80],
        }


@dataclass(frozen=True, slots=True)
class Page:
    """A run of a conversation's messages, oldest first, and whether older ones exist
    (to load on scroll, with ``before_seq`` = the first message's ``seq``)."""

    messages: list[Message]
    has_older: bool


@dataclass(frozen=True, slots=True)
class SearchHit:
    message: Message
    conversation_title: str
    snippet: str


@dataclass(frozen=True, slots=True)
class PastQuestion:
    """A user question that got a reply: what offline answers are made from."""

    message_id: int
    conversation_id: int
    conversation_title: str
    question: str
    answer: str
    asked_at: float


MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.role, m.content, m.state, m.created_at, m.updated_at, "
    "COALESCE(o.last_error, m.error) AS error, m.reply_to, m.key, m.meta, "
    "COALESCE(o.attempts, 0) AS attempts, o.next_attempt_at"
)
MESSAGE_FROM = "messages m LEFT JOIN outbox o ON o.message_id = m.id"


def message_from_row(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        role=row["role"],
        content=row["content"],
        state=row["state"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        error=row["error"],
        reply_to=row["reply_to"],
        key=row["key"],
        meta=json.loads(row["meta"]) if row["meta"] else {},
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
    )


def conversation_from_row(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        context_from_seq=row["context_from_seq"],
        context_to_seq=row["context_to_seq"],
        endpoint=row["endpoint"],
        branch_of=row["branch_of"],
        branch_seq=row["branch_seq"],
    )


async def fetch_message(db: aiosqlite.Connection, message_id: int) -> Message | None:
    cur = await db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.id = ?", (message_id,)
    )
    row = await cur.fetchone()
    return None if row is None else message_from_row(row)


async def link_replies(db: aiosqlite.Connection, conversation_id: int) -> None:
    """Point each reply and notice of a conversation copied in (a branch, an import)
    at its question: the user message whose seq step it is in."""
    await db.execute(
        "UPDATE messages SET reply_to = (SELECT u.id FROM messages u "
        "WHERE u.conversation_id = messages.conversation_id "
        f"AND u.seq = messages.seq / ? * ? AND u.role = {Role.USER.sql}) "
        f"WHERE conversation_id = ? AND role != {Role.USER.sql}",
        (SEQ_STEP, SEQ_STEP, conversation_id),
    )
