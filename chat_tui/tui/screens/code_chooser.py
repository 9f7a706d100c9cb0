"""Which code block to copy, when a message has several: a short list of their
first lines. Returns the block's index through ``dismiss`` (None: cancelled)."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from ...sanitize import sanitize

PREVIEW = 60  # characters of a block's first line shown


def preview(n: int, block: str) -> str:
    """``n``: the block's number (from 1); its first non-empty line and its size."""
    lines = block.rstrip("\n").split("\n")
    first = next((line.strip() for line in lines if line.strip()), "(empty)")
    if len(first) > PREVIEW:
        first = first[: PREVIEW - 1] + "…"
    size = f"{len(lines)} line" + ("s" if len(lines) != 1 else "")
    return f"{n}  {sanitize(first)}  · {size}"


class CodeChooser(ModalScreen[int | None]):
    """Enter (or the block's number) copies it; Escape cancels."""

    DEFAULT_CSS = """
    CodeChooser { align: center middle; }
    CodeChooser > Vertical {
        width: 80; max-width: 100%; height: auto; max-height: 80%; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    CodeChooser Label { width: 100%; margin-bottom: 1; }
    CodeChooser OptionList { height: auto; max-height: 16; border: none; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, blocks: list[str]) -> None:
        super().__init__()
        self.blocks = blocks

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Content(f"Copy which code block? ({len(self.blocks)} in this message)"))
            yield OptionList(
                *(Option(Content(preview(i + 1, b))) for i, b in enumerate(self.blocks))
            )

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option_index)

    def on_key(self, event: events.Key) -> None:
        if event.character is not None and event.character.isdigit():
            n = int(event.character)
            if 1 <= n <= len(self.blocks):
                event.stop()
                self.dismiss(n - 1)
