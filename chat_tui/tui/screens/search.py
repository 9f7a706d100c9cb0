"""Full-text search of every conversation; a result opens its conversation at that message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from ...sanitize import sanitize
from ..formatting import clock

if TYPE_CHECKING:
    from ...store import SearchHit


@dataclass(frozen=True)
class SearchChoice:
    conversation_id: int
    seq: int
    message_id: int


class SearchScreen(ModalScreen[SearchChoice | None]):
    """Search as the user types (``search`` gives the hits of a query); choosing a
    hit closes the screen with it."""

    DEFAULT_CSS = """
    SearchScreen { align: center middle; }
    SearchScreen > Vertical {
        width: 90%; height: 80%; border: thick $primary; background: $surface;
    }
    SearchScreen OptionList { height: 1fr; border: none; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("down", "focus_results", "Results", show=False),
    ]

    def __init__(self, search: Callable[[str], Awaitable[list[SearchHit]]]) -> None:
        super().__init__()
        self.search = search
        self.hits: list[SearchHit] = []
        self.shown_query: str | None = None  # the query whose results are on screen

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Input(placeholder="Search every conversation…", id="search-input")
            yield OptionList(id="search-results")

    def on_input_changed(self, event: Input.Changed) -> None:
        self.run_search(event.value)

    def on_input_submitted(self) -> None:
        self.action_focus_results()

    def action_focus_results(self) -> None:
        results = self.query_one(OptionList)
        if results.option_count:
            results.focus()
            if results.highlighted is None:
                results.highlighted = 0

    @work(group="search", exclusive=True, exit_on_error=False)
    async def run_search(self, query: str) -> None:
        hits = await self.search(query) if query.strip() else []
        self.hits = hits
        options = [
            Option(
                Content.assemble(
                    (sanitize(h.conversation_title)[:40] or "(untitled)", "bold"),
                    (f" · {h.message.role} · {clock(h.message.created_at)}", "dim"),
                    "\n  ",
                    " ".join(sanitize(h.snippet).split())[:120],
                )
            )
            for h in hits
        ]
        results = self.query_one(OptionList)
        results.set_options(options)
        self.shown_query = query

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        hit = self.hits[event.option_index]
        self.dismiss(SearchChoice(hit.message.conversation_id, hit.message.seq, hit.message.id))
