"""Issue 12: regression tests for the chat window's bugs, through Pilot against
the real loopback server and a real database."""

from __future__ import annotations

from pathlib import Path

from textual import events

from chat_tui.tui.app import ChatApp
from chat_tui.tui.widgets.chat_view import ChatView
from tests.fault_server import Fault, FaultServer
from tests.test_tui import make_settings, views, wait_until
from tests.test_tui_features import seed_history


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
    app = ChatApp(make_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "online")
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
    app = ChatApp(make_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "online")
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
    app = ChatApp(make_settings(server, tmp_path, read_timeout=5.0))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "online")
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
    app = ChatApp(make_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        await pilot.press("ctrl+f")
        await pilot.press(*"needlepoint")
        await pilot.pause(0.5)
        await pilot.press("enter", "enter")
        chat = app.query_one(ChatView)
        await wait_until(pilot, lambda: any(v.has_class("found") for v in views(app)))
        await pilot.pause(0.5)
        found = next(v for v in views(app) if v.has_class("found"))
        assert found.message.content.startswith("needlepoint 55")
        top = found.virtual_region.y - chat.scroll_y
        assert 0 <= top < chat.scrollable_content_region.height, (top, chat.scroll_y)
