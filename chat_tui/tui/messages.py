"""App-wide Textual messages. Widgets' own messages live on the widgets."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from ..events import OutboxEvent, ReachabilityState


@dataclass
class EngineEvent(Message):
    """Something the delivery engine did (state change, a streamed chunk…)."""

    event: OutboxEvent


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
