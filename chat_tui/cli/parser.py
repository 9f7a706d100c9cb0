"""The command line: every verb's parser made from the verb tables, each with the
flags every verb shares (``shared.SHARED_FLAGS``). ``chat-tui`` with nothing but
those flags does not come here (``shared.window_args``)."""

from __future__ import annotations

import argparse

from .. import __version__
from . import browse, messages, program, turns
from .shared import SHARED_FLAGS
from .table import Verb

VERBS: tuple[Verb, ...] = (*messages.VERBS, *browse.VERBS, *turns.VERBS, *program.VERBS)


def _add_shared_flags(parser: argparse.ArgumentParser, *, verb: bool) -> None:
    """A verb's copy defaults to SUPPRESS, so a flag given only before the verb is not
    overwritten by the verb's unset copy (argparse applies a subparser's defaults last);
    one given after the verb wins."""
    for flag in SHARED_FLAGS:
        parser.add_argument(
            *flag.names, **flag.options, default=argparse.SUPPRESS if verb else None
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-tui",
        description="A terminal chat client for OpenAI-compatible endpoints that never loses "
        "a message on a bad network. Without a verb it opens the chat window.",
        epilog="Settings: config.toml (see `chat-tui paths`), OPENAI_BASE_URL, OPENAI_API_KEY, "
        "CHAT_TUI_MODEL, CHAT_TUI_CONFIG, CHAT_TUI_DATA_DIR.",
    )
    _add_shared_flags(parser, verb=False)
    parser.add_argument("--version", action="version", version=f"chat-tui {__version__}")
    parser.set_defaults(verb=program.TUI)
    verbs = parser.add_subparsers(title="verbs", metavar="VERB")
    for verb in VERBS:
        p = verbs.add_parser(verb.name, help=verb.help, description=verb.description)
        _add_shared_flags(p, verb=True)
        verb.add_arguments(p)
        p.set_defaults(verb=verb)
    return parser
