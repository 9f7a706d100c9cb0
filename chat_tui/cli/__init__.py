"""Command-line entry point: the chat window by default, plus scriptable verbs.

Imports stay light here: the TUI (textual) and the core (httpx, aiosqlite)
are imported only when a verb needs them (``table.run_verb`` opens them), so
`chat-tui --help` and the path to the TUI's first frame do not pay for what
they do not use.

- ``shared``: the flags shared by every verb (defined once), and the quick reading
  of a command line that has nothing else (the chat window);
- ``parser``: every verb's parser;
- ``table``: how a verb is declared, exit codes, and the one place that opens
  what a verb needs (settings, store or core) and closes it;
- ``messages`` (send, sync, status, retry, cancel), ``browse`` (list, show,
  search, export, import), ``turns`` (models, regenerate, edit, version),
  ``program`` (the chat window, paths): the verbs;
- ``shapes``: the JSON of records that have no ``as_json`` of their own.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..config import ConfigError, load_settings, missing_config_notice
from .program import TUI
from .shared import window_args
from .table import EXIT_ERROR, EXIT_USAGE, CliError, run_verb

if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace

__all__ = ["build_parser", "load_settings", "main"]


def build_parser() -> argparse.ArgumentParser:
    from .parser import build_parser as build

    return build()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = window_args(argv)
    if args is None:
        return _run(build_parser().parse_args(argv))
    from .. import startup

    startup.pause()  # until the chat window's first frame (startup.py)
    try:
        return _run(args)
    finally:
        startup.resume()  # a no-op once the window has drawn; else it never did


def _run(args: argparse.Namespace | SimpleNamespace) -> int:
    try:
        settings = load_settings(base_url=args.base_url, model=args.model)
    except ConfigError as exc:
        print(f"chat-tui: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    notice = missing_config_notice()
    if notice and args.verb is not TUI:  # the TUI says it once, in the window
        print(f"chat-tui: warning: {notice}", file=sys.stderr)
    if not settings.verify_tls and args.verb is not TUI:  # the TUI shows its own warning
        print(
            "chat-tui: warning: TLS certificate verification is OFF (verify_tls = false): "
            "the connection and the API key are not protected",
            file=sys.stderr,
        )
    from ..logs import setup_logging
    from ..store import StoreError

    setup_logging(settings, verb=args.verb.name)
    try:
        return run_verb(args.verb, args, settings)  # type: ignore[arg-type]
    except (CliError, StoreError) as exc:
        print(f"chat-tui: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else EXIT_ERROR
    except KeyboardInterrupt:
        return 130
