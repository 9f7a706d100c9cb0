"""The conversation list: an OptionList, so only visible rows are rendered."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from textual.content import Content
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from ...sanitize import sanitize
from ..formatting import clock

if TYPE_CHECKING:
    from ...store import Conversation

TITLE_WIDTH = 28  # the list is 32 wide: padding, scrollbar and border take the rest


def ellipsis(text: str, width: int) -> str:
    """One line, cut with an ellipsis rather than wrapped."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


class ConversationList(OptionList):
    DEFAULT_CSS = """
    ConversationList {
        dock: left; width: 32; height: 1fr; border: none; border-right: vkey $surface-lighten-2;
        margin-bottom: 2;  /* above the status line and the footer (app.tcss) */
    }
    ConversationList.-overlay {
        layer: overlay; border-right: thick $primary; background: $surface;
    }
    """

    def show(self, conversations: list[Conversation], current: int | None) -> None:
        """Replace the rows, keeping the open conversation highlighted."""
        options = [
            Option(
                Content.assemble(
                    ("↳ " if c.branch_of else "")
                    + ellipsis(
                        sanitize(c.title) or "(untitled)", TITLE_WIDTH - 2 * bool(c.branch_of)
                    ),
                    "\n",
                    (clock(c.updated_at), "dim"),
                    (f" · branch of #{c.branch_of}", "dim") if c.branch_of else "",
                ),
                id=str(c.id),
            )
            for c in conversations
        ]
        self.set_options(options)
        if current is not None:
            # The open conversation may be new and not listed yet.
            with contextlib.suppress(OptionDoesNotExist):
                self.highlighted = self.get_option_index(str(current))
