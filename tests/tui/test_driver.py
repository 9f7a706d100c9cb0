"""Frames drawn after the terminal hung up must not stop the app (tui/driver.py)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import pytest
from textual.drivers._writer_thread import MAX_QUEUED_WRITES, WriterThread

from chat_tui.tui.driver import TerminalOutput, hangup_safe
from tests.helpers import make_settings

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")


def test_writes_to_a_hung_up_terminal_never_block_the_app() -> None:
    """A real pty whose other side is gone: every write fails with EIO. Textual's
    writer thread would die of the first one and, once its queue is full, block the
    caller (the app's event loop) for good; through TerminalOutput it keeps going."""
    ours, theirs = os.openpty()
    terminal = os.fdopen(theirs, "w")
    os.close(ours)  # the SSH session drops
    output = TerminalOutput(terminal)
    writer = WriterThread(output)  # type: ignore[arg-type]
    writer.start()
    frames_written = threading.Event()

    def draw() -> None:
        for n in range(MAX_QUEUED_WRITES * 4):
            writer.write(f"frame {n}\n" * 50)
        writer.stop()
        frames_written.set()

    threading.Thread(target=draw, daemon=True).start()
    try:
        assert frames_written.wait(10), "a write to the hung-up terminal blocked"
        assert output.gone
        assert not writer.is_alive()  # it stopped when asked, not of an error
    finally:
        with contextlib.suppress(OSError):  # what it still holds cannot be written
            terminal.close()


def test_a_working_terminal_gets_every_write() -> None:
    read_end, write_end = os.pipe()
    output = TerminalOutput(os.fdopen(write_end, "w"))
    output.write("hello ")
    output.write("world")
    output.flush()
    output._file.close()  # type: ignore[attr-defined]
    with os.fdopen(read_end) as got:
        assert got.read() == "hello world"
    assert not output.gone


def test_the_app_drives_a_posix_terminal_through_it(tmp_path: Path) -> None:
    from textual.drivers.linux_driver import LinuxDriver

    from chat_tui.tui.app import ChatApp

    app = ChatApp(make_settings("http://127.0.0.1:9/v1", tmp_path))
    assert issubclass(app.driver_class, LinuxDriver)
    assert app.driver_class is not LinuxDriver
    assert hangup_safe(LinuxDriver) is not LinuxDriver
