"""The old import path of the sender (now the ``chat_tui.sender`` package), and of the
events it reports, which live in ``chat_tui.events``."""

from __future__ import annotations

from .events import (
    DeliveryProblem,
    Listener,
    MessageChanged,
    OutboxEvent,
    ReplyAborted,
    ReplyDelta,
    ReplyReasoning,
    ReplyStarted,
    ReplyStored,
)
from .sender import STOP_ACTIONS, STOP_POLL, Outbox, SubmitResult, make_owner_id

__all__ = [
    "STOP_ACTIONS",
    "STOP_POLL",
    "DeliveryProblem",
    "Listener",
    "MessageChanged",
    "Outbox",
    "OutboxEvent",
    "ReplyAborted",
    "ReplyDelta",
    "ReplyReasoning",
    "ReplyStarted",
    "ReplyStored",
    "SubmitResult",
    "make_owner_id",
]
