"""The composer: Enter sends; Ctrl+J (or Shift+Enter where the terminal tells it
apart) starts a new line.

Many terminals send Shift+Enter exactly like Enter, so Ctrl+J, which every
terminal sends as a distinct byte (LF), is the documented newline key.
Alt+Enter is not offered: under tmux and most xterms it arrives as ESC then
CR, which reads as Escape and Enter, so it would send instead.

Typing is never blocked: the composer works the same online and offline, and
its text is cleared only after the message is durably queued. What was typed
between Enter and that commit stays: the text already handed over for sending
is a prefix ``in_flight`` characters long; a second Enter sends only what came
after it, and a commit removes exactly the part it queued.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("ctrl+j", "shift+enter")
CHAT_SCROLL_KEYS = {
    "pageup": "scroll_chat('page_up')",
    "pagedown": "scroll_chat('page_down')",
    "ctrl+home": "scroll_chat('home')",
    "ctrl+end": "scroll_chat('end')",
}


class Composer(TextArea):
    DEFAULT_CSS = """
    Composer { height: auto; min-height: 3; max-height: 12; border: round $primary 40%; }
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
        self.in_flight = 0  # length of the leading text already submitted, not yet queued

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "tab":  # to the messages: select one, y copies it
            event.prevent_default()
            event.stop()
            await self.screen.run_action("focus_chat")
            return
        if event.key in CHAT_SCROLL_KEYS:  # the chat scrolls while the cursor stays here
            event.prevent_default()
            event.stop()
            await self.screen.run_action(CHAT_SCROLL_KEYS[event.key])
            return
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            self.submit()
            return
        if event.key in NEWLINE_KEYS:
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        await super()._on_key(event)

    def submit(self) -> None:
        """Hand over what was typed since the last Enter (nothing if it is blank)."""
        text = self.text
        fresh = text[self.in_flight :]
        if not fresh.strip():
            return
        self.in_flight = len(text)
        self.post_message(self.Submitted(self, fresh))

    def sent(self, text: str) -> None:
        """``text`` is queued: remove exactly it from the start, keep what follows."""
        current = self.text
        if current.startswith(text):
            end = self.document.get_location_from_index(len(text))
            self.delete((0, 0), end)
            self.in_flight = max(0, self.in_flight - len(text))
        else:
            # The user changed the in-flight part meanwhile: their edit stays, whole.
            self.in_flight = 0

    def not_sent(self, text: str) -> None:
        """Queuing ``text`` failed: it stays in the composer and may be sent again."""
        self.in_flight = max(0, self.in_flight - len(text))
