"""Life beyond the terminal: hand-off on exit, background sync, several processes at once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chat_tui.handoff import is_running
from tests.fault_server import FaultServer
from tests.helpers import Terminal

pytestmark = pytest.mark.slow  # the slow tier: pytest -m slow

FAST_CONFIG = """
probe_cap = 1.0
connect_timeout = 1.0
read_timeout = 5.0
backoff_base = 0.05
backoff_cap = 0.3
lease_seconds = 3.0
"""


def poll(predicate: Callable[[], bool], timeout: float, *terms: Terminal) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        for term in terms:
            term.drain(0.05)
        if not terms:
            time.sleep(0.05)
    return predicate()


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count_state(db: Path, state: str) -> int:
    if not db.exists():
        return 0
    try:
        sql = f"SELECT COUNT(*) FROM messages WHERE role='user' AND state='{state}'"
        return rows(db, sql)[0][0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_handoff_delivers_after_sighup(server: FaultServer, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(FAST_CONFIG)
    db = tmp_path / "chat.db"
    server.stop()
    term = Terminal(tmp_path, server.base_url, config=config)
    handoff_pid = None
    try:
        assert term.read_until(b"Enter sends")
        term.drain(0.3)
        term.type("first while offline\r")
        assert poll(lambda: count_state(db, "queued") == 1, 10, term)
        term.type("second while offline\r")
        assert poll(lambda: count_state(db, "queued") == 2, 10, term)
        os.kill(term.pid, signal.SIGHUP)
        assert term.wait() == 0
        term.drain(0.3)
        note = re.search(rb"background sync \(pid (\d+)\)", term.output)
        assert note, term.output[-1500:]
        handoff_pid = int(note.group(1))
        # The detached sync starts and holds the hand-off lock.
        assert poll(lambda: is_running(tmp_path), 10)
        server.start()
        assert poll(lambda: count_state(db, "delivered") == 2, 30)
        # Nothing left to deliver: the hand-off process exits by itself.
        assert poll(lambda: not is_running(tmp_path), 15)
    finally:
        term.kill()
        if handoff_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(handoff_pid, signal.SIGKILL)
    completed = server.completed_keys()
    assert sorted(completed.values()) == [1, 1]
    again = Terminal(tmp_path, server.base_url, config=config)
    try:
        assert again.read_until(b"echo: second while offline"), again.output[-2000:]
    finally:
        again.kill()


def test_two_tuis_and_sync_watch_share_one_database(server: FaultServer, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(FAST_CONFIG + "handoff_on_exit = false\n")
    db = tmp_path / "chat.db"
    env = {**os.environ, "CHAT_TUI_DATA_DIR": str(tmp_path), "CHAT_TUI_CONFIG": str(config)}
    first = Terminal(tmp_path, server.base_url, config=config)
    second = sync = None
    try:
        assert first.read_until(b"Enter sends")
        first.drain(0.3)
        first.type("alpha 1\r")
        assert poll(lambda: count_state(db, "delivered") == 1, 15, first)
        # The second TUI opens the same (most recent) conversation.
        second = Terminal(tmp_path, server.base_url, config=config)
        assert second.read_until(b"echo: alpha 1")
        sync = subprocess.Popen(
            [sys.executable, "-m", "chat_tui", "sync", "--watch", "--base-url", server.base_url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server.stop()
        first.type("alpha 2\r")
        second.type("bravo 1\r")
        assert poll(lambda: count_state(db, "queued") >= 2, 10, first, second)
        server.start()
        assert poll(lambda: count_state(db, "delivered") == 3, 30, first, second)
        server.stop()
        second.type("bravo 2\r")
        first.type("alpha 3\r")
        assert poll(
            lambda: count_state(db, "queued") + count_state(db, "sending") >= 2, 10, first, second
        )
        server.start()
        assert poll(lambda: count_state(db, "delivered") == 5, 30, first, second)
        for term in (first, second):
            for reply in (b"echo: alpha 2", b"echo: bravo 1", b"echo: bravo 2", b"echo: alpha 3"):
                assert term.read_until(reply, timeout=5), (reply, term.output[-1500:])
    finally:
        for term in (first, second):
            if term is not None:
                term.kill()
        if sync is not None:
            sync.send_signal(signal.SIGTERM)
            assert sync.wait(10) == 0
            assert b"Traceback" not in sync.stderr.read()
    # Every message completed once at the server and has exactly one reply, in typed order.
    assert sorted(server.completed_keys().values()) == [1] * 5
    replies = rows(
        db, "SELECT reply_to, COUNT(*) FROM messages WHERE role='assistant' GROUP BY reply_to"
    )
    assert len(replies) == 5 and all(n == 1 for _, n in replies)
    order = [r[0] for r in rows(db, "SELECT content FROM messages WHERE role='user' ORDER BY seq")]
    assert order.index("alpha 2") < order.index("alpha 3")
    assert order.index("bravo 1") < order.index("bravo 2")
    # Each request carried every earlier turn of the conversation, in order.
    last = [r for r in server.requests if r.outcome == "completed"][-1].body["messages"]
    users = [m["content"] for m in last if m["role"] == "user"]
    assert users == order[: len(users)]
