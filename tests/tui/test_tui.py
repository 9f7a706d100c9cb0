"""The TUI driven through Pilot against the real loopback server and a real database."""

from __future__ import annotations

import time
from pathlib import Path

from chat_tui.store import Store
from chat_tui.tui.app import ChatApp
from chat_tui.tui.widgets.chat_view import PAGE_SIZE, MessageView, StreamingReply
from chat_tui.tui.widgets.status import OfflineBanner, StatusLine
from tests.fault_server import Fault, FaultServer
from tests.helpers import app_settings, online, views, wait_until


async def test_send_and_streamed_reply(server: FaultServer, tmp_path: Path) -> None:
    server.reply_fn = lambda body: "# Heading\n\nA **streamed** reply with `code`."
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"hello world", "enter")
        await wait_until(pilot, lambda: any(v.message.role == "assistant" for v in views(app)))
        roles = [(v.message.role, v.message.state) for v in views(app)]
        assert roles == [("user", "delivered"), ("assistant", "complete")]
        assert views(app)[1].message.content == "# Heading\n\nA **streamed** reply with `code`."
        assert app.composer.text == ""
        # The request the server saw carried the text and an Idempotency-Key.
        chat = [r for r in server.requests if r.path.endswith("/chat/completions")]
        assert chat[0].body["messages"][-1] == {"role": "user", "content": "hello world"}
        assert chat[0].idempotency_key == views(app)[0].message.key
    store = await Store.open(tmp_path / "chat.db")
    try:
        conversations = await store.list_conversations()
        assert [c.title for c in conversations] == ["hello world"]
    finally:
        await store.close()


async def test_hostile_reply_is_shown_literally(server: FaultServer, tmp_path: Path) -> None:
    hostile = (
        "[bold]not bold[/bold] [@click=app.quit]click me[/] "
        "\x1b[31mred\x1b[0m \x1b]0;pwned\x07 \x1b]52;c;ZXZpbA==\x07 end"
    )
    server.push(Fault(kind="reply", text=hostile))
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press(*"hi", "enter")
        await wait_until(pilot, lambda: any(v.message.role == "assistant" for v in views(app)))
        reply = views(app)[-1].message.content
        assert "\x1b" not in reply and "\x07" not in reply
        assert "[bold]not bold[/bold]" in reply and "[@click=app.quit]" in reply
        svg = app.export_screenshot()
        assert "\x1b" not in svg
        # The markup shows as text: the brackets are on screen…
        assert "[bold]not" in svg.replace("&#160;", " ")
        await pilot.click(MessageView, offset=(10, 1))
        await pilot.pause()
        # …and clicking the would-be action did not quit the app.
        assert app.is_running


async def test_newline_key_and_multiline_send(server: FaultServer, tmp_path: Path) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"line one", "ctrl+j", *"line two")
        assert app.composer.text == "line one\nline two"
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(v.message.role == "assistant" for v in views(app)))
        assert views(app)[0].message.content == "line one\nline two"


async def test_offline_banner_counter_then_delivery(server: FaultServer, tmp_path: Path) -> None:
    server.stop()
    app = ChatApp(app_settings(server, tmp_path, probe_cap=0.5))
    async with app.run_test(size=(100, 30)) as pilot:
        banner = app.query_one(OfflineBanner)
        await wait_until(pilot, lambda: banner.has_class("-visible"))
        await pilot.press(*"are you there", "enter")
        await pilot.press(*"second", "enter")
        status = app.query_one(StatusLine)
        await wait_until(pilot, lambda: status.queued == 2)
        assert "2 queued" in str(status.render())
        assert [v.message.state for v in views(app)] == ["queued", "queued"]
        assert "Offline" in str(banner.render()) and "Ctrl+R" in str(banner.render())
        server.start()
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: len(views(app)) == 4, timeout=15)
        await wait_until(pilot, lambda: not banner.has_class("-visible"))
        assert [v.message.role for v in views(app)] == ["user", "assistant", "user", "assistant"]
        await wait_until(pilot, lambda: status.queued == 0)


async def test_failed_message_shows_reason_and_blocks(server: FaultServer, tmp_path: Path) -> None:
    server.push(Fault(kind="status", status=400, body='{"error": {"message": "context too long"}}'))
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(110, 30)) as pilot:
        await pilot.press(*"too long", "enter")
        await wait_until(pilot, lambda: views(app) and views(app)[0].message.state == "failed")
        header = views(app)[0].header_text
        assert "failed" in header and "context too long" in header


async def test_only_newest_page_is_mounted_and_older_pages_load(
    server: FaultServer, tmp_path: Path
) -> None:
    settings = app_settings(server, tmp_path)
    store = await Store.open(settings.db_path)
    conversation = await store.create_conversation("long one")
    for i in range(150):
        message, _ = await store.enqueue(conversation.id, f"question {i}")
        claim = await store.claim_next("seed", lease_seconds=30)
        assert claim is not None and claim.message.id == message.id
        await store.complete(message.id, "seed", f"answer {i}")
    await store.close()
    app = ChatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) > 0)
        assert len(views(app)) == PAGE_SIZE
        assert views(app)[-1].message.content == "answer 149"
        app.chat.scroll_home(animate=False)
        await wait_until(pilot, lambda: len(views(app)) == 2 * PAGE_SIZE)
        # 300 messages, 40 a page: the second page starts 80 messages from the end.
        assert views(app)[0].message.content == f"question {150 - PAGE_SIZE}"
        while len(views(app)) < 300:  # keep scrolling up: every page comes in, in order
            shown = len(views(app))
            app.chat.scroll_end(animate=False)
            await pilot.pause()
            app.chat.scroll_home(animate=False)
            await wait_until(pilot, lambda shown=shown: len(views(app)) > shown)
        assert views(app)[0].message.content == "question 0"
        assert [v.message.seq for v in views(app)] == sorted(v.message.seq for v in views(app))


async def test_draft_survives_restart(server: FaultServer, tmp_path: Path) -> None:
    settings = app_settings(server, tmp_path)
    app = ChatApp(settings)
    async with app.run_test() as pilot:
        await pilot.press(*"half a thought", "ctrl+j", *"and more")
        await pilot.press("ctrl+q")
    again = ChatApp(settings)
    async with again.run_test() as pilot:
        await wait_until(pilot, lambda: again.composer.text != "")
        assert again.composer.text == "half a thought\nand more"


async def test_new_rename_delete(server: FaultServer, tmp_path: Path) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"first", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 2)
        first_id = app.current.id
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.current is None and not views(app))
        await pilot.press(*"second", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 2)
        assert app.current.id != first_id
        await pilot.press("f2")
        await pilot.pause()
        await pilot.press("end")
        for _ in range(10):
            await pilot.press("backspace")
        await pilot.press(*"Renamed", "enter")
        await wait_until(pilot, lambda: app.current.title == "Renamed")
        await pilot.press("f8")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: app.current is not None and app.current.id == first_id)
        assert [c.id for c in app.conversations] == [first_id]


async def test_changes_from_another_process_appear(server: FaultServer, tmp_path: Path) -> None:
    settings = app_settings(server, tmp_path)
    app = ChatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"mine", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 2)
        conversation_id = app.current.id
        # A second connection stands in for `chat-tui send` in another process.
        other = await Store.open(settings.db_path)
        try:
            started = time.monotonic()
            await other.enqueue(conversation_id, "from elsewhere")
            await wait_until(pilot, lambda: len(views(app)) >= 3, timeout=3)
            assert time.monotonic() - started < 1.5
            assert views(app)[2].message.content == "from elsewhere"
            # And this app's core delivers it.
            await wait_until(pilot, lambda: len(views(app)) == 4)
        finally:
            await other.close()


async def test_submit_while_database_unwritable_keeps_text(
    server: FaultServer, tmp_path: Path
) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.core is not None and app.current is None)
        blocker = await Store.open(tmp_path / "chat.db")
        # Hold the write lock from another connection, as a second process would.
        await blocker._db.execute("BEGIN IMMEDIATE")
        try:
            await app.core.store._db.execute("PRAGMA busy_timeout = 100")
            await pilot.press(*"keep me", "enter")
            await wait_until(pilot, lambda: len(app._notifications) > 0, timeout=5)
            assert "locked" in str(list(app._notifications)[-1].message)
            assert app.composer.text == "keep me"
            assert not views(app)
        finally:
            await blocker._db.execute("ROLLBACK")
            await blocker.close()
        await app.core.store._db.execute("PRAGMA busy_timeout = 10000")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(views(app)) >= 1)
        assert app.composer.text == ""


async def test_no_event_loop_stall_while_streaming(server: FaultServer, tmp_path: Path) -> None:
    """Typing keeps working while a long reply streams in."""
    # Four chunks 0.5 s apart: the reply streams for about 2 s, long enough to be seen
    # streaming (0.05 s apart it could be over between two looks).
    server.push(Fault(kind="slow", seconds=0.5))
    server.reply_fn = lambda body: "word " * 400
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"stream please", "enter")
        await wait_until(pilot, lambda: bool(app.query(StreamingReply)))  # the reply streams
        await pilot.press(*"typing meanwhile")
        assert app.composer.text == "typing meanwhile"
        await wait_until(pilot, lambda: any(v.message.role == "assistant" for v in views(app)))
