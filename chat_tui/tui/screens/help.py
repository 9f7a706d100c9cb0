"""F1: every key, generated from the table of commands (``tui/commands.py``) and
the bindings of the widgets and screens, so it cannot drift from what the keys
really do."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static


def every_key() -> list[tuple[str, list]]:
    """The table of commands' keys, then the chat's and the queue's own."""
    from ..commands import help_sections
    from ..widgets.chat_view import ChatView
    from .queue import QueueScreen

    return help_sections(
        [("Messages (after Tab)", ChatView.BINDINGS), ("Queue (Ctrl+O)", QueueScreen.BINDINGS)]
    )


def binding_rows(app, sections: Iterable[tuple[str, list]]) -> list[tuple[str, str, str]]:
    """(section, keys, description) for every binding with a description."""
    rows: list[tuple[str, str, str]] = []
    for section, bindings in sections:
        for item in bindings:
            binding = item if isinstance(item, Binding) else Binding(*item)
            description = binding.tooltip or binding.description
            if not description:
                continue
            keys = " / ".join(
                binding.key_display or app.get_key_display(Binding(key, binding.action))
                for key in binding.key.split(",")
            )
            rows.append((section, keys, description))
    return rows


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        padding: 0 2; border: thick $primary; background: $surface;
    }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def __init__(self, sections: Iterable[tuple[str, list]] | None = None) -> None:
        """``sections``: (heading, bindings); by default every key of the app."""
        super().__init__()
        self.sections = list(sections) if sections is not None else every_key()

    def compose(self) -> ComposeResult:
        parts: list[str | tuple[str, str]] = [("Keys", "bold"), "  (Esc closes)"]
        section = None
        for where, keys, description in binding_rows(self.app, self.sections):
            if where != section:
                section = where
                parts += ["\n\n", (where, "bold $accent")]
            parts += ["\n", (f"{keys:>18}", "bold"), "  ", description]
        with VerticalScroll():
            yield Static(Content.assemble(*parts))
