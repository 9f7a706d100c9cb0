"""Settings in the app, as a mixin of ChatApp: the theme and the look of
Markdown and code, the settings dialog (F3) and saving to config.toml
(comments and layout kept). A new endpoint or model reopens the core
(``ChatApp.reopen_core``).

The model list comes from the endpoint's ``/models`` and is cached in the data
dir (``models.json``, by endpoint URL), so the dialog offers it offline too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from textual import work
from textual.css.query import NoMatches

from ..config import Settings

if TYPE_CHECKING:
    from .app import ChatApp
    from .screens.settings import SettingsScreen

log = logging.getLogger(__name__)


def cached_models(settings: Settings) -> list[str]:
    """The endpoint's models as last fetched (none if never, or unreadable)."""
    import json  # not on the path to the first frame

    try:
        data = json.loads((settings.data_dir / "models.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    models = data.get(settings.base_url) if isinstance(data, dict) else None
    return [str(m) for m in models] if isinstance(models, list) else []


def remember_models(settings: Settings, models: list[str]) -> None:
    import json

    path = settings.data_dir / "models.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if not isinstance(data, dict):
            data = {}
        data[settings.base_url] = models
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    except (OSError, ValueError) as exc:
        log.info("model list not cached: %s", exc)


class SettingsFlow:
    """Mixed into ChatApp: relies on its settings, core and chat screen."""

    _theme_ready = False  # set once the configured theme is on: a change is then the user's
    _console_theme_pushed = False

    def _apply_look(self: ChatApp) -> None:
        """Markdown and code follow the app's theme (light code styles in light themes)."""
        from .rendering import console_theme, look

        look.dark = self.current_theme.dark
        if self._console_theme_pushed:
            self.console.pop_theme()
        self.console.push_theme(console_theme(self.current_theme))
        self._console_theme_pushed = True

    def watch_theme(self: ChatApp, theme: str) -> None:
        if not self._theme_ready:
            return
        self._apply_look()
        with contextlib.suppress(NoMatches):
            self.chat.restyle()
        self._save_setting("theme", theme)

    @work(group="save-settings", thread=True, exit_on_error=False)
    def _save_setting(self: ChatApp, key: str, value: object) -> None:
        """Write one setting to config.toml (comments and layout kept)."""
        from ..config import ConfigError
        from ..config_file import save_settings

        try:
            save_settings(self.settings.config_path, {key: value})
        except ConfigError as exc:
            self.call_from_thread(
                self.notify, f"Not saved: {exc}", severity="warning", markup=False
            )
            return
        self.settings = self.settings.replace(**{key: value})

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_settings(self: ChatApp) -> None:
        from .screens.settings import SettingsScreen

        cached = cached_models(self.settings)
        screen = SettingsScreen(self.settings, sorted(self.available_themes), self.theme, cached)
        self._fetch_models(screen)
        change = await self.push_screen_wait(screen)
        if change is None or not change.values:
            return
        await self._apply_settings(change.values)

    @work(group="models", exclusive=True, exit_on_error=False)
    async def _fetch_models(self: ChatApp, screen: SettingsScreen) -> None:
        """Ask the endpoint for its models; show them and keep them for offline use."""
        from ..endpoint import DeliveryError

        if not await self.core_ready() or self.core is None:
            return
        try:
            models = await self.core.endpoint.list_models()
        except DeliveryError as exc:
            log.info("model list not available: %s", exc)
            return
        if screen.is_attached:
            screen.show_models(models)
        remember_models(self.settings, models)

    async def _apply_settings(self: ChatApp, values: dict[str, object]) -> None:
        """Save to config.toml (comments kept), then use the new values now."""
        from ..config import ConfigError
        from ..config_file import save_settings

        try:
            await asyncio.to_thread(save_settings, self.settings.config_path, values)
        except ConfigError as exc:
            self.notify(f"Settings not saved: {exc}", severity="error", markup=False)
            return
        theme = values.pop("theme", None)
        self.settings = self.settings.replace(**values)
        if theme is not None:
            self._theme_ready = False  # already saved with the rest
            self.theme = str(theme)
            self._apply_look()
            self.chat.restyle()
            self._theme_ready = True
        if {"base_url", "model", "system_prompt"} & values.keys():
            await self.reopen_core()
        self.notify("Settings saved.", markup=False, timeout=3)
