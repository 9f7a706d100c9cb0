"""The JSON the verbs print, for records that have no ``as_json`` of their own.

Messages and queue items shape themselves (``Message.as_json``,
``QueueItem.as_json``); ``show --json`` and exports use ``export.conversation_json``.
What is left is shaped here, once: the keys and their order are what scripts rely on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..links import Link
    from ..store import Conversation, Message, SearchHit


def conversation_row(c: Conversation) -> dict[str, Any]:
    """A conversation as `list --json` gives it."""
    return {"id": c.id, "title": c.title, "created_at": c.created_at, "updated_at": c.updated_at}


def search_hit(h: SearchHit) -> dict[str, Any]:
    return {
        "conversation_id": h.message.conversation_id,
        "conversation_title": h.conversation_title,
        "message_id": h.message.id,
        "role": h.message.role,
        "created_at": h.message.created_at,
        "snippet": h.snippet,
    }


def message_ref(m: Message) -> dict[str, Any]:
    """Which message, where, and its state: the start of what `send --json` prints."""
    return {"conversation_id": m.conversation_id, "message_id": m.id, "state": m.state}


def link_status(link: Link) -> dict[str, Any]:
    """An endpoint in use, as `status --json` lists it."""
    return {
        "base_url": link.settings.base_url,
        "model": link.model,
        "state": link.reachability.state,
        "detail": link.reachability.current.detail,
    }
