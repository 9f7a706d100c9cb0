"""One stored message on screen: a header line (who, when, state) and its body.

Replies, the user's own messages and offline/fallback answers read as Markdown
through one renderer (``..rendering``); a reply that was just streamed keeps
the pieces the stream drew, so it does not jump when it is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

if TYPE_CHECKING:
    from rich.markdown import Markdown as RichMarkdown

    from ...store import Message

from ...sanitize import sanitize
from ..formatting import clock, message_status
from ..rendering import BlockStack, CachedRender, hard_breaks, render_markdown


class MessageView(Static):
    """One message as one widget: a header line (who, when, state) and its body.

    Stored messages render through Rich (a ``Text``, or Rich's Markdown for
    replies) inside a single ``Static``: Textual's ``Markdown`` widget mounts
    about a dozen widgets per reply, which made opening a conversation take
    seconds. It is kept only for the reply that is streaming in.
    """

    DEFAULT_CSS = """
    MessageView { height: auto; padding: 0 1; margin: 0 0 1 0; }
    MessageView.user { border-left: outer $primary; }
    MessageView.assistant { border-left: outer $success; }
    MessageView.notice { border: round $warning; }
    MessageView.failed, MessageView.expired { border-left: outer $error; }
    MessageView.found { background: $accent 15%; }
    MessageView.stopped { border-left: outer $warning; }
    """

    HEADER_STYLES = {"queued": "yellow", "sending": "yellow", "failed": "red", "expired": "red"}

    def __init__(self, message: Message, *, drawn: list[CachedRender] | None = None) -> None:
        super().__init__(classes=f"{message.role} {message.state}", markup=False)
        self.message = message
        self.blocked = False  # queued behind a failed message of the same conversation
        # A reply that was just streamed arrives with its Markdown already drawn, in
        # the pieces the stream drew (a 30 KB reply takes half a second to draw again).
        self._drawn = drawn
        self.update(self._renderable())

    def set_blocked(self, blocked: bool) -> None:
        if blocked != self.blocked:
            self.blocked = blocked
            self.update(self._renderable())

    @property
    def header_text(self) -> str:
        return self._header()

    show_reasoning = False  # a reply's stored thinking: one quiet line until clicked

    def _renderable(self) -> CachedRender:
        m = self.message
        style = "yellow" if m.role == "notice" else self.HEADER_STYLES.get(m.state, "dim")
        parts: list[object] = [Text(self._header(), style=style)]
        reasoning = m.meta.get("reasoning") if m.role == "assistant" else None
        if reasoning:
            if self.show_reasoning:
                parts.append(Text("▾ Thinking (click to hide)", style="dim italic"))
                parts.append(Text(sanitize(str(reasoning)), style="dim"))
            else:
                lines = len(str(reasoning).splitlines()) or 1
                parts.append(
                    Text(f"▸ Thinking · {lines} line(s) (click to show)", style="dim italic")
                )
        parts.append(self._body())
        return CachedRender(Group(*parts))

    def on_click(self) -> None:
        if self.message.role == "assistant" and self.message.meta.get("reasoning"):
            self.show_reasoning = not self.show_reasoning
            self.update(self._renderable())

    def _body(self) -> Text | RichMarkdown:
        text = sanitize(self.message.content)
        # Replies, the user's own messages, offline answers and fallback answers
        # (which quote or are replies) all read as Markdown, through one renderer.
        # Rich's Markdown, not Rich markup: "[bold]" stays literal; links show
        # their target and are never opened.
        if self.message.role == "user":
            return render_markdown(hard_breaks(text))
        kind = self.message.meta.get("kind")
        if self.message.role == "assistant" or kind in ("offline_answer", "fallback_answer"):
            if self._drawn:
                return Group(*joined(self._drawn))
            return render_markdown(text)
        return Text(text)

    def _header(self) -> str:
        m = self.message
        when = clock(m.created_at)
        if m.role == "user":
            hint = " · Ctrl+O to retry, edit or cancel" if m.state in ("failed", "expired") else ""
            if self.blocked:
                hint = " · waiting for the failed message above"
            total = int(m.meta.get("versions", 1))
            versions = f" · ‹ {m.meta.get('version', 1)}/{total} › Alt+←/→" if total > 1 else ""
            return f"You · {when} · {sanitize(message_status(m))}{versions}{hint}"
        if m.role == "assistant":
            from ...export import reply_labels

            model = m.meta.get("model")
            header = f"Assistant · {when}" + (f" · {sanitize(str(model))}" if model else "")
            # stopped, reasoning only, prompt → reply tokens, tokens per second
            return header + "".join(f" · {label}" for label in reply_labels(m))
        return sanitize(str(m.meta.get("label") or f"Note · {when}"))

    def update_message(self, message: Message, *, redraw: bool = False) -> None:
        """Show a new state (and new text, if it was edited) without remounting."""
        if redraw or message.content != self.message.content:
            self._drawn = None
        self.message = message
        self.set_classes(f"{message.role} {message.state}")
        self.update(self._renderable())


def joined(pieces: list[CachedRender]) -> list[object]:
    """Markdown drawn in pieces, with the blank line a whole render puts between blocks."""
    return [BlockStack(pieces)]
