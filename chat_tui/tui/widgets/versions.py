"""What the chat window adds for endpoints and turns: the fallback answer's live block
and a picker for the message to edit into a branch.

Kept apart from chat_view.py: the live block mounts into the ChatView beside
the messages (in seq order) and goes away when the stored notice arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from ...sanitize import sanitize

if TYPE_CHECKING:
    from textual.widgets.markdown import MarkdownStream

    from ...store import Message
    from .chat_view import ChatView


class LocalAnswerBlock(Vertical):
    """A fallback endpoint's answer while it streams, labelled as such."""

    DEFAULT_CSS = """
    LocalAnswerBlock { height: auto; padding: 0 1; margin: 0 0 1 0; border: round $warning; }
    LocalAnswerBlock > .header { height: auto; color: $warning; }
    LocalAnswerBlock > Markdown { margin: 0; padding: 0; }
    """

    def __init__(self, question: Message, label: str) -> None:
        super().__init__()
        from textual.widgets import Markdown

        self.question = question
        self.label = label
        self.markdown = Markdown("", open_links=False)
        self._stream: MarkdownStream | None = None
        self.received = 0

    def compose(self) -> ComposeResult:
        header = (
            f"{sanitize(self.label)} · streaming… "
            "(Esc stops it; Ctrl+L keeps it and cancels the question)"
        )
        yield Static(Content(header), classes="header", markup=False)
        yield self.markdown

    async def write(self, text: str) -> None:
        if self._stream is None:
            self._stream = self.markdown.get_stream(self.markdown)
        self.received += len(text)
        await self._stream.write(sanitize(text))

    async def stop(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.stop()


async def mount_local_answer(chat: ChatView, question: Message, label: str) -> LocalAnswerBlock:
    """Put the live block right after the question (before anything later)."""
    block = LocalAnswerBlock(question, label)
    later = [
        v
        for v in chat.query("MessageView")
        if getattr(v, "message", None) is not None and v.message.seq > question.seq  # type: ignore[attr-defined]
    ]
    before = min(later, key=lambda v: v.message.seq) if later else None  # type: ignore[attr-defined]
    await chat.mount(block, before=before)
    chat.scroll_end(animate=False)
    return block


class PickMessage(ModalScreen[int | None]):
    """Choose one of the conversation's questions (to edit it into a branch)."""

    DEFAULT_CSS = """
    PickMessage { align: center middle; }
    PickMessage > Vertical {
        width: 80; height: auto; max-height: 80%; padding: 1 2; border: thick $primary;
        background: $surface;
    }
    PickMessage OptionList { height: auto; max-height: 20; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, questions: list[Message]) -> None:
        super().__init__()
        self.title_text = title
        self.questions = questions

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Content(self.title_text))
            yield OptionList(
                *(
                    Option(
                        Content(sanitize(m.content.splitlines()[0] if m.content else "")[:70]),
                        id=str(m.id),
                    )
                    for m in self.questions
                )
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id) if event.option.id else None)
