"""Selecting a message in the chat view and copying it or its code blocks.

Mixed into ``ChatView`` (which holds ``selected``, the digits typed before ``c``
in ``_count``, and the ``Copied`` message the app sends to the clipboard).
"""

from __future__ import annotations

from typing import Any

from textual import events

from .message import MessageView


class MessageSelection:
    """One message selected (Up/Down, or a click): ``y`` copies it, ``c`` its code
    block (``2c`` the second one…), ``C`` one chosen from a list of its blocks.
    Relies on the scroll view's ``query``, ``anchor``, ``scroll_to_widget``,
    ``notify`` and ``post_message``."""

    selected: MessageView | None
    _count: str
    query: Any
    anchor: Any
    release_anchor: Any
    scroll_to_widget: Any
    notify: Any
    post_message: Any
    app: Any
    Copied: Any

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

    def _code_blocks(self) -> list[str]:
        """The selected message's code blocks (the user is told when there are none)."""
        from ..copying import code_blocks

        if self.selected is None:
            return []
        blocks = code_blocks(self.selected.message.content)
        if not blocks:
            self.notify("This message has no code block.", markup=False, timeout=3)
        return blocks

    def _copy_block(self, blocks: list[str], n: int) -> None:
        what = f"code block {n} of {len(blocks)}" if len(blocks) > 1 else "the code block"
        self.post_message(self.Copied(blocks[n - 1], what))

    def action_copy_code(self) -> None:
        count, self._count = self._count, ""
        blocks = self._code_blocks()
        if not blocks:
            return
        n = int(count) if count else 1
        if not 1 <= n <= len(blocks):
            self.notify(f"This message has {len(blocks)} code block(s).", markup=False, timeout=3)
            return
        self._copy_block(blocks, n)

    def action_choose_code(self) -> None:
        self._count = ""
        blocks = self._code_blocks()
        if len(blocks) == 1:
            self._copy_block(blocks, 1)
        elif blocks:
            from ..screens.code_chooser import CodeChooser

            def chosen(index: int | None) -> None:
                if index is not None:
                    self._copy_block(blocks, index + 1)

            self.app.push_screen(CodeChooser(blocks), chosen)

    def on_click(self, event: events.Click) -> None:
        widget = event.widget
        while widget is not None and not isinstance(widget, MessageView) and widget is not self:
            widget = widget.parent  # type: ignore[assignment]
        if isinstance(widget, MessageView):
            self.select(widget)
