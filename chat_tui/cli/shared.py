"""The flags every verb shares, and the quick reading of a command line that has
nothing else: ``chat-tui [--base-url URL] [--model M]`` opens the chat window
without building the verbs' parsers or importing the verbs, which are not on the
path to its first frame. Anything else (a verb, ``--help``, a typo) is left to
``parser.build_parser``, so its errors and help read the same as ever."""

from __future__ import annotations

from types import SimpleNamespace

from .program import TUI
from .table import arg

# Accepted before or after the verb ("--base-url X send" and "send --base-url X").
SHARED_FLAGS = (
    arg("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1"),
    arg("--model", help="model name sent with each request"),
)
_DEST = {flag.names[0]: flag.names[0].lstrip("-").replace("-", "_") for flag in SHARED_FLAGS}


def window_args(argv: list[str]) -> SimpleNamespace | None:
    """What ``build_parser().parse_args(argv)`` gives when ``argv`` holds only the
    shared flags (each ``--flag VALUE`` or ``--flag=VALUE``); None for anything else."""
    values: dict[str, str | None] = dict.fromkeys(_DEST.values())
    tokens = iter(argv)
    for token in tokens:
        name, eq, value = token.partition("=")
        if name not in _DEST:
            return None
        if not eq:
            value = next(tokens, None)  # type: ignore[assignment]
            if value is None or value.startswith("-"):
                return None  # argparse says what is missing
        values[_DEST[name]] = value
    return SimpleNamespace(verb=TUI, **values)
