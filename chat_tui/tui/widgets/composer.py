"""The composer: Enter sends; Ctrl+J (or Shift+Enter / Alt+Enter) starts a new line.

Many terminals send Shift+Enter exactly like Enter, so Ctrl+J, which every
terminal sends as a distinct byte (LF), is the documented newline key.
Typing is never blocked: the composer works the same online and offline, and
its text is cleared only after the message is durably queued.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("ctrl+j", "shift+enter", "alt+enter")


class Composer(TextArea):
    DEFAULT_CSS = """
    Composer { height: auto; min-height: 3; max-height: 12; border: round $primary 60%; }
    Composer:focus { border: round $primary; }
    """

    @dataclass
    class Submitted(Message):
        composer: Composer
        text: str

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            **kwargs,  # type: ignore[arg-type]
        )
        self.placeholder = "Message… (Enter sends, Ctrl+J new line)"

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            if self.text.strip():
                self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        await super()._on_key(event)
