"""Reading a streamed reply (server-sent events) within its limits.

A reply counts only if the stream ended properly (a ``finish_reason``, or
``data: [DONE]``) and every chunk parsed; anything else is a transient
failure. Partial text is handed to the callbacks for display, but the caller
must not store it unless ``StreamReader.read`` returns. A reply past
``max_reply_chars`` or ``max_reply_seconds`` is kept, cut and labelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import Settings
from ..sanitize import StreamSanitizer
from .errors import DeliveryError, TransientError, classify_error_object
from .reply import DeltaCallback, Reply, ThinkSplitter, cap, read_usage, tell


@dataclass
class Activity:
    """When bytes last arrived for a request, and whether its reply had begun flowing."""

    last: float
    flowing: bool = False

    def touch(self) -> None:
        self.last = time.monotonic()


class StreamDeadline(Exception):
    """max_reply_seconds passed while the stream was still sending."""


class GuardedStream:
    """The response as EventSource reads it, with limits between two events.

    The checks after each event cannot run while a hostile stream sends no
    event at all (one endless line, data lines without the blank line that
    ends an event, only comments): memory would grow, or time run, unbounded.
    """

    def __init__(
        self, response: httpx.Response, deadline: float, max_pending: int, activity: Activity
    ) -> None:
        self._response = response
        self._activity = activity
        self.headers = response.headers
        self.deadline = deadline
        self.max_pending = max_pending
        self.pending = 0  # characters received since the last complete event

    async def aiter_text(self) -> AsyncIterator[str]:
        async for text in self._response.aiter_text():
            self._activity.touch()
            self.pending += len(text)
            if self.pending > self.max_pending:
                raise TransientError(
                    f"the stream sent {self.pending:,} characters without a complete event"
                )
            if time.monotonic() > self.deadline:
                raise StreamDeadline
            yield text


async def drain(events: AsyncIterator[object], *, most: int = 16, seconds: float = 0.5) -> None:
    """Read the little that follows ``[DONE]`` (the end of the chunked body), so the
    connection goes back to the pool instead of being closed. A server that keeps
    talking after ``[DONE]`` gets half a second; then the connection is dropped."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            for _ in range(most):
                await anext(events)


async def read_capped(
    response: httpx.Response, limit: int, activity: Activity | None = None
) -> bytes:
    """Read at most ``limit`` bytes of a body: a hostile server can't exhaust memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if activity is not None:
            activity.touch()
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[:limit]


class _Side:
    """One side of a streamed reply, the answer or the thinking: made safe piece by
    piece, kept, and shown through its callback."""

    def __init__(self, callback: DeltaCallback | None) -> None:
        self._cleaner = StreamSanitizer()
        self._callback = callback
        self.parts: list[str] = []

    async def feed(self, raw: str) -> int:
        """Take a piece; returns how many characters of it are kept."""
        clean = self._cleaner.feed(raw)
        if clean:
            self.parts.append(clean)
            await tell(self._callback, clean)
        return len(clean)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _error_event(data: str) -> DeliveryError:
    """An SSE ``event: error``: the failure its payload describes."""
    try:
        payload: object = json.loads(data, strict=False) if data else data
    except ValueError:
        payload = data
    if isinstance(payload, dict) and "error" in payload:
        payload = payload["error"]
    return classify_error_object(payload or "an error event")


class StreamReader:
    """Reads one streamed chat completion into a ``Reply``."""

    def __init__(
        self,
        settings: Settings,
        on_delta: DeltaCallback | None,
        on_reasoning: DeltaCallback | None,
        activity: Activity,
    ) -> None:
        self.settings = settings
        self.limit = settings.max_reply_chars
        self.deadline = time.monotonic() + settings.max_reply_seconds
        self._activity = activity
        self._answer = _Side(on_delta)
        self._thinking = _Side(on_reasoning)
        self._splitter = ThinkSplitter()
        self._size = 0
        self._finish: str | None = None
        self._model: str | None = None
        self._usage: dict[str, Any] = {}
        self._first_at: float | None = None

    async def read(self, response: httpx.Response) -> Reply:
        from httpx_sse import EventSource, SSEError

        done = False
        guard = GuardedStream(response, self.deadline, 8 * self.limit + 64 * 1024, self._activity)
        events = EventSource(guard).aiter_sse()  # type: ignore[arg-type]
        try:
            async for event in events:
                guard.pending = 0
                data = event.data.strip()
                if event.event == "error":
                    raise _error_event(data)
                if not data:
                    continue
                if data == "[DONE]":
                    done = True
                    await drain(events)
                    break
                await self._chunk(data)
                if self._size > self.limit:
                    text = self._answer.text[: self.limit]
                    return Reply(
                        cap(text, "too long"), "length", self._model, True, self._thinking.text
                    )
                if time.monotonic() > self.deadline:
                    return self._cut_for_time()
        except SSEError as exc:
            raise TransientError(f"bad stream: {exc}") from None
        except StreamDeadline:  # bytes kept coming, but no event (comments, one endless line)
            return self._cut_for_time()
        if self._finish is None and not done:
            raise TransientError("the stream ended before the reply was finished")
        thinking, answer = self._splitter.flush()
        await self._add(self._thinking, thinking)
        await self._add(self._answer, answer)
        # `[DONE]` after chunks whose finish_reason was null or "" is a whole reply
        # (Ollama has sent "", LiteLLM drops the field); only a stream with neither
        # ended early.
        first_at = self._first_at
        seconds = time.monotonic() - first_at if first_at is not None else None
        return Reply(
            self._answer.text,
            self._finish or "stop",
            self._model,
            reasoning=self._thinking.text,
            usage=read_usage(self._usage, seconds),
        )

    async def _chunk(self, data: str) -> None:
        try:
            chunk = json.loads(data, strict=False)
        except ValueError:
            raise TransientError("the stream had a malformed chunk") from None
        if not isinstance(chunk, dict):
            raise TransientError("the stream had a malformed chunk")
        if "error" in chunk:
            raise classify_error_object(chunk["error"])
        self._model = chunk.get("model") or self._model
        # Usage comes in a chunk of its own (empty choices) or on the last one;
        # llama.cpp adds its timings there too.
        for key in ("usage", "timings"):
            if isinstance(chunk.get(key), dict):
                self._usage[key] = chunk[key]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                raise TransientError("the stream had a malformed chunk")
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                thinking = delta.get("reasoning_content") or delta.get("reasoning")
                if thinking and isinstance(thinking, str):
                    self._first_at = self._first_at or time.monotonic()
                    await self._add(self._thinking, thinking)
                text = delta.get("content")
                if text:
                    self._first_at = self._first_at or time.monotonic()
                    # Inline <think> at the start of the content is thinking too.
                    thinking, answer = self._splitter.feed(str(text))
                    await self._add(self._thinking, thinking)
                    await self._add(self._answer, answer)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])

    async def _add(self, side: _Side, raw: str) -> None:
        if raw:
            # From the first token on (thinking too: it is the reply making progress),
            # silence is a stall.
            self._activity.flowing = True
            self._size += await side.feed(raw)

    def _cut_for_time(self) -> Reply:
        """A stream past max_reply_seconds: keep what came, labelled; nothing is no reply.

        Reasoning is progress too: a model that thought the whole time gets its
        thinking kept (a reply with reasoning only), not a retry that thinks again.
        """
        seconds = self.settings.max_reply_seconds
        text = self._answer.text
        reasoning = self._thinking.text
        if not text.strip() and not reasoning.strip():
            raise TransientError(f"the stream sent no text in {seconds:g} s")
        return Reply(
            cap(text, f"still streaming after {seconds:.0f} s"),
            "length",
            self._model,
            True,
            reasoning,
        )
