"""Versions and branches: regenerating the last reply or editing the last
question (the turn as it was is kept in ``turn_versions``), switching the
version shown, and editing an earlier question as a new conversation (a branch).

The messages table always holds the version shown, which is the one later
requests carry as context; switching versions swaps them. Nothing is deleted.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import aiosqlite

from .connection import StoreConnection
from .errors import StoreError
from .records import (
    REPLY_OFFSET,
    SEQ_STEP,
    SETTLED_STATES,
    Message,
    Role,
    conversation_from_row,
    fetch_message,
    link_replies,
    sql_list,
)
from .records import MessageState as State


class VersionsMixin(StoreConnection):
    """The versions and branches part of ``Store``."""

    async def resend_turn(self, message_id: int, *, text: str | None = None) -> Message:
        """Regenerate the last reply (``text`` None) or edit the last question and
        send it again. The turn as it was (question and reply) is kept as a version;
        the question goes through the outbox like any message (durable, ordered,
        retried) under a new idempotency key, since it is a new request.
        """
        now = time.time()
        async with self._write() as db:
            message = await fetch_message(db, message_id)
            if message is None or message.role != Role.USER:
                raise StoreError(f"no message with id {message_id} to send again")
            if message.state != State.DELIVERED:
                raise StoreError(
                    f"message {message_id} is {message.state}; only an answered message "
                    "can be regenerated (retry or edit it from the queue instead)"
                )
            later = await self._scalar(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ? "
                f"AND role = {Role.USER.sql} AND seq > ? AND state != {State.CANCELLED.sql}",
                (message.conversation_id, message.seq),
            )
            if later:
                raise StoreError(
                    f"message {message_id} is not the last in its conversation; "
                    "editing an earlier message makes a branch"
                )
            await self._keep_version(db, message)
            total = int(message.meta.get("versions", 1)) + 1
            meta = {**message.meta, "version": total, "versions": total}
            await db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND seq = ? "
                f"AND role = {Role.ASSISTANT.sql}",
                (message.conversation_id, message.seq + REPLY_OFFSET),
            )
            await db.execute(
                f"UPDATE messages SET content = ?, state = {State.QUEUED.sql}, error = NULL, "
                "key = ?, meta = ?, updated_at = ? WHERE id = ?",
                (
                    text if text is not None and text.strip() else message.content,
                    str(uuid.uuid4()),
                    json.dumps(meta),
                    now,
                    message_id,
                ),
            )
            await db.execute(
                "INSERT INTO outbox (message_id, conversation_id, next_attempt_at, enqueued_at) "
                "VALUES (?, ?, ?, ?)",
                (message_id, message.conversation_id, now, now),
            )
            await db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (now, message.conversation_id),
            )
            result = await fetch_message(db, message_id)
        assert result is not None
        return result

    async def _keep_version(self, db: aiosqlite.Connection, question: Message) -> None:
        """Copy a turn as it is now (question and reply) into turn_versions."""
        cur = await db.execute(
            "SELECT content, state, meta, created_at FROM messages "
            f"WHERE conversation_id = ? AND seq = ? AND role = {Role.ASSISTANT.sql}",
            (question.conversation_id, question.seq + REPLY_OFFSET),
        )
        reply = await cur.fetchone()
        await db.execute(
            "INSERT INTO turn_versions (conversation_id, seq, version, question, reply, "
            "reply_state, reply_meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(conversation_id, seq, version) DO UPDATE SET "
            "question = excluded.question, reply = excluded.reply, "
            "reply_state = excluded.reply_state, reply_meta = excluded.reply_meta",
            (
                question.conversation_id,
                question.seq,
                int(question.meta.get("version", 1)),
                question.content,
                reply["content"] if reply else None,
                reply["state"] if reply else None,
                reply["meta"] if reply else None,
                reply["created_at"] if reply else question.created_at,
            ),
        )

    async def show_version(self, message_id: int, version: int) -> Message:
        """Show another version of a turn; the one shown is the one sent as context."""
        now = time.time()
        async with self._write() as db:
            message = await fetch_message(db, message_id)
            if message is None or message.role != Role.USER:
                raise StoreError(f"no message with id {message_id}")
            total = int(message.meta.get("versions", 1))
            current = int(message.meta.get("version", 1))
            if not 1 <= version <= total:
                raise StoreError(f"message {message_id} has versions 1 to {total}")
            if version == current:
                return message
            if message.state not in SETTLED_STATES:
                raise StoreError(
                    f"message {message_id} is {message.state}; wait for its reply "
                    "(or cancel it) before switching versions"
                )
            cur = await db.execute(
                "SELECT * FROM turn_versions WHERE conversation_id = ? AND seq = ? AND version = ?",
                (message.conversation_id, message.seq, version),
            )
            target = await cur.fetchone()
            if target is None:
                raise StoreError(f"version {version} of message {message_id} is not stored")
            await self._keep_version(db, message)
            await db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND seq = ? "
                f"AND role = {Role.ASSISTANT.sql}",
                (message.conversation_id, message.seq + REPLY_OFFSET),
            )
            if target["reply"] is not None:
                await db.execute(
                    "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
                    "updated_at, reply_to, meta) "
                    f"VALUES (?, ?, {Role.ASSISTANT.sql}, ?, ?, ?, ?, ?, ?)",
                    (
                        message.conversation_id,
                        message.seq + REPLY_OFFSET,
                        target["reply"],
                        target["reply_state"] or State.COMPLETE,
                        target["created_at"],
                        now,
                        message.id,
                        target["reply_meta"],
                    ),
                )
            await db.execute(
                "UPDATE messages SET content = ?, state = ?, meta = ?, updated_at = ? WHERE id = ?",
                (
                    target["question"],
                    State.DELIVERED if target["reply"] is not None else State.CANCELLED,
                    json.dumps({**message.meta, "version": version}),
                    now,
                    message_id,
                ),
            )
            result = await fetch_message(db, message_id)
        assert result is not None
        return result

    async def turn_versions(self, conversation_id: int) -> dict[int, list[dict[str, Any]]]:
        """Every stored version of each turn, by the user message's seq, oldest first."""
        async with self._read() as db:
            cur = await db.execute(
                "SELECT * FROM turn_versions WHERE conversation_id = ? ORDER BY seq, version",
                (conversation_id,),
            )
            out: dict[int, list[dict[str, Any]]] = {}
            for r in await cur.fetchall():
                out.setdefault(r["seq"], []).append(
                    {
                        "version": r["version"],
                        "question": r["question"],
                        "reply": r["reply"],
                        "reply_state": r["reply_state"],
                        "reply_meta": json.loads(r["reply_meta"]) if r["reply_meta"] else {},
                        "created_at": r["created_at"],
                    }
                )
        return out

    async def branch(self, message_id: int, text: str) -> Message:
        """Edit an earlier message: a new conversation holding the turns before it
        (their versions too) and the edited message, queued. The original is untouched."""
        if not text.strip():
            raise StoreError("the edited message is empty")
        now = time.time()
        async with self._write() as db:
            message = await fetch_message(db, message_id)
            if message is None or message.role != Role.USER:
                raise StoreError(f"no message with id {message_id}")
            cur = await db.execute(
                "SELECT * FROM conversations WHERE id = ?", (message.conversation_id,)
            )
            origin = conversation_from_row(await cur.fetchone())  # type: ignore[arg-type]
            title = f"{origin.title or 'untitled'} (branch)"
            cur = await db.execute(
                "INSERT INTO conversations (title, model, system_prompt, created_at, updated_at, "
                "endpoint, branch_of, branch_seq, next_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    title,
                    origin.model,
                    origin.system_prompt,
                    now,
                    now,
                    origin.endpoint,
                    origin.id,
                    message.seq,
                    message.seq + SEQ_STEP,
                ),
            )
            new_id = cur.lastrowid
            # The turns before the edited message, as they are shown (settled ones:
            # anything still queued before it belongs to the original only).
            await db.execute(
                "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
                "updated_at, error, key, meta) SELECT ?, seq, role, content, state, created_at, ?, "
                "error, key, meta FROM messages WHERE conversation_id = ? AND seq < ? "
                f"AND (role != {Role.USER.sql} OR state IN {sql_list(SETTLED_STATES)}) "
                "ORDER BY seq",
                (new_id, now, origin.id, message.seq),
            )
            await link_replies(db, new_id)
            await db.execute(
                "INSERT INTO turn_versions SELECT ?, seq, version, question, reply, reply_state, "
                "reply_meta, created_at FROM turn_versions WHERE conversation_id = ? AND seq < ?",
                (new_id, origin.id, message.seq),
            )
            cur = await db.execute(
                "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
                "updated_at, key, meta) "
                f"VALUES (?, ?, {Role.USER.sql}, ?, {State.QUEUED.sql}, ?, ?, ?, ?)",
                (
                    new_id,
                    message.seq,
                    text,
                    now,
                    now,
                    str(uuid.uuid4()),
                    json.dumps({"edited_from": message.id}),
                ),
            )
            queued_id = cur.lastrowid
            await db.execute(
                "INSERT INTO outbox (message_id, conversation_id, next_attempt_at, enqueued_at) "
                "VALUES (?, ?, ?, ?)",
                (queued_id, new_id, now, now),
            )
            assert queued_id is not None
            result = await fetch_message(db, queued_id)
        assert result is not None
        return result
