"""The request of a delivery: fitted to the model's context window, sent, trimmed on overflow.

The turns that fit (docs/conversations.md) go with the question; a
context-overflow error trims harder and sends again at once (no backoff, no
attempt charged); only a question too long on its own fails. A fallback
answer asks through here too, so it gets the same fitting and caps.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .. import context
from ..config import Settings
from ..endpoint import (
    AuthError,
    DeliveryError,
    PermanentError,
    Reply,
    TransientError,
    UnreachableError,
)
from ..links import Link
from ..store import Claim, Store, StoreError

log = logging.getLogger(__name__)

USAGE_OPTION_KEY = "no_stream_options:"  # meta key: this endpoint refuses stream_options

TextCallback = Callable[[str], None]


@dataclass(slots=True)
class Sent:
    """What the request being sent carries: the user seq of its oldest earlier turn
    (None: the question alone), for the "not sent to the model" marker."""

    context_from: int | None = None


class Requester:
    """Sends a claimed question with the history that fits its model's window."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def send(
        self,
        claim: Claim,
        link: Link,
        model: str,
        sent: Sent,
        on_delta: TextCallback,
        on_reasoning: TextCallback,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[Reply, context.Fitted]:
        """Fit the request into the model's window and send it; an overflow error
        trims harder and sends again at once (no backoff, no attempt charged).

        Also asks a fallback endpoint (``link`` is then the fallback's)."""
        await self.check_usage_option(link)
        question = claim.message
        conversation = claim.conversation
        system_prompt = conversation.system_prompt or self.settings.system_prompt
        reply_tokens = link.context.reply_tokens(model)
        max_turns: int | None = None
        limit = await link.context.limit_for(model)
        history, seqs = await self.store.history(
            conversation.id,
            question.seq,
            max_chars=context.history_chars(limit.window, limit.bytes_per_token),
        )
        for _ in range(context.MAX_OVERFLOW_RETRIES + 1):
            limit = await link.context.limit_for(model)
            fitted = context.fit(
                system_prompt,
                history,
                question.content,
                window=limit.window,
                reply_tokens=reply_tokens,
                bytes_per_token=limit.bytes_per_token,
                max_turns=max_turns,
            )
            sent.context_from = seqs[len(seqs) - fitted.kept_turns] if fitted.kept_turns else None
            try:
                reply = await link.endpoint.chat(
                    fitted.messages,
                    model=model,
                    idempotency_key=idempotency_key or question.key or str(question.id),
                    on_delta=on_delta,
                    on_reasoning=on_reasoning,
                )
            except (AuthError, UnreachableError):
                raise
            except DeliveryError as error:
                overflow = context.parse_overflow(error.reason)
                if overflow is None:
                    raise
                log.info(
                    "message %s: context overflow with %d earlier turns (%s); trimming",
                    question.id,
                    fitted.kept_turns,
                    error.reason,
                )
                await link.context.learn_overflow(model, overflow, fitted)
                if fitted.kept_turns == 0:
                    limit = await link.context.limit_for(model)
                    raise PermanentError(
                        context.too_long_reason(fitted, limit, reply_tokens), status=error.status
                    ) from None
                # Fewer turns than last time, always: the loop ends even when the
                # error names no numbers and the estimate keeps being wrong.
                fewer = fitted.kept_turns // 2 if overflow.limit is None else fitted.kept_turns - 1
                max_turns = fewer if max_turns is None else min(max_turns - 1, fewer)
                continue
            finally:
                await self._save_usage_option(link)
            return reply, fitted
        raise TransientError("the request still did not fit the model's context after trimming")

    async def check_usage_option(self, link: Link) -> None:
        """Whether an earlier process found this endpoint refusing ``stream_options``."""
        if link.usage_option_checked:
            return
        link.usage_option_checked = True
        if await self.store.get_meta(USAGE_OPTION_KEY + link.settings.base_url):
            link.endpoint.include_usage = False
            link.usage_option_saved = True

    async def _save_usage_option(self, link: Link) -> None:
        """The endpoint refused ``stream_options``: remember it for later processes."""
        if not link.endpoint.include_usage and not link.usage_option_saved:
            link.usage_option_saved = True
            with contextlib.suppress(StoreError):
                await self.store.set_meta(USAGE_OPTION_KEY + link.settings.base_url, "1")
