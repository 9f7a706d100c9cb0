"""Issue 12: the first start, settings in the app, help, layout at 80×24, keyboard."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, OptionList, Static

from chat_tui.tui.app import ChatApp
from chat_tui.tui.screens.chat import ChatScreen
from chat_tui.tui.screens.help import HelpScreen
from chat_tui.tui.screens.settings import SettingsScreen
from chat_tui.tui.widgets.chat_view import ChatView
from chat_tui.tui.widgets.sidebar import ConversationList
from chat_tui.tui.widgets.status import OfflineBanner, StatusLine
from tests.fault_server import FaultServer
from tests.helpers import app_settings, online, seed_history, views, wait_until


async def test_first_start_shows_a_welcome_with_the_endpoint_and_keys(
    server: FaultServer, tmp_path: Path
) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: bool(app.query(".welcome")))
        text = str(app.query_one(".welcome", Static).render())
        assert "Welcome to chat-tui" in text
        assert server.base_url in text and "F3" in text
        assert "Enter" in text and "Ctrl+J" in text and "F1" in text


async def test_offline_banner_takes_at_most_two_rows_at_80x24(
    server: FaultServer, tmp_path: Path
) -> None:
    server.stop()
    app = ChatApp(app_settings(server, tmp_path, probe_cap=0.5))
    async with app.run_test(size=(80, 24)) as pilot:
        banner = app.query_one(OfflineBanner)
        await wait_until(pilot, lambda: banner.has_class("-visible"))
        await pilot.press(*"queued one", "enter")
        await pilot.pause(0.3)
        assert 1 <= banner.size.height <= 2


async def test_settings_screen_saves_keeping_comments_and_uses_the_new_endpoint(
    server: FaultServer, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('# mine\nbase_url = "http://127.0.0.1:9/v1"  # nothing here\n')
    app = ChatApp(
        app_settings(server, tmp_path, base_url="http://127.0.0.1:9/v1", config_path=config)
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "offline")
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        screen = app.screen
        screen.query_one("#base_url", Input).value = server.base_url
        await pilot.pause()
        screen.query_one("#model", Input).value = "picked-model"
        screen.action_save()
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await wait_until(pilot, lambda: online(app))
        text = config.read_text()
        assert text.startswith("# mine\n")
        assert f'base_url = "{server.base_url}"  # nothing here' in text
        assert 'model = "picked-model"' in text
        await pilot.press(*"over there", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 2)
        chat = [r for r in server.requests if r.path.endswith("/chat/completions")]
        assert chat[0].body["model"] == "picked-model"
        # The model list came from /models and is kept for offline use.
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        models = app.screen.query_one("#models", OptionList)
        await wait_until(pilot, lambda: models.get_option_at_index(0).id == "test-model")
        assert "test-model" in (tmp_path / "models.json").read_text()
        await pilot.press("escape")


async def test_help_lists_every_bound_key(server: FaultServer, tmp_path: Path) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = str(app.screen.query_one(Static).render())
        for binding in [*ChatScreen.BINDINGS, *ChatView.BINDINGS]:
            description = binding.tooltip or binding.description
            assert description in text, description
        assert "New line" in text and "Send the message" in text


async def test_narrow_terminal_hides_the_sidebar_and_ctrl_b_overlays_it(
    server: FaultServer, tmp_path: Path
) -> None:
    await seed_history(tmp_path / "chat.db", [("q", "a")], title="a very long title " * 4)
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        sidebar = app.query_one(ConversationList)
        chat = app.query_one(ChatView)
        assert not sidebar.display
        width = chat.size.width
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert sidebar.display and chat.size.width == width  # over the chat, not beside
        status = app.query_one(StatusLine)
        assert sidebar.region.bottom == status.region.y  # the status line and keys stay
        prompt = str(sidebar.get_option_at_index(0).prompt)
        assert prompt.splitlines()[0].endswith("…")
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert not sidebar.display
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        assert app.query_one(ConversationList).display


async def test_footer_keys_are_whole_at_80_columns(server: FaultServer, tmp_path: Path) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        from textual.widgets import Footer

        footer = app.query_one(Footer)
        keys = [b for b in ChatScreen.BINDINGS if b.show]
        shown = sum(len(app.get_key_display(b)) + len(b.description) + 2 for b in keys)
        assert shown + 12 <= footer.size.width  # with room for the palette hint


async def test_typing_in_the_chat_or_list_goes_to_the_composer(
    server: FaultServer, tmp_path: Path
) -> None:
    await seed_history(tmp_path / "chat.db", [("q", "a")])
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        app.query_one(ConversationList).focus()
        await pilot.press(*"hel")
        app.query_one(ChatView).focus()
        await pilot.press(*"lo")
        assert app.composer.text == "hello"
        assert app.focused is app.composer


async def test_page_keys_scroll_the_chat_from_the_composer(
    server: FaultServer, tmp_path: Path
) -> None:
    pairs = [(f"question {i}", "\n\n".join(f"line {n}" for n in range(8))) for i in range(12)]
    await seed_history(tmp_path / "chat.db", pairs)
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 24)
        chat = app.query_one(ChatView)
        await wait_until(pilot, lambda: 0 < chat.max_scroll_y == chat.scroll_y)
        bottom = chat.scroll_y
        assert bottom > 0
        await pilot.press("pageup")
        await wait_until(pilot, lambda: chat.scroll_y < bottom)
        assert chat.scroll_y < bottom and app.focused is app.composer
        await pilot.press("ctrl+home")
        await wait_until(pilot, lambda: chat.scroll_y == 0)
        assert chat.scroll_y == 0
        await pilot.press("ctrl+end")
        await wait_until(pilot, lambda: chat.scroll_y == chat.max_scroll_y)
        assert chat.scroll_y == chat.max_scroll_y


async def test_header_shows_title_and_model(server: FaultServer, tmp_path: Path) -> None:
    await seed_history(tmp_path / "chat.db", [("q", "a")], title="Geography")
    app = ChatApp(app_settings(server, tmp_path, model="the-model"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        header = app.query_one("#header", Static)
        await wait_until(pilot, lambda: "Geography" in str(header.render()))
        assert "the-model" in str(header.render())
