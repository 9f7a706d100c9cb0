"""A small rotating log in the data dir.

What is logged at INFO: states, counts, ids, timings and error classes. Never
message text and never the API key; a filter also redacts the key should any
library put it in a record.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from typing import TextIO

from .config import Settings

MAX_BYTES = 1_000_000
BACKUPS = 3


class _RedactKey(logging.Filter):
    def __init__(self, secret: str | None) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secret:
            message = record.getMessage()
            if self.secret in message:
                record.msg = message.replace(self.secret, "[redacted]")
                record.args = None
        return True


class _PrivateRotatingFileHandler(RotatingFileHandler):
    """Creates the log 0600 itself, also the fresh file after a rollover (umask or not)."""

    def _open(self) -> TextIO:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:
        # A full disk must not print "--- Logging error ---" and a traceback over the
        # user's terminal; the line is lost, the program goes on.
        pass


def setup_logging(settings: Settings, *, verb: str) -> None:
    """Log to ``chat-tui.log`` in the data dir (0600). Failing to log never stops the program."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = settings.log_path
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)  # one left readable (older version, by hand) is tightened
        handler = _PrivateRotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        )
    except OSError:
        return
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {verb}[%(process)d] %(name)s: %(message)s")
    )
    handler.addFilter(_RedactKey(settings.api_key))
    root = logging.getLogger("chat_tui")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    root.propagate = False
    # asyncio reports stray task failures through its logger, which would
    # otherwise print them over the TUI: they belong in the log file.
    stray = logging.getLogger("asyncio")
    stray.addHandler(handler)
    stray.propagate = False
