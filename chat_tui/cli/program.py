"""The verbs that need only the settings: the chat window (no verb) and paths."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Settings
from .table import EXIT_OK, Verb, VerbTable, out

if TYPE_CHECKING:
    import argparse

VERBS = VerbTable()


def _chat_window(args: argparse.Namespace, settings: Settings) -> int:
    from ..tui.app import run_app

    return run_app(settings)


TUI = Verb("tui", "settings", _chat_window)  # what `chat-tui` with no verb runs


@VERBS.verb(
    "paths",
    needs="settings",
    help="where config, data and logs live",
    description="Print where the config file, database and log live.",
)
def paths(args: argparse.Namespace, settings: Settings) -> int:
    out(f"config:   {settings.config_path}")
    out(f"data:     {settings.data_dir}")
    out(f"database: {settings.db_path}")
    out(f"log:      {settings.log_path}")
    return EXIT_OK
