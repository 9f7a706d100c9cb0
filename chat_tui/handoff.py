"""Hand queued messages to a detached `chat-tui sync --until-empty` when the app exits.

At most one hand-off process runs per database: it holds an exclusive
``flock`` on ``sync.lock`` in the data dir for as long as it runs. The lock
goes with the process, so a killed one never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from .config import Settings

LOCK_NAME = "sync.lock"


def acquire_lock(data_dir: Path) -> IO[bytes] | None:
    """Take the hand-off lock; returns the open file to keep, or None if it is held."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    handle = open(fd, "ab")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def is_running(data_dir: Path) -> bool:
    held = acquire_lock(data_dir)
    if held is None:
        return True
    held.close()
    return False


def spawn(settings: Settings) -> int | None:
    """Start the detached sync; returns its pid, or None if one already runs."""
    if is_running(settings.data_dir):
        return None
    timeout = settings.max_age if settings.max_age > 0 else 7 * 24 * 3600.0
    argv = [
        sys.executable,
        "-m",
        "chat_tui",
        "sync",
        "--until-empty",
        "--handoff",
        "--timeout",
        f"{timeout:.0f}",
        "--base-url",
        settings.base_url,
        "--model",
        settings.model,
    ]
    env = {
        **os.environ,
        "CHAT_TUI_DATA_DIR": str(settings.data_dir),
        "CHAT_TUI_CONFIG": str(settings.config_path),
    }
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # survives the end of the SSH session (no SIGHUP)
        close_fds=True,
        env=env,
        cwd=str(settings.data_dir),
    )
    return process.pid
