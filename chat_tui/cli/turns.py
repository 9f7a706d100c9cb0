"""CLI verbs for endpoints and turns: models, regenerate, edit, version, import.

Kept apart from cli.py (which registers them through ``add_verbs``) so the
core verbs stay short. Like every verb, these write through the store's
transactions, and anything sent again goes through the one outbox.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from . import EXIT_OK, EXIT_USAGE, CliError, _out, _run
from ..config import Settings

MODELS_CACHE_KEY = "models:"  # meta key prefix: the last /v1/models list of each endpoint


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    """What ``/v1/models`` offers; the list is cached, and shown from the cache with its
    age when the endpoint does not answer."""
    name = args.endpoint or "default"
    if name not in settings.endpoint_names:
        raise CliError(
            f"no endpoint named {name!r} (known: {', '.join(settings.endpoint_names)})", EXIT_USAGE
        )

    async def run() -> int:
        from ..endpoint import Endpoint
        from ..store import StoreError, opened

        own = settings.for_endpoint(name)
        endpoint = Endpoint(own)
        try:
            data = await endpoint.fetch_json("GET", "models", timeout=own.connect_timeout + 2)
        finally:
            await endpoint.aclose()
        models = _model_ids(data)
        async with opened(settings.db_path) as store:
            if models is not None:
                cached = False
                fetched_at = time.time()
                with contextlib.suppress(StoreError):  # not cached: only the offline view lost
                    await store.set_meta(
                        MODELS_CACHE_KEY + name,
                        json.dumps({"fetched_at": fetched_at, "models": models}),
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
                models = list(saved["models"])
        age = max(0.0, time.time() - fetched_at)
        if args.json:
            _out(
                json.dumps(
                    {
                        "endpoint": name,
                        "base_url": own.base_url,
                        "models": models,
                        "cached": cached,
                        "fetched_at": fetched_at,
                        "age_seconds": round(age, 1),
                    }
                )
            )
            return EXIT_OK
        from ..sanitize import sanitize

        if cached:
            print(
                f"chat-tui: {name} did not answer; the list cached {_age(age)} ago:",
                file=sys.stderr,
            )
        for model in models:
            mark = "*" if model == own.model else " "
            _out(f"{mark} {sanitize(model)}")
        if not models:
            _out("(the endpoint lists no models)")
        return EXIT_OK

    return _run(run())


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


def _turn_verb(action: str):  # type: ignore[no-untyped-def]
    def command(args: argparse.Namespace, settings: Settings) -> int:
        async def run() -> int:
            from ..store import StoreError, opened

            async with opened(settings.db_path) as store:
                try:
                    if action == "regenerate":
                        message = await store.resend_turn(args.id)
                        _out(
                            f"message {message.id} queued again "
                            f"(version {message.meta.get('version')}; the earlier reply is kept)"
                        )
                    elif action == "version":
                        message = await store.show_version(args.id, args.number)
                        _out(f"message {message.id} now shows version {args.number}")
                    else:
                        text = " ".join(args.text)
                        if not text.strip():
                            raise CliError("give the edited text", EXIT_USAGE)
                        await _edit(store, args.id, text)
                except StoreError as exc:
                    raise CliError(str(exc)) from None
            return EXIT_OK

        return _run(run())

    return command


async def _edit(store: Any, message_id: int, text: str) -> None:
    """The last message, answered: sent again edited (the old turn kept as a version).
    Not yet answered: changed in the queue. An earlier one: a branch."""
    from ..store import StoreError

    message = await store.get_message(message_id)
    if message is None or message.role != "user":
        raise StoreError(f"no message with id {message_id}")
    if message.state in ("queued", "failed", "expired", "cancelled"):
        changed = await store.retry(message_id, text=text)
        _out(f"message {changed.id} edited and queued")
        return
    try:
        changed = await store.resend_turn(message_id, text=text)
    except StoreError as exc:
        if "not the last" not in str(exc):
            raise
        branched = await store.branch(message_id, text)
        _out(
            f"conversation {branched.conversation_id} is a branch with the edited message "
            f"{branched.id} queued; the original is unchanged"
        )
        return
    _out(f"message {changed.id} edited and queued again (the earlier turn is kept)")


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        from ..store import StoreError, opened

        try:
            with open(args.file, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {args.file}: {exc}") from None
        async with opened(settings.db_path) as store:
            try:
                conversation_id = await store.import_conversation(data)
            except StoreError as exc:
                raise CliError(str(exc)) from None
        _out(f"imported as conversation {conversation_id}")
        return EXIT_OK

    return _run(run())


def add_verbs(verbs: Any, common: argparse.ArgumentParser) -> None:
    p = verbs.add_parser(
        "models",
        parents=[common],
        help="list the models an endpoint offers",
        description="List what GET /v1/models offers. The list is cached; when the endpoint "
        "does not answer, the cached list is shown with its age.",
    )
    p.add_argument("--endpoint", metavar="NAME", help="an [endpoints.NAME] (default: 'default')")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = verbs.add_parser(
        "regenerate",
        parents=[common],
        help="ask again for the last reply",
        description="Queue the last question of its conversation again for a new reply. The "
        "reply it has is kept as an earlier version (`chat-tui version`).",
    )
    p.add_argument("id", type=int, help="the user message id (see `chat-tui show`)")
    p.set_defaults(func=_turn_verb("regenerate"))

    p = verbs.add_parser(
        "edit",
        parents=[common],
        help="edit a message and send it again",
        description="Edit a message. The last one is sent again (its earlier turn kept as a "
        "version); an earlier one makes a branch: a new conversation with the turns before it "
        "and the edited message. Nothing is deleted.",
    )
    p.add_argument("id", type=int, help="the user message id")
    p.add_argument("text", nargs="+", help="the new text")
    p.set_defaults(func=_turn_verb("edit"))

    p = verbs.add_parser(
        "version",
        parents=[common],
        help="show another version of a turn",
        description="Show version N of a regenerated or edited turn; the one shown is the one "
        "sent as context afterwards.",
    )
    p.add_argument("id", type=int, help="the user message id")
    p.add_argument("number", type=int, help="the version (1 = the first)")
    p.set_defaults(func=_turn_verb("version"))

    p = verbs.add_parser(
        "import",
        parents=[common],
        help="read a conversation exported as JSON",
        description="Import a conversation written by `chat-tui export --format json`, with "
        "its versions, as a new conversation. Messages that were not delivered come in "
        "cancelled (retry sends them); a branch link is not restored (it names a conversation "
        "of the database it came from).",
    )
    p.add_argument("file")
    p.set_defaults(func=cmd_import)
