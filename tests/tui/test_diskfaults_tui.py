"""The open window under a sick disk: a database held by another program, a full
disk at exit, the database file deleted under it. Real SQLite files, a real
tmpfs, the real app through Pilot."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from chat_tui import rescue
from chat_tui.store import Store
from chat_tui.tui.app import ChatApp
from chat_tui.tui.widgets.status import OfflineBanner
from tests.fault_server import FaultServer
from tests.helpers import app_settings, online, tmpfs, wait_until
from tests.netlab import fill, hold_exclusive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]  # the slow tier: pytest -m slow


@pytest.fixture(autouse=True)
def private_rescue_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Rescue files go to a runtime dir of the test's own."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime


async def test_enter_while_another_program_holds_the_database(
    server: FaultServer, tmp_path: Path
) -> None:
    """After half a second the composer says it waits for the database, keeps the
    text, and queues it once the other program lets go."""
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"held up")
        shown: list[tuple[float, str, str]] = []
        notice = app.chat_screen._show_db_wait

        def recording() -> None:
            notice()
            shown.append((time.monotonic(), str(app.composer.border_subtitle), app.composer.text))

        app.chat_screen._show_db_wait = recording  # type: ignore[method-assign]
        holder = hold_exclusive(tmp_path / "chat.db", 2.0)
        pressed = time.monotonic()
        await pilot.press("enter")  # returns once the submit is done
        assert len(shown) == 1, shown
        when, subtitle, text = shown[0]
        assert when - pressed <= 0.9
        assert "waiting for the database" in subtitle and text == "held up"
        await wait_until(pilot, lambda: app.composer.text == "", timeout=12)
        assert not app.composer.border_subtitle
        holder.join(5)
    store = await Store.open(tmp_path / "chat.db")
    try:
        (conversation,) = await store.list_conversations()
        texts = [m.content for m in await store.all_messages(conversation.id) if m.role == "user"]
        assert texts == ["held up"]
    finally:
        await store.close()


async def test_the_banner_names_a_database_the_sender_cannot_write(
    server: FaultServer, tmp_path: Path
) -> None:
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        assert app.core is not None
        app.core.sender.report_problem("loop", "cannot write the database: locked; retrying")
        banner = app.query_one(OfflineBanner)
        await wait_until(pilot, lambda: banner.has_class("-visible"))
        assert "cannot write the database" in str(banner.render())
        app.core.sender.report_problem("loop", None)
        await wait_until(pilot, lambda: not banner.has_class("-visible"))


async def test_a_draft_that_cannot_be_saved_at_exit_goes_to_a_rescue_file(
    server: FaultServer, tmp_path: Path, private_rescue_dir: Path
) -> None:
    """With the disk full, the draft is written outside the data dir (0600), the
    exit message names the file without claiming more, and the next start puts
    the text back."""
    with tmpfs(tmp_path / "disk") as disk:
        data = disk / "data"
        app = ChatApp(app_settings(server, data))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: online(app))
            await pilot.press(*"first", "enter")
            await wait_until(pilot, lambda: app.composer.text == "")
            await pilot.pause(0.3)
            assert app.core is not None
            async with app.core.store._lock:
                await app.core.store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(disk)
            app.composer.insert("typed while the disk is full ✓")
            await pilot.pause(0.1)
            await app.action_quit()
        note = app.exit_note or ""
        assert "could not be saved in the database" in note and "nothing was lost" not in note
        assert app.unsaved_draft == "typed while the disk is full ✓"
        (kept,) = rescue.pending(data / "chat.db")
        assert str(kept.path) in note
        assert not str(kept.path).startswith(str(data))
        assert kept.text == "typed while the disk is full ✓"
        assert os.stat(kept.path).st_mode & 0o777 == 0o600
        filler.unlink()
        again = ChatApp(app_settings(server, data))
        async with again.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: "disk is full" in again.composer.text)
            assert again.composer.text == "typed while the disk is full ✓"
        assert rescue.pending(data / "chat.db") == []


async def test_a_deleted_database_stops_the_window_and_keeps_the_text(
    server: FaultServer, tmp_path: Path
) -> None:
    """chat.db deleted while the app runs: it notices within a second, says so,
    and keeps the draft and every unsent message for the next start."""
    settings = app_settings(server, tmp_path, base_url="http://127.0.0.1:9/v1")
    app = ChatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"queued while offline", "enter")
        await wait_until(pilot, lambda: app.composer.text == "")
        app.composer.insert("half a thought")
        await pilot.pause(0.1)
        for suffix in ("", "-wal", "-shm"):
            Path(str(tmp_path / "chat.db") + suffix).unlink(missing_ok=True)
        await wait_until(pilot, lambda: app._replaced is not None, timeout=5)
    assert app.return_code == 1
    note = app.exit_note or ""
    assert "was deleted while chat-tui was running" in note, note
    kept = sorted(item.text for item in rescue.pending(tmp_path / "chat.db"))
    assert kept == ["half a thought", "queued while offline"]
    # The next start opens a fresh database at the path and restores both as the draft.
    again = ChatApp(settings)
    async with again.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: "half a thought" in again.composer.text)
        assert "queued while offline" in again.composer.text
    with sqlite3.connect(tmp_path / "chat.db") as db:
        assert db.execute("SELECT COUNT(*) FROM drafts").fetchone()[0] >= 1


async def test_no_leftover_streaming_bubble_after_another_sender_took_over(
    server: FaultServer, tmp_path: Path
) -> None:
    """The window was stopped past its lease (SIGSTOP) and another sender delivered
    the message meanwhile: when it resumes, its late reply is dropped and the live
    "streaming…" bubble goes; only the stored reply is shown, once."""
    from chat_tui.core import Core
    from chat_tui.tui.widgets.chat_view import MessageView, StreamingReply
    from tests.fault_server import Fault

    settings = app_settings(server, tmp_path)
    app = ChatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        server.push(Fault("think", seconds=2.0))
        await pilot.press(*"who answers", "enter")
        await wait_until(pilot, lambda: bool(app.query(StreamingReply)))
        # Our lease ran out while we were stopped; another sender takes the message.
        with sqlite3.connect(tmp_path / "chat.db", timeout=10) as db:
            db.execute("UPDATE outbox SET lease_expires = 0")
        other = await Core.open(settings)
        try:
            other.start_watching()
            assert await other.reachability.wait_online(5)
            delivered = await other.sender.deliver_available()
        finally:
            await other.close()
        assert delivered == 1
        await wait_until(pilot, lambda: not app.query(StreamingReply), timeout=10)
        await wait_until(
            pilot,
            lambda: [v.message.role for v in app.query(MessageView)] == ["user", "assistant"],
        )
        await pilot.pause(0.5)
        assert [v.message.role for v in app.query(MessageView)] == ["user", "assistant"]
        assert not app.query(StreamingReply)
