"""Copy a message or its code block, also over SSH and tmux (OSC 52)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from chat_tui.tui.app import ChatApp
from chat_tui.tui.copying import code_blocks
from chat_tui.tui.widgets.chat_view import ChatView
from tests.fault_server import FaultServer
from tests.helpers import (
    REPO_ROOT,
    app_settings,
    fast_config,
    online,
    seed_history,
    views,
    wait_until,
)

REPLY = "Two ways:\n\n```python\nprint('one')\n```\n\nor\n\n```sh\necho two\n```\n"


def test_code_blocks_are_found_in_order() -> None:
    assert code_blocks(REPLY) == ["print('one')\n", "echo two\n"]
    assert code_blocks("no code, only `inline`") == []


async def test_select_a_message_and_copy_it_or_its_code(
    server: FaultServer, tmp_path: Path
) -> None:
    await seed_history(tmp_path / "chat.db", [("how do I print?", REPLY)], title="code")
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        await pilot.press("tab")  # from the composer to the messages: the newest is selected
        chat = app.query_one(ChatView)
        assert app.focused is chat and chat.selected is views(app)[1]
        await pilot.press("y")
        assert app.clipboard == REPLY
        assert any(f"Copied {len(REPLY)} characters" in n.message for n in app._notifications)
        await pilot.press("c")
        assert app.clipboard == "print('one')\n"
        await pilot.press("2", "c")
        assert app.clipboard == "echo two\n"
        await pilot.press("up", "y")
        assert app.clipboard == "how do I print?"
        await pilot.press("tab")
        assert app.focused is app.composer
        # The palette's "Copy last reply" needs no selection.
        app.chat_screen.action_copy_last_reply()
        assert app.clipboard == REPLY


async def test_click_selects_a_message(server: FaultServer, tmp_path: Path) -> None:
    await seed_history(tmp_path / "chat.db", [("first question", "first answer")])
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        await pilot.pause(0.2)  # let the layout settle before aiming
        await pilot.click(views(app)[0], offset=(5, 1))
        await pilot.pause()
        chat = app.query_one(ChatView)
        assert chat.selected is views(app)[0]
        chat.focus()
        await pilot.press("y")
        assert app.clipboard == "first question"


# -- through a real terminal: tmux ----------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket) running chat-tui; always killed."""

    def __init__(self, tmp: Path, base_url: str) -> None:
        self.socket = f"chat-tui-test-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp
        config = tmp / "config.toml"
        config.write_text(fast_config(handoff_on_exit=False))
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHAT_TUI_"))
        } | {
            "CHAT_TUI_DATA_DIR": str(tmp / "data"),
            "CHAT_TUI_CONFIG": str(config),
            "OPENAI_BASE_URL": base_url,
            "CHAT_TUI_MODEL": "test-model",
            "PYTHONPATH": str(REPO_ROOT),
            "TERM": "xterm-256color",
        }
        self.env.pop("TMUX", None)

    def tmux(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=self.env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tmux {args}: {proc.stderr}")
        return proc.stdout

    def start(self) -> None:
        command = f"{sys.executable} -m chat_tui"
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "100", "-y", "30")
        self.tmux("set-option", "-g", "set-clipboard", "on")
        self.tmux("set-option", "-s", "escape-time", "0")
        self.tmux("send-keys", "-t", "t", f"cd {REPO_ROOT} && exec {command}", "Enter")
        self.pane_pid = int(self.tmux("display-message", "-p", "-t", "t", "#{pane_pid}"))

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t", check=False)

    def wait_screen(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on screen:\n{self.screen()}")
            time.sleep(0.1)

    def close(self) -> None:
        """Quit the app, then the tmux server; the app must not outlive the test
        (an app whose terminal vanished may not exit by itself)."""
        import signal

        pid = getattr(self, "pane_pid", None)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.tmux("kill-server", check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def tmux_app(tmp_path: Path, server: FaultServer):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    session = Tmux(tmp_path, server.base_url)
    try:
        session.start()
        session.wait_screen("online")
        yield session
    finally:
        session.close()


def test_copy_reaches_the_tmux_buffer_through_osc52(tmux_app: Tmux) -> None:
    tmux_app.tmux("send-keys", "-t", "t", "-l", "copy me please")
    tmux_app.tmux("send-keys", "-t", "t", "Enter")
    tmux_app.wait_screen("echo: copy me please")
    tmux_app.tmux("send-keys", "-t", "t", "Tab")
    time.sleep(0.3)
    tmux_app.tmux("send-keys", "-t", "t", "y")
    deadline = time.monotonic() + 10
    buffer = ""
    while time.monotonic() < deadline:
        buffer = tmux_app.tmux("show-buffer", check=False)
        if buffer:
            break
        time.sleep(0.1)
    assert buffer == "echo: copy me please"
    tmux_app.wait_screen("Copied 20 characters")


def test_one_burst_of_keys_sends_the_first_line_once_and_keeps_the_rest(
    tmux_app: Tmux, server: FaultServer, tmp_path: Path
) -> None:
    # As a paste without bracketed paste arrives: one write, CR in the middle.
    tmux_app.tmux("send-keys", "-t", "t", "-l", "line1\rline2")
    tmux_app.wait_screen("echo: line1")
    time.sleep(1.0)  # time for a wrong second send to show up
    bodies = [
        r.body["messages"][-1]["content"]
        for r in server.requests
        if r.path.endswith("/chat/completions") and r.body
    ]
    assert bodies == ["line1"]
    screen = tmux_app.screen()
    assert "line2" in screen and "line1line2" not in screen
    tmux_app.tmux("send-keys", "-t", "t", "C-q")
    deadline = time.monotonic() + 10
    while "online" in tmux_app.screen() and time.monotonic() < deadline:
        time.sleep(0.1)
    import sqlite3

    db = sqlite3.connect(tmp_path / "data" / "chat.db")
    try:
        drafts = [row[0] for row in db.execute("SELECT text FROM drafts")]
        users = [row[0] for row in db.execute("SELECT content FROM messages WHERE role='user'")]
    finally:
        db.close()
    assert users == ["line1"]
    assert drafts == ["line2"]


@pytest.mark.parametrize("mode", ["bell", "osc", "off"])
async def test_a_reply_landing_while_the_window_is_unfocused_is_announced(
    server: FaultServer, tmp_path: Path, mode: str
) -> None:
    from textual import events

    app = ChatApp(app_settings(server, tmp_path, notify=mode))
    rings: list[str] = []
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        app.bell = lambda: rings.append("bell")  # type: ignore[method-assign]
        assert app._driver is not None
        write = app._driver.write
        app._driver.write = lambda data: (  # type: ignore[method-assign]
            rings.append("osc") if data.startswith("\x1b]9;") else None,
            write(data),
        )
        await pilot.press(*"seen", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 2)
        assert rings == []  # focused and at the end: nothing to announce
        app.post_message(events.AppBlur())
        await pilot.pause()
        await pilot.press(*"unseen", "enter")
        await wait_until(pilot, lambda: len(views(app)) == 4)
        await pilot.pause(0.1)
        assert rings == ([] if mode == "off" else [mode])


async def test_capital_c_offers_a_list_of_the_code_blocks(
    server: FaultServer, tmp_path: Path
) -> None:
    from textual.widgets import OptionList

    from chat_tui.tui.screens.code_chooser import CodeChooser

    await seed_history(tmp_path / "chat.db", [("how do I print?", REPLY)], title="code")
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)
        await pilot.press("tab")  # the reply, with two code blocks, is selected
        await pilot.press("C")
        await wait_until(pilot, lambda: isinstance(app.screen, CodeChooser))
        options = app.screen.query_one(OptionList)
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert prompts == ["1  print('one')  · 1 line", "2  echo two  · 1 line"]
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, CodeChooser))
        assert app.clipboard == "echo two\n"
        assert any("code block 2 of 2" in n.message for n in app._notifications)
        await pilot.press("C")
        await wait_until(pilot, lambda: isinstance(app.screen, CodeChooser))
        await pilot.press("escape")  # nothing copied
        await wait_until(pilot, lambda: not isinstance(app.screen, CodeChooser))
        assert app.clipboard == "echo two\n"
        await pilot.press("C")
        await wait_until(pilot, lambda: isinstance(app.screen, CodeChooser))
        await pilot.press("1")  # a block's number picks it at once
        await wait_until(pilot, lambda: app.clipboard == "print('one')\n")
        assert not isinstance(app.screen, CodeChooser)
        assert app.focused is app.query_one(ChatView)  # back where the user was
