"""A conversation as Markdown or JSON, for `chat-tui export` and the TUI's export action."""

from __future__ import annotations

import json
from datetime import datetime

from .context import in_context
from .sanitize import sanitize
from .store import Conversation, Message

ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "notice": "Note"}


def to_json(conversation: Conversation, messages: list[Message]) -> str:
    """The same shape as `chat-tui show --json`, plus the conversation's settings."""
    return json.dumps(
        {
            "id": conversation.id,
            "title": conversation.title,
            "model": conversation.model,
            "system_prompt": conversation.system_prompt,
            "created_at": conversation.created_at,
            "messages": [
                m.as_json() | {"in_context": in_context(conversation, m)} for m in messages
            ],
        },
        ensure_ascii=False,
        indent=2,
    )


def to_markdown(conversation: Conversation, messages: list[Message]) -> str:
    """A readable transcript. Offline-answer notices are kept, and labelled as such."""
    lines = [f"# {sanitize(conversation.title) or 'Untitled conversation'}", ""]
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


def render(conversation: Conversation, messages: list[Message], fmt: str) -> str:
    if fmt == "json":
        return to_json(conversation, messages)
    if fmt == "md":
        return to_markdown(conversation, messages)
    raise ValueError(f"unknown export format {fmt!r} (md or json)")


def default_filename(conversation: Conversation, fmt: str) -> str:
    """A safe file name from the title: letters, digits and dashes only."""
    stem = "".join(ch if ch.isalnum() else "-" for ch in conversation.title.lower())
    stem = "-".join(part for part in stem.split("-") if part)[:40] or "conversation"
    return f"chat-{conversation.id}-{stem}.{fmt}"
