"""Shared fixtures: a real loopback fault server, fast settings, a real engine,
and an environment for running the real CLI in a subprocess.

Everything here points at real things: a threaded HTTP server on a loopback
port, an SQLite file in a per-test temporary directory, and `python -m
chat_tui` processes. Waiting is always on a condition with a deadline, never a
bare sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_tui.config import Settings
from chat_tui.engine import Engine
from tests.fault_server import FaultServer

REPO_ROOT = Path(__file__).resolve().parent.parent

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
    values: dict[str, Any] = {
        "base_url": base_url,
        "data_dir": tmp / "data",
        "config_path": tmp / "config" / "config.toml",
        "api_key": None,
        **FAST,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(fault_server: FaultServer) -> FaultServer:
    """The same loopback server, under the short name the TUI tests use."""
    return fault_server


@pytest.fixture
def settings(tmp_path: Path, fault_server: FaultServer) -> Settings:
    return make_settings(fault_server.base_url, tmp_path)


@pytest.fixture
def events() -> list[Any]:
    return []


@pytest.fixture
async def engine(settings: Settings, events: list[Any]) -> AsyncIterator[Engine]:
    """An open engine (reachability watcher running, no sender started)."""
    eng = await Engine.open(settings, listener=events.append)
    try:
        eng.start_watching()
        yield eng
    finally:
        await eng.close()


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` (sync or async) until true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
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


# -- the CLI in a subprocess ------------------------------------------------------------------


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


@pytest.fixture
def cli_env(tmp_path: Path, fault_server: FaultServer) -> CliEnv:
    """Environment for `python -m chat_tui ...` subprocesses: private data dir and
    config file in tmp, endpoint = the fault server."""
    return CliEnv(tmp_path, fault_server.base_url)
