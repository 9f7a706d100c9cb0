"""Verbs for endpoints and turns: models, regenerate, edit, version.

Like every verb, these write through the store's transactions, and anything
sent again goes through the one outbox.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from ..config import Settings
from .table import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    VerbTable,
    arg,
    check_endpoint,
    json_flag,
    out,
    out_json,
)

if TYPE_CHECKING:
    from ..store import Store

VERBS = VerbTable()
MODELS_CACHE_KEY = "models:"  # meta key prefix: the last /v1/models list of each endpoint
USER_MESSAGE_ID = arg("id", type=int, help="the user message id")


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _known_endpoint(args: argparse.Namespace, settings: Settings) -> None:
    args.endpoint = args.endpoint or "default"
    check_endpoint(settings, args.endpoint)


@VERBS.verb(
    "models",
    needs="store",
    help="list the models an endpoint offers",
    description="List what GET /v1/models offers. The list is cached; when the endpoint "
    "does not answer, the cached list is shown with its age.",
    arguments=(
        arg("--endpoint", metavar="NAME", help="an [endpoints.NAME] (default: 'default')"),
        json_flag(),
    ),
    check=_known_endpoint,
)
async def models(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    """What ``/v1/models`` offers; the list is cached, and shown from the cache with its
    age when the endpoint does not answer."""
    from ..endpoint import Endpoint
    from ..store import StoreError

    name = args.endpoint
    own = settings.for_endpoint(name)
    endpoint = Endpoint(own)
    try:
        data = await endpoint.fetch_json("GET", "models", timeout=own.connect_timeout + 2)
    finally:
        await endpoint.aclose()
    ids = _model_ids(data)
    if ids is not None:
        cached = False
        fetched_at = time.time()
        with contextlib.suppress(StoreError):  # not cached: only the offline view lost
            await store.set_meta(
                MODELS_CACHE_KEY + name, json.dumps({"fetched_at": fetched_at, "models": ids})
            )
    else:
        raw = await store.get_meta(MODELS_CACHE_KEY + name)
        if raw is None:
            raise CliError(
                f"endpoint {name} ({own.base_url}) did not answer, and no list of its "
                "models is cached yet"
            )
        saved = json.loads(raw)
        cached = True
        fetched_at = float(saved["fetched_at"])
        ids = list(saved["models"])
    age = max(0.0, time.time() - fetched_at)
    if args.json:
        out_json(
            {
                "endpoint": name,
                "base_url": own.base_url,
                "models": ids,
                "cached": cached,
                "fetched_at": fetched_at,
                "age_seconds": round(age, 1),
            }
        )
        return EXIT_OK
    from ..sanitize import sanitize

    if cached:
        print(f"chat-tui: {name} did not answer; the list cached {_age(age)} ago:", file=sys.stderr)
    for model in ids:
        mark = "*" if model == own.model else " "
        out(f"{mark} {sanitize(model)}")
    if not ids:
        out("(the endpoint lists no models)")
    return EXIT_OK


def _model_ids(data: Any) -> list[str] | None:
    """Model ids from an OpenAI (``data``) or Ollama-style (``models``) answer."""
    if not isinstance(data, dict):
        return None
    items = data.get("data")
    if not isinstance(items, list):
        items = data.get("models")
    if not isinstance(items, list):
        return None
    ids = []
    for item in items:
        if isinstance(item, dict):
            ident = item.get("id") or item.get("name") or item.get("model")
            if isinstance(ident, str):
                ids.append(ident)
    return ids


@VERBS.verb(
    "regenerate",
    needs="store",
    help="ask again for the last reply",
    description="Queue the last question of its conversation again for a new reply. The "
    "reply it has is kept as an earlier version (`chat-tui version`).",
    arguments=(arg("id", type=int, help="the user message id (see `chat-tui show`)"),),
)
async def regenerate(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    message = await store.resend_turn(args.id)
    out(
        f"message {message.id} queued again "
        f"(version {message.meta.get('version')}; the earlier reply is kept)"
    )
    return EXIT_OK


def _edited_text(args: argparse.Namespace, settings: Settings) -> None:
    args.text = " ".join(args.text)
    if not args.text.strip():
        raise CliError("give the edited text", EXIT_USAGE)


@VERBS.verb(
    "edit",
    needs="store",
    help="edit a message and send it again",
    description="Edit a message. The last one is sent again (its earlier turn kept as a "
    "version); an earlier one makes a branch: a new conversation with the turns before it "
    "and the edited message. Nothing is deleted.",
    arguments=(USER_MESSAGE_ID, arg("text", nargs="+", help="the new text")),
    check=_edited_text,
)
async def edit(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    """The last message, answered: sent again edited (the old turn kept as a version).
    Not yet answered: changed in the queue. An earlier one: a branch."""
    from ..store import StoreError

    message_id, text = args.id, args.text
    message = await store.get_message(message_id)
    if message is None or message.role != "user":
        raise StoreError(f"no message with id {message_id}")
    if message.state in ("queued", "failed", "expired", "cancelled"):
        changed = await store.retry(message_id, text=text)
        out(f"message {changed.id} edited and queued")
        return EXIT_OK
    try:
        changed = await store.resend_turn(message_id, text=text)
    except StoreError as exc:
        if "not the last" not in str(exc):
            raise
        branched = await store.branch(message_id, text)
        out(
            f"conversation {branched.conversation_id} is a branch with the edited message "
            f"{branched.id} queued; the original is unchanged"
        )
        return EXIT_OK
    out(f"message {changed.id} edited and queued again (the earlier turn is kept)")
    return EXIT_OK


@VERBS.verb(
    "version",
    needs="store",
    help="show another version of a turn",
    description="Show version N of a regenerated or edited turn; the one shown is the one "
    "sent as context afterwards.",
    arguments=(USER_MESSAGE_ID, arg("number", type=int, help="the version (1 = the first)")),
)
async def version(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    message = await store.show_version(args.id, args.number)
    out(f"message {message.id} now shows version {args.number}")
    return EXIT_OK
