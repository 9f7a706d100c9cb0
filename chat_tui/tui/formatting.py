"""How states and times read on screen. Pure functions, so they are easy to test."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store import Message


STATE_MARKS = {
    "queued": "◷ queued",
    "sending": "↻ sending",
    "delivered": "✓",
    "failed": "✗ failed",
    "expired": "⌛ expired",
    "cancelled": "⊘ cancelled",
}


def clock(ts: float, now: float | None = None) -> str:
    """A timestamp as a person reads it: time today, date otherwise."""
    now = time.time() if now is None else now
    moment = datetime.fromtimestamp(ts)
    if moment.date() == datetime.fromtimestamp(now).date():
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def until(ts: float | None, now: float | None = None) -> str:
    """'in 12 s', 'in 3 min', or 'in a moment'."""
    if ts is None:
        return "in a moment"
    now = time.time() if now is None else now
    left = ts - now
    if left < 1:
        return "in a moment"
    if left < 90:
        return f"in {left:.0f} s"
    return f"in {left / 60:.0f} min"


def message_status(message: Message, now: float | None = None) -> str:
    """The mark beside a user message: its state, attempts, next try, reason."""
    parts = [STATE_MARKS.get(message.state, message.state)]
    if message.state in ("queued", "sending") and message.attempts:
        parts.append(f"attempt {message.attempts + 1}")
    if message.state == "queued" and message.attempts and message.next_attempt_at:
        parts.append(f"next try {until(message.next_attempt_at, now)}")
    # A queued message that never reached the server has nothing to add to the
    # offline banner; once attempts were spent, say why it is waiting.
    if message.error and (message.state in ("failed", "expired") or message.attempts):
        parts.append(message.error)
    return " · ".join(parts)
