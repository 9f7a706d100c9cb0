"""The conversation: one widget per message, the newest page mounted, older pages on demand.

Cost grows with mounted widgets, not with text, so only the newest
``PAGE_SIZE`` messages are mounted when a conversation opens; scrolling to
the top pages older ones in from the database.

Untrusted text (replies, errors, even the user's own pasted text) is shown
through ``Content(text)`` or Markdown, never as Rich/Textual markup, and is
sanitized first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message as TextualMessage
from textual.widgets import Static

if TYPE_CHECKING:
    from textual.widgets import Markdown

    from ...store import Message

from ...sanitize import sanitize
from ..rendering import CachedRender
from .message import MessageView, joined
from .selection import MessageSelection
from .streaming import LayoutOnce, StreamingReply

# The message widgets moved to their own modules; their old import path still works.
__all__ = ["PAGE_SIZE", "ChatView", "MessageView", "StreamingReply", "joined"]

PAGE_SIZE = 40  # mounting is what opening costs (benchmarks/open_conversation.py)


class ChatView(MessageSelection, LayoutOnce, VerticalScroll, can_focus=True):
    """The messages of the open conversation, oldest at the top.

    With focus, one message is selected (Up/Down, or a click): ``y`` copies
    it, ``c`` its code block (``2c`` the second one…), ``C`` one chosen from a
    list of its code blocks.
    """

    DEFAULT_CSS = """
    ChatView { height: 1fr; padding: 0 1; }
    ChatView > .empty { color: $text-muted; padding: 1 2; }
    ChatView > .context-marker { color: $text-muted; text-style: italic; margin: 0 0 1 0; }
    ChatView > .welcome {
        margin: 1 2 0 2; padding: 0 2; border: round $accent; height: auto; max-width: 76;
    }
    ChatView MessageView.-selected { background: $boost; }
    ChatView:focus MessageView.-selected { background: $accent 20%; }
    """

    BINDINGS = [
        Binding("up,k", "select(-1)", "Previous", show=False),
        Binding("down,j", "select(1)", "Next", show=False),
        Binding("y", "copy_message", "Copy"),
        Binding("c", "copy_code", "Copy code"),
        Binding("C", "choose_code", "Choose code block", show=False),
        Binding("tab,escape", "app.focus_composer", "Composer", show=False),
    ]

    @dataclass
    class Copied(TextualMessage):
        """Text the user asked to copy (the app sends it to the clipboard)."""

        text: str
        what: str

    @dataclass
    class NeedOlder(TextualMessage):
        """The user scrolled to the top and older messages exist."""

        chat_view: ChatView
        before_seq: int

        def can_replace(self, message: TextualMessage) -> bool:
            return isinstance(message, ChatView.NeedOlder)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.conversation_id: int | None = None
        self._views: dict[int, MessageView] = {}
        self._streams: dict[int, StreamingReply] = {}  # question id → live reply
        self.has_older = False
        self._loading_older = False
        self._placeholder: Static | None = None  # "No messages yet", while there are none
        self._context_marker: Static | None = None  # where the model's memory starts
        self.selected: MessageView | None = None
        self._count = ""  # digits typed before ``c``: which code block

    # -- whole-conversation loads ---------------------------------------------------------

    def set_welcome(self, welcome: Content | None) -> None:
        """Refresh the empty-conversation text (e.g. the endpoint changed)."""
        if self._placeholder is not None and welcome is not None:
            self._placeholder.update(welcome)

    async def show_conversation(
        self,
        conversation_id: int | None,
        messages: list[Message],
        *,
        has_older: bool,
        welcome: Content | None = None,
    ) -> None:
        """Replace what is shown with ``messages`` (the newest page)."""
        await self._stop_streams()
        self.conversation_id = conversation_id
        self._views.clear()
        self._context_marker = None
        await self.remove_children()
        self.has_older = has_older
        self._placeholder = None
        # Follow the end from the start, also in an empty conversation: its first
        # reply must scroll as it streams in.
        self.anchor()
        if not messages:
            self._placeholder = Static(
                welcome or Content("No messages yet. Type below and press Enter."),
                classes="welcome" if welcome else "empty",
            )
            await self.mount(self._placeholder)
            return
        views = [MessageView(m) for m in messages]
        for view in views:
            self._views[view.message.id] = view
        await self.mount_all(views)
        self.mark_blocked()
        self.anchor()
        self.scroll_end(animate=False, immediate=True)

    async def prepend_older(self, messages: list[Message], *, has_older: bool) -> None:
        """Mount an older page above what is shown, keeping the view where it was."""
        self._loading_older = False
        self.has_older = has_older
        fresh = [MessageView(m) for m in messages if m.id not in self._views]
        if not fresh:
            return
        first = next(iter(self.query(MessageView)), None)
        for view in fresh:
            self._views[view.message.id] = view
        old_height = self.virtual_size.height
        await self.mount_all(fresh, before=first if first is not None else None)
        self.call_after_refresh(self._keep_position, old_height)

    def _keep_position(self, old_height: int) -> None:
        self.scroll_to(y=self.scroll_y + self.virtual_size.height - old_height, animate=False)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new <= 0 and old > 0 and self.has_older and not self._loading_older:
            oldest = self.oldest_seq
            if oldest is not None:
                self._loading_older = True
                self.post_message(self.NeedOlder(self, oldest))

    @property
    def oldest_seq(self) -> int | None:
        return min((v.message.seq for v in self._views.values()), default=None)

    # -- single-message updates --------------------------------------------------------------

    async def upsert(self, message: Message, *, drawn: list[CachedRender] | None = None) -> None:
        """Show a new message, or a new state of one already shown."""
        if message.conversation_id != self.conversation_id:
            return
        view = self._views.get(message.id)
        if view is not None:
            view.update_message(message)
            self.mark_blocked()
            return
        oldest = self.oldest_seq
        if oldest is not None and message.seq < oldest:
            return  # belongs to a page not loaded; it will load with that page
        if self._placeholder is not None:
            placeholder, self._placeholder = self._placeholder, None
            await placeholder.remove()
        view = MessageView(message, drawn=drawn)
        self._views[message.id] = view
        # Keep seq order: mount before the first view with a larger seq.
        after = [v for v in self._views.values() if v.message.seq > message.seq and v.is_attached]
        before = min(after, key=lambda v: v.message.seq) if after else None
        stream = self._streams.get(message.reply_to or -1)
        if message.role == "assistant" and stream is not None:
            await self.mount(view, before=stream)
        else:
            await self.mount(view, before=before)
        self.mark_blocked()
        if before is None:
            await self._trim_oldest()
            self.scroll_end(animate=False)

    async def _trim_oldest(self) -> None:
        """Keep a long flush from growing the view without bound: past three pages,
        the oldest views go (they page back in from the database on scroll-up)."""
        excess = len(self._views) - 3 * PAGE_SIZE
        if excess <= 0 or not self.is_vertical_scroll_end:
            return  # the user is reading older messages: leave the view alone
        oldest = sorted(self._views.values(), key=lambda v: v.message.seq)[:excess]
        for view in oldest:
            del self._views[view.message.id]
        self.has_older = True
        await self.remove_children(oldest)

    async def stream_started(self, question: Message) -> None:
        if question.conversation_id != self.conversation_id or question.id in self._streams:
            return
        reply = StreamingReply(question)
        self._streams[question.id] = reply
        # After the question and what already answers it (its notices), before the
        # next turn.
        later = [
            v
            for v in self._views.values()
            if v.message.seq > question.seq and v.message.reply_to != question.id
        ]
        before = min(later, key=lambda v: v.message.seq) if later else None
        await self.mount(reply, before=before)
        self.scroll_end(animate=False)

    async def stream_delta(self, question: Message, text: str) -> None:
        reply = self._streams.get(question.id)
        if reply is not None:
            await reply.write(text)

    async def stream_reasoning(self, question: Message, text: str) -> None:
        reply = self._streams.get(question.id)
        if reply is not None:
            await reply.think(text)

    def streaming_question(self) -> Message | None:
        """The question whose reply is streaming in this conversation, if any."""
        return next((live.question for live in self._streams.values()), None)

    def streaming_started(self, question_id: int) -> bool:
        """Has any text or thinking arrived for this reply yet?"""
        live = self._streams.get(question_id)
        return live is not None and (live.received > 0 or bool(live.thinking))

    async def show_context_start(self, from_seq: int | None) -> None:
        """A quiet line above the oldest turn the last request carried: what is
        above it is no longer sent to the model. Shown only when something is."""
        target = None
        if from_seq is not None:
            target = next(
                (
                    v
                    for v in self._views.values()
                    if v.message.seq == from_seq and v.message.role == "user"
                ),
                None,
            )
            earlier = self.has_older or any(
                v.message.seq < from_seq and v.message.role == "user" for v in self._views.values()
            )
            if not earlier:
                target = None
        marker = self._context_marker
        if target is None:
            if marker is not None:
                self._context_marker = None
                await marker.remove()
            return
        if marker is None:
            from ...context import NOT_SENT_MARKER

            marker = Static(
                Content(f"─── {NOT_SENT_MARKER} ───"), classes="context-marker", markup=False
            )
            self._context_marker = marker
            await self.mount(marker, before=target)
        else:
            self.move_child(marker, before=target)

    async def stream_ended(self, question: Message, reply: Message | None) -> None:
        """The reply was stored (``reply``) or the stream failed (``None``)."""
        live = self._streams.pop(question.id, None)
        if live is not None:
            await live.stop()
        if reply is not None:
            drawn = live.drawn_pieces(reply.content) if live is not None else None
            await self.upsert(reply, drawn=drawn)
        if live is not None:
            await live.remove()

    async def drop_empty_streams(self) -> None:
        """The endpoint went offline: a reply that has not sent a word will not come
        on this connection, so its "streaming…" bubble goes (the question stays
        queued and shows its own state)."""
        for question_id, live in list(self._streams.items()):
            if live.received == 0:
                del self._streams[question_id]
                await live.stop()
                await live.remove()

    def mark_blocked(self) -> None:
        """Queued messages behind a failed or expired one say what they wait for."""
        blocked = False
        for view in sorted(self._views.values(), key=lambda v: v.message.seq):
            message = view.message
            if message.role != "user":
                continue
            view.set_blocked(blocked and message.state == "queued")
            if message.state in ("failed", "expired"):
                blocked = True

    async def _stop_streams(self) -> None:
        for live in self._streams.values():
            await live.stop()
        self._streams.clear()

    @property
    def following(self) -> bool:
        """Is the view kept at the newest message (anchored, not scrolled away)?"""
        # Textual keeps "the user scrolled away" in a private flag; the end of the
        # scroll range alone is stale right after a mount, before layout.
        return (self.is_anchored and not self._anchor_released) or self.is_vertical_scroll_end

    def restyle(self) -> None:
        """The theme changed: draw every shown message again (code colours follow it)."""
        for view in self._views.values():
            view.update_message(view.message, redraw=True)

    def view_for(self, message_id: int) -> MessageView | None:
        return self._views.get(message_id)

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        # Links in replies are untrusted: never open them; show where they go.
        event.stop()
        self.notify(f"Link: {sanitize(event.href)}", title="Not opened", timeout=8, markup=False)
