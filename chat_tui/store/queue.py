"""The user's side of the outbox: putting a message in the queue (with its
duplicate check), retrying, cancelling, stopping and expiring messages, and what
the queue holds (items, counts, when the next one is due).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from .connection import StoreConnection
from .conversations import DEFAULT_ENDPOINT, endpoint_filter, insert_conversation, title_from
from .errors import StoreError
from .records import (
    EARLIER_UNSETTLED,
    HELD_STATES,
    MESSAGE_COLUMNS,
    OUTGOING_STATES,
    PENDING_STATES,
    SEQ_STEP,
    UNSETTLED,
    USER_STATES,
    Message,
    QueueItem,
    Role,
    fetch_message,
    message_from_row,
    sql_list,
)
from .records import MessageState as State


class QueueMixin(StoreConnection):
    """The queue part of ``Store``: what a user does with queued messages, and counts."""

    async def enqueue(
        self,
        conversation_id: int | None,
        text: str,
        *,
        dedup_window: float = 0.0,
        now: float | None = None,
        endpoint: str | None = None,
    ) -> tuple[Message, bool]:
        """Store a user message and its outbox entry in one transaction.

        Returns ``(message, is_duplicate)``. When the same text is still queued
        in the conversation and was queued within ``dedup_window`` seconds, the
        existing message is returned and nothing is written. With
        ``conversation_id=None`` a conversation is created, titled from the text
        (on ``endpoint``, None: the default).
        """
        now = time.time() if now is None else now
        async with self._write() as db:
            new_conversation = conversation_id is None
            if conversation_id is None:
                conversation_id = await insert_conversation(
                    db, title_from(text), now, endpoint=endpoint
                )
            else:
                cur = await db.execute(
                    "SELECT title FROM conversations WHERE id = ?", (conversation_id,)
                )
                row = await cur.fetchone()
                if row is None:
                    raise StoreError(f"no conversation with id {conversation_id}")
                if dedup_window > 0:
                    cur = await db.execute(
                        f"SELECT id FROM messages WHERE conversation_id = ? AND {UNSETTLED} "
                        f"AND state IN {sql_list(OUTGOING_STATES)} AND content = ? "
                        "AND created_at >= ? "
                        "ORDER BY seq DESC LIMIT 1",
                        (conversation_id, text, now - dedup_window),
                    )
                    dup = await cur.fetchone()
                    if dup is not None:
                        existing = await fetch_message(db, dup["id"])
                        assert existing is not None
                        return existing, True
                if not row["title"]:
                    await db.execute(
                        "UPDATE conversations SET title = ? WHERE id = ?",
                        (title_from(text), conversation_id),
                    )
            seq = await self._scalar(
                "UPDATE conversations SET next_seq = next_seq + ?, updated_at = ? WHERE id = ? "
                "RETURNING next_seq - ?",
                (SEQ_STEP, now, conversation_id, SEQ_STEP),
            )
            cur = await db.execute(
                "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
                f"updated_at, key) VALUES (?, ?, {Role.USER.sql}, ?, {State.QUEUED.sql}, ?, ?, ?)",
                (conversation_id, seq, text, now, now, str(uuid.uuid4())),
            )
            message_id = cur.lastrowid
            await db.execute(
                "INSERT INTO outbox (message_id, conversation_id, next_attempt_at, enqueued_at) "
                "VALUES (?, ?, ?, ?)",
                (message_id, conversation_id, now, now),
            )
            # The sent text was this composer's draft: the conversation's own,
            # or the new-conversation one (0) if this message started it.
            draft_key = 0 if new_conversation else conversation_id
            await db.execute("DELETE FROM drafts WHERE conversation_id = ?", (draft_key,))
            assert message_id is not None
            message = await fetch_message(db, message_id)
        assert message is not None
        return message, False

    async def expire_old(self, max_age: float, now: float | None = None) -> list[Message]:
        """Queued messages older than ``max_age`` become ``expired`` (kept, resendable)."""
        if max_age <= 0:
            return []
        now = time.time() if now is None else now
        async with self._write() as db:
            cur = await db.execute(
                f"UPDATE messages SET state = {State.EXPIRED.sql}, "
                "error = 'not delivered within max_age', "
                f"updated_at = ? WHERE role = {Role.USER.sql} AND state = {State.QUEUED.sql} "
                "AND created_at < ? RETURNING id",
                (now, now - max_age),
            )
            ids = [r["id"] for r in await cur.fetchall()]
            return [m for i in ids if (m := await fetch_message(db, i)) is not None]

    async def retry(self, message_id: int, *, text: str | None = None) -> Message:
        """Put a failed, expired or queued message back at the front of its queue.

        ``text`` replaces the content (edit before resending).
        """
        now = time.time()
        async with self._write() as db:
            message = await fetch_message(db, message_id)
            if message is None or message.role != Role.USER:
                raise StoreError(f"no queued message with id {message_id}")
            if message.state not in (State.FAILED, State.EXPIRED, State.QUEUED, State.CANCELLED):
                raise StoreError(f"message {message_id} is {message.state}; nothing to retry")
            if text is not None and text.strip():
                await db.execute("UPDATE messages SET content = ? WHERE id = ?", (text, message_id))
            await db.execute(
                f"UPDATE messages SET state = {State.QUEUED.sql}, error = NULL, updated_at = ? "
                "WHERE id = ?",
                (now, message_id),
            )
            await db.execute(
                "INSERT INTO outbox (message_id, conversation_id, next_attempt_at, enqueued_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(message_id) DO UPDATE SET attempts = 0, "
                "next_attempt_at = excluded.next_attempt_at, last_error = NULL, "
                "lease_owner = NULL, lease_expires = NULL",
                (message_id, message.conversation_id, now, now),
            )
            result = await fetch_message(db, message_id)
        assert result is not None
        return result

    async def cancel(self, message_id: int, *, now: float | None = None) -> Message:
        """Cancel a message; it stays in history, marked.

        A message being sent under a live lease is not changed here: its
        sender is asked to stop (``request_stop``) and finishes the cancel
        itself, within about a second. The returned message is then still
        ``sending``.
        """
        now = time.time() if now is None else now
        async with self._write() as db:
            message = await fetch_message(db, message_id)
            if message is None or message.role != Role.USER:
                raise StoreError(f"no queued message with id {message_id}")
            if message.state == State.SENDING:
                cur = await db.execute(
                    "UPDATE outbox SET stop_requested = 'cancel' WHERE message_id = ? "
                    "AND lease_owner IS NOT NULL AND lease_expires > ?",
                    (message_id, now),
                )
                if cur.rowcount == 1:
                    return message
                # Its sender is gone (lease expired): cancel it here.
            elif message.state not in (State.QUEUED, State.FAILED, State.EXPIRED):
                raise StoreError(f"message {message_id} is {message.state}; it cannot be cancelled")
            await db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))
            await db.execute(
                f"UPDATE messages SET state = {State.CANCELLED.sql}, updated_at = ? WHERE id = ?",
                (now, message_id),
            )
            result = await fetch_message(db, message_id)
        assert result is not None
        return result

    async def request_stop(self, message_id: int, action: str) -> bool:
        """Ask whoever is sending a message to stop (``action``: ``requeue`` or
        ``cancel`` if nothing came yet; what came is kept as a stopped reply)."""
        async with self._write() as db:
            cur = await db.execute(
                "UPDATE outbox SET stop_requested = ? WHERE message_id = ? "
                "AND lease_owner IS NOT NULL",
                (action, message_id),
            )
            return cur.rowcount == 1

    # -- what the queue holds ---------------------------------------------------

    async def next_due(self, endpoints: Iterable[str] | None = None) -> float | None:
        """When the earliest queued message is due (for sleeping the sender).

        Only messages that could be claimed once due count: one waiting behind
        an unsettled earlier message (failed, or still being sent) does not
        become deliverable with time, and counting its past due time made the
        sender spin.
        """
        on, names = endpoint_filter(endpoints)
        if on is None:
            return None
        async with self._read():
            return await self._scalar(
                "SELECT MIN(CASE WHEN o.lease_expires IS NOT NULL "
                "THEN MAX(o.next_attempt_at, o.lease_expires) ELSE o.next_attempt_at END) "
                "FROM outbox o CROSS JOIN messages m ON m.id = o.message_id "
                f"WHERE m.state IN {sql_list(OUTGOING_STATES)} "
                f"AND NOT {EARLIER_UNSETTLED} {on}",
                names,
            )

    async def pending_endpoints(self) -> list[str]:
        """The endpoints that messages in the outbox are waiting for."""
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT DISTINCT COALESCE(c.endpoint, '{DEFAULT_ENDPOINT}') AS name FROM outbox o "
                "JOIN conversations c ON c.id = o.conversation_id"
            )
            return [r["name"] for r in await cur.fetchall()]

    async def queue_items(self) -> list[QueueItem]:
        """Every message still in the outbox (queued, sending, failed, expired)."""
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT {MESSAGE_COLUMNS}, c.title AS conversation_title, o.lease_owner, "
                "o.lease_expires FROM outbox o CROSS JOIN messages m ON m.id = o.message_id "
                "JOIN conversations c ON c.id = m.conversation_id "
                "ORDER BY m.conversation_id, m.seq"
            )
            return [
                QueueItem(
                    message_from_row(r),
                    r["conversation_title"],
                    r["lease_owner"],
                    r["lease_expires"],
                )
                for r in await cur.fetchall()
            ]

    async def counts(self) -> dict[str, int]:
        """User messages by state (every state present, zeros included)."""
        async with self._read() as db:
            cur = await db.execute(
                "SELECT state, COUNT(*) AS n FROM messages "
                f"WHERE role = {Role.USER.sql} GROUP BY state"
            )
            found = {r["state"]: r["n"] for r in await cur.fetchall()}
        return {state.value: found.get(state, 0) for state in USER_STATES}

    async def unsent_texts(self) -> list[str]:
        """What users asked that has not been answered yet, oldest first (to rescue it
        when the file is gone)."""
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT content FROM messages WHERE role = {Role.USER.sql} "
                f"AND state IN {sql_list(PENDING_STATES)} ORDER BY id"
            )
            return [row[0] for row in await cur.fetchall()]

    async def waiting_count(self) -> int:
        """Queued messages that can still go out without the user's help.

        A message behind a failed or expired one in its conversation waits for
        the user, so it does not count.
        """
        async with self._read():
            return await self._scalar(
                f"""
                WITH blocked AS (  -- each conversation's first failed or expired message
                    SELECT m.conversation_id, MIN(m.seq) AS seq
                    FROM outbox o CROSS JOIN messages m ON m.id = o.message_id
                    WHERE m.state IN {sql_list(HELD_STATES)} GROUP BY m.conversation_id)
                SELECT COUNT(*) FROM outbox o CROSS JOIN messages m ON m.id = o.message_id
                LEFT JOIN blocked b ON b.conversation_id = m.conversation_id
                WHERE m.state IN {sql_list(OUTGOING_STATES)} AND (b.seq IS NULL OR m.seq < b.seq)
                """
            )

    async def pending_count(self) -> int:
        """Messages waiting to go out (queued or being sent): the queue counter."""
        async with self._read():
            return await self._scalar(
                "SELECT COUNT(*) FROM outbox o CROSS JOIN messages m ON m.id = o.message_id "
                f"WHERE m.state IN {sql_list(OUTGOING_STATES)}"
            )
