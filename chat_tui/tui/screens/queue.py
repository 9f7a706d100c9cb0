"""Every message still waiting, in every conversation: retry, edit, cancel, resend."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from ...sanitize import sanitize
from ..formatting import message_status

if TYPE_CHECKING:
    from ...store import QueueItem


class QueueScreen(ModalScreen["QueueItem | None"]):
    """The queue. Retry, edit and cancel go to ``act`` (the owner shows the new items
    through ``show_items``); choosing a message closes the screen with it."""

    DEFAULT_CSS = """
    QueueScreen { align: center middle; }
    QueueScreen > Vertical {
        width: 90%; height: 80%; border: thick $primary; background: $surface;
    }
    QueueScreen .title { height: 1; padding: 0 1; background: $primary 30%; }
    QueueScreen OptionList { height: 1fr; border: none; }
    """
    BINDINGS = [
        Binding("escape,q", "dismiss(None)", "Close"),
        Binding("r", "act('retry')", "Retry / resend"),
        Binding("e", "act('edit')", "Edit"),
        Binding("c,delete", "act('cancel')", "Cancel message"),
        Binding("enter", "act('open')", "Open conversation", show=False),
    ]

    def __init__(self, items: list[QueueItem], act: Callable[[str, QueueItem], None]) -> None:
        super().__init__()
        self.items = items
        self.act = act  # (retry | edit | cancel, item)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Content("Queue — messages not yet delivered"), classes="title")
            yield OptionList(id="queue-items")
        yield Footer()

    def on_mount(self) -> None:
        self.show_items(self.items)
        self.query_one(OptionList).focus()

    def show_items(self, items: list[QueueItem]) -> None:
        self.items = items
        option_list = self.query_one(OptionList)
        highlighted = option_list.highlighted
        blocked = _blocked_ids(items)
        options = [
            Option(
                Content.assemble(
                    (f"#{item.message.id} ", "bold"),
                    sanitize(item.conversation_title)[:30] or "(untitled)",
                    " · ",
                    (sanitize(message_status(item.message))[:90], _style(item.message.state)),
                    (
                        " · waiting for the failed message above"
                        if item.message.id in blocked
                        else "",
                        "$text-muted",
                    ),
                    "\n  ",
                    sanitize(item.message.content.replace("\n", " "))[:100],
                ),
                id=str(item.message.id),
            )
            for item in items
        ] or [Option(Content("Nothing waiting: every message has been delivered."), disabled=True)]
        option_list.set_options(options)
        if items:
            option_list.highlighted = min(highlighted or 0, len(items) - 1)

    def action_act(self, action: str) -> None:
        index = self.query_one(OptionList).highlighted
        if index is None or index >= len(self.items):
            return
        if action == "open":
            self.dismiss(self.items[index])
        else:
            self.act(action, self.items[index])

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_act("open")


def _style(state: str) -> str:
    return {"failed": "$error", "expired": "$error", "sending": "$accent"}.get(state, "$warning")


def _blocked_ids(items: list[QueueItem]) -> set[int]:
    """Queued messages behind a failed or expired one of their conversation
    (items come ordered by conversation, then seq)."""
    failed_in: set[int] = set()
    blocked: set[int] = set()
    for item in items:
        m = item.message
        if m.state in ("failed", "expired"):
            failed_in.add(m.conversation_id)
        elif m.state == "queued" and m.conversation_id in failed_in:
            blocked.add(m.id)
    return blocked
