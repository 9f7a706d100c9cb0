"""Fitting each request into the model's context window (docs/conversations.md).

Headless and cheap: it runs on every send. The limit comes from, in order,
the ``context_tokens`` setting (per model), what the server says (llama.cpp
``/props``, ``/v1/models`` entries, Ollama ``/api/show``), and what an
overflow error said; what was learned is kept per endpoint and model in the
database, so the next request fits the first time, offline too.

Tokens are estimated without a tokenizer: UTF-8 bytes divided by a ratio
(about 4 for English, 3 for most other scripts), plus a few tokens a message
for the chat template. The ratio starts cautious and is calibrated from what
the server reports back (``usage.prompt_tokens``, llama.cpp's timings), or
from the token count an overflow error names.

Fitting keeps the system prompt and the newest turn always, then as many
earlier turns as fit, newest first, dropping whole user+assistant pairs from
the oldest end, with room left for the reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings
    from .endpoint import Endpoint
    from .store import Conversation, Message, Store

log = logging.getLogger(__name__)

DEFAULT_BYTES_PER_TOKEN = 3.0  # cautious: English runs nearer 4, so estimates run high
MIN_BYTES_PER_TOKEN = 1.0
MAX_BYTES_PER_TOKEN = 6.0
MESSAGE_OVERHEAD = 5  # tokens a chat template adds around each message
SAFETY = 1.05  # estimates are estimates: keep 5 % spare
MIN_REPLY_TOKENS = 256
MAX_OVERFLOW_RETRIES = 4  # trim-and-resend rounds after overflow errors, per delivery
RATIO_WRITE_CHANGE = 0.05  # persist a new ratio only when it moved this much

NOT_SENT_MARKER = "earlier messages are not sent to the model"


def estimate_tokens(text: str, bytes_per_token: float = DEFAULT_BYTES_PER_TOKEN) -> int:
    """Tokens one message costs, chat-template overhead included."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
    return int(size / bytes_per_token) + MESSAGE_OVERHEAD


def history_chars(window: int | None, bytes_per_token: float) -> int | None:
    """How much earlier text is worth reading for a request: more than can fit
    (a character is at least a byte), with half again to spare; None = all."""
    if window is None:
        return None
    return int(window * max(bytes_per_token, DEFAULT_BYTES_PER_TOKEN) * 1.5) + 4096


def reply_room(window: int, reply_tokens: int = 0) -> int:
    """Tokens kept free for the reply: the setting, or 25 % of the window (at least 256),
    never more than half the window."""
    wanted = reply_tokens if reply_tokens > 0 else max(MIN_REPLY_TOKENS, window // 4)
    return max(0, min(wanted, window // 2))


@dataclass(frozen=True, slots=True)
class Fitted:
    """One request as it will be sent."""

    messages: list[dict[str, str]]
    kept_turns: int  # earlier user+assistant pairs sent
    dropped_turns: int  # earlier pairs left out (the oldest)
    estimated_tokens: int
    too_long: bool  # system prompt + newest turn alone exceed the room in the window


def fit(
    system: str | None,
    history: list[dict[str, str]],
    question: str,
    *,
    window: int | None,
    reply_tokens: int = 0,
    bytes_per_token: float = DEFAULT_BYTES_PER_TOKEN,
    max_turns: int | None = None,
) -> Fitted:
    """The request for ``question``: the system prompt, as many of the newest earlier
    turns as fit (``history`` alternates user, assistant; oldest first), the question.

    ``window`` None: the limit is unknown; everything is sent (an overflow error
    will teach it). ``max_turns`` caps the earlier turns kept (trimming harder
    after an overflow error that named no numbers).
    """
    head = [{"role": "system", "content": system}] if system else []
    tail = {"role": "user", "content": question}
    pairs = len(history) // 2
    limit = pairs if max_turns is None else max(0, min(pairs, max_turns))
    fixed = (estimate_tokens(system, bytes_per_token) if system else 0) + estimate_tokens(
        question, bytes_per_token
    )
    if window is None:
        kept = limit
        used = fixed  # not needed to decide anything; counted only for the caller's logs
        too_long = False
    else:
        budget = (window - reply_room(window, reply_tokens)) / SAFETY
        too_long = fixed > budget
        used = fixed
        kept = 0
        # Newest first; stop at the first pair that does not fit, so the turns
        # sent are always one unbroken stretch ending at the question.
        index = len(history) - 2
        while kept < limit and index >= 0:
            cost = estimate_tokens(history[index]["content"], bytes_per_token) + estimate_tokens(
                history[index + 1]["content"], bytes_per_token
            )
            if used + cost > budget:
                break
            used += cost
            kept += 1
            index -= 2
    start = len(history) - 2 * kept
    return Fitted([*head, *history[start:], tail], kept, pairs - kept, int(used), too_long)


# -- what servers say about their window ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overflow:
    """A context-overflow error, with the numbers it named (if any)."""

    limit: int | None  # the model's window
    requested: int | None  # what our request came to, in the server's own tokens


_OVERFLOW_PATTERNS = [
    # llama.cpp: "request (1049 tokens) exceeds the available context size (1024 tokens)"
    re.compile(
        r"request \((?P<req>\d+) tokens\) exceeds the available context size \((?P<lim>\d+)"
    ),
    # OpenAI, vLLM: "maximum context length is 8192 tokens. However, your messages
    # resulted in 9000 tokens" / "However, you requested 2100 tokens"
    re.compile(
        r"maximum context length is (?P<lim>\d+) tokens"
        r"(?:.*?(?:resulted in|requested) (?P<req>\d+) tokens)?",
        re.S,
    ),
    # LM Studio: "Trying to keep the first 5000 tokens when context the overflows.
    # However, the model is loaded with context length of only 4096 tokens"
    re.compile(
        r"(?:keep the first (?P<req>\d+) tokens.*?)?context length of only (?P<lim>\d+) tokens",
        re.S,
    ),
    # Anthropic-style proxies: "prompt is too long: 210000 tokens > 200000 maximum"
    re.compile(r"prompt is too long: (?P<req>\d+) tokens > (?P<lim>\d+)"),
]
_OVERFLOW_WORDS = re.compile(
    r"context_length_exceeded|exceed_context_size|exceeds the available context size|"
    r"context (?:length|window|size) (?:exceeded|is exceeded)|maximum context length|"
    r"context length of only|prompt is too long|too many tokens in the (?:prompt|input)",
    re.I,
)


def parse_overflow(reason: str) -> Overflow | None:
    """Is this error the request being too long for the model? With what numbers?"""
    if not _OVERFLOW_WORDS.search(reason):
        return None
    for pattern in _OVERFLOW_PATTERNS:
        found = pattern.search(reason)
        if found:
            req = found.groupdict().get("req")
            return Overflow(int(found["lim"]), int(req) if req else None)
    return Overflow(None, None)


def _window_from_models(data: Any, model: str) -> int | None:
    """A context length from a ``/v1/models`` listing (vLLM, LM Studio, OpenRouter…).

    llama.cpp's ``meta.n_ctx_train`` is the length the model was trained with,
    not what the server was started with, so it is not used.
    """
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("id") != model:
            continue
        for key in (
            "loaded_context_length",
            "max_model_len",
            "context_length",
            "max_context_length",
            "context_window",
        ):
            value = entry.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _window_from_ollama(data: Any) -> int | None:
    """``/api/show``: a ``num_ctx`` parameter if the model sets one, else its
    ``<arch>.context_length`` (what Ollama uses when asked for the most)."""
    if not isinstance(data, dict):
        return None
    params = data.get("parameters")
    if isinstance(params, str):
        found = re.search(r"^num_ctx\s+(\d+)", params, re.M)
        if found:
            return int(found[1])
    info = data.get("model_info")
    if isinstance(info, dict):
        for key, value in info.items():
            if key.endswith(".context_length") and isinstance(value, int) and value > 0:
                return value
    return None


def _server_root(base_url: str) -> str:
    """``http://host:8080/v1`` → ``http://host:8080``: where /props and /api live."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


async def ask_server(endpoint: Endpoint, model: str) -> int | None:
    """What the server says the context window is, or None if it does not say."""
    root = _server_root(endpoint.settings.base_url)
    props = await endpoint.fetch_json("GET", f"{root}/props")
    if isinstance(props, dict):
        settings = props.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        if isinstance(n_ctx, int) and n_ctx > 0:
            return n_ctx
    found = _window_from_models(await endpoint.fetch_json("GET", "models"), model)
    if found:
        return found
    return _window_from_ollama(
        await endpoint.fetch_json("POST", f"{root}/api/show", {"model": model})
    )


# -- what is known, per endpoint and model ---------------------------------------------------------


@dataclass(slots=True)
class Limit:
    window: int | None
    source: str  # setting | server | error | unknown
    bytes_per_token: float


class ContextKeeper:
    """Knows each model's window and token ratio; asks the server once per process."""

    def __init__(self, settings: Settings, store: Store, endpoint: Endpoint) -> None:
        self.settings = settings
        self.store = store
        self.endpoint = endpoint
        self._known: dict[str, Limit] = {}
        self._stored_ratio: dict[str, float] = {}
        self._lock = asyncio.Lock()  # one question to the server per model, not one per send

    def _configured(self, model: str) -> tuple[int, int]:
        """(context_tokens, reply_tokens) from the settings; 0 = not set."""
        own = self.settings.models.get(model, {})
        return (
            int(own.get("context_tokens", self.settings.context_tokens) or 0),
            int(own.get("reply_tokens", self.settings.reply_tokens) or 0),
        )

    def reply_tokens(self, model: str) -> int:
        """Room for the reply: the setting, else max_reply_tokens, else 0 (automatic)."""
        return self._configured(model)[1] or self.settings.max_reply_tokens

    async def limit_for(self, model: str) -> Limit:
        cached = self._known.get(model)
        if cached is not None:
            return cached
        async with self._lock:
            cached = self._known.get(model)
            if cached is not None:
                return cached
            limit = await self._discover(model)
            self._known[model] = limit
            return limit

    async def _discover(self, model: str) -> Limit:
        stored = await self.store.context_limit(self.settings.base_url, model)
        ratio = stored[2] if stored and stored[2] else DEFAULT_BYTES_PER_TOKEN
        self._stored_ratio[model] = ratio
        configured, _ = self._configured(model)
        if configured:
            limit = Limit(configured, "setting", ratio)
            if stored and stored[1] == "error" and stored[0] and stored[0] < configured:
                # The server has already refused more than this: a setting that
                # promises too much is not believed twice.
                limit = Limit(stored[0], "error", ratio)
        else:
            window: int | None = None
            try:
                window = await ask_server(self.endpoint, model)
            except Exception as exc:  # an odd server must never stop delivery
                log.info("asking the server for its context size failed: %s", exc)
            if window:
                limit = Limit(window, "server", ratio)
                if not stored or stored[0] != window or stored[1] != "server":
                    await self.store.save_context_limit(
                        self.settings.base_url, model, window=window, source="server"
                    )
            elif stored and stored[0]:
                limit = Limit(stored[0], stored[1], ratio)
            else:
                limit = Limit(None, "unknown", ratio)
        return limit

    async def learn_overflow(self, model: str, overflow: Overflow, sent: Fitted) -> None:
        """An overflow error: believe its numbers (a setting that is too big included)."""
        limit = await self.limit_for(model)
        if overflow.requested:
            self._calibrate(limit, sent, overflow.requested)
        if overflow.limit and (limit.window is None or overflow.limit < limit.window):
            limit.window = overflow.limit
            limit.source = "error"
        elif not overflow.limit:
            # No numbers: the window is smaller than what we sent, by an unknown amount.
            guess = int(sent.estimated_tokens * 0.75)
            if limit.window is None or guess < limit.window:
                limit.window = max(guess, 2 * MIN_REPLY_TOKENS)
                limit.source = "error"
        await self.store.save_context_limit(
            self.settings.base_url,
            model,
            window=limit.window,
            source=limit.source,
            bytes_per_token=limit.bytes_per_token,
        )
        self._stored_ratio[model] = limit.bytes_per_token

    async def learn_usage(self, model: str, sent: Fitted, prompt_tokens: int | None) -> None:
        """The server counted our prompt: calibrate the estimate from it."""
        if not prompt_tokens:
            return
        limit = await self.limit_for(model)
        self._calibrate(limit, sent, prompt_tokens)
        stored = self._stored_ratio.get(model, DEFAULT_BYTES_PER_TOKEN)
        if abs(limit.bytes_per_token - stored) / stored > RATIO_WRITE_CHANGE:
            self._stored_ratio[model] = limit.bytes_per_token
            await self.store.save_context_limit(
                self.settings.base_url, model, bytes_per_token=limit.bytes_per_token
            )

    @staticmethod
    def _calibrate(limit: Limit, sent: Fitted, tokens: int) -> None:
        size = sum(len(m["content"].encode("utf-8", "replace")) for m in sent.messages)
        text_tokens = tokens - MESSAGE_OVERHEAD * len(sent.messages)
        if size < 200 or text_tokens <= 0:
            return  # too little text to learn from (template tokens dominate)
        ratio = size / text_tokens
        limit.bytes_per_token = min(MAX_BYTES_PER_TOKEN, max(MIN_BYTES_PER_TOKEN, ratio))


def too_long_reason(fitted: Fitted, limit: Limit, reply_tokens: int) -> str:
    """Why a message cannot be sent at all, and what the user can do."""
    window = limit.window or 0
    room = reply_room(window, reply_tokens) if window else 0
    return (
        f"this message is too long for the model's context window on its own: about "
        f"{fitted.estimated_tokens:,} tokens with the system prompt, and the model takes "
        f"{window:,} tokens ({room:,} of them kept for the reply). Shorten or split it "
        "(Ctrl+O → edit), or if the model can take more, raise context_tokens for it "
        "in config.toml"
    )


def in_context(conversation: Conversation, message: Message) -> bool:
    """Was this message part of the conversation's last request to the model?"""
    start, end = conversation.context_from_seq, conversation.context_to_seq
    if start is None or end is None or message.role == "notice":
        return False
    if message.role == "user":
        return start <= message.seq <= end and message.state in ("delivered", "sending")
    return start <= message.seq < end  # the replies before the question, not its own
