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

from rich.console import Group
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message as TextualMessage
from textual.widgets import Static

if TYPE_CHECKING:
    from rich.markdown import Markdown as RichMarkdown
    from textual.timer import Timer
    from textual.widgets import Collapsible, Markdown

from ...sanitize import StreamSanitizer, sanitize
from ...store import Message
from ..formatting import clock, message_status
from ..rendering import CachedRender, hard_breaks, render_markdown, safe_split

PAGE_SIZE = 40  # about 300 ms to mount on this 2-core machine; older pages load on scroll


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
    out: list[object] = []
    for i, piece in enumerate(pieces):
        if i:
            out.append(Text(""))
        out.append(piece)
    return out


class StreamingReply(Vertical):
    """An assistant reply while it streams; replaced by a MessageView once stored.

    Drawn with the same renderer as a stored reply, so nothing jumps when it
    is swapped. Cost stays flat however long the reply grows: each complete
    Markdown block (up to a blank line outside a code fence) is drawn once
    into its own ``Static`` and kept; only the unfinished tail is redrawn, and
    at most every ``REDRAW_INTERVAL`` seconds however fast the chunks come.

    A thinking model's reasoning shows live in a dimmed, collapsible
    "Thinking…" block above the answer, collapsed once the answer starts.
    """

    # 10 redraws a second read as smooth text; each costs a layout and a frame of
    # the whole chat (it scrolls), so more would only burn CPU.
    REDRAW_INTERVAL = 0.1
    # Complete blocks are frozen in pieces of at least this many characters: fewer
    # widgets to lay out, and the redrawn tail stays small.
    FREEZE_AT = 1500

    DEFAULT_CSS = """
    StreamingReply { height: auto; padding: 0 1; margin: 0 0 1 0; border-left: outer $accent; }
    StreamingReply > .header { height: 1; color: $accent; }
    StreamingReply > Collapsible { margin: 0; padding: 0; border: none; color: $text-muted; }
    StreamingReply > Collapsible .thinking { color: $text-muted; text-style: italic; }
    StreamingReply > .block { height: auto; }
    StreamingReply > .frozen { margin-bottom: 1; }
    """

    THINKING_REFRESH = 0.1  # seconds: reasoning repaints at most this often

    def __init__(self, question: Message) -> None:
        super().__init__()
        self.question = question
        self.text = ""  # sanitized text received so far
        self.received = 0
        self.drawn = 0  # characters of ``text`` handed to the screen so far
        self.pieces: list[CachedRender] = []  # the frozen blocks, drawn once
        self._tail_piece: CachedRender | None = None
        self._sanitizer = StreamSanitizer()
        self._frozen = 0  # text[:_frozen] is drawn in blocks that no longer change
        self._header = Static(
            Content("Assistant · streaming… · Esc stops"), classes="header", markup=False
        )
        self._tail = Static("", classes="block", markup=False)
        self._timer: Timer | None = None
        self.thinking: list[str] = []
        self._thinking_view: Static | None = None
        self._thinking_box: Collapsible | None = None
        self._thinking_pending = False

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._tail

    async def think(self, text: str) -> None:
        """Some reasoning arrived: shown in the Thinking block (batched repaints)."""
        self.thinking.append(text)
        if self._thinking_box is None:
            from textual.widgets import Collapsible

            self._thinking_view = Static("", classes="thinking", markup=False)
            self._thinking_box = Collapsible(
                self._thinking_view, title="Thinking…", collapsed=self.received > 0
            )
            await self.mount(self._thinking_box, after=self._header)
        if not self._thinking_pending:
            self._thinking_pending = True
            self.set_timer(self.THINKING_REFRESH, self._show_thinking)

    def _show_thinking(self) -> None:
        self._thinking_pending = False
        if self._thinking_view is not None:
            self._thinking_view.update(Content(sanitize("".join(self.thinking))))

    async def write(self, text: str) -> None:
        if not self.received and self._thinking_box is not None:
            # The answer starts: fold the thinking away.
            self._thinking_box.collapsed = True
            self._thinking_box.title = "Thinking (click to show)"
        self.received += len(text)
        self.text += self._sanitizer.feed(text)
        if self._timer is None:
            self._timer = self.set_timer(self.REDRAW_INTERVAL, self._redraw)

    async def _redraw(self) -> None:
        self._timer = None
        split = safe_split(self.text, self._frozen)
        if split - self._frozen >= self.FREEZE_AT:
            piece = CachedRender(render_markdown(self.text[self._frozen : split]))
            self.pieces.append(piece)
            block = Static(piece, classes="block frozen", markup=False)
            self._frozen = split
            await self.mount(block, before=self._tail)
        # Cached: Textual measures the height, then draws; one Markdown render serves both.
        self._tail_piece = CachedRender(render_markdown(self.text[self._frozen :]))
        self._tail.update(self._tail_piece)
        self.drawn = len(self.text)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.text += self._sanitizer.flush()
        if self.is_attached:
            await self._redraw()

    def drawn_pieces(self, content: str) -> list[CachedRender] | None:
        """The Markdown as drawn, if it is exactly the stored reply's ``content``."""
        if self._tail_piece is None or self.text != sanitize(content):
            return None
        tail = [self._tail_piece] if self.text[self._frozen :].strip() else []
        return [*self.pieces, *tail]


class ChatView(VerticalScroll, can_focus=True):
    """The messages of the open conversation, oldest at the top.

    With focus, one message is selected (Up/Down, or a click): ``y`` copies
    it, ``c`` its code block (``2c`` the second one…).
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

    # -- selection and copy -------------------------------------------------------------------

    def _ordered(self) -> list[MessageView]:
        return [v for v in self.query(MessageView)]

    def select(self, view: MessageView | None) -> None:
        if self.selected is not None and self.selected is not view:
            self.selected.remove_class("-selected")
        self.selected = view
        if view is not None:
            view.add_class("-selected")
            self.release_anchor()
            self.scroll_to_widget(view, animate=False)

    def on_focus(self) -> None:
        if self.selected is None or not self.selected.is_attached:
            ordered = self._ordered()
            self.select(ordered[-1] if ordered else None)

    def action_select(self, delta: int) -> None:
        ordered = self._ordered()
        if not ordered:
            return
        if self.selected in ordered:
            index = ordered.index(self.selected) + delta
        else:
            index = len(ordered) - 1
        self.select(ordered[max(0, min(index, len(ordered) - 1))])
        if index >= len(ordered) - 1 and delta > 0:
            self.anchor()

    def on_key(self, event: events.Key) -> None:
        if event.character is not None and event.character.isdigit():
            self._count = (self._count + event.character)[-3:]
            event.stop()
            event.prevent_default()
        elif event.key not in ("c",):
            self._count = ""

    def action_copy_message(self) -> None:
        if self.selected is None:
            return
        self.post_message(self.Copied(self.selected.message.content, "the message"))

    def action_copy_code(self) -> None:
        from ..copying import code_blocks

        count, self._count = self._count, ""
        if self.selected is None:
            return
        blocks = code_blocks(self.selected.message.content)
        if not blocks:
            self.notify("This message has no code block.", markup=False, timeout=3)
            return
        n = int(count) if count else 1
        if not 1 <= n <= len(blocks):
            self.notify(f"This message has {len(blocks)} code block(s).", markup=False, timeout=3)
            return
        what = f"code block {n} of {len(blocks)}" if len(blocks) > 1 else "the code block"
        self.post_message(self.Copied(blocks[n - 1], what))

    def on_click(self, event: events.Click) -> None:
        widget = event.widget
        while widget is not None and not isinstance(widget, MessageView) and widget is not self:
            widget = widget.parent  # type: ignore[assignment]
        if isinstance(widget, MessageView):
            self.select(widget)

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
        later = [v for v in self._views.values() if v.message.seq > question.seq + 5]
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

    @property
    def shown_ids(self) -> list[int]:
        return [v.message.id for v in self.query(MessageView)]

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        # Links in replies are untrusted: never open them; show where they go.
        event.stop()
        self.notify(f"Link: {sanitize(event.href)}", title="Not opened", timeout=8, markup=False)
