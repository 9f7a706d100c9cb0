"""Verbs that read history or carry it in and out: list, show, search, export, import."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ..config import Settings
from .shapes import conversation_row, search_hit
from .table import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    VerbTable,
    arg,
    json_flag,
    out,
    out_json,
    when,
)

if TYPE_CHECKING:
    from ..store import Conversation, Message, Store

VERBS = VerbTable()
CONVERSATION_ID = arg("id", type=int, help="conversation id (see `chat-tui list`)")


@VERBS.verb(
    "list",
    needs="store",
    help="list conversations",
    description="List conversations, most recent first.",
    arguments=(json_flag("print the conversations as JSON"),),
)
async def list_(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    conversations = await store.list_conversations()
    if args.json:
        out_json([conversation_row(c) for c in conversations])
        return EXIT_OK
    from ..sanitize import sanitize

    for c in conversations:
        out(f"{c.id:>6}  {when(c.updated_at)}  {sanitize(c.title) or '(untitled)'}")
    if not conversations:
        out("no conversations yet")
    return EXIT_OK


def _message_label(m: Message) -> str:
    if m.role == "user":
        return "you" if m.state == "delivered" else f"you [{m.state}]"
    if m.role == "assistant":
        from ..export import reply_labels  # stopped, reasoning only, tokens, tokens/s

        return " · ".join(["assistant", *reply_labels(m)])
    return {"notice": "note"}.get(m.role, m.role)


async def _load_conversation(
    store: Store, conversation_id: int
) -> tuple[Conversation, list[Message], dict[int, list[dict[str, Any]]]]:
    """A conversation, all its messages and its turns' versions, or a CliError."""
    conversation = await store.get_conversation(conversation_id)
    if conversation is None:
        raise CliError(f"no conversation with id {conversation_id}")
    messages = await store.all_messages(conversation_id)
    return conversation, messages, await store.turn_versions(conversation_id)


@VERBS.verb(
    "show",
    needs="store",
    help="print a conversation",
    description="Print a conversation with every message and its state.",
    arguments=(CONVERSATION_ID, json_flag("print {id, title, messages: [...]} as JSON")),
)
async def show(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    conversation, messages, versions = await _load_conversation(store, args.id)
    if args.json:
        from ..export import conversation_json

        out_json(conversation_json(conversation, messages, versions))
        return EXIT_OK
    from ..sanitize import sanitize

    out(f"# {sanitize(conversation.title) or '(untitled)'}")
    for m in messages:
        out()
        out(f"── {_message_label(m)} · {when(m.created_at)}")
        out(sanitize(m.content))
        if m.error and m.state in ("failed", "queued", "expired"):
            out(f"   ({sanitize(m.error)})")
    return EXIT_OK


@VERBS.verb(
    "search",
    needs="store",
    help="full-text search of history",
    description="Search every message of every conversation.",
    arguments=(
        arg(
            "query",
            help='words to find (each as a prefix); "a quoted phrase" matches as a phrase',
        ),
        arg(
            "--limit",
            type=int,
            default=50,
            metavar="N",
            help="show at most N matches (default 50)",
        ),
        json_flag("print the matches as JSON"),
    ),
)
async def search(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    hits = await store.search(args.query, limit=args.limit)
    if args.json:
        out_json([search_hit(h) for h in hits])
        return EXIT_OK
    from ..sanitize import sanitize

    for h in hits:
        snippet = " ".join(sanitize(h.snippet).split())
        out(
            f"{h.message.conversation_id:>6}  {sanitize(h.conversation_title)[:30]:<30}  "
            f"#{h.message.id} {h.message.role}: {snippet}"
        )
    if not hits:
        out("no matches")
    return EXIT_OK


@VERBS.verb(
    "export",
    needs="store",
    help="write a conversation to a file",
    description="Export a conversation as Markdown or JSON.",
    arguments=(
        CONVERSATION_ID,
        arg("--format", choices=("md", "json"), default="md", help="Markdown (default) or JSON"),
        arg("-o", "--output", metavar="FILE", help="file to write (default: stdout)"),
        arg("-f", "--force", action="store_true", help="overwrite FILE if it already exists"),
    ),
)
async def export(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from ..export import render

    conversation, messages, versions = await _load_conversation(store, args.id)
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


def _read_export(args: argparse.Namespace, settings: Settings) -> None:
    """The exported JSON in ``args.data``, read before the database is opened."""
    try:
        with open(args.file, encoding="utf-8") as fh:
            args.data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {args.file}: {exc}") from None


@VERBS.verb(
    "import",
    needs="store",
    help="read a conversation exported as JSON",
    description="Import a conversation written by `chat-tui export --format json`, with "
    "its versions, as a new conversation. Messages that were not delivered come in "
    "cancelled (retry sends them); a branch link is not restored (it names a conversation "
    "of the database it came from).",
    arguments=(arg("file"),),
    check=_read_export,
)
async def import_(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    conversation_id = await store.import_conversation(args.data)
    out(f"imported as conversation {conversation_id}")
    return EXIT_OK
