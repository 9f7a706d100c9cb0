"""The real program in a real pseudo-terminal: signals, a vanished terminal, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from chat_tui.tui.app import HANGUP_GRACE
from tests.fault_server import FaultServer
from tests.helpers import Terminal

pytestmark = [
    pytest.mark.slow,  # the slow tier: pytest -m slow
    pytest.mark.skipif(sys.platform == "win32", reason="needs a pty"),
]


def db_facts(db: Path) -> dict[str, object]:
    conn = sqlite3.connect(db)
    try:
        return {
            "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
            "drafts": conn.execute("SELECT text FROM drafts").fetchall(),
            "leases": conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE lease_owner IS NOT NULL"
            ).fetchone()[0],
        }
    finally:
        conn.close()


def draft_saved(db: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return bool(conn.execute("SELECT 1 FROM drafts WHERE text != ''").fetchone())
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def wal_size(db: Path) -> int:
    wal = Path(str(db) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def type_unsent_thought(term: Terminal) -> None:
    """Type a draft once the app is up, and wait until it is on screen: bytes still
    in the terminal's buffer at a hang-up are discarded by the kernel."""
    assert term.read_until(b"Enter sends"), term.output[-2000:]
    term.drain(0.5)
    term.type("unsent thought")
    assert term.read_until(b"unsent thought"), term.output[-2000:]
    term.drain(0.2)


def hang_up(term: Terminal) -> None:
    """What an SSH drop looks like: the pty master goes away."""
    os.close(term.fd)
    term.fd = os.open(os.devnull, os.O_RDONLY)


def assert_closed_with_the_draft(db: Path) -> None:
    facts = db_facts(db)
    assert facts["integrity"] == "ok"
    assert facts["drafts"] == [("unsent thought",)]
    assert facts["leases"] == 0


@pytest.mark.parametrize("how", ["SIGHUP", "SIGTERM", "terminal closed"])
def test_signal_ends_app_cleanly(server: FaultServer, tmp_path: Path, how: str) -> None:
    term = Terminal(tmp_path, server.base_url)
    try:
        type_unsent_thought(term)
        if how == "terminal closed":
            hang_up(term)
        else:
            os.kill(term.pid, getattr(signal, how))
        code = term.wait(timeout=30)  # a clean exit closes the database: slow on a busy machine
        assert code == 0, (code, term.output[-3000:])
        assert b"Traceback" not in term.output
    finally:
        term.kill()
    assert_closed_with_the_draft(tmp_path / "chat.db")
    assert wal_size(tmp_path / "chat.db") == 0  # checkpointed and closed


def test_a_hung_up_terminal_ends_the_app_without_a_sighup(
    server: FaultServer, tmp_path: Path
) -> None:
    """The pty goes away but no SIGHUP reaches the app: it notices the hang-up itself
    (its input would read as an endless end of file) and closes cleanly."""
    term = Terminal(tmp_path, server.base_url, block_sighup=True)
    try:
        type_unsent_thought(term)
        hang_up(term)
        hung_up = time.monotonic()
        code = term.wait(timeout=30)
        assert code == 0, (code, term.output[-3000:])
        # It closed by itself, not cut short by the watchdog (whose exit is 0 too).
        assert time.monotonic() - hung_up < HANGUP_GRACE
    finally:
        term.kill()
    assert_closed_with_the_draft(tmp_path / "chat.db")


def test_draft_restored_after_kill_9(server: FaultServer, tmp_path: Path) -> None:
    term = Terminal(tmp_path, server.base_url)
    try:
        assert term.read_until(b"Enter sends")
        term.drain(0.5)
        term.type("typed before the crash")
        # The draft is written after a short pause in typing: kill once it is on disk
        # (a bounded wait on the file, not a fixed pause a loaded machine can outrun).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not draft_saved(tmp_path / "chat.db"):
            term.drain(0.1)
        os.kill(term.pid, signal.SIGKILL)
        os.waitpid(term.pid, 0)
    finally:
        term.kill()
    again = Terminal(tmp_path, server.base_url)
    try:
        assert again.read_until(b"typed before the crash"), again.output[-2000:]
    finally:
        again.kill()


def test_corrupt_database_gives_a_clear_message(server: FaultServer, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    garbage = b"this is not sqlite" * 100
    db.write_bytes(garbage)
    term = Terminal(tmp_path, server.base_url)
    try:
        code = term.wait(20)
        term.drain(0.2)
    finally:
        term.kill()
    assert code == 1
    assert b"damaged or not a chat-tui database" in term.output
    assert b"Traceback" not in term.output
    assert db.read_bytes() == garbage  # never deleted or rewritten


def test_text_typed_while_starting_survives_sighup(server: FaultServer, tmp_path: Path) -> None:
    """Typed after the first frame but before the database was open, then the SSH
    session drops: the text must still become the draft, and the exit is clean."""
    kept = 0
    for delay in (0.03, 0.1, 0.2):
        data = tmp_path / f"after-{delay}"
        term = Terminal(data, server.base_url)
        try:
            assert term.read_until(b"Enter sends")
            term.type("typed early")
            # Signal once the app has read the keys (they are on screen): bytes still
            # in the terminal's buffer when the session drops never reached it.
            assert term.read_until(b"typed early")
            term.drain(delay)
            os.kill(term.pid, signal.SIGHUP)
            assert term.wait() == 0, term.output[-2000:]
            assert b"Traceback" not in term.output
        finally:
            term.kill()
        kept += db_facts(data / "chat.db")["drafts"] == [("typed early",)]
    assert kept == 3
