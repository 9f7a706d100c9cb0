"""SQLite storage through aiosqlite: schema, migrations, and every query.

Durability decisions (see docs/architecture.md, "One path for every message"):

* WAL with ``synchronous=FULL``: a laptop losing power is a power loss, and a
  message the UI shows as queued must survive it.
* Every write runs in ``BEGIN IMMEDIATE`` so two processes never deadlock on a
  read-to-write upgrade; ``busy_timeout`` makes them wait for each other.
* One connection per process, guarded by an asyncio lock: aiosqlite runs
  statements on one thread, and two coroutines must never interleave the
  statements of their transactions.

Ordering: user messages take ``seq`` 10, 20, 30… in their conversation. A
reply to the user message at ``seq`` s is stored at s+5 and notices about it at
s+1…s+4. So a conversation reads in order by ``seq`` alone, and the unique
index on ``(conversation_id, seq)`` makes a second reply to the same message
impossible at the database level.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from .connection import StoreError, StoreReplaced
from .conversations import ConversationsMixin, endpoint_filter, insert_conversation, title_from
from .records import (
    MESSAGE_COLUMNS,
    REPLY_OFFSET,
    SEQ_STEP,
    USER_STATES,
    Claim,
    Conversation,
    Message,
    PastQuestion,
    QueueItem,
    SearchHit,
    conversation_from_row,
    fetch_message,
    message_from_row,
)
from .schema import MIGRATIONS
from .timeline import TimelineMixin, _fts_query  # noqa: F401  (benchmarks/search.py)
from .versions import VersionsMixin

__all__ = [
    "MIGRATIONS",
    "REPLY_OFFSET",
    "USER_STATES",
    "Claim",
    "Conversation",
    "Message",
    "PastQuestion",
    "QueueItem",
    "SearchHit",
    "Store",
    "StoreError",
    "StoreReplaced",
    "opened",
]


class Store(ConversationsMixin, TimelineMixin, VersionsMixin):
    """The only code that talks SQL. Create with ``await Store.open(path)``."""

    async def pending_endpoints(self) -> list[str]:
        """The endpoints that messages in the outbox are waiting for."""
        async with self._read() as db:
            cur = await db.execute(
                "SELECT DISTINCT COALESCE(c.endpoint, 'default') AS name FROM outbox o "
                "JOIN conversations c ON c.id = o.conversation_id"
            )
            return [r["name"] for r in await cur.fetchall()]

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
                        "SELECT id FROM messages WHERE conversation_id = ? AND role = 'user' "
                        "AND state NOT IN ('delivered', 'cancelled') "  # the partial index
                        "AND state IN ('queued', 'sending') AND content = ? AND created_at >= ? "
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
                "updated_at, key) VALUES (?, ?, 'user', ?, 'queued', ?, ?, ?)",
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

    # -- the outbox -----------------------------------------------------------------

    async def claim_next(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float | None = None,
        exclude_conversations: Iterable[int] = (),
        endpoints: Iterable[str] | None = None,
        with_history: bool = True,
    ) -> Claim | None:
        """Lease the oldest deliverable message, or return None.

        Deliverable: queued (or ``sending`` under an expired lease: its holder
        died), due, and every earlier user message of its conversation settled.
        ``endpoints``: only conversations on these endpoints (the ones online).
        ``with_history=False`` leaves the history out (the sender loads only what
        can fit the model's window, with ``history``).
        """
        now = time.time() if now is None else now
        excluded = tuple(exclude_conversations)
        not_in = (
            f"AND m.conversation_id NOT IN ({','.join('?' * len(excluded))})" if excluded else ""
        )
        on, names = endpoint_filter(endpoints)
        if on is None:
            return None
        not_in += on
        excluded += names
        async with self._write() as db:
            cur = await db.execute(
                f"""
                SELECT m.id FROM outbox o CROSS JOIN messages m ON m.id = o.message_id
                WHERE m.state IN ('queued', 'sending')
                  AND o.next_attempt_at <= ?
                  AND (o.lease_expires IS NULL OR o.lease_expires <= ?)
                  {not_in}
                  AND NOT EXISTS (
                      SELECT 1 FROM messages p
                      WHERE p.conversation_id = m.conversation_id AND p.role = 'user'
                        AND p.state NOT IN ('delivered', 'cancelled') AND p.seq < m.seq)
                ORDER BY m.id LIMIT 1
                """,
                (now, now, *excluded),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            message_id = row["id"]
            expires = now + lease_seconds
            await db.execute(
                "UPDATE outbox SET lease_owner = ?, lease_expires = ?, stop_requested = NULL "
                "WHERE message_id = ?",
                (owner, expires, message_id),
            )
            await db.execute(
                "UPDATE messages SET state = 'sending', updated_at = ? WHERE id = ?",
                (now, message_id),
            )
            message = await fetch_message(db, message_id)
            assert message is not None
            cur = await db.execute(
                "SELECT * FROM conversations WHERE id = ?", (message.conversation_id,)
            )
            conversation = conversation_from_row(await cur.fetchone())  # type: ignore[arg-type]
            history: list[dict[str, str]] = []
            seqs: list[int] = []
            if with_history:
                history, seqs = await self._history(db, message.conversation_id, message.seq, None)
        return Claim(message, conversation, history, owner, expires, seqs)

    async def history(
        self, conversation_id: int, before_seq: int, *, max_chars: int | None = None
    ) -> tuple[list[dict[str, str]], list[int]]:
        """The delivered turns before ``before_seq``, oldest first, and each one's user seq.
        Notices (offline answers, a fallback endpoint's answers) are never among them.

        With ``max_chars``, only the newest turns up to about that much text are
        read (newest first, stopping early): a request can't carry more than its
        model's window, and reading 10,000 messages for it took 200 ms.
        """
        async with self._read() as db:
            return await self._history(db, conversation_id, before_seq, max_chars)

    async def _history(
        self,
        db: aiosqlite.Connection,
        conversation_id: int,
        before_seq: int,
        max_chars: int | None,
    ) -> tuple[list[dict[str, str]], list[int]]:
        cur = await db.execute(
            """
            SELECT u.content AS question, a.content AS answer, u.seq
            FROM messages u JOIN messages a
              ON a.conversation_id = u.conversation_id AND a.seq = u.seq + ?
             AND a.role = 'assistant'
            WHERE u.conversation_id = ? AND u.role = 'user' AND u.state = 'delivered'
              AND u.seq < ?
            ORDER BY u.seq DESC
            """,
            (REPLY_OFFSET, conversation_id, before_seq),
        )
        turns: list[sqlite3.Row] = []
        size = 0
        batch = 32  # the newest turns first; more at a time once it is clearly a long read
        while max_chars is None or size <= max_chars:
            rows = await cur.fetchall() if max_chars is None else await cur.fetchmany(batch)
            if not rows:
                break
            batch = min(batch * 4, 2048)
            for row in rows:
                turns.append(row)
                size += len(row[0]) + len(row[1])
                if max_chars is not None and size > max_chars:
                    break
        await cur.close()
        history: list[dict[str, str]] = []
        seqs: list[int] = []
        for question, answer, seq in reversed(turns):
            history.append({"role": "user", "content": question})
            history.append({"role": "assistant", "content": answer})
            seqs.append(seq)
        return history, seqs

    async def renew_lease(self, message_id: int, owner: str, expires: float) -> bool:
        async with self._write() as db:
            cur = await db.execute(
                "UPDATE outbox SET lease_expires = ? WHERE message_id = ? AND lease_owner = ?",
                (expires, message_id, owner),
            )
            return cur.rowcount == 1

    async def complete(
        self,
        message_id: int,
        owner: str,
        reply: str,
        *,
        meta: dict[str, Any] | None = None,
        state: str = "complete",
        context_from_seq: int | None = None,
    ) -> Message | None:
        """Store the reply, mark the question delivered, drop the outbox entry.

        Only the lease holder may complete; if another process took the
        message over (our lease expired), our reply is discarded and None is
        returned, so a message never gets two replies.
        """
        now = time.time()
        payload = json.dumps(meta or {})
        async with self._write() as db:
            # One read (the lease and where the reply goes), four writes: this
            # runs once per delivered message, so it stays short.
            cur = await db.execute(
                "SELECT o.lease_owner, m.conversation_id, m.seq "
                "FROM outbox o CROSS JOIN messages m ON m.id = o.message_id "
                "WHERE o.message_id = ? AND m.state = 'sending'",
                (message_id,),
            )
            question = await cur.fetchone()
            if question is None or question["lease_owner"] != owner:
                return None
            cur = await db.execute(
                "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
                "updated_at, reply_to, meta) VALUES (?, ?, 'assistant', ?, ?, ?, ?, ?, ?)",
                (
                    question["conversation_id"],
                    question["seq"] + REPLY_OFFSET,
                    reply,
                    state,
                    now,
                    now,
                    message_id,
                    payload,
                ),
            )
            reply_id = cur.lastrowid
            await db.execute(
                "UPDATE messages SET state = 'delivered', error = NULL, updated_at = ? "
                "WHERE id = ?",
                (now, message_id),
            )
            await db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))
            await db.execute(
                "UPDATE conversations SET updated_at = ?, context_from_seq = ?, "
                "context_to_seq = ? WHERE id = ?",
                (
                    now,
                    question["seq"] if context_from_seq is None else context_from_seq,
                    question["seq"],
                    question["conversation_id"],
                ),
            )
        assert reply_id is not None
        return Message(
            id=reply_id,
            conversation_id=question["conversation_id"],
            seq=question["seq"] + REPLY_OFFSET,
            role="assistant",
            content=reply,
            state=state,
            created_at=now,
            updated_at=now,
            reply_to=message_id,
            meta=json.loads(payload),
        )

    async def release(
        self,
        message_id: int,
        owner: str,
        *,
        error: str,
        next_attempt_at: float,
        charge_attempt: bool,
        max_attempts: int,
    ) -> Message | None:
        """Give a message back after a transient failure.

        ``charge_attempt`` is false when the endpoint could not be reached at
        all: waiting while offline costs no attempts. A message that used up
        ``max_attempts`` becomes ``failed``.
        """
        now = time.time()
        async with self._write() as db:
            cur = await db.execute(
                "UPDATE outbox SET attempts = attempts + ?, next_attempt_at = ?, last_error = ?, "
                "lease_owner = NULL, lease_expires = NULL "
                "WHERE message_id = ? AND lease_owner = ? RETURNING attempts",
                (1 if charge_attempt else 0, next_attempt_at, error, message_id, owner),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            state = "failed" if row["attempts"] >= max_attempts else "queued"
            await db.execute(
                "UPDATE messages SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                (state, error, now, message_id),
            )
            return await fetch_message(db, message_id)

    async def fail(self, message_id: int, owner: str | None, error: str) -> Message | None:
        """Mark a message ``failed`` (a permanent error); it blocks its conversation."""
        now = time.time()
        async with self._write() as db:
            cur = await db.execute(
                "UPDATE outbox SET last_error = ?, lease_owner = NULL, lease_expires = NULL "
                "WHERE message_id = ? AND (? IS NULL OR lease_owner = ?)",
                (error, message_id, owner, owner),
            )
            if cur.rowcount != 1:
                return None
            await db.execute(
                "UPDATE messages SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                (error, now, message_id),
            )
            return await fetch_message(db, message_id)

    async def release_all(self, owner: str) -> int:
        """Give back every lease this process holds (on a clean exit)."""
        now = time.time()
        async with self._read():
            # A read never waits for another process's write lock: holding no
            # lease (`send`, `status`…), exit without queueing for one.
            if not await self._scalar(
                "SELECT 1 FROM outbox WHERE lease_owner = ? LIMIT 1", (owner,)
            ):
                return 0
        async with self._write() as db:
            await db.execute(
                "UPDATE messages SET state = 'queued', updated_at = ? WHERE state = 'sending' "
                "AND id IN (SELECT message_id FROM outbox WHERE lease_owner = ?)",
                (now, owner),
            )
            cur = await db.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ?",
                (owner,),
            )
            return cur.rowcount

    async def expire_old(self, max_age: float, now: float | None = None) -> list[Message]:
        """Queued messages older than ``max_age`` become ``expired`` (kept, resendable)."""
        if max_age <= 0:
            return []
        now = time.time() if now is None else now
        async with self._write() as db:
            cur = await db.execute(
                "UPDATE messages SET state = 'expired', error = 'not delivered within max_age', "
                "updated_at = ? WHERE role = 'user' AND state = 'queued' AND created_at < ? "
                "RETURNING id",
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
            if message is None or message.role != "user":
                raise StoreError(f"no queued message with id {message_id}")
            if message.state not in ("failed", "expired", "queued", "cancelled"):
                raise StoreError(f"message {message_id} is {message.state}; nothing to retry")
            if text is not None and text.strip():
                await db.execute("UPDATE messages SET content = ? WHERE id = ?", (text, message_id))
            await db.execute(
                "UPDATE messages SET state = 'queued', error = NULL, updated_at = ? WHERE id = ?",
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
            if message is None or message.role != "user":
                raise StoreError(f"no queued message with id {message_id}")
            if message.state == "sending":
                cur = await db.execute(
                    "UPDATE outbox SET stop_requested = 'cancel' WHERE message_id = ? "
                    "AND lease_owner IS NOT NULL AND lease_expires > ?",
                    (message_id, now),
                )
                if cur.rowcount == 1:
                    return message
                # Its sender is gone (lease expired): cancel it here.
            elif message.state not in ("queued", "failed", "expired"):
                raise StoreError(f"message {message_id} is {message.state}; it cannot be cancelled")
            await db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))
            await db.execute(
                "UPDATE messages SET state = 'cancelled', updated_at = ? WHERE id = ?",
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

    async def stop_requested(self, message_id: int, owner: str) -> str | None:
        """The stop asked for a message this owner is sending, if any (polled)."""
        async with self._read():
            return await self._scalar(
                "SELECT stop_requested FROM outbox WHERE message_id = ? AND lease_owner = ?",
                (message_id, owner),
            )

    async def cancel_sending(self, message_id: int, owner: str) -> Message | None:
        """The sender's half of a cancel: the message stopped before any reply came."""
        now = time.time()
        async with self._write() as db:
            cur = await db.execute(
                "DELETE FROM outbox WHERE message_id = ? AND lease_owner = ?", (message_id, owner)
            )
            if cur.rowcount != 1:
                return None
            await db.execute(
                "UPDATE messages SET state = 'cancelled', error = NULL, updated_at = ? "
                "WHERE id = ?",
                (now, message_id),
            )
            return await fetch_message(db, message_id)

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
                "WHERE m.state IN ('queued', 'sending') "
                "AND NOT EXISTS (SELECT 1 FROM messages p "
                "WHERE p.conversation_id = m.conversation_id AND p.role = 'user' "
                f"AND p.state NOT IN ('delivered', 'cancelled') AND p.seq < m.seq) {on}",
                names,
            )

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
                "SELECT state, COUNT(*) AS n FROM messages WHERE role = 'user' GROUP BY state"
            )
            found = {r["state"]: r["n"] for r in await cur.fetchall()}
        return {state: found.get(state, 0) for state in USER_STATES}

    async def unsent_texts(self) -> list[str]:
        """What users asked that has not been answered yet, oldest first (to rescue it
        when the file is gone)."""
        async with self._read() as db:
            cur = await db.execute(
                "SELECT content FROM messages WHERE role = 'user' "
                "AND state IN ('queued', 'sending', 'failed', 'expired') ORDER BY id"
            )
            return [row[0] for row in await cur.fetchall()]

    async def waiting_count(self) -> int:
        """Queued messages that can still go out without the user's help.

        A message behind a failed or expired one in its conversation waits for
        the user, so it does not count.
        """
        async with self._read():
            return await self._scalar(
                """
                WITH blocked AS (  -- each conversation's first failed or expired message
                    SELECT m.conversation_id, MIN(m.seq) AS seq
                    FROM outbox o CROSS JOIN messages m ON m.id = o.message_id
                    WHERE m.state IN ('failed', 'expired') GROUP BY m.conversation_id)
                SELECT COUNT(*) FROM outbox o CROSS JOIN messages m ON m.id = o.message_id
                LEFT JOIN blocked b ON b.conversation_id = m.conversation_id
                WHERE m.state IN ('queued', 'sending') AND (b.seq IS NULL OR m.seq < b.seq)
                """
            )

    async def pending_count(self) -> int:
        """Messages waiting to go out (queued or being sent): the queue counter."""
        async with self._read():
            return await self._scalar(
                "SELECT COUNT(*) FROM outbox o CROSS JOIN messages m ON m.id = o.message_id "
                "WHERE m.state IN ('queued', 'sending')"
            )


@contextlib.asynccontextmanager
async def opened(path: Path | str) -> AsyncIterator[Store]:
    """``async with opened(path) as store``: a store that is closed however the block ends."""
    store = await Store.open(path)
    try:
        yield store
    finally:
        await store.close()
