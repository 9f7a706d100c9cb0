"""What the engine tells its listeners: small, immutable, and cheap to import.

The TUI imports these before its first frame; the engine itself (httpx and
all) is imported only afterwards. So this module must not import the
endpoint client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .endpoint import DeliveryError
    from .store import Message

# -- delivery ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageChanged:
    """A message's state (or attempts, error) changed."""

    message: Message


@dataclass(frozen=True, slots=True)
class ReplyStarted:
    question: Message


@dataclass(frozen=True, slots=True)
class ReplyDelta:
    question: Message
    text: str


@dataclass(frozen=True, slots=True)
class ReplyStored:
    question: Message
    reply: Message


@dataclass(frozen=True, slots=True)
class ReplyAborted:
    """The stream failed; whatever was shown of it is not the reply."""

    question: Message
    error: DeliveryError


@dataclass(frozen=True, slots=True)
class DeliveryProblem:
    """The sender cannot get on (the database refuses writes, a bug): it keeps retrying.

    ``text`` says what is wrong in plain words; None when the problem has cleared.
    """

    text: str | None


OutboxEvent = (
    MessageChanged | ReplyStarted | ReplyDelta | ReplyStored | ReplyAborted | DeliveryProblem
)
Listener = Callable[[OutboxEvent], None]


# -- reachability -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReachabilityState:
    state: str
    detail: str
    since: float  # wall clock
    next_probe_at: float | None  # wall clock, None while a probe runs

    def describe(self) -> str:
        """One line for a person: what is wrong, in plain words."""
        return {
            "unknown": "checking the endpoint…",
            "online": "online",
            "offline": f"offline — no connection ({self.detail})",
            "captive": f"a network login page is in the way ({self.detail})",
            "auth_error": f"the endpoint refused the API key ({self.detail})",
        }[self.state]
