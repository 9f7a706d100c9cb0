"""The sender's side of the outbox: claiming the next deliverable message under
a lease, the history its request carries, renewing the lease while a reply
streams, and ending the attempt: complete, release (retry later), fail, or
cancel at the user's request. Only the lease holder may end an attempt.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

import aiosqlite

from .connection import StoreConnection
from .conversations import endpoint_filter
from .records import (
    EARLIER_UNSETTLED,
    OUTGOING_STATES,
    REPLY_OFFSET,
    Claim,
    Message,
    Role,
    conversation_from_row,
    fetch_message,
    sql_list,
)
from .records import MessageState as State


class SendingMixin(StoreConnection):
    """The sender's part of ``Store``: leases and the end of each attempt."""

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
                WHERE m.state IN {sql_list(OUTGOING_STATES)}
                  AND o.next_attempt_at <= ?
                  AND (o.lease_expires IS NULL OR o.lease_expires <= ?)
                  {not_in}
                  AND NOT {EARLIER_UNSETTLED}
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
                f"UPDATE messages SET state = {State.SENDING.sql}, updated_at = ? WHERE id = ?",
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
                history, seqs = await read_history(db, message.conversation_id, message.seq, None)
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
            return await read_history(db, conversation_id, before_seq, max_chars)

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
        state: str = State.COMPLETE.value,
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
                f"WHERE o.message_id = ? AND m.state = {State.SENDING.sql}",
                (message_id,),
            )
            question = await cur.fetchone()
            if question is None or question["lease_owner"] != owner:
                return None
            cur = await db.execute(
                "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
                "updated_at, reply_to, meta) "
                f"VALUES (?, ?, {Role.ASSISTANT.sql}, ?, ?, ?, ?, ?, ?)",
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
                f"UPDATE messages SET state = {State.DELIVERED.sql}, error = NULL, updated_at = ? "
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
            role=Role.ASSISTANT.value,
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
            state = State.FAILED if row["attempts"] >= max_attempts else State.QUEUED
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
                f"UPDATE messages SET state = {State.FAILED.sql}, error = ?, updated_at = ? "
                "WHERE id = ?",
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
                f"UPDATE messages SET state = {State.QUEUED.sql}, updated_at = ? "
                f"WHERE state = {State.SENDING.sql} "
                "AND id IN (SELECT message_id FROM outbox WHERE lease_owner = ?)",
                (now, owner),
            )
            cur = await db.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ?",
                (owner,),
            )
            return cur.rowcount

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
                f"UPDATE messages SET state = {State.CANCELLED.sql}, error = NULL, updated_at = ? "
                "WHERE id = ?",
                (now, message_id),
            )
            return await fetch_message(db, message_id)


async def read_history(
    db: aiosqlite.Connection,
    conversation_id: int,
    before_seq: int,
    max_chars: int | None,
) -> tuple[list[dict[str, str]], list[int]]:
    """``history`` inside the caller's transaction."""
    cur = await db.execute(
        f"""
        SELECT u.content AS question, a.content AS answer, u.seq
        FROM messages u JOIN messages a
          ON a.conversation_id = u.conversation_id AND a.seq = u.seq + ?
         AND a.role = {Role.ASSISTANT.sql}
        WHERE u.conversation_id = ? AND u.role = {Role.USER.sql}
          AND u.state = {State.DELIVERED.sql} AND u.seq < ?
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
        history.append({"role": Role.USER.value, "content": question})
        history.append({"role": Role.ASSISTANT.value, "content": answer})
        seqs.append(seq)
    return history, seqs
