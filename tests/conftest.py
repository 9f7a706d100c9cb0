"""Fixtures several test folders use: a real loopback fault server, fast settings for an
core on it, and an environment for running the real CLI in a subprocess.

The layout: ``unit/`` (one module, no server), ``core/`` (the headless core against
the loopback server, other processes and the real llama.cpp server), ``tui/`` (the app
through Pilot, snapshots), ``cli/`` (the real program as a process: its verbs, in a pty,
in hostile environments). Each folder's conftest.py holds the fixtures only it needs;
plain helpers (settings, ``wait_until``, ``CliEnv``...) are in ``tests/helpers.py``.

Everything here points at real things: a threaded HTTP server on a loopback
port, an SQLite file in a per-test temporary directory, and `python -m
chat_tui` processes. Waiting is always on a condition with a deadline, never a
bare sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chat_tui.config import Settings
from tests.fault_server import FaultServer
from tests.helpers import CliEnv, make_settings


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
    """Fast settings (``make_settings``) for an core on the loopback server."""
    return make_settings(fault_server.base_url, tmp_path)


@pytest.fixture
def cli_env(tmp_path: Path, fault_server: FaultServer) -> CliEnv:
    """Environment for `python -m chat_tui ...` subprocesses: private data dir and
    config file in tmp, endpoint = the fault server."""
    return CliEnv(tmp_path, fault_server.base_url)
