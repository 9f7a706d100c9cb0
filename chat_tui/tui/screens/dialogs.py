"""Small modal dialogs: ask for a line of text, or confirm."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 64; max-width: 100%; height: auto; max-height: 100%; padding: 1 2;
    border: thick $primary; background: $surface;
}}
{name} > Vertical > Label {{ width: 100%; height: auto; }}
{name} Horizontal {{ height: auto; align-horizontal: right; margin-top: 1; }}
{name} Button {{ margin-left: 1; }}
"""


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text (rename, a model name…). Escape cancels."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TextPrompt")
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Content(self.title_text))
            yield Input(value=self.value, placeholder=self.placeholder, select_on_focus=True)
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("OK", id="ok", variant="primary")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one(Input).value if event.button.id == "ok" else None)


class Confirm(ModalScreen[bool]):
    """Yes or no. Escape and 'n' say no."""

    DEFAULT_CSS = DIALOG_CSS.format(name="Confirm")
    BINDINGS = [Binding("escape,n", "dismiss(False)", "No"), Binding("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Content(self.question))
            with Horizontal():
                yield Button("No", id="no")
                yield Button(self.yes, id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class EditMessage(ModalScreen[str | None]):
    """Edit a waiting message's text before it is resent. Escape cancels."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="EditMessage")
        + """
    EditMessage TextArea { height: 10; }
    """
    )
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        from textual.widgets import TextArea

        with Vertical():
            yield Label(Content("Edit the message, then resend it (Tab moves to the buttons)"))
            yield TextArea(self.text, soft_wrap=True, tab_behavior="focus")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Resend", id="ok", variant="primary")

    def on_mount(self) -> None:
        from textual.widgets import TextArea

        area = self.query_one(TextArea)
        area.move_cursor(area.document.end)
        area.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        from textual.widgets import TextArea

        text = self.query_one(TextArea).text
        self.dismiss(text if event.button.id == "ok" and text.strip() else None)


class StopWaiting(ModalScreen[str | None]):
    """A reply that has not started: send the message again later, or cancel it.
    Escape keeps waiting."""

    DEFAULT_CSS = DIALOG_CSS.format(name="StopWaiting")
    BINDINGS = [Binding("escape", "dismiss(None)", "Keep waiting")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                Content(
                    "No reply has started yet. Stop waiting, and put the message back "
                    "in the queue or cancel it? (A cancelled message stays in history.)"
                )
            )
            with Horizontal():
                yield Button("Keep waiting", id="wait")
                yield Button("Back to the queue", id="requeue", variant="primary")
                yield Button("Cancel message", id="cancel", variant="error")

    def on_mount(self) -> None:
        self.query_one("#requeue", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "wait" else event.button.id)
