"""The conversation list: an OptionList, so only visible rows are rendered."""

from __future__ import annotations

import contextlib

from textual.content import Content
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from ...sanitize import sanitize
from ...store import Conversation
from ..formatting import clock


class ConversationList(OptionList):
    DEFAULT_CSS = """
    ConversationList {
        width: 32; height: 1fr; border: none; border-right: vkey $surface-lighten-2;
    }
    """

    def show(self, conversations: list[Conversation], current: int | None) -> None:
        """Replace the rows, keeping the open conversation highlighted."""
        options = [
            Option(
                Content.assemble(
                    ("↳ " if c.branch_of else "") + (sanitize(c.title) or "(untitled)")[:40],
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
