"""The table of commands: keys, footer, palette and help come from it, and what
a command needs (the core, a conversation) greys it out until it is there."""

from __future__ import annotations

from pathlib import Path

from chat_tui.tui.app import ChatApp
from chat_tui.tui.commands import COMMANDS, key_text, palette_commands
from chat_tui.tui.screens.chat import ChatScreen
from tests.fault_server import FaultServer
from tests.helpers import app_settings, views, wait_until


def test_every_command_is_an_action_of_its_screen_or_the_app() -> None:
    for command in COMMANDS:
        if command.action:
            owner = ChatApp if command.app else ChatScreen
            assert hasattr(owner, f"action_{command.action}"), command
    assert [key_text(k) for k in ("ctrl+o", "f3", "alt+left", "pageup,pagedown")] == [
        "Ctrl+O",
        "F3",
        "Alt+←",
        "Pageup",
    ]


def _messages(app: ChatApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_what_needs_a_conversation_is_greyed_and_says_why(
    server: FaultServer, tmp_path: Path
) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.core is not None and app.drafts.loaded)
        assert app.current is None
        rename = app.screen.active_bindings["f2"]
        assert rename.binding.action == "rename" and not rename.enabled
        assert app.screen.active_bindings["ctrl+o"].enabled  # the core is there
        await pilot.press("f2")  # no dialog: it says why
        await pilot.pause(0.1)
        assert "Nothing to rename yet: send a first message." in _messages(app)
        assert app.screen is app.chat_screen
        app.clear_notifications()
        (export,) = [c for c in palette_commands(app) if c.title == "Export conversation"]
        assert export.help.endswith("(F4)")
        await export.callback()
        await pilot.pause(0.1)
        assert "Nothing to export yet." in _messages(app)
        await pilot.press(*"a first message", "enter")
        await wait_until(pilot, lambda: app.current is not None and len(views(app)) >= 1)
        assert app.screen.active_bindings["f2"].enabled
        await pilot.press("f2")
        await wait_until(pilot, lambda: app.screen is not app.chat_screen)
        await pilot.press("escape")
