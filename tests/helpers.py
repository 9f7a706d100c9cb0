"""What the test folders share that is not a fixture: settings, waiting on a condition,
a seeded history, the CLI in a subprocess, the real program in a pseudo-terminal and a
small disk of our own.

Test modules import these from here, never from each other. Fixtures live in the
conftest.py files: ``tests/conftest.py`` holds those several folders use (the loopback
fault server, ``cli_env``), ``tests/<folder>/conftest.py`` those one folder uses. The
test doubles with a life of their own stay modules of their own: ``tests/fault_server.py``
(the misbehaving server), ``tests/netlab.py`` (network namespaces, nftables, a tmpfs),
``tests/llama.py`` (the real llama.cpp server) and ``tests/scenes.py`` (the screens
of the snapshot tests and the README's screenshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chat_tui.config import Settings
from chat_tui.store import Store
from tests.fault_server import FaultServer
from tests.netlab import NetLabUnavailable, small_disk

if TYPE_CHECKING:
    from chat_tui.tui.app import ChatApp
    from chat_tui.tui.widgets.chat_view import MessageView

REPO_ROOT = Path(__file__).resolve().parent.parent

# -- settings ----------------------------------------------------------------------------------

# Fast, but still realistic: a dead link fails in 1 s, a silent server in 2 s,
# backoff is full jitter in [0, min(0.2, 0.05·2^n)], offline probes <= 1 s apart.
FAST = {
    "backoff_base": 0.05,
    "backoff_cap": 0.2,
    "connect_timeout": 1.0,
    "read_timeout": 2.0,
    "probe_cap": 1.0,
    "model": "test-model",
}


def fast_config(**extra: object) -> str:
    """config.toml with the suite's fast timings plus ``extra``."""
    values = {k: v for k, v in FAST.items() if k != "model"} | extra
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def make_settings(base_url: str, tmp: Path, **overrides: Any) -> Settings:
    """Settings for an core in the test process: the fast timings, no API key, the
    data under ``tmp/data`` and a config file (absent unless written) under ``tmp/config``."""
    values: dict[str, Any] = {
        "base_url": base_url,
        "data_dir": tmp / "data",
        "config_path": tmp / "config" / "config.toml",
        "api_key": None,
        **FAST,
    }
    values.update(overrides)
    return Settings(**values)


def app_settings(server: FaultServer, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for the app under Pilot: the database is ``data_dir/chat.db``, no config
    file, no hand-off to a background sender on exit; the model and the offline probes
    as a user would have them (they show on screen), the network timings short."""
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "data_dir": data_dir,
        "config_path": data_dir / "none.toml",
        "connect_timeout": 1.0,
        "read_timeout": 3.0,
        "backoff_base": 0.05,
        "backoff_cap": 0.2,
        "handoff_on_exit": False,
    }
    values.update(overrides)
    return Settings(**values)


# -- waiting on a condition --------------------------------------------------------------------


async def wait_until(
    *args: Any, timeout: float = 10.0, interval: float | None = None, what: str = "condition"
) -> None:
    """Wait until a condition holds; fail the test after ``timeout`` seconds.

    ``wait_until(predicate[, timeout])`` polls a predicate (sync or async) every
    ``interval`` (0.02 s). ``wait_until(pilot, predicate[, timeout])`` waits for an app
    under Pilot: between checks it pauses the app for ``interval`` (0.05 s), which lets it
    handle its messages and refresh the screen.
    """
    pilot = None
    if args and not callable(args[0]):  # a Pilot
        pilot, args = args[0], args[1:]
    predicate: Callable[[], Awaitable[bool] | bool] = args[0]
    if len(args) > 1:
        timeout = args[1]
    if interval is None:
        interval = 0.05 if pilot is not None else 0.02
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        if pilot is not None:
            await pilot.pause(interval)
        else:
            await asyncio.sleep(interval)


def online(app: Any) -> bool:
    """The app's default endpoint is online (``app``: a ChatApp)."""
    return app.reach is not None and app.reach.state == "online"


def wait_until_sync(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """``wait_until`` for a test outside an event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_settled(server: FaultServer, timeout: float = 5.0) -> None:
    """Wait until the server has recorded the outcome of every request (a
    client can act on a reply before the server thread notes it as completed).
    Requests a ``hang`` fault is still sitting on are ignored."""
    if not server.wait_for(
        lambda rs: all(r.outcome != "pending" or r.fault == "hang" for r in rs), timeout
    ):
        pytest.fail("the fault server still has requests in flight")


# -- the database and the screen ---------------------------------------------------------------


async def seed_history(
    db: Path,
    pairs: list[tuple[str, str]],
    title: str = "Geography",
    meta: dict[str, Any] | None = None,
) -> int:
    """Delivered question/answer pairs in one new conversation, as a past session left
    them (through the real outbox: enqueue, claim, complete). Returns its id."""
    store = await Store.open(db)
    try:
        conversation = await store.create_conversation(title)
        for question, answer in pairs:
            message, _ = await store.enqueue(conversation.id, question)
            claim = await store.claim_next("seed", lease_seconds=30)
            assert claim is not None and claim.message.id == message.id
            await store.complete(message.id, "seed", answer, meta=meta)
        return conversation.id
    finally:
        await store.close()


def views(app: ChatApp) -> list[MessageView]:
    """The message views on the chat screen, top to bottom."""
    from chat_tui.tui.widgets.chat_view import MessageView

    return list(app.query(MessageView))


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    """A small tmpfs of our own; the test skips, saying why, when mounting is refused."""
    try:
        with small_disk(where, size) as disk:
            yield disk
    except NetLabUnavailable as exc:
        print(exc)
        pytest.skip(str(exc))


# -- the CLI in a subprocess -------------------------------------------------------------------


class CliEnv:
    """Where a subprocess `chat-tui` keeps its data, and how to run it."""

    def __init__(self, tmp: Path, base_url: str) -> None:
        self.data_dir = tmp / "cli-data"
        self.config_path = tmp / "cli-config" / "config.toml"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHAT_TUI_"))
        }
        self.env.update(
            {
                "CHAT_TUI_DATA_DIR": str(self.data_dir),
                "CHAT_TUI_CONFIG": str(self.config_path),
                "OPENAI_BASE_URL": base_url,
                "CHAT_TUI_MODEL": "test-model",
                "PYTHONPATH": str(REPO_ROOT),
                "NO_COLOR": "1",
            }
        )
        self.write_config()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "chat.db"

    def write_config(self, text: str | None = None) -> None:
        """Fast timings for the CLI too (config.toml is the only way to set them)."""
        if text is None:
            text = fast_config()
        self.config_path.write_text(text)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "chat_tui", *args]

    def run(
        self, *args: str, timeout: float = 30.0, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args),
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input if input is not None else "",
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"chat-tui {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def json(self, *args: str, timeout: float = 30.0) -> Any:
        proc = self.run(*args, timeout=timeout, check=True)
        return json.loads(proc.stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


# -- the real program in a pseudo-terminal -----------------------------------------------------


class Terminal:
    """chat-tui running in a pty, read and typed into like a person would."""

    def __init__(
        self,
        data_dir: Path,
        base_url: str,
        *args: str,
        config: Path | None = None,
        block_sighup: bool = False,
    ) -> None:
        """``block_sighup``: the app never receives SIGHUP (blocked before exec), as when
        a hang-up reaches only another process group."""
        import pty
        import signal

        env = {
            **os.environ,
            "CHAT_TUI_DATA_DIR": str(data_dir),
            "CHAT_TUI_CONFIG": str(config or data_dir / "absent.toml"),
            "TERM": "xterm-256color",
            "COLUMNS": "100",
            "LINES": "30",
        }
        env.pop("TEXTUAL", None)
        argv = [sys.executable, "-m", "chat_tui", "--base-url", base_url, *args]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become chat-tui
            if block_sighup:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
            os.execvpe(argv[0], argv, env)
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    return needle in self.output
                if not chunk:
                    return needle in self.output
                self.output += chunk
        return True

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def drain(self, seconds: float) -> None:
        """Keep reading so the app never blocks on a full pty buffer."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:
                    return

    def wait(self, timeout: float = 15.0) -> int | None:
        """Exit status, or None if it did not exit in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            self.drain(0.05)
        return None

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        with contextlib.suppress(OSError):
            os.close(self.fd)
