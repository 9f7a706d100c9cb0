"""Conversations: creating, listing, renaming, configuring, moving to another
endpoint, deleting and importing them; their drafts; and what was learned of
each model's context window.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import aiosqlite

from .connection import StoreConnection
from .errors import StoreError
from .records import (
    REPLY_OFFSET,
    ROLES,
    SEQ_STEP,
    SETTLED_STATES,
    Conversation,
    Role,
    conversation_from_row,
    link_replies,
)
from .records import MessageState as State

DEFAULT_ENDPOINT = "default"  # what a conversation with endpoint NULL uses

_ENDPOINT_OF = (
    "COALESCE((SELECT c.endpoint FROM conversations c WHERE c.id = m.conversation_id), "
    f"'{DEFAULT_ENDPOINT}')"
)


def title_from(text: str, limit: int = 60) -> str:
    """A conversation's title: the first non-empty line of its first message."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _endpoint_value(name: str | None) -> str | None:
    return None if not name or name == DEFAULT_ENDPOINT else name


def endpoint_filter(endpoints: Iterable[str] | None) -> tuple[str | None, tuple[str, ...]]:
    """SQL (and its parameters) keeping messages whose conversation is on ``endpoints``.
    None: no filter. An empty list matches nothing (returned as None SQL)."""
    if endpoints is None:
        return "", ()
    names = tuple(endpoints)
    if not names:
        return None, ()
    return f"AND {_ENDPOINT_OF} IN ({','.join('?' * len(names))})", names


async def insert_conversation(
    db: aiosqlite.Connection,
    title: str,
    now: float,
    model: str | None = None,
    system_prompt: str | None = None,
    endpoint: str | None = None,
) -> int:
    """A new conversation row (inside the caller's transaction); its id."""
    cur = await db.execute(
        "INSERT INTO conversations (title, model, system_prompt, created_at, updated_at, "
        "endpoint) VALUES (?, ?, ?, ?, ?, ?)",
        (title, model, system_prompt, now, now, _endpoint_value(endpoint)),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


class ConversationsMixin(StoreConnection):
    """The conversations part of ``Store``."""

    async def create_conversation(
        self,
        title: str = "",
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        endpoint: str | None = None,
    ) -> Conversation:
        async with self._write() as db:
            cid = await insert_conversation(db, title, time.time(), model, system_prompt, endpoint)
        conv = await self.get_conversation(cid)
        assert conv is not None
        return conv

    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        async with self._read() as db:
            cur = await db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
            row = await cur.fetchone()
        return None if row is None else conversation_from_row(row)

    async def list_conversations(self, limit: int = 10_000) -> list[Conversation]:
        async with self._read() as db:
            cur = await db.execute(
                "SELECT * FROM conversations ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,)
            )
            return [conversation_from_row(r) for r in await cur.fetchall()]

    async def rename_conversation(self, conversation_id: int, title: str) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE conversations SET title = ? WHERE id = ?", (title.strip(), conversation_id)
            )

    async def configure_conversation(
        self, conversation_id: int, *, model: str | None, system_prompt: str | None
    ) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE conversations SET model = ?, system_prompt = ? WHERE id = ?",
                (model or None, system_prompt or None, conversation_id),
            )

    async def set_endpoint(
        self, conversation_id: int, endpoint: str | None, *, model: str | None = None
    ) -> None:
        """Move a conversation to another endpoint (and model; None: that endpoint's).

        Its queued messages go to the new endpoint: delivery reads the
        conversation's endpoint at each claim.
        """
        async with self._write() as db:
            cur = await db.execute(
                "UPDATE conversations SET endpoint = ?, model = ? WHERE id = ?",
                (_endpoint_value(endpoint), model or None, conversation_id),
            )
            if cur.rowcount != 1:
                raise StoreError(f"no conversation with id {conversation_id}")

    async def delete_conversation(self, conversation_id: int) -> None:
        async with self._write() as db:
            await db.execute("DELETE FROM outbox WHERE conversation_id = ?", (conversation_id,))
            await db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            await db.execute("DELETE FROM drafts WHERE conversation_id = ?", (conversation_id,))
            await db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    async def import_conversation(self, data: Any) -> int:
        """A conversation from a JSON export, with its turns' versions, as a new one.

        Messages not delivered come in ``cancelled``: an import never sends by
        itself. Returns the new conversation's id.
        """
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise StoreError("not a chat-tui JSON export (no 'messages' list)")
        now = time.time()
        async with self._write() as db:
            cid = await insert_conversation(
                db,
                str(data.get("title") or ""),
                float(data.get("created_at") or now),
                data.get("model") or None,
                data.get("system_prompt") or None,
                data.get("endpoint") or None,
            )
            user_seq = 0
            top = SEQ_STEP
            for item in data["messages"]:
                role = item.get("role") if isinstance(item, dict) else None
                if not isinstance(role, str) or role not in ROLES:
                    raise StoreError("a message in the export has no valid role")
                seq = item.get("seq")
                if not isinstance(seq, int):  # an export without seq: rebuild the layout
                    seq = (
                        user_seq + SEQ_STEP
                        if role == Role.USER
                        else user_seq + (REPLY_OFFSET if role == Role.ASSISTANT else 1)
                    )
                if role == Role.USER:
                    user_seq = seq
                state = str(item.get("state") or "")
                if role == Role.USER and state not in SETTLED_STATES:
                    state = State.CANCELLED
                meta: dict[str, Any] = {}
                if role == Role.USER and (
                    int(item.get("version") or 1) > 1 or item.get("versions")
                ):
                    shown = int(item.get("version") or 1)
                    meta = {
                        "version": shown,
                        "versions": max(
                            [shown, *(int(v["version"]) for v in item.get("versions") or [])]
                        ),
                    }
                    for v in item.get("versions") or []:
                        await db.execute(
                            "INSERT OR REPLACE INTO turn_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                cid,
                                seq,
                                int(v["version"]),
                                str(v.get("question") or ""),
                                v.get("reply"),
                                v.get("reply_state"),
                                json.dumps(v.get("reply_meta") or {}),
                                float(v.get("created_at") or now),
                            ),
                        )
                for key in ("reasoning", "usage", "kind", "label"):
                    if item.get(key):
                        meta[key] = item[key]
                created = float(item.get("created_at") or now)
                await db.execute(
                    "INSERT INTO messages (conversation_id, seq, role, content, state, "
                    "created_at, updated_at, error, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cid,
                        seq,
                        role,
                        str(item.get("content") or ""),
                        state or State.COMPLETE,
                        created,
                        now,
                        item.get("error"),
                        json.dumps(meta),
                    ),
                )
                top = max(top, seq // SEQ_STEP * SEQ_STEP + SEQ_STEP)
            await link_replies(db, cid)
            await db.execute("UPDATE conversations SET next_seq = ? WHERE id = ?", (top, cid))
        return cid

    # -- what was learned of each model's context window -----------------------

    async def context_limit(
        self, endpoint: str, model: str
    ) -> tuple[int | None, str, float] | None:
        """What was learned of a model's context: (window, source, bytes per token)."""
        async with self._read() as db:
            cur = await db.execute(
                "SELECT window, source, bytes_per_token FROM context_limits "
                "WHERE endpoint = ? AND model = ?",
                (endpoint, model),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return row["window"], row["source"] or "unknown", row["bytes_per_token"]

    async def save_context_limit(
        self,
        endpoint: str,
        model: str,
        *,
        window: int | None = None,
        source: str | None = None,
        bytes_per_token: float | None = None,
    ) -> None:
        """Remember a model's window and/or token ratio (None keeps what is stored)."""
        async with self._write() as db:
            await db.execute(
                "INSERT INTO context_limits (endpoint, model, window, source, bytes_per_token, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(endpoint, model) DO UPDATE SET "
                "window = COALESCE(excluded.window, window), "
                "source = COALESCE(excluded.source, source), "
                "bytes_per_token = COALESCE(excluded.bytes_per_token, bytes_per_token), "
                "updated_at = excluded.updated_at",
                (endpoint, model, window, source, bytes_per_token, time.time()),
            )

    # -- drafts: the composer's text, per conversation (0: a new one) -------------

    async def save_draft(self, conversation_id: int | None, text: str) -> None:
        key = conversation_id or 0
        async with self._write() as db:
            if text:
                await db.execute(
                    "INSERT INTO drafts (conversation_id, text, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(conversation_id) DO UPDATE SET text = excluded.text, "
                    "updated_at = excluded.updated_at",
                    (key, text, time.time()),
                )
            else:
                await db.execute("DELETE FROM drafts WHERE conversation_id = ?", (key,))

    async def load_draft(self, conversation_id: int | None) -> str:
        async with self._read():
            return (
                await self._scalar(
                    "SELECT text FROM drafts WHERE conversation_id = ?", (conversation_id or 0,)
                )
                or ""
            )
