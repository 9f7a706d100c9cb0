"""Queue screen, search, offline answers and export, driven through Pilot."""

from __future__ import annotations

import json
import time
from pathlib import Path

from textual.widgets import Input

from chat_tui.store import Store
from chat_tui.tui.app import ChatApp
from chat_tui.tui.screens.dialogs import EditMessage, TextPrompt
from chat_tui.tui.screens.queue import QueueScreen
from chat_tui.tui.screens.search import SearchScreen
from chat_tui.tui.widgets.chat_view import MessageView, StreamingReply
from tests.fault_server import Fault, FaultServer
from tests.helpers import app_settings, online, seed_history, views, wait_until


async def test_queue_screen_retry_edit_cancel(server: FaultServer, tmp_path: Path) -> None:
    server.push(
        Fault(kind="status", status=400, body='{"error": {"message": "bad first"}}'),
        Fault(kind="status", status=422, body='{"error": {"message": "bad second"}}'),
    )
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.press(*"one", "enter")
        await wait_until(pilot, lambda: views(app) and views(app)[0].message.state == "failed")
        await pilot.press(*"two", "enter")  # waits behind the failed one
        await wait_until(pilot, lambda: len(views(app)) == 2)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen))
        screen = app.screen
        assert [i.message.state for i in screen.items] == ["failed", "queued"]
        # Retry the failed one: the server refuses it again (422).
        await pilot.press("r")
        await wait_until(
            pilot,
            lambda: (
                screen.items
                and screen.items[0].message.error
                and "bad second" in screen.items[0].message.error
            ),
        )
        # Edit it: the edited text is what the server gets, and both go out in order.
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditMessage))
        await pilot.press(*" (edited)", "tab", "tab", "enter")
        await wait_until(
            pilot, lambda: isinstance(app.screen, QueueScreen) and not app.screen.items, timeout=10
        )
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(views(app)) == 4)
        sent = [
            r.body["messages"][-1]["content"] for r in server.requests if r.outcome == "completed"
        ]
        assert sent == ["one (edited)", "two"]


async def test_queue_cancel_unblocks_conversation(server: FaultServer, tmp_path: Path) -> None:
    server.push(Fault(kind="status", status=400))
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.press(*"doomed", "enter")
        await wait_until(pilot, lambda: views(app) and views(app)[0].message.state == "failed")
        await pilot.press(*"next", "enter")
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen))
        await pilot.press("c")
        await wait_until(pilot, lambda: len(views(app)) == 3)
        states = [(v.message.role, v.message.state) for v in views(app)]
        assert states == [("user", "cancelled"), ("user", "delivered"), ("assistant", "complete")]


async def test_search_opens_conversation_at_the_hit(server: FaultServer, tmp_path: Path) -> None:
    settings = app_settings(server, tmp_path)
    pairs = [(f"filler question {i}", f"filler answer {i}") for i in range(120)]
    pairs[10] = ("where do zebras sleep", "Standing up, mostly.")
    target = await seed_history(settings.db_path, pairs, title="Animals")
    await seed_history(settings.db_path, [("newer chat", "yes")], title="Newer")
    app = ChatApp(settings)
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(pilot, lambda: app.current is not None and app.current.title == "Newer")
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, SearchScreen))
        await pilot.press(*"zebra")
        await wait_until(pilot, lambda: len(app.screen.hits) == 1)
        await pilot.press("enter", "enter")
        await wait_until(pilot, lambda: app.current is not None and app.current.id == target)
        found = [v for v in app.query(MessageView) if v.has_class("found")]
        assert [v.message.content for v in found] == ["where do zebras sleep"]


async def test_offline_answer_is_labelled_and_never_sent(
    server: FaultServer, tmp_path: Path
) -> None:
    settings = app_settings(server, tmp_path, probe_cap=0.5)
    await seed_history(settings.db_path, [("What is the capital of France?", "Paris.")])
    server.stop()
    app = ChatApp(settings)
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "offline")
        await pilot.press(*"what's the capital of france", "enter")
        await wait_until(pilot, lambda: any(v.message.role == "notice" for v in views(app)))
        notice = next(v for v in views(app) if v.message.role == "notice")
        assert notice.message.content == "Paris."
        header = notice.header_text
        assert "Offline answer" in header and "Geography" in header
        question = next(v for v in views(app) if v.message.content.startswith("what's"))
        assert question.message.state == "queued"  # still waits for a fresh reply
        server.start()
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: question.message.state == "delivered", timeout=15)
    # The notice text never reached the endpoint as context.
    bodies = [json.dumps(r.body) for r in server.requests if r.body]
    assert bodies and all("Offline answer" not in b for b in bodies)
    last = [r for r in server.requests if r.outcome == "completed"][-1].body["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]


async def test_export_action_writes_markdown(server: FaultServer, tmp_path: Path) -> None:
    settings = app_settings(server, tmp_path)
    await seed_history(settings.db_path, [("hello", "**hi** there")], title="Greeting")
    app = ChatApp(settings)
    out = tmp_path / "out.md"
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(pilot, lambda: app.current is not None)
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPrompt))
        suggested = app.screen.query_one(Input).value
        await pilot.press(*["backspace"] * len(suggested))  # erase the suggested path
        await pilot.press(*str(out), "enter")
        await wait_until(pilot, out.exists)
    text = out.read_text()
    assert text.startswith("# Greeting")
    assert "hello" in text and "**hi** there" in text


async def test_keys_pressed_during_start_up_are_not_dropped(
    server: FaultServer, tmp_path: Path
) -> None:
    """Ctrl+N and Enter pressed before the database is open still take effect."""
    settings = app_settings(server, tmp_path)
    old = await seed_history(settings.db_path, [("older question", "older answer")], title="Old")
    app = ChatApp(settings)
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.press("ctrl+n", *"a fresh start", "enter")
        await wait_until(pilot, lambda: any(v.message.role == "assistant" for v in views(app)))
        assert app.current is not None and app.current.id != old
        assert [v.message.content for v in views(app)] == ["a fresh start", "echo: a fresh start"]


async def test_a_failing_action_is_reported_not_raised(
    server: FaultServer, tmp_path: Path, monkeypatch
) -> None:
    from chat_tui.store import StoreError

    async def refuse(self, conversation_id: int, title: str) -> None:
        raise StoreError("the database is locked by another program")

    monkeypatch.setattr(Store, "rename_conversation", refuse)
    settings = app_settings(server, tmp_path)
    await seed_history(settings.db_path, [("hi", "hello")], title="Keep me")
    app = ChatApp(settings)
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(pilot, lambda: app.current is not None)
        await pilot.press("f2", *"New name", "enter")
        await wait_until(pilot, lambda: any("locked" in str(n.message) for n in app._notifications))
        assert app.is_running and app.current.title == "Keep me"


async def test_a_failed_edit_keeps_the_edited_text(
    server: FaultServer, tmp_path: Path, monkeypatch
) -> None:
    from chat_tui.sender import Sender
    from chat_tui.store import StoreError

    server.push(Fault(kind="status", status=400))
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.press(*"draft one", "enter")
        await wait_until(pilot, lambda: views(app) and views(app)[0].message.state == "failed")
        real_retry = Sender.retry
        calls = []

        async def locked_once(self, message_id, *, text=None):
            calls.append(text)
            if len(calls) == 1:
                raise StoreError("the database is locked by another program")
            return await real_retry(self, message_id, text=text)

        monkeypatch.setattr(Sender, "retry", locked_once)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen))
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EditMessage))
        await pilot.press(*" (edited)", "tab", "tab", "enter")
        # Refused once: the dialog is back, still holding the edit.
        await wait_until(pilot, lambda: len(calls) == 1 and isinstance(app.screen, EditMessage))
        from textual.widgets import TextArea

        assert app.screen.query_one(TextArea).text == "draft one (edited)"
        await pilot.press("tab", "tab", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 2, timeout=10)
        assert calls == ["draft one (edited)", "draft one (edited)"]
        assert views(app)[0].message.content == "draft one (edited)"


async def test_a_reply_landing_behind_the_queue_screen_is_shown_when_it_closes(
    server: FaultServer, tmp_path: Path
) -> None:
    """The core's events reach the chat screen whatever screen is on top: a reply
    that streams in while the queue (Ctrl+O) is open is there when it closes, in
    the same view (the conversation is not reopened)."""
    server.push(Fault("slow", seconds=0.3))
    app = ChatApp(app_settings(server, tmp_path, read_timeout=5.0))
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"answer me behind the queue", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 1)
        question = views(app)[0]
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen))
        assert app.core is not None
        deadline = time.monotonic() + 15
        while await app.core.store.pending_count():  # delivered while the queue is open
            assert time.monotonic() < deadline, "the reply never came"
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        assert isinstance(app.screen, QueueScreen)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, QueueScreen))
        await wait_until(pilot, lambda: len(views(app)) == 2, timeout=3)
        assert views(app)[0] is question  # the same view, updated in place
        assert question.message.state == "delivered"
        assert views(app)[1].message.role == "assistant" and views(app)[1].message.content
        assert not app.query(StreamingReply)  # no stream left behind
