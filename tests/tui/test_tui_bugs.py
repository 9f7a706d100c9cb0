"""Issue 12: regression tests for the chat window's bugs, through Pilot against
the real loopback server and a real database."""

from __future__ import annotations

from pathlib import Path

from textual import events
from textual.widgets import Input, Label, OptionList

from chat_tui.tui.app import ChatApp
from chat_tui.tui.screens.dialogs import Confirm, EditMessage, TextPrompt
from chat_tui.tui.screens.queue import QueueScreen
from chat_tui.tui.screens.search import SearchScreen
from chat_tui.tui.widgets.chat_view import ChatView, StreamingReply
from chat_tui.tui.widgets.composer import NEWLINE_KEYS
from chat_tui.tui.widgets.status import StatusLine
from tests.fault_server import Fault, FaultServer
from tests.helpers import REPO_ROOT, app_settings, online, seed_history, views, wait_until


def user_texts(app: ChatApp) -> list[str]:
    return [v.message.content for v in views(app) if v.message.role == "user"]


def chat_bodies(server: FaultServer) -> list[str]:
    return [
        r.body["messages"][-1]["content"]
        for r in server.requests
        if r.path.endswith("/chat/completions") and r.body
    ]


async def test_text_typed_before_the_commit_is_kept_and_not_sent_twice(
    server: FaultServer, tmp_path: Path
) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        composer = app.composer
        # One burst, as a paste without bracketed paste arrives: the keys reach the
        # composer before the app has committed the first line.
        burst = [*"line1", "enter", *"line2"]
        for key in burst:
            char = "\r" if key == "enter" else key
            composer.post_message(events.Key(key, char))
        await wait_until(pilot, lambda: user_texts(app) == ["line1"])
        await wait_until(pilot, lambda: composer.text == "line2")
        assert composer.text == "line2"
        await pilot.press("enter")
        await wait_until(pilot, lambda: len([v for v in views(app)]) == 4)
        assert user_texts(app) == ["line1", "line2"]
        assert composer.text == ""
    assert sorted(chat_bodies(server)) == ["line1", "line2"]


async def test_a_second_enter_before_the_commit_sends_only_the_new_part(
    server: FaultServer, tmp_path: Path
) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        composer = app.composer
        for key in [*"one", "enter", *"two", "enter", *"three"]:
            composer.post_message(events.Key(key, "\r" if key == "enter" else key))
        await wait_until(pilot, lambda: user_texts(app) == ["one", "two"])
        await wait_until(pilot, lambda: composer.text == "three")
        await wait_until(pilot, lambda: len(views(app)) == 4)
    assert sorted(chat_bodies(server)) == ["one", "two"]


async def test_streaming_reply_follows_the_end_in_a_new_conversation(
    server: FaultServer, tmp_path: Path
) -> None:
    long_reply = "\n\n".join(f"Paragraph {i} of a long answer." for i in range(60))
    server.reply_fn = lambda body: long_reply
    server.push(Fault("slow", seconds=0.6))
    app = ChatApp(app_settings(server, tmp_path, read_timeout=5.0))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"tell me a lot", "enter")
        chat = app.query_one(ChatView)
        # Mid-stream: more than a screenful arrived, and the view is at its end.
        await wait_until(
            pilot,
            lambda: any(s.received > len(long_reply) // 3 for s in chat._streams.values()),
        )
        await wait_until(pilot, lambda: chat.max_scroll_y > 5)
        await pilot.pause(0.3)
        assert chat._streams, "the reply finished before the check"
        assert chat.scroll_y >= chat.max_scroll_y - 1, (chat.scroll_y, chat.max_scroll_y)


async def test_search_hit_lands_on_the_message_found(server: FaultServer, tmp_path: Path) -> None:
    tall = "\n\n".join(f"- filler line {n}" for n in range(20))
    pairs = [
        (f"question {i}", ("needlepoint" if i == 55 else "hay") + f" {i}\n\n{tall}")
        for i in range(60)
    ]
    await seed_history(tmp_path / "chat.db", pairs, title="tall messages")
    await seed_history(tmp_path / "chat.db", [("other", "short")], title="newest")
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        await pilot.press("ctrl+f")
        await pilot.press(*"needlepoint")
        await wait_until(
            pilot,
            lambda: (
                isinstance(app.screen, SearchScreen)
                and app.screen.shown_query == "needlepoint"
                and bool(app.screen.hits)
            ),
        )
        await pilot.press("enter", "enter")
        chat = app.query_one(ChatView)
        await wait_until(pilot, lambda: any(v.has_class("found") for v in views(app)))
        await pilot.pause(0.5)
        found = next(v for v in views(app) if v.has_class("found"))
        assert found.message.content.startswith("needlepoint 55")
        top = found.virtual_region.y - chat.scroll_y
        assert 0 <= top < chat.scrollable_content_region.height, (top, chat.scroll_y)


async def test_empty_streaming_bubble_goes_when_the_endpoint_goes_offline(
    server: FaultServer, tmp_path: Path
) -> None:
    server.push(Fault("hang", seconds=20))
    app = ChatApp(app_settings(server, tmp_path, read_timeout=30.0))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"anyone there", "enter")
        chat = app.query_one(ChatView)
        await wait_until(pilot, lambda: bool(chat._streams))
        assert list(app.query(StreamingReply))
        # Another request (here: the core's own report, as a failed connect to the
        # endpoint makes it) finds the endpoint gone while this one hangs.
        assert app.core is not None
        app.core.reachability.report_unreachable("connection refused")
        await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "offline")
        await wait_until(pilot, lambda: not list(app.query(StreamingReply)))
        # The request is still hanging: the bubble went because of the state, not an abort.
        assert any(r.fault == "hang" and r.outcome == "pending" for r in server.requests)
        assert [v.message.state for v in views(app)] == ["sending"]


async def test_queued_message_behind_a_failed_one_says_why(
    server: FaultServer, tmp_path: Path
) -> None:
    server.push(Fault(kind="status", status=400, body='{"error": {"message": "bad first"}}'))
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"first", "enter")
        await wait_until(pilot, lambda: [v.message.state for v in views(app)] == ["failed"])
        await pilot.press(*"second", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 2)
        second = views(app)[1]
        assert second.message.state == "queued"
        assert "waiting for the failed message above" in second.header_text
        assert "waiting for the failed message above" not in views(app)[0].header_text
        await pilot.press("ctrl+o")
        await wait_until(
            pilot,
            lambda: (
                isinstance(app.screen, QueueScreen)
                and app.screen.query_one(OptionList).option_count == 2
            ),
        )
        queue = app.screen
        assert isinstance(queue, QueueScreen)
        rows = [str(queue.query_one(OptionList).get_option_at_index(i).prompt) for i in (0, 1)]
        assert "waiting for the failed message above" not in rows[0]
        assert "waiting for the failed message above" in rows[1]


async def test_delete_dialog_shows_the_whole_question_at_80x24(
    server: FaultServer, tmp_path: Path
) -> None:
    title = "A rather long conversation title about the migration of swallows in late autumn"
    await seed_history(tmp_path / "chat.db", [("q", "a")], title=title)
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.pause(0.1)
        label = app.screen.query_one(Label)
        assert label.size.height >= 2  # wrapped, not cut
        text = " ".join(
            "".join(seg.text for seg in strip) for strip in label.render_lines(label.size.region)
        )
        assert "autumn" in text and "messages?" in text
        await pilot.press("escape")


async def test_edit_dialog_hint_keeps_its_closing_bracket(
    server: FaultServer, tmp_path: Path
) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(EditMessage("some text"))
        await pilot.pause(0.2)
        label = app.screen.query_one(Label)
        text = "".join(
            "".join(seg.text for seg in strip) for strip in label.render_lines(label.size.region)
        )
        assert "buttons)" in text


def test_alt_enter_is_not_offered_as_a_newline_key() -> None:
    """Under tmux/xterm Alt+Enter arrives as ESC then CR; the parser reads an Enter
    from it, so it can only send. It must not be promised anywhere."""
    from textual._xterm_parser import XTermParser

    parser = XTermParser()
    events_read = [*parser.feed("\x1b\r"), *parser.feed("")]
    keys = [getattr(e, "key", None) for e in events_read]
    assert "alt+enter" not in keys and "enter" in keys
    assert "alt+enter" not in NEWLINE_KEYS
    readme = (REPO_ROOT / "README.md").read_text()
    newline_row = next(line for line in readme.splitlines() if line.startswith("| Ctrl+J"))
    assert "Alt+Enter is not a newline key" in newline_row


async def test_status_line_does_not_count_a_message_being_answered_as_queued(
    server: FaultServer, tmp_path: Path
) -> None:
    server.push(Fault("slow", seconds=0.7))
    app = ChatApp(app_settings(server, tmp_path, read_timeout=5.0))
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"take your time", "enter")
        chat = app.query_one(ChatView)
        await wait_until(pilot, lambda: any(s.received for s in chat._streams.values()))
        status = app.query_one(StatusLine)
        await wait_until(pilot, lambda: status.sending == 1)
        line = str(status.render())
        assert "queued" not in line
        assert "being answered" in line


async def test_missing_config_file_is_said_once_in_the_window(
    server: FaultServer, tmp_path: Path, monkeypatch
) -> None:
    missing = tmp_path / "nowhere" / "config.toml"
    monkeypatch.setenv("CHAT_TUI_CONFIG", str(missing))
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:

        def said() -> list[str]:
            return [n.message for n in app._notifications if "does not exist" in n.message]

        await wait_until(pilot, lambda: bool(said()))
        await pilot.pause(0.3)
        assert len(said()) == 1 and str(missing) in said()[0]


async def test_export_in_the_window_asks_before_replacing_a_file(
    server: FaultServer, tmp_path: Path
) -> None:
    await seed_history(tmp_path / "chat.db", [("q", "a")], title="exported")
    target = tmp_path / "out.md"
    target.write_text("precious\n")
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPrompt))
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("n")
        await pilot.pause(0.2)
        assert target.read_text() == "precious\n"
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPrompt))
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("y")
        await wait_until(pilot, lambda: "precious" not in target.read_text())
        assert "# exported" in target.read_text() or "exported" in target.read_text()


async def test_theme_is_saved_in_config_keeping_comments_and_restored(
    server: FaultServer, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('# my settings\nmodel = "test-model"  # the small one\n')
    settings = app_settings(server, tmp_path, config_path=config)
    app = ChatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.reach is not None)
        app.theme = "textual-light"
        await wait_until(pilot, lambda: "textual-light" in config.read_text())
    text = config.read_text()
    assert text.startswith('# my settings\nmodel = "test-model"  # the small one\n')
    assert 'theme = "textual-light"' in text
    from chat_tui.config import load_settings

    reloaded = load_settings(environ={"CHAT_TUI_CONFIG": str(config)})
    assert reloaded.theme == "textual-light"
    app = ChatApp(reloaded.replace(data_dir=tmp_path, base_url=server.base_url))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        assert app.theme == "textual-light"


async def test_code_follows_a_light_theme_no_black_boxes(
    server: FaultServer, tmp_path: Path
) -> None:
    await seed_history(
        tmp_path / "chat.db",
        [("q", "Use `inline code` here.\n\n```python\nprint('hi')\n```\n")],
        title="code",
    )
    settings = app_settings(server, tmp_path, theme="textual-light")
    app = ChatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        reply = views(app)[1]
        segments = list(app.console.render(reply._body(), app.console.options.update_width(80)))
        coded = [s for s in segments if "inline code" in s.text or "print" in s.text]
        assert coded
        for segment in coded:
            bg = segment.style.bgcolor if segment.style else None
            assert bg is None or bg.name != "black", segment
            if bg is not None and bg.triplet is not None:
                assert sum(bg.triplet) > 3 * 128, segment  # a light background


async def test_cancel_in_the_queue_on_a_message_being_sent(
    server: FaultServer, tmp_path: Path
) -> None:
    """A request the server never answers: `c` in the queue stops it through the
    outbox's stop path when the core has one; otherwise it says why it cannot."""
    server.push(Fault("hang", seconds=20))
    app = ChatApp(app_settings(server, tmp_path, read_timeout=30.0))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"never answered", "enter")
        await wait_until(pilot, lambda: [v.message.state for v in views(app)] == ["sending"])
        await pilot.press("ctrl+o")
        await wait_until(
            pilot, lambda: isinstance(app.screen, QueueScreen) and bool(app.screen.items)
        )
        await pilot.press("c")
        assert app.core is not None
        if hasattr(app.core.sender, "stop"):
            await wait_until(pilot, lambda: views(app)[0].message.state != "sending")
            assert views(app)[0].message.state in ("cancelled", "queued")
            await wait_until(pilot, lambda: not list(app.query(StreamingReply)))
        else:
            await wait_until(
                pilot,
                lambda: any("cannot be stopped now" in n.message for n in app._notifications),
            )
            assert views(app)[0].message.state == "sending"
