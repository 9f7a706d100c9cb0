"""Verbs that send and settle messages: send, sync, status, retry, cancel.

Sending goes through the one outbox (``core.sender``), as in the chat window.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TYPE_CHECKING

from ..config import Settings
from .shapes import link_status, message_ref
from .table import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OFFLINE,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    VerbTable,
    arg,
    check_endpoint,
    json_flag,
    one_of,
    out,
    out_json,
    when,
)

if TYPE_CHECKING:
    from ..core import Core
    from ..store import Message, Store

VERBS = VerbTable()
MESSAGE_ID = arg("id", type=int, help="message id (see `chat-tui status`)")


def _read_text(args: argparse.Namespace, settings: Settings) -> None:
    """The text to send (argument or stdin) in ``args.message``, before anything is opened."""
    text = " ".join(args.text) if args.text else ""
    if text == "-" or (not text and not sys.stdin.isatty()):
        text = sys.stdin.read()
    # Undecodable bytes (argv, stdin) arrive as lone surrogates, which SQLite
    # cannot store: keep the readable text and mark the bad bytes with U+FFFD.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if not text.strip():
        raise CliError("nothing to send: give the text as an argument or on stdin", EXIT_USAGE)
    if args.endpoint:
        check_endpoint(settings, args.endpoint)
    args.message = text


@VERBS.verb(
    "send",
    needs="core",
    help="queue a message",
    description="Queue a message for delivery (durably, before returning).",
    arguments=(
        one_of(
            arg(
                "-c",
                "--conversation",
                type=int,
                metavar="ID",
                help="conversation to add to (default: the most recent)",
            ),
            arg("--new", action="store_true", help="start a new conversation"),
        ),
        json_flag("print {conversation_id, message_id, state}"),
        arg(
            "--wait",
            action="store_true",
            help="wait for the reply and print it "
            "(exit 0 delivered, 4 failed, 3 timed out, 5 offline)",
        ),
        arg(
            "--timeout",
            type=float,
            default=300.0,
            metavar="S",
            help="with --wait: give up waiting after S seconds (the message stays queued)",
        ),
        arg(
            "--endpoint",
            metavar="NAME",
            help="the endpoint this conversation uses from now on ([endpoints.NAME] or 'default')",
        ),
        arg("text", nargs="*", help="the message ('-' or nothing: read stdin)"),
    ),
    check=_read_text,
)
async def send(args: argparse.Namespace, settings: Settings, core: Core) -> int:
    conversation_id = None if args.new else args.conversation
    if conversation_id is None and not args.new:
        recent = await core.store.list_conversations(limit=1)
        conversation_id = recent[0].id if recent else None
    if args.endpoint and conversation_id is not None:
        await core.store.set_endpoint(conversation_id, args.endpoint)
    result = await core.sender.submit(conversation_id, args.message, endpoint=args.endpoint)
    message = result.message
    if args.wait:
        return await _wait_for_reply(core, message.id, args)
    if args.json:
        out_json(message_ref(message) | {"duplicate": result.duplicate})
    elif result.duplicate:
        out(
            f"already queued as message {message.id} in conversation "
            f"{message.conversation_id}; not queued twice"
        )
    else:
        out(f"queued message {message.id} in conversation {message.conversation_id}")
    return EXIT_OK


async def _wait_for_reply(core: Core, message_id: int, args: argparse.Namespace) -> int:
    """`send --wait`: deliver, then print the reply. Exit 0, 4 failed, 3 timed out, 5 offline."""
    from ..sanitize import sanitize

    core.start_watching()
    core.start_delivery()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    offline_shown = False
    first = await core.store.get_message(message_id)
    assert first is not None
    # The conversation's own endpoint decides "offline"; the fallback (if any)
    # must have been probed once before it can answer.
    link = core.link_for(await core.store.get_conversation(first.conversation_id))
    reach = link.reachability if link is not None else core.reachability
    fallback = core.links.get(core.settings.fallback) if core.settings.fallback else None
    while True:
        message = await core.store.get_message(message_id)
        assert message is not None
        if message.state in ("delivered", "failed", "expired", "cancelled"):
            break
        ready = fallback is None or fallback.reachability.state != "unknown"
        if not reach.online and reach.state != "unknown" and ready and not offline_shown:
            offline_shown = True
            notice = await core.answer_while_offline(message)
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
        page = await core.store.messages_around(message.conversation_id, message.seq, limit=8)
        reply = next((m for m in page if m.role == "assistant" and m.reply_to == message.id), None)
    if args.json:
        out_json(
            message_ref(message)
            | {"error": message.error, "reply": reply.content if reply else None}
        )
    elif reply is not None:
        out(sanitize(reply.content))
    else:
        print(
            f"chat-tui: message {message_id} {message.state}: {sanitize(message.error or '')}",
            file=sys.stderr,
        )
    return EXIT_OK if message.state == "delivered" else EXIT_FAILED


async def _wait_first_probe(core: Core, timeout: float) -> None:
    await core.watch_pending_endpoints()  # every endpoint something waits for is probed
    core.start_watching()
    deadline = time.monotonic() + timeout
    links = core.links.all()
    while (
        any(link.reachability.state == "unknown" for link in links) and time.monotonic() < deadline
    ):
        await core.links.wait_change(timeout=deadline - time.monotonic())


def _sync_mode(args: argparse.Namespace, settings: Settings) -> int | None:
    """--once unless told otherwise; a hand-off sync runs only if no other one does."""
    if not (args.until_empty or args.watch):
        args.once = True
    if args.handoff:
        from ..handoff import acquire_lock

        args.handoff_lock = acquire_lock(settings.data_dir)  # held for the process's life
        if args.handoff_lock is None:
            return EXIT_OK  # another hand-off process is already delivering
    return None


@VERBS.verb(
    "sync",
    needs="core",
    help="deliver queued messages",
    description="Deliver queued messages without the chat window.",
    arguments=(
        one_of(
            arg(
                "--once",
                action="store_true",
                help="send what is deliverable now, then exit (default)",
            ),
            arg(
                "--until-empty",
                action="store_true",
                help="keep going until nothing is deliverable without the user",
            ),
            arg("--watch", action="store_true", help="run until stopped"),
        ),
        arg(
            "--timeout",
            type=float,
            default=None,
            metavar="S",
            help="give up after S seconds (exit status 3)",
        ),
        arg("--handoff", action="store_true", help=argparse.SUPPRESS),
    ),
    check=_sync_mode,
)
async def sync(args: argparse.Namespace, settings: Settings, core: Core) -> int:
    from ..store import StoreReplaced

    await _wait_first_probe(core, settings.connect_timeout + 1)
    if args.once:
        if not core.links.any_online:
            print(f"chat-tui: {core.reachability.current.describe()}", file=sys.stderr)
            return EXIT_OFFLINE
        delivered = await core.sender.deliver_available()
        out(f"delivered {delivered}; {await core.store.pending_count()} still queued")
        return EXIT_OK
    try:
        await asyncio.wait_for(core.run_delivery(until_empty=args.until_empty), args.timeout)
    except StoreReplaced as exc:
        saved = await core.rescue_unsent()
        where = f"; {len(saved)} unsent message(s) kept in {saved[0].parent}" if saved else ""
        print(f"chat-tui: {exc}; delivery stopped{where}", file=sys.stderr)
        return EXIT_ERROR
    except TimeoutError:
        left = await core.store.pending_count()
        print(f"chat-tui: timed out with {left} still queued", file=sys.stderr)
        return EXIT_TIMEOUT
    out(f"delivered {core.sender.delivered}; {await core.store.pending_count()} still queued")
    return EXIT_OK


@VERBS.verb(
    "status",
    needs="core",
    help="reachability and the queue",
    description="Show whether the endpoint answers and what is queued.",
    arguments=(json_flag("print the state, counts and items as JSON"),),
)
async def status(args: argparse.Namespace, settings: Settings, core: Core) -> int:
    from ..sanitize import sanitize

    await _wait_first_probe(core, min(settings.connect_timeout, 3.0) + 1)
    reach = core.reachability.current
    counts = await core.store.counts()
    items = await core.store.queue_items()
    if args.json:
        out_json(
            {
                "endpoint": settings.base_url,
                "model": settings.model,
                "reachability": {"state": reach.state, "detail": reach.detail},
                "endpoints": {link.name: link_status(link) for link in core.links.all()},
                "counts": counts,
                "items": [item.as_json() for item in items],
            },
            indent=2,
        )
        return EXIT_OK
    out(f"endpoint: {settings.base_url} ({settings.model})")
    out(f"state:    {reach.describe()}")
    for link in core.links.all()[1:]:
        out(
            f"  {link.name}: {link.settings.base_url} ({link.model}) — "
            f"{link.reachability.current.describe()}"
        )
    out(
        "messages: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        if any(counts.values())
        else "messages: none"
    )
    for item in items:
        m = item.message
        extra = f" attempts={m.attempts}" if m.attempts else ""
        if m.next_attempt_at and m.state == "queued" and m.next_attempt_at > time.time():
            extra += f" next={when(m.next_attempt_at)}"
        if m.error:
            extra += f" error={sanitize(m.error)}"
        preview = sanitize(m.content.splitlines()[0] if m.content else "")[:50]
        out(f"  #{m.id} [{m.state}] {sanitize(item.conversation_title)[:30]!s}: {preview}{extra}")
    return EXIT_OK


@VERBS.verb(
    "retry",
    needs="store",
    help="requeue a failed or expired message",
    description="Put a failed, expired or cancelled message back in the queue.",
    arguments=(MESSAGE_ID,),
)
async def retry(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    message = await store.retry(args.id)
    out(f"message {message.id} is now {message.state}")
    return EXIT_OK


@VERBS.verb(
    "cancel",
    needs="store",
    help="cancel a queued message, or stop one being sent",
    description="Cancel a queued, failed or expired message (kept in history). A message "
    "being sent is stopped, whichever process sends it: a reply already streaming is kept "
    "as the reply, labelled stopped; with no reply yet, the message is cancelled.",
    arguments=(MESSAGE_ID,),
)
async def cancel(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    message = await store.cancel(args.id)
    if message.state == "sending":
        message = await _wait_for_stop(store, message)
    if message.state == "delivered":
        out(f"message {message.id} was being answered: stopped, the reply so far kept")
    else:
        out(f"message {message.id} is now {message.state}")
    return EXIT_OK


async def _wait_for_stop(store: Store, message: Message, seconds: float = 5.0) -> Message:
    """A message being sent: its sender (any process) notices the stop within a
    second and settles it; wait for that, bounded."""
    out(f"message {message.id} is being sent; asking its sender to stop…")
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
