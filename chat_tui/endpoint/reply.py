"""A reply as it arrives: its parts, the model's thinking, what it cost, and the caps.

``Reply`` is what a finished request gives; ``ThinkSplitter`` separates inline
``<think>`` blocks from the answer; ``parse_body`` reads a whole (not streamed)
chat completion. A streamed one is read by ``stream.StreamReader``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..sanitize import sanitize
from .errors import TransientError, classify_error_object

CAP_MARKER = "\n\n[chat-tui: reply cut at {limit} — {why}]"

DeltaCallback = Callable[[str], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    finish_reason: str
    model: str | None = None
    capped: bool = False
    reasoning: str = ""  # the model's thinking: stored with the reply, never sent back
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """What the server said the request cost, and how fast the reply came."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_second": self.tokens_per_second,
        }


def read_usage(data: dict[str, Any], seconds: float | None = None) -> Usage | None:
    """``usage`` (OpenAI and most servers) or llama.cpp's ``timings``, whichever is there.

    llama.cpp's ``timings.prompt_n`` counts only the prompt tokens it did not
    have cached, so ``cache_n`` is added back for the whole prompt.
    """
    usage = data.get("usage")
    timings = data.get("timings")
    prompt = completion = None
    rate: float | None = None
    if isinstance(usage, dict):
        prompt = _int_or_none(usage.get("prompt_tokens"))
        completion = _int_or_none(usage.get("completion_tokens"))
    if isinstance(timings, dict):
        if prompt is None and _int_or_none(timings.get("prompt_n")) is not None:
            prompt = (_int_or_none(timings.get("prompt_n")) or 0) + (
                _int_or_none(timings.get("cache_n")) or 0
            )
        if completion is None:
            completion = _int_or_none(timings.get("predicted_n"))
        per_second = timings.get("predicted_per_second")
        if isinstance(per_second, int | float) and per_second > 0:
            rate = float(per_second)
    if prompt is None and completion is None:
        return None
    if rate is None and completion and seconds and seconds > 0:
        rate = completion / seconds
    return Usage(prompt, completion, round(rate, 1) if rate is not None else None)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0 and value == int(value):
        return int(value)
    return None


async def tell(callback: DeltaCallback | None, text: str) -> None:
    """Hand ``text`` to a caller's callback, awaiting it if it is a coroutine function."""
    if callback is not None:
        result = callback(text)
        if result is not None:
            await result


def cap(text: str, why: str) -> str:
    """``text`` labelled as cut, saying why."""
    return text + CAP_MARKER.format(limit=f"{len(text):,} characters", why=why)


async def parse_body(
    body: bytes,
    max_chars: int,
    on_delta: DeltaCallback | None,
    on_reasoning: DeltaCallback | None,
) -> Reply:
    """A whole chat completion (``stream = false``): its text, capped, is one delta."""
    try:
        # Decode leniently, as the stream path does: invalid UTF-8 from
        # the server becomes U+FFFD instead of an endless transient retry.
        data = json.loads(body.decode("utf-8", "replace"), strict=False)
    except ValueError:
        raise TransientError("the reply was not a complete chat completion") from None
    if isinstance(data, dict) and "error" in data and not data.get("choices"):
        raise classify_error_object(data["error"])
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        thinking = message.get("reasoning_content") or message.get("reasoning") or ""
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise TransientError("the reply was not a complete chat completion") from None
    if not finish:
        raise TransientError("the reply has no finish_reason")
    splitter = ThinkSplitter()
    inline_thinking, text = splitter.feed(str(text))
    tail_thinking, tail = splitter.flush()
    text = sanitize(text + tail)
    reasoning = sanitize(str(thinking) + inline_thinking + tail_thinking)
    capped = len(text) > max_chars
    if capped:
        text = cap(text[:max_chars], "too long")
    reasoning = reasoning[:max_chars]
    if reasoning:
        await tell(on_reasoning, reasoning)
    await tell(on_delta, text)  # non-streaming: the whole reply is one delta
    return Reply(text, str(finish), data.get("model"), capped, reasoning, read_usage(data))


class ThinkSplitter:
    """Separates inline ``<think>…</think>`` at the start of a reply from its answer.

    Fed piece by piece as a stream arrives; a tag split across pieces is held
    back until it is whole. Only a block that opens the reply counts: a
    ``<think>`` later in an answer is the answer's text (code, a quote).
    """

    OPEN = "<think>"
    CLOSE = "</think>"

    def __init__(self) -> None:
        self._state = "start"  # start → thinking → after (</think> seen) → answer
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """Returns (thinking, answer) text ready to show."""
        if self._state == "answer":
            return "", text
        if self._state == "after":  # the line break after </think> may come in later pieces
            text = text.lstrip("\n")
            if text:
                self._state = "answer"
            return "", text
        held = self._held + text
        self._held = ""
        if self._state == "start":
            stripped = held.lstrip()
            if stripped.startswith(self.OPEN):
                self._state = "thinking"
                held = stripped[len(self.OPEN) :]
            elif self.OPEN.startswith(stripped):  # maybe the start of the tag: wait
                self._held = held
                return "", ""
            else:
                self._state = "answer"
                return "", held
        end = held.find(self.CLOSE)
        if end >= 0:
            self._state = "after"
            return held[:end], self.feed(held[end + len(self.CLOSE) :])[1]
        keep = _partial_suffix(held, self.CLOSE)
        if keep:
            self._held = held[-keep:]
            held = held[:-keep]
        return held, ""

    def flush(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        if self._state == "thinking":
            return held, ""  # the model never closed its thinking
        return "", held


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could start ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
