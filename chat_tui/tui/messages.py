"""App-wide Textual messages, and the relay that turns the core's events into
them. Widgets' own messages live on the widgets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message
from textual.message_pump import MessagePump

if TYPE_CHECKING:
    from ..events import ReachabilityState, SenderEvent
    from ..store import Message as StoredMessage
    from ..store import QueueItem


DELTA_BATCH = 0.03  # seconds of streamed chunks gathered into one UI message


@dataclass
class CoreEvent(Message):
    """Something the core reported (state change, a streamed chunk…)."""

    event: SenderEvent


@dataclass
class ReachabilityChanged(Message):
    state: ReachabilityState

    # A burst of probe updates only needs the newest one painted (per endpoint:
    # another endpoint's state is news of its own).
    def can_replace(self, message: Message) -> bool:
        return (
            isinstance(message, ReachabilityChanged)
            and message.state.endpoint == self.state.endpoint
        )


@dataclass
class ExternalChange(Message):
    """Another process (sync, a second TUI, `chat-tui send`) wrote to the database."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ExternalChange)


@dataclass
class QueueAction(Message):
    """The queue screen asked to retry, edit or cancel a message (to the chat screen)."""

    action: str  # retry | edit | cancel
    item: QueueItem


class CoreRelay:
    """The core's listeners: each event and reachability update is posted to
    ``target()`` (the chat screen) as a message; only its handlers change widgets.

    Chunks of a streaming reply come hundreds a second; they are gathered for
    DELTA_BATCH seconds and posted as one, so the message queue is not the cost.
    Whatever streamed before another event is posted before it.
    """

    def __init__(self, target: Callable[[], MessagePump]) -> None:
        self._target = target
        self._pending: dict[int, tuple[StoredMessage, list[str]]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None

    def event(self, event: SenderEvent) -> None:
        from ..events import ReplyDelta  # loaded with the core, before its first event

        if isinstance(event, ReplyDelta):
            batch = self._pending.get(event.question.id)
            if batch is None:
                self._pending[event.question.id] = (event.question, [event.text])
            else:
                batch[1].append(event.text)
            if self._flush_handle is None:
                loop = asyncio.get_running_loop()
                self._flush_handle = loop.call_later(DELTA_BATCH, self.flush)
            return
        self.flush()
        self._target().post_message(CoreEvent(event))

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, {}
        if not pending:
            return
        from ..events import ReplyDelta

        for question, texts in pending.values():
            self._target().post_message(CoreEvent(ReplyDelta(question, "".join(texts))))

    def reachability(self, state: ReachabilityState) -> None:
        self._target().post_message(ReachabilityChanged(state))
