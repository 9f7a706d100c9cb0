"""Command-line entry point: the TUI by default, plus scriptable verbs.

Imports stay light here: the TUI (textual) and the engine (httpx, aiosqlite)
are imported inside the verbs that need them, so `chat-tui --help` and the
path to the TUI's first frame do not pay for what they do not use.

Exit codes: 0 success; 1 an error (message on stderr); 2 bad usage or an
invalid config; 3 timed out (`sync --until-empty --timeout`, `send --wait`);
4 the message failed (`send --wait`); 5 offline (`sync --once`, `send --wait`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..config import ConfigError, Settings, load_settings, missing_config_notice

if TYPE_CHECKING:
    from ..engine import Engine
    from ..store import Conversation, Message, Store

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TIMEOUT, EXIT_FAILED, EXIT_OFFLINE = 0, 1, 2, 3, 4, 5


class CliError(Exception):
    """A problem to report in one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _out(text: str = "") -> None:
    print(text, flush=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run a verb; SIGTERM/SIGHUP stop it cleanly (leases released, database closed)."""

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


async def _open_engine(settings: Settings) -> Engine:
    from ..engine import Engine

    return await Engine.open(settings)


async def _wait_first_probe(engine: Engine, timeout: float) -> None:
    await engine.watch_pending_endpoints()  # every endpoint something waits for is probed
    engine.start_watching()
    deadline = time.monotonic() + timeout
    links = engine.links.all()
    while (
        any(link.reachability.state == "unknown" for link in links) and time.monotonic() < deadline
    ):
        await engine.links.wait_change(timeout=deadline - time.monotonic())


# -- verbs -------------------------------------------------------------------------------------


def cmd_tui(args: argparse.Namespace, settings: Settings) -> int:
    from ..tui.app import run_app

    return run_app(settings)


def cmd_paths(args: argparse.Namespace, settings: Settings) -> int:
    _out(f"config:   {settings.config_path}")
    _out(f"data:     {settings.data_dir}")
    _out(f"database: {settings.db_path}")
    _out(f"log:      {settings.log_path}")
    return EXIT_OK


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    text = " ".join(args.text) if args.text else ""
    if text == "-" or (not text and not sys.stdin.isatty()):
        text = sys.stdin.read()
    # Undecodable bytes (argv, stdin) arrive as lone surrogates, which SQLite
    # cannot store: keep the readable text and mark the bad bytes with U+FFFD.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if not text.strip():
        raise CliError("nothing to send: give the text as an argument or on stdin", EXIT_USAGE)
    if args.endpoint and args.endpoint not in settings.endpoint_names:
        raise CliError(
            f"no endpoint named {args.endpoint!r} (known: {', '.join(settings.endpoint_names)})",
            EXIT_USAGE,
        )

    async def run() -> int:
        engine = await _open_engine(settings)
        async with engine:
            conversation_id = None if args.new else args.conversation
            if conversation_id is None and not args.new:
                recent = await engine.store.list_conversations(limit=1)
                conversation_id = recent[0].id if recent else None
            if args.endpoint and conversation_id is not None:
                await engine.store.set_endpoint(conversation_id, args.endpoint)
            result = await engine.outbox.submit(conversation_id, text, endpoint=args.endpoint)
            message = result.message
            if not args.wait:
                if args.json:
                    _out(
                        json.dumps(
                            {
                                "conversation_id": message.conversation_id,
                                "message_id": message.id,
                                "state": message.state,
                                "duplicate": result.duplicate,
                            }
                        )
                    )
                elif result.duplicate:
                    _out(
                        f"already queued as message {message.id} in conversation "
                        f"{message.conversation_id}; not queued twice"
                    )
                else:
                    _out(f"queued message {message.id} in conversation {message.conversation_id}")
                return EXIT_OK
            return await _wait_for_reply(engine, message.id, args)

    return _run(run())


async def _wait_for_reply(engine: Engine, message_id: int, args: argparse.Namespace) -> int:
    """`send --wait`: deliver, then print the reply. Exit 0, 4 failed, 3 timed out, 5 offline."""
    from ..sanitize import sanitize

    engine.start_watching()
    engine.start_delivery()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    offline_shown = False
    first = await engine.store.get_message(message_id)
    assert first is not None
    # The conversation's own endpoint decides "offline"; the fallback (if any)
    # must have been probed once before it can answer.
    link = engine.link_for(await engine.store.get_conversation(first.conversation_id))
    reach = link.reachability if link is not None else engine.reachability
    fallback = engine.links.get(engine.settings.fallback) if engine.settings.fallback else None
    while True:
        message = await engine.store.get_message(message_id)
        assert message is not None
        if message.state in ("delivered", "failed", "expired", "cancelled"):
            break
        ready = fallback is None or fallback.reachability.state != "unknown"
        if not reach.online and reach.state != "unknown" and ready and not offline_shown:
            offline_shown = True
            notice = await engine.answer_while_offline(message)
            if notice is not None and not args.json:
                print(
                    f"[{sanitize(str(notice.meta.get('label')))}]\n{sanitize(notice.content)}\n",
                    file=sys.stderr,
                )
        if deadline is not None and time.monotonic() > deadline:
            code = EXIT_OFFLINE if not reach.online else EXIT_TIMEOUT
            why = reach.current.describe() if not reach.online else "timed out"
            print(f"chat-tui: {why}; message {message_id} stays queued", file=sys.stderr)
            return code
        await asyncio.sleep(0.05)
    reply = None
    if message.state == "delivered":
        page = await engine.store.messages_around(message.conversation_id, message.seq, limit=8)
        reply = next((m for m in page if m.role == "assistant" and m.reply_to == message.id), None)
    if args.json:
        _out(
            json.dumps(
                {
                    "conversation_id": message.conversation_id,
                    "message_id": message.id,
                    "state": message.state,
                    "error": message.error,
                    "reply": reply.content if reply else None,
                }
            )
        )
    elif reply is not None:
        _out(sanitize(reply.content))
    else:
        print(
            f"chat-tui: message {message_id} {message.state}: {sanitize(message.error or '')}",
            file=sys.stderr,
        )
    return EXIT_OK if message.state == "delivered" else EXIT_FAILED


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    lock = None
    if args.handoff:
        from ..handoff import acquire_lock

        lock = acquire_lock(settings.data_dir)
        if lock is None:
            return EXIT_OK  # another hand-off process is already delivering

    async def run() -> int:
        from ..store import StoreReplaced

        engine = await _open_engine(settings)
        async with engine:
            await _wait_first_probe(engine, settings.connect_timeout + 1)
            if args.once:
                if not engine.links.any_online:
                    print(f"chat-tui: {engine.reachability.current.describe()}", file=sys.stderr)
                    return EXIT_OFFLINE
                delivered = await engine.outbox.deliver_available()
                _out(f"delivered {delivered}; {await engine.store.pending_count()} still queued")
                return EXIT_OK
            until_empty = args.until_empty
            try:
                await asyncio.wait_for(engine.run_delivery(until_empty=until_empty), args.timeout)
            except StoreReplaced as exc:
                saved = await engine.rescue_unsent()
                where = (
                    f"; {len(saved)} unsent message(s) kept in {saved[0].parent}" if saved else ""
                )
                print(f"chat-tui: {exc}; delivery stopped{where}", file=sys.stderr)
                return EXIT_ERROR
            except TimeoutError:
                left = await engine.store.pending_count()
                print(f"chat-tui: timed out with {left} still queued", file=sys.stderr)
                return EXIT_TIMEOUT
            _out(
                f"delivered {engine.outbox.delivered}; "
                f"{await engine.store.pending_count()} still queued"
            )
            return EXIT_OK

    return _run(run())


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        engine = await _open_engine(settings)
        async with engine:
            await _wait_first_probe(engine, min(settings.connect_timeout, 3.0) + 1)
            reach = engine.reachability.current
            counts = await engine.store.counts()
            items = await engine.store.queue_items()
            if args.json:
                _out(
                    json.dumps(
                        {
                            "endpoint": settings.base_url,
                            "model": settings.model,
                            "reachability": {"state": reach.state, "detail": reach.detail},
                            "endpoints": {
                                link.name: {
                                    "base_url": link.settings.base_url,
                                    "model": link.model,
                                    "state": link.reachability.state,
                                    "detail": link.reachability.current.detail,
                                }
                                for link in engine.links.all()
                            },
                            "counts": counts,
                            "items": [item.as_json() for item in items],
                        },
                        indent=2,
                    )
                )
                return EXIT_OK
            from ..sanitize import sanitize

            _out(f"endpoint: {settings.base_url} ({settings.model})")
            _out(f"state:    {reach.describe()}")
            for link in engine.links.all()[1:]:
                _out(
                    f"  {link.name}: {link.settings.base_url} ({link.model}) — "
                    f"{link.reachability.current.describe()}"
                )
            _out(
                "messages: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
                if any(counts.values())
                else "messages: none"
            )
            for item in items:
                m = item.message
                extra = f" attempts={m.attempts}" if m.attempts else ""
                if m.next_attempt_at and m.state == "queued" and m.next_attempt_at > time.time():
                    extra += f" next={_when(m.next_attempt_at)}"
                if m.error:
                    extra += f" error={sanitize(m.error)}"
                preview = sanitize(m.content.splitlines()[0] if m.content else "")[:50]
                _out(
                    f"  #{m.id} [{m.state}] {sanitize(item.conversation_title)[:30]!s}: "
                    f"{preview}{extra}"
                )
            return EXIT_OK

    return _run(run())


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        from ..store import opened

        async with opened(settings.db_path) as store:
            conversations = await store.list_conversations()
        if args.json:
            _out(
                json.dumps(
                    [
                        {
                            "id": c.id,
                            "title": c.title,
                            "created_at": c.created_at,
                            "updated_at": c.updated_at,
                        }
                        for c in conversations
                    ]
                )
            )
            return EXIT_OK
        from ..sanitize import sanitize

        for c in conversations:
            _out(f"{c.id:>6}  {_when(c.updated_at)}  {sanitize(c.title) or '(untitled)'}")
        if not conversations:
            _out("no conversations yet")
        return EXIT_OK

    return _run(run())


def _message_label(m: Message) -> str:
    if m.role == "user":
        return "you" if m.state == "delivered" else f"you [{m.state}]"
    if m.role == "assistant":
        from ..export import reply_labels  # stopped, reasoning only, tokens, tokens/s

        return " · ".join(["assistant", *reply_labels(m)])
    return {"notice": "note"}.get(m.role, m.role)


async def _load_conversation(
    settings: Settings, conversation_id: int
) -> tuple[Conversation, list[Message], dict[int, list[dict[str, Any]]]]:
    """A conversation, all its messages and its turns' versions, or a CliError."""
    from ..store import opened

    async with opened(settings.db_path) as store:
        conversation = await store.get_conversation(conversation_id)
        if conversation is None:
            raise CliError(f"no conversation with id {conversation_id}")
        messages = await store.all_messages(conversation_id)
        return conversation, messages, await store.turn_versions(conversation_id)


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        conversation, messages, versions = await _load_conversation(settings, args.id)
        if args.json:
            from ..export import conversation_json

            _out(json.dumps(conversation_json(conversation, messages, versions)))
            return EXIT_OK
        from ..sanitize import sanitize

        _out(f"# {sanitize(conversation.title) or '(untitled)'}")
        for m in messages:
            _out()
            _out(f"── {_message_label(m)} · {_when(m.created_at)}")
            _out(sanitize(m.content))
            if m.error and m.state in ("failed", "queued", "expired"):
                _out(f"   ({sanitize(m.error)})")
        return EXIT_OK

    return _run(run())


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        from ..store import opened

        async with opened(settings.db_path) as store:
            hits = await store.search(args.query, limit=args.limit)
        if args.json:
            _out(
                json.dumps(
                    [
                        {
                            "conversation_id": h.message.conversation_id,
                            "conversation_title": h.conversation_title,
                            "message_id": h.message.id,
                            "role": h.message.role,
                            "created_at": h.message.created_at,
                            "snippet": h.snippet,
                        }
                        for h in hits
                    ]
                )
            )
            return EXIT_OK
        from ..sanitize import sanitize

        for h in hits:
            snippet = " ".join(sanitize(h.snippet).split())
            _out(
                f"{h.message.conversation_id:>6}  {sanitize(h.conversation_title)[:30]:<30}  "
                f"#{h.message.id} {h.message.role}: {snippet}"
            )
        if not hits:
            _out("no matches")
        return EXIT_OK

    return _run(run())


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        from ..export import render

        conversation, messages, versions = await _load_conversation(settings, args.id)
        text = render(conversation, messages, args.format, versions)
        if args.output in (None, "-"):
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            return EXIT_OK
        try:
            # "x" refuses to replace a file the user already has, unless --force.
            with open(args.output, "w" if args.force else "x", encoding="utf-8") as fh:
                fh.write(text)
        except FileExistsError:
            raise CliError(
                f"{args.output} already exists; use --force to overwrite it", EXIT_USAGE
            ) from None
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror}") from None
        print(f"exported conversation {args.id} to {args.output}", file=sys.stderr)
        return EXIT_OK

    return _run(run())


async def _wait_for_stop(store: Store, message: Message, seconds: float = 5.0) -> Message:
    """A message being sent: its sender (any process) notices the stop within a
    second and settles it; wait for that, bounded."""
    _out(f"message {message.id} is being sent; asking its sender to stop…")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        current = await store.get_message(message.id)
        if current is not None and current.state != "sending":
            return current
    raise CliError(
        f"message {message.id} is still being sent; its sender has not answered the stop "
        "(it stops when its lease runs out, or run `chat-tui cancel` again)"
    )


def _queue_action(action: str) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        async def run() -> int:
            from ..store import StoreError, opened

            async with opened(settings.db_path) as store:
                change = store.retry if action == "retry" else store.cancel
                try:
                    message = await change(args.id)
                except StoreError as exc:
                    raise CliError(str(exc)) from None
                if action == "cancel" and message.state == "sending":
                    message = await _wait_for_stop(store, message)
            if action == "cancel" and message.state == "delivered":
                _out(f"message {message.id} was being answered: stopped, the reply so far kept")
            else:
                _out(f"message {message.id} is now {message.state}")
            return EXIT_OK

        return _run(run())

    return command


# -- parser ------------------------------------------------------------------------------------


def _shared_flags(*, verb: bool) -> argparse.ArgumentParser:
    """The flags every verb accepts, defined once.

    They may come before or after the verb. The verb's copy defaults to
    SUPPRESS, so a flag given only before the verb is not overwritten by the
    verb's unset copy (argparse applies a subparser's defaults last).
    """
    shared = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if verb else None
    shared.add_argument(
        "--base-url",
        default=default,
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1",
    )
    shared.add_argument("--model", default=default, help="model name sent with each request")
    return shared


def build_parser() -> argparse.ArgumentParser:
    top = _shared_flags(verb=False)
    common = _shared_flags(verb=True)

    parser = argparse.ArgumentParser(
        prog="chat-tui",
        description="A terminal chat client for OpenAI-compatible endpoints that never loses "
        "a message on a bad network. Without a verb it opens the chat window.",
        parents=[top],
        epilog="Settings: config.toml (see `chat-tui paths`), OPENAI_BASE_URL, OPENAI_API_KEY, "
        "CHAT_TUI_MODEL, CHAT_TUI_CONFIG, CHAT_TUI_DATA_DIR.",
    )
    parser.add_argument("--version", action="version", version=f"chat-tui {__version__}")
    parser.set_defaults(func=cmd_tui)
    verbs = parser.add_subparsers(title="verbs", metavar="VERB")

    p = verbs.add_parser(
        "send",
        parents=[common],
        help="queue a message",
        description="Queue a message for delivery (durably, before returning).",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "-c",
        "--conversation",
        type=int,
        metavar="ID",
        help="conversation to add to (default: the most recent)",
    )
    target.add_argument("--new", action="store_true", help="start a new conversation")
    p.add_argument("--json", action="store_true", help="print {conversation_id, message_id, state}")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the reply and print it (exit 0 delivered, 4 failed, 3 timed out, 5 offline)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="with --wait: give up waiting after S seconds (the message stays queued)",
    )
    p.add_argument(
        "--endpoint",
        metavar="NAME",
        help="the endpoint this conversation uses from now on ([endpoints.NAME] or 'default')",
    )
    p.add_argument("text", nargs="*", help="the message ('-' or nothing: read stdin)")
    p.set_defaults(func=cmd_send)

    p = verbs.add_parser(
        "sync",
        parents=[common],
        help="deliver queued messages",
        description="Deliver queued messages without the chat window.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--once", action="store_true", help="send what is deliverable now, then exit (default)"
    )
    mode.add_argument(
        "--until-empty",
        action="store_true",
        help="keep going until nothing is deliverable without the user",
    )
    mode.add_argument("--watch", action="store_true", help="run until stopped")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up after S seconds (exit status 3)",
    )
    p.add_argument("--handoff", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sync)

    p = verbs.add_parser(
        "status",
        parents=[common],
        help="reachability and the queue",
        description="Show whether the endpoint answers and what is queued.",
    )
    p.add_argument("--json", action="store_true", help="print the state, counts and items as JSON")
    p.set_defaults(func=cmd_status)

    p = verbs.add_parser(
        "list",
        parents=[common],
        help="list conversations",
        description="List conversations, most recent first.",
    )
    p.add_argument("--json", action="store_true", help="print the conversations as JSON")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser(
        "show",
        parents=[common],
        help="print a conversation",
        description="Print a conversation with every message and its state.",
    )
    p.add_argument("id", type=int, help="conversation id (see `chat-tui list`)")
    p.add_argument("--json", action="store_true", help="print {id, title, messages: [...]} as JSON")
    p.set_defaults(func=cmd_show)

    p = verbs.add_parser(
        "search",
        parents=[common],
        help="full-text search of history",
        description="Search every message of every conversation.",
    )
    p.add_argument(
        "query", help='words to find (each as a prefix); "a quoted phrase" matches as a phrase'
    )
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="show at most N matches (default 50)"
    )
    p.add_argument("--json", action="store_true", help="print the matches as JSON")
    p.set_defaults(func=cmd_search)

    p = verbs.add_parser(
        "export",
        parents=[common],
        help="write a conversation to a file",
        description="Export a conversation as Markdown or JSON.",
    )
    p.add_argument("id", type=int, help="conversation id (see `chat-tui list`)")
    p.add_argument(
        "--format", choices=("md", "json"), default="md", help="Markdown (default) or JSON"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite FILE if it already exists")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser(
        "retry",
        parents=[common],
        help="requeue a failed or expired message",
        description="Put a failed, expired or cancelled message back in the queue.",
    )
    p.add_argument("id", type=int, help="message id (see `chat-tui status`)")
    p.set_defaults(func=_queue_action("retry"))

    p = verbs.add_parser(
        "cancel",
        parents=[common],
        help="cancel a queued message, or stop one being sent",
        description="Cancel a queued, failed or expired message (kept in history). A message "
        "being sent is stopped, whichever process sends it: a reply already streaming is kept "
        "as the reply, labelled stopped; with no reply yet, the message is cancelled.",
    )
    p.add_argument("id", type=int, help="message id (see `chat-tui status`)")
    p.set_defaults(func=_queue_action("cancel"))

    p = verbs.add_parser(
        "paths",
        parents=[common],
        help="where config, data and logs live",
        description="Print where the config file, database and log live.",
    )
    p.set_defaults(func=cmd_paths)

    from .turns import add_verbs

    add_verbs(verbs, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is cmd_sync and not (args.until_empty or args.watch):
        args.once = True
    try:
        settings = load_settings(base_url=args.base_url, model=args.model)
    except ConfigError as exc:
        print(f"chat-tui: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    notice = missing_config_notice()
    if notice and args.func is not cmd_tui:  # the TUI says it once, in the window
        print(f"chat-tui: warning: {notice}", file=sys.stderr)
    if not settings.verify_tls and args.func is not cmd_tui:  # the TUI shows its own warning
        print(
            "chat-tui: warning: TLS certificate verification is OFF (verify_tls = false): "
            "the connection and the API key are not protected",
            file=sys.stderr,
        )
    from ..logs import setup_logging
    from ..store import StoreError

    setup_logging(
        settings, verb=args.func.__name__.removeprefix("cmd_").replace("command", "queue")
    )
    try:
        return args.func(args, settings)
    except CliError as exc:
        print(f"chat-tui: {exc}", file=sys.stderr)
        return exc.code
    except StoreError as exc:
        print(f"chat-tui: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
