"""What the core tells its listeners: small, immutable, and cheap to import.

The TUI imports these before its first frame; the core itself (httpx and
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
class ReplyReasoning:
    """Some of the model's thinking, shown apart from the answer."""

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


# -- a fallback endpoint answering while the conversation's own is offline ----------------------


@dataclass(frozen=True, slots=True)
class LocalAnswerStarted:
    """A fallback endpoint starts answering ``question`` (which stays queued)."""

    question: Message
    label: str  # "answered by MODEL on NAME while PRIMARY is offline"


@dataclass(frozen=True, slots=True)
class LocalAnswerDelta:
    question: Message
    text: str


@dataclass(frozen=True, slots=True)
class LocalAnswerEnded:
    """The fallback answer is stored as ``notice``, or failed (``error``; nothing
    changes for the queued question)."""

    question: Message
    notice: Message | None
    error: str | None = None


SenderEvent = (
    MessageChanged
    | ReplyStarted
    | ReplyDelta
    | ReplyReasoning
    | ReplyStored
    | ReplyAborted
    | LocalAnswerStarted
    | LocalAnswerDelta
    | LocalAnswerEnded
    | DeliveryProblem
)
Listener = Callable[[SenderEvent], None]


class Broadcast:
    """A listener that hands each event to every subscriber, in the order they subscribed.

    A subscriber that raises stops the event there; the sender, which calls
    this, logs it and goes on.
    """

    def __init__(self) -> None:
        self._subscribers: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._subscribers.append(listener)

    def __call__(self, event: SenderEvent) -> None:
        for listener in self._subscribers:
            listener(event)


# -- reachability -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReachabilityState:
    state: str
    detail: str
    since: float  # wall clock
    next_probe_at: float | None  # wall clock, None while a probe runs
    endpoint: str = "default"  # which named endpoint this is about

    def describe(self) -> str:
        """One line for a person: what is wrong, in plain words (and with which
        endpoint, when it is not the default one)."""
        text = self._words()
        return text if self.endpoint == "default" else f"{self.endpoint}: {text}"

    def _words(self) -> str:
        return {
            "unknown": "checking the endpoint…",
            "online": "online",
            "offline": f"offline — no connection ({self.detail})",
            "captive": f"a network login page is in the way ({self.detail})",
            "auth_error": f"the endpoint refused the API key ({self.detail})",
        }[self.state]
