"""Answers from the ``fallback`` endpoint while a conversation's own is not online.

Streams through the same request path as every reply (context fitting,
overflow trimming, the reply caps), but outside the sender's queue: it claims
nothing, so it can never block, delay or reorder the queue, and the question
stays queued for its own endpoint. The answer is stored as a labelled notice,
which no request ever carries as context. A failure changes nothing for the
queued question. See docs/architecture.md "Endpoints, fallback answers".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .config import Settings
from .endpoint import DeliveryError, UnreachableError
from .events import (
    LocalAnswerDelta,
    LocalAnswerEnded,
    LocalAnswerStarted,
    MessageChanged,
    SenderEvent,
)
from .links import Links, endpoint_name
from .sender import Sender
from .store import Claim, Message, Store

log = logging.getLogger(__name__)


class Fallback:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        links: Links,
        sender: Sender,
        tell: Callable[[SenderEvent], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.links = links
        self.sender = sender
        self._tell = tell
        self._stops: dict[int, asyncio.Future[None]] = {}  # question id → stop asked

    async def answer(self, question: Message) -> Message | None:
        """Ask the ``fallback`` endpoint, if there is one, it is online and the
        question's own endpoint is not; the answer stored as a notice, or None."""
        name = self.settings.fallback
        if not name:
            return None
        conversation = await self.store.get_conversation(question.conversation_id)
        if conversation is None:
            return None
        primary_name = endpoint_name(conversation)
        primary = self.links.known(conversation)
        if primary_name == name or (primary is not None and primary.reachability.online):
            return None
        fallback = self.links.get(name)
        if not fallback.reachability.online:
            return None
        # No lease, no history here: the request path reads the turns that fit
        # (delivered questions and replies only, never notices like this answer).
        claim = Claim(question, conversation, [], "fallback", 0.0, [])
        model = fallback.model
        label = f"answered by {model} on {name} while {primary_name} is offline"
        self._tell(LocalAnswerStarted(question, label))
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stops[question.id] = stop
        parts: list[str] = []

        def on_delta(text: str) -> None:
            parts.append(text)
            self._tell(LocalAnswerDelta(question, text))

        request = asyncio.ensure_future(
            self.sender.ask(
                claim,
                fallback,
                model,
                on_delta,
                lambda _text: None,
                idempotency_key=f"{question.key or question.id}:fallback",
            )
        )
        meta: dict[str, object] = {
            "kind": "fallback_answer",
            "label": label,
            "endpoint": name,
            "model": model,
            "primary": primary_name,
        }
        try:
            await asyncio.wait((request, stop), return_when=asyncio.FIRST_COMPLETED)
            if not request.done():  # the user stopped it: what came is the answer
                request.cancel()
                await asyncio.gather(request, return_exceptions=True)
                text = "".join(parts)
                meta["stopped"] = True
            else:
                reply, _fitted = request.result()
                text = reply.text
                meta["model"] = reply.model or model
                if reply.reasoning:
                    meta["reasoning"] = reply.reasoning
                if reply.usage is not None:
                    meta["usage"] = reply.usage.as_json()
        except DeliveryError as error:
            if isinstance(error, UnreachableError) or getattr(error, "network", False):
                fallback.reachability.report_unreachable(error.reason)
            log.info("fallback answer for message %s failed: %s", question.id, error.reason)
            self._tell(LocalAnswerEnded(question, None, error.reason))
            return None
        except BaseException:
            request.cancel()
            self._tell(LocalAnswerEnded(question, None, "stopped"))
            raise
        finally:
            self._stops.pop(question.id, None)
        if not text.strip():
            # Stopped before it said anything is the user's choice, not a failure.
            why = None if meta.get("stopped") else "the fallback gave an empty answer"
            self._tell(LocalAnswerEnded(question, None, why))
            return None
        notice = await self.store.add_notice(question, text, meta=meta)
        self._tell(LocalAnswerEnded(question, notice, None if notice else "not stored"))
        if notice is not None:
            self._tell(MessageChanged(notice))
        return notice

    def stop(self, question_id: int) -> bool:
        """Stop a fallback answer being streamed; what came so far is kept."""
        stop = self._stops.get(question_id)
        if stop is None or stop.done():
            return False
        stop.set_result(None)
        return True
