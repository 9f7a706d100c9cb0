"""A reply while it streams in: complete Markdown blocks drawn once, the tail redrawn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

if TYPE_CHECKING:
    from textual.geometry import Size
    from textual.timer import Timer
    from textual.widgets import Collapsible

    from ...store import Message

from ...sanitize import StreamSanitizer, sanitize
from ..rendering import BlockStack, CachedRender, block_ends, render_markdown


class LayoutOnce:
    """A widget whose new size does not ask for a second layout (a mixin).

    After each layout Textual stores a widget's new virtual size through a
    reactive that asks for another layout of the screen, which then finds
    nothing to move. A streaming reply grows on every redraw, so that doubled
    the layouts and repaints of the whole chat while it streamed. Scrollbars
    that must appear or go still ask for their own layout.
    """

    def _size_updated(
        self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True
    ) -> bool:
        return super()._size_updated(  # type: ignore[misc]
            size, virtual_size, container_size, layout=False
        )


class LiveBlock(LayoutOnce, Static):
    """The part of a streaming reply that is drawn again as it grows."""


class StreamingReply(LayoutOnce, Vertical):
    """An assistant reply while it streams; replaced by a MessageView once stored.

    Drawn with the same renderer as a stored reply, so nothing jumps when it
    is swapped. Cost stays flat however long the reply grows: each complete
    Markdown block (see ``block_ends``) is drawn once and kept; only the
    unfinished block at the end is drawn again, at most every
    ``REDRAW_INTERVAL`` seconds however fast the chunks come. The kept blocks
    move into a ``Static`` of their own every ``FREEZE_AT`` characters, so the
    live one, which Textual lays out and paints again on every redraw, stays
    short.

    A thinking model's reasoning shows live in a dimmed, collapsible
    "Thinking…" block above the answer, collapsed once the answer starts.
    """

    # 10 redraws a second read as smooth text; each costs a layout and a frame of
    # the whole chat (it scrolls), so more would only burn CPU.
    REDRAW_INTERVAL = 0.1
    # Kept blocks move to a Static of their own in runs of at least this many
    # characters: few widgets to lay out, and a live one that stays short.
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
        self.pieces: list[CachedRender] = []  # the complete blocks, each drawn once
        self._tail_piece: CachedRender | None = None  # the unfinished block at the end
        self._sanitizer = StreamSanitizer()
        self._settled = 0  # text[:_settled] is drawn in ``pieces``, which no longer change
        self._frozen = 0  # text[:_frozen] (pieces[:_frozen_pieces]) is in frozen Statics
        self._frozen_pieces = 0
        self._header = Static(
            Content("Assistant · streaming… · Esc stops"), classes="header", markup=False
        )
        self._tail = LiveBlock("", classes="block", markup=False)
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
        for end in block_ends(self.text, self._settled):
            block = self.text[self._settled : end]
            if block.strip():
                self.pieces.append(CachedRender(render_markdown(block)))
            self._settled = end
        if self._settled - self._frozen >= self.FREEZE_AT:
            kept = self.pieces[self._frozen_pieces :]
            frozen = Static(CachedRender(BlockStack(kept)), classes="block frozen", markup=False)
            self._frozen, self._frozen_pieces = self._settled, len(self.pieces)
            await self.mount(frozen, before=self._tail)
        tail = self.text[self._settled :]
        # Cached: Textual measures the height, then draws; one Markdown render serves both.
        self._tail_piece = CachedRender(render_markdown(tail)) if tail.strip() else None
        live = self.pieces[self._frozen_pieces :]
        if self._tail_piece is not None:
            live = [*live, self._tail_piece]
        self._tail.update(CachedRender(BlockStack(live)))
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
        if self.drawn != len(self.text) or not self.text or self.text != sanitize(content):
            return None
        tail = [self._tail_piece] if self._tail_piece is not None else []
        return [*self.pieces, *tail]
