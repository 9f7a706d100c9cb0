"""The table of verbs, and the one place that opens what a verb needs.

Each verb is declared once, with ``@VERBS.verb``: its name, help, arguments and what
it needs opened (the settings only, the store, or the core). ``run_verb``
opens that, runs the verb and closes it however the verb ends; the verbs
themselves never open or close anything.

Exit codes: 0 success; 1 an error (message on stderr); 2 bad usage or an
invalid config; 3 timed out (`sync --until-empty --timeout`, `send --wait`);
4 the message failed (`send --wait`); 5 offline (`sync --once`, `send --wait`).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ..config import Settings

if TYPE_CHECKING:  # argparse itself only when a verb's parser is built (parser.py)
    import argparse

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TIMEOUT, EXIT_FAILED, EXIT_OFFLINE = 0, 1, 2, 3, 4, 5

Needs = Literal["settings", "store", "core"]


class CliError(Exception):
    """A problem to report in one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def out(text: str = "") -> None:
    print(text, flush=True)


def out_json(data: Any, *, indent: int | None = None) -> None:
    import json  # not on the chat window's path

    out(json.dumps(data, indent=indent))


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def check_endpoint(settings: Settings, name: str) -> None:
    if name not in settings.endpoint_names:
        raise CliError(
            f"no endpoint named {name!r} (known: {', '.join(settings.endpoint_names)})", EXIT_USAGE
        )


# -- declaring a verb ----------------------------------------------------------------------------


class Arg:
    """One ``add_argument`` call, kept to be made on the verb's parser."""

    __slots__ = ("names", "options")

    def __init__(self, names: tuple[str, ...], options: dict[str, Any]) -> None:
        self.names = names
        self.options = options

    def add_to(self, parser: argparse._ActionsContainer) -> None:  # a parser or a group
        parser.add_argument(*self.names, **self.options)


def arg(*names: str, **options: Any) -> Arg:
    return Arg(names, options)


def one_of(*args: Arg) -> tuple[Arg, ...]:
    """Arguments of which at most one may be given (a mutually exclusive group)."""
    return args


def json_flag(help: str | None = None) -> Arg:
    return arg("--json", action="store_true", help=help)


# A check runs before anything is opened: it may raise CliError, read input into
# ``args``, or return an exit code to stop there.
Check = Callable[["argparse.Namespace", Settings], int | None]


class Verb:
    """A verb as declared: ``run`` is called with what ``needs`` names opened.

    needs "settings": ``run(args, settings) -> int``, called as it is;
    needs "store" or "core": ``async run(args, settings, store or core) -> int``.
    (A plain class, not a dataclass: this is on the start-up path of every command.)
    """

    __slots__ = ("arguments", "check", "description", "help", "name", "needs", "run")

    def __init__(
        self,
        name: str,
        needs: Needs,
        run: Callable[..., Any],
        help: str | None = None,
        description: str | None = None,
        arguments: tuple[Arg | tuple[Arg, ...], ...] = (),
        check: Check | None = None,
    ) -> None:
        self.name = name
        self.needs = needs
        self.run = run
        self.help = help
        self.description = description
        self.arguments = arguments
        self.check = check

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        for item in self.arguments:
            if isinstance(item, Arg):
                item.add_to(parser)
            else:
                group = parser.add_mutually_exclusive_group()
                for one in item:
                    one.add_to(group)


class VerbTable(list[Verb]):
    """A module's verbs, in the order `chat-tui --help` lists them."""

    def verb(
        self,
        name: str,
        *,
        needs: Needs,
        help: str,
        description: str,
        arguments: tuple[Arg | tuple[Arg, ...], ...] = (),
        check: Check | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare a verb: ``@VERBS.verb("list", needs="store", help=…, description=…)``."""

        def declare(run: Callable[..., Any]) -> Callable[..., Any]:
            self.append(Verb(name, needs, run, help, description, arguments, check))
            return run

        return declare


# -- running a verb ------------------------------------------------------------------------------


def run_verb(verb: Verb, args: argparse.Namespace, settings: Settings) -> int:
    """Run ``verb`` with what it needs opened, and closed again however it ends."""
    if verb.check is not None:
        code = verb.check(args, settings)
        if code is not None:
            return code
    if verb.needs == "settings":
        return verb.run(args, settings)
    return _run_async(_with_opened(verb, args, settings))


async def _with_opened(verb: Verb, args: argparse.Namespace, settings: Settings) -> int:
    if verb.needs == "store":
        from ..store import opened

        async with opened(settings.db_path) as store:
            return await verb.run(args, settings, store)
    from ..core import Core

    core = await Core.open(settings)
    async with core:
        return await verb.run(args, settings, core)


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    """SIGTERM/SIGHUP stop an async verb cleanly (leases released, database closed)."""

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            return EXIT_OK

    return asyncio.run(guarded())
