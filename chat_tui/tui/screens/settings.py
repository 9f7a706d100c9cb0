"""Settings in the app: endpoint, model, system prompt, theme, notices; where
things live. Saved to config.toml by the app (comments and layout kept).

The model list comes from the endpoint's ``/models`` and is cached in the data
dir, so it is there offline too; any name may still be typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from ...config import NOTIFY_CHOICES, Settings
from ...sanitize import sanitize


@dataclass(frozen=True)
class SettingsChange:
    """The settings the user changed (only those), ready to save."""

    values: dict[str, Any]


class SettingsScreen(ModalScreen[SettingsChange | None]):
    DEFAULT_CSS = """
    SettingsScreen { align: center middle; }
    SettingsScreen > VerticalScroll {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        padding: 0 2; border: thick $primary; background: $surface;
    }
    SettingsScreen Label { width: 100%; margin-top: 1; color: $text-muted; }
    SettingsScreen Input, SettingsScreen Select { background: $boost; }
    SettingsScreen .title { text-style: bold; color: $text; margin-top: 0; }
    SettingsScreen #models { height: auto; max-height: 6; border: none; }
    SettingsScreen .paths { color: $text-muted; height: auto; margin-top: 1; }
    SettingsScreen Horizontal { height: auto; align-horizontal: right; margin: 1 0; }
    SettingsScreen Button { margin-left: 1; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, settings: Settings, themes: list[str], theme: str, models: list[str]):
        super().__init__()
        self.settings = settings
        self.themes = themes
        self.theme = theme
        self.models = models

    def compose(self) -> ComposeResult:
        s = self.settings
        with VerticalScroll():
            yield Label(Content("Settings — saved to config.toml"), classes="title")
            yield Label(Content("Endpoint URL (the part before /chat/completions)"))
            yield Input(s.base_url, id="base_url", compact=True)
            yield Label(Content("Model (pick one below, or type any name)"))
            yield Input(s.model, id="model", compact=True)
            yield OptionList(*self._model_options(), id="models")
            yield Label(Content("System prompt for new conversations (empty: none)"))
            yield Input(s.system_prompt, id="system_prompt", compact=True)
            yield Label(Content("Theme"))
            yield Select(
                [(t, t) for t in self.themes],
                value=self.theme,
                allow_blank=False,
                id="theme",
                compact=True,
            )
            yield Label(Content("When a reply lands unseen"))
            yield Select(
                [(n, n) for n in NOTIFY_CHOICES],
                value=s.notify,
                allow_blank=False,
                id="notify",
                compact=True,
            )
            yield Static(
                Content(f"config: {s.config_path}\ndata:   {s.db_path}\nlog:    {s.log_path}"),
                classes="paths",
            )
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    def _model_options(self) -> list[Option]:
        if not self.models:
            return [Option(Content("(no model list from the endpoint yet)"), disabled=True)]
        return [Option(Content(sanitize(m)), id=m) for m in self.models]

    def on_mount(self) -> None:
        self.query_one("#base_url", Input).focus()

    def show_models(self, models: list[str]) -> None:
        """The endpoint answered with its model list (after the screen opened)."""
        self.models = models
        listing = self.query_one("#models", OptionList)
        listing.set_options(self._model_options())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.query_one("#model", Input).value = event.option.id
            self.query_one("#system_prompt", Input).focus()

    def on_input_submitted(self) -> None:
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        s = self.settings
        entered: dict[str, Any] = {
            "base_url": self.query_one("#base_url", Input).value.strip().rstrip("/"),
            "model": self.query_one("#model", Input).value.strip(),
            "system_prompt": self.query_one("#system_prompt", Input).value,
            "theme": self.query_one("#theme", Select).value,
            "notify": self.query_one("#notify", Select).value,
        }
        if not entered["base_url"].startswith(("http://", "https://")):
            self.notify("The endpoint URL must start with http:// or https://.", markup=False)
            self.query_one("#base_url", Input).focus()
            return
        if not entered["model"]:
            self.notify("Give a model name.", markup=False)
            self.query_one("#model", Input).focus()
            return
        current = {"theme": self.theme} | {k: getattr(s, k) for k in entered if k != "theme"}
        changed = {k: v for k, v in entered.items() if v != current[k]}
        self.dismiss(SettingsChange(changed))
