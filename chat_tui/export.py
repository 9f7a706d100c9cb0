"""A conversation as Markdown or JSON, for `chat-tui export` and the TUI's export action."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .context import in_context
from .sanitize import sanitize
from .store import Conversation, Message

ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "notice": "Note"}


EXPORT_FORMAT = 2  # 2: seq, endpoint, versions and the branch link (read by `chat-tui import`)


def message_json(
    conversation: Conversation, m: Message, versions: dict[int, list[dict[str, Any]]] | None
) -> dict[str, Any]:
    """One message as `show --json` and the JSON export carry it: with its place in
    the conversation, and for a regenerated or edited turn, every version kept."""
    data = m.as_json() | {"seq": m.seq, "in_context": in_context(conversation, m)}
    if m.role == "notice" and m.meta.get("kind"):
        data["kind"] = m.meta["kind"]
        data["label"] = m.meta.get("label")
    if m.role == "user":
        data["version"] = int(m.meta.get("version", 1))
        shown = data["version"]
        data["versions"] = [
            v for v in (versions or {}).get(m.seq, []) if v["version"] != shown
        ]  # the other versions; the one shown is this message and its reply
    return data


def conversation_json(
    conversation: Conversation,
    messages: list[Message],
    versions: dict[int, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "endpoint": conversation.endpoint or "default",
        "system_prompt": conversation.system_prompt,
        "created_at": conversation.created_at,
        "branch_of": conversation.branch_of,
        "branch_seq": conversation.branch_seq,
        "messages": [message_json(conversation, m, versions) for m in messages],
    }


def to_json(
    conversation: Conversation,
    messages: list[Message],
    versions: dict[int, list[dict[str, Any]]] | None = None,
) -> str:
    """The same shape as `chat-tui show --json`, plus the conversation's settings."""
    return json.dumps(
        conversation_json(conversation, messages, versions), ensure_ascii=False, indent=2
    )


def to_markdown(
    conversation: Conversation,
    messages: list[Message],
    versions: dict[int, list[dict[str, Any]]] | None = None,
) -> str:
    """A readable transcript. Offline-answer notices are kept, and labelled as such;
    earlier versions of a turn follow it, folded."""
    lines = [f"# {sanitize(conversation.title) or 'Untitled conversation'}", ""]
    if conversation.branch_of is not None:
        lines += [f"_A branch of conversation {conversation.branch_of}._", ""]
    for m in messages:
        when = datetime.fromtimestamp(m.created_at).strftime("%Y-%m-%d %H:%M")
        heading = ROLE_HEADINGS.get(m.role, m.role)
        if m.role == "user" and m.state != "delivered":
            heading += f" ({m.state})"
        if m.role == "notice" and m.meta.get("label"):
            heading = sanitize(str(m.meta["label"]))
        if m.role == "assistant":
            heading += "".join(f" · {part}" for part in reply_labels(m))
        lines += [f"## {heading} · {when}", ""]
        if m.meta.get("reasoning"):
            thinking = sanitize(str(m.meta["reasoning"])).strip().splitlines()
            lines += ["<details><summary>Thinking</summary>", "", *thinking, "", "</details>", ""]
        lines += [sanitize(m.content).rstrip(), ""]
        if m.role == "user" and versions and m.seq in versions:
            shown = int(m.meta.get("version", 1))
            total = int(m.meta.get("versions", 1))
            for v in versions[m.seq]:
                if v["version"] == shown:
                    continue
                lines += [
                    f"<details><summary>Version {v['version']} of {total}</summary>",
                    "",
                    f"**You:** {sanitize(v['question']).rstrip()}",
                    "",
                    f"**Assistant:** {sanitize(v['reply'] or '(no reply)').rstrip()}",
                    "",
                    "</details>",
                    "",
                ]
    return "\n".join(lines)


def reply_labels(m: Message) -> list[str]:
    """What a reply's header says besides who and when: stopped, reasoning only, usage."""
    labels = []
    if m.state == "stopped":
        labels.append("stopped")
    if m.meta.get("reasoning_only"):
        labels.append("reasoning only, no answer")
    usage = m.meta.get("usage")
    if isinstance(usage, dict):
        prompt, reply = usage.get("prompt_tokens"), usage.get("completion_tokens")
        rate = usage.get("tokens_per_second")
        if prompt is not None or reply is not None:
            labels.append(f"{prompt if prompt is not None else '?'} → {reply or 0} tokens")
        if isinstance(rate, int | float) and rate > 0:
            labels.append(f"{rate:.1f} tok/s")
    return labels


def render(
    conversation: Conversation,
    messages: list[Message],
    fmt: str,
    versions: dict[int, list[dict[str, Any]]] | None = None,
) -> str:
    if fmt == "json":
        return to_json(conversation, messages, versions)
    if fmt == "md":
        return to_markdown(conversation, messages, versions)
    raise ValueError(f"unknown export format {fmt!r} (md or json)")


def default_filename(conversation: Conversation, fmt: str) -> str:
    """A safe file name from the title: letters, digits and dashes only."""
    stem = "".join(ch if ch.isalnum() else "-" for ch in conversation.title.lower())
    stem = "-".join(part for part in stem.split("-") if part)[:40] or "conversation"
    return f"chat-{conversation.id}-{stem}.{fmt}"
