"""The timeline: reading a conversation's messages (pages, around a message,
all of them, what changed since), adding notices, full-text search and the
past questions offline answers are made from.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .connection import StoreConnection
from .records import (
    MAX_NOTICES_PER_MESSAGE,
    MESSAGE_COLUMNS,
    MESSAGE_FROM,
    REPLY_OFFSET,
    Message,
    Page,
    PastQuestion,
    Role,
    SearchHit,
    fetch_message,
    message_from_row,
)
from .records import MessageState as State

SEARCH_RANK_WINDOW = 5_000  # newest matches ranked by a search


class TimelineMixin(StoreConnection):
    """The reading part of ``Store``: pages of messages, notices, search."""

    async def get_message(self, message_id: int) -> Message | None:
        async with self._read() as db:
            return await fetch_message(db, message_id)

    async def page(
        self, conversation_id: int, *, before_seq: int | None = None, limit: int = 100
    ) -> Page:
        """The newest ``limit`` messages before ``before_seq`` (None: the newest of all),
        oldest first, and whether older ones exist.

        One index range scan on (conversation_id, seq): the cost does not grow
        with the length of the conversation.
        """
        before = before_seq if before_seq is not None else 2**62
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} "
                "WHERE m.conversation_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?",
                (conversation_id, before, limit + 1),  # one more: are there older ones?
            )
            rows = await cur.fetchall()
        messages = [message_from_row(r) for r in reversed(rows[:limit])]
        return Page(messages, has_older=len(rows) > limit)

    async def page_around(self, conversation_id: int, seq: int, *, limit: int = 100) -> Page:
        """A page that contains ``seq`` (for opening a search hit), oldest first, and
        whether older messages exist."""
        half = limit // 2
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} "
                "WHERE m.conversation_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?",
                (conversation_id, seq, half + 1),  # one more: are there older ones?
            )
            rows = await cur.fetchall()
            before = list(reversed(rows[:half]))
            cur = await db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} "
                "WHERE m.conversation_id = ? AND m.seq >= ? ORDER BY m.seq LIMIT ?",
                (conversation_id, seq, limit - len(before)),
            )
            after = await cur.fetchall()
        messages = [message_from_row(r) for r in (*before, *after)]
        return Page(messages, has_older=len(rows) > half)

    async def messages_page(
        self, conversation_id: int, *, before_seq: int | None = None, limit: int = 100
    ) -> list[Message]:
        """``page(...).messages``: the newest ``limit`` messages before ``before_seq``."""
        return (await self.page(conversation_id, before_seq=before_seq, limit=limit)).messages

    async def messages_around(
        self, conversation_id: int, seq: int, *, limit: int = 100
    ) -> list[Message]:
        """``page_around(...).messages``: a page that contains ``seq``."""
        return (await self.page_around(conversation_id, seq, limit=limit)).messages

    async def all_messages(self, conversation_id: int) -> list[Message]:
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} "
                "WHERE m.conversation_id = ? ORDER BY m.seq",
                (conversation_id,),
            )
            return [message_from_row(r) for r in await cur.fetchall()]

    async def messages_changed_since(self, since: float) -> list[Message]:
        """Messages written at or after ``since`` (live refresh across processes)."""
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} "
                "WHERE m.updated_at >= ? ORDER BY m.conversation_id, m.seq",
                (since,),
            )
            return [message_from_row(r) for r in await cur.fetchall()]

    async def add_notice(
        self, reply_to: Message, content: str, meta: dict[str, Any] | None = None
    ) -> Message | None:
        """A local note about a user message (e.g. an offline answer); never sent."""
        now = time.time()
        async with self._write() as db:
            taken = await self._scalar(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND seq > ? AND seq < ?",
                (reply_to.conversation_id, reply_to.seq, reply_to.seq + REPLY_OFFSET),
            )
            if taken >= MAX_NOTICES_PER_MESSAGE:
                return None
            cur = await db.execute(
                "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
                "updated_at, reply_to, meta) "
                f"VALUES (?, ?, {Role.NOTICE.sql}, ?, {State.COMPLETE.sql}, ?, ?, ?, ?)",
                (
                    reply_to.conversation_id,
                    reply_to.seq + 1 + taken,
                    content,
                    now,
                    now,
                    reply_to.id,
                    json.dumps(meta or {}),
                ),
            )
            assert cur.lastrowid is not None
            return await fetch_message(db, cur.lastrowid)

    # -- history: search and offline answers ----------------------------------

    async def search(self, query: str, *, limit: int = 50) -> list[SearchHit]:
        """Full-text search of every message, best matches first.

        Only the newest ``SEARCH_RANK_WINDOW`` matches are ranked: a common word
        over a long history would otherwise score every message it appears in
        (160 ms for "the" over 100,000 messages, 34 ms with the window).
        """
        fts_query = _fts_query(query)
        if not fts_query:
            return []
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT {MESSAGE_COLUMNS}, c.title AS conversation_title, "
                "snippet(messages_fts, 0, '«', '»', '…', 12) AS snippet "
                "FROM messages_fts f JOIN messages m ON m.id = f.rowid "
                "LEFT JOIN outbox o ON o.message_id = m.id "
                "JOIN conversations c ON c.id = m.conversation_id "
                "WHERE messages_fts MATCH ?1 AND f.rowid >= (SELECT COALESCE(MIN(rowid), 0) "
                "  FROM (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?1 "
                "        ORDER BY rowid DESC LIMIT ?3)) "
                "ORDER BY f.rank LIMIT ?2",
                (fts_query, limit, SEARCH_RANK_WINDOW),
            )
            rows = await cur.fetchall()
        return [SearchHit(message_from_row(r), r["conversation_title"], r["snippet"]) for r in rows]

    async def past_questions(self) -> list[PastQuestion]:
        """Every delivered question with its reply, oldest first."""
        async with self._read() as db:
            cur = await db.execute(
                f"""
                SELECT u.id, u.conversation_id, c.title, u.content AS question,
                       a.content AS answer, u.created_at
                FROM messages u
                JOIN messages a ON a.conversation_id = u.conversation_id
                     AND a.seq = u.seq + ? AND a.role = {Role.ASSISTANT.sql}
                JOIN conversations c ON c.id = u.conversation_id
                WHERE u.role = {Role.USER.sql} AND u.state = {State.DELIVERED.sql}
                ORDER BY u.id
                """,
                (REPLY_OFFSET,),
            )
            return [PastQuestion(*tuple(r)) for r in await cur.fetchall()]


def _fts_query(text: str) -> str:
    """Turn what a person types into a safe FTS5 query: every word, as a prefix;
    a "quoted phrase" as a phrase (its words next to each other, in order).

    Words are quoted, so FTS5 operators and punctuation in the input can never
    raise a syntax error.
    """

    def words(part: str) -> list[str]:
        return "".join(ch if ch.isalnum() else " " for ch in part).split()

    terms: list[str] = []
    # Even pieces are outside quotes, odd ones inside; an unclosed quote runs to the end.
    for i, part in enumerate(text.split('"')):
        if i % 2:
            phrase = words(part)
            if phrase:
                terms.append('"' + " ".join(phrase) + '"')
        else:
            terms.extend(f'"{w}"*' for w in words(part))
    return " ".join(terms[:16])
