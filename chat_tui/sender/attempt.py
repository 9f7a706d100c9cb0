"""One delivery attempt: stream the reply, then store it, keep what a stop left, or fail.

A reply is stored in one transaction with the question's ``delivered`` state
(docs/architecture.md step 4). If the database refuses (a full disk), the
reply waits in memory, its lease renewed, until the commit succeeds: a reply
already paid for is not thrown away. A stopped reply keeps what came, labelled
``stopped``; with nothing yet, the question is queued again or cancelled. A
failure is settled by its class (step 5): failed, or released for a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable

from ..backoff import retry_delay
from ..config import Settings
from ..endpoint import AuthError, DeliveryError, PermanentError, TransientError, UnreachableError
from ..events import (
    MessageChanged,
    ReplyAborted,
    ReplyDelta,
    ReplyReasoning,
    ReplyStarted,
    ReplyStored,
    SenderEvent,
)
from ..links import Links
from ..store import Claim, Message, Store, StoreError, StoreReplaced
from .request import Requester, Sent
from .stops import keep_lease
from .supervisor import TROUBLE_CAP, TROUBLE_FIRST, describe_store_error

log = logging.getLogger(__name__)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class Deliverer:
    """Runs the delivery attempts of one sender, and keeps what outlives an attempt:
    the stops asked in this process, the uncharged failures in a row, the count."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        owner: str,
        links: Links,
        requester: Requester,
        *,
        emit: Callable[[SenderEvent], None],
        report_problem: Callable[[str, str | None], None],
        rng: random.Random,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.links = links
        self.requester = requester
        self.emit = emit
        self.report_problem = report_problem
        self.rng = rng
        self.stops: dict[int, asyncio.Future[str]] = {}  # message id → stop asked here
        self.transport_failures: dict[int, int] = {}  # message id → uncharged failures
        self.delivered = 0  # for `sync` and the benchmarks

    async def deliver(self, claim: Claim) -> None:
        """One attempt at a claimed message; never raises but for cancellation."""
        try:
            await _Attempt(self, claim).run()
        except StoreError as exc:
            # The database refused a write (disk full, locked too long). The
            # lease runs out and the message is tried again; nothing is lost.
            log.warning("delivery of message %s not recorded: %s", claim.message.id, exc)
            self.report_problem("deliver", describe_store_error(exc))
        except Exception as exc:  # a bug in one delivery must not end the sender
            log.exception("delivery of message %s failed unexpectedly", claim.message.id)
            self.report_problem(
                "deliver",
                f"delivering message {claim.message.id} hit an unexpected error "
                f"({type(exc).__name__}); it is tried again when its lease runs out",
            )


class _Attempt:
    """Sending one claimed question, and what comes of it."""

    def __init__(self, deliverer: Deliverer, claim: Claim) -> None:
        self.d = deliverer
        self.claim = claim
        self.question = claim.message
        self.parts: list[str] = []
        self.thoughts: list[str] = []
        self.sent = Sent()

    def _on_delta(self, text: str) -> None:
        self.parts.append(text)
        self.d.emit(ReplyDelta(self.question, text))

    def _on_reasoning(self, text: str) -> None:
        self.thoughts.append(text)
        self.d.emit(ReplyReasoning(self.question, text))

    async def run(self) -> None:
        d, question, claim = self.d, self.question, self.claim
        d.emit(MessageChanged(question))
        d.emit(ReplyStarted(question))
        self.link = d.links.for_conversation(claim.conversation)
        self.model = claim.conversation.model or self.link.model
        stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        d.stops[question.id] = stop
        renewer = asyncio.create_task(keep_lease(d.store, d.settings, d.owner, claim, stop))
        request = asyncio.create_task(
            d.requester.send(
                claim, self.link, self.model, self.sent, self._on_delta, self._on_reasoning
            )
        )
        try:
            await asyncio.wait((request, stop), return_when=asyncio.FIRST_COMPLETED)
            if not request.done():  # the user stopped it
                await _stop(request)
                await _stop(renewer)
                await self._finish_stopped(stop.result())
                return
            try:
                reply, fitted = request.result()
            except DeliveryError as error:
                await _stop(renewer)
                d.emit(ReplyAborted(question, error))
                await self._fail(error)
                return
        except asyncio.CancelledError:
            renewer.cancel()
            request.cancel()
            d.emit(ReplyAborted(question, TransientError("stopped")))
            raise
        finally:
            d.stops.pop(question.id, None)
        self.link.reachability.report_success()
        d.transport_failures.pop(question.id, None)
        meta: dict[str, object] = {
            "model": reply.model or self.model,
            "finish_reason": reply.finish_reason,
        }
        if reply.reasoning:
            meta["reasoning"] = reply.reasoning
            if not reply.text.strip():
                meta["reasoning_only"] = True
        if reply.usage is not None:
            meta["usage"] = reply.usage.as_json()
        if fitted.dropped_turns:
            meta["context_dropped_turns"] = fitted.dropped_turns
        await self._store_reply(reply.text, meta, "complete", renewer)
        if reply.usage is not None:
            try:
                await self.link.context.learn_usage(self.model, fitted, reply.usage.prompt_tokens)
            except StoreError as exc:  # a calibration not saved costs nothing
                log.info("token calibration not saved: %s", exc)

    async def _finish_stopped(self, action: str) -> None:
        """The user stopped the reply: keep what came, or requeue/cancel if nothing did."""
        d, question = self.d, self.question
        text = "".join(self.parts)
        reasoning = "".join(self.thoughts)
        if text.strip() or reasoning.strip():
            meta: dict[str, object] = {
                "model": self.model,
                "finish_reason": "stopped",
                "stopped": True,
            }
            if reasoning:
                meta["reasoning"] = reasoning
                if not text.strip():
                    meta["reasoning_only"] = True
            await self._store_reply(text, meta, "stopped")
            log.info("message %s: reply stopped by the user after %d chars", question.id, len(text))
            return
        d.emit(ReplyAborted(question, TransientError("stopped by the user")))
        updated: Message | None
        if action == "cancel":
            updated = await d.store.cancel_sending(question.id, d.owner)
        else:
            updated = await d.store.release(
                question.id,
                d.owner,
                error="stopped by the user before the reply began; queued again",
                next_attempt_at=time.time(),
                charge_attempt=False,
                max_attempts=d.settings.max_attempts,
            )
        log.info("message %s stopped before any reply: %s", question.id, action)
        if updated is not None:
            d.emit(MessageChanged(updated))

    async def _store_reply(
        self,
        text: str,
        meta: dict[str, object],
        state: str,
        renewer: asyncio.Task[None] | None = None,
    ) -> None:
        """Store a reply. If the database refuses (a full disk), keep the reply in
        memory and try again with backoff, the lease renewed meanwhile, until it
        commits or the process exits: a reply already paid for is not thrown away."""
        d, question = self.d, self.question
        where = f"reply-{question.id}"
        delay = TROUBLE_FIRST
        try:
            while True:
                try:
                    stored = await d.store.complete(
                        question.id,
                        d.owner,
                        text,
                        meta=meta,
                        state=state,
                        context_from_seq=self.sent.context_from,
                    )
                except StoreReplaced:
                    raise  # retrying would write to a file nobody else sees
                except StoreError as exc:
                    log.warning("reply to message %s kept in memory: %s", question.id, exc)
                    d.report_problem(
                        where,
                        f"the reply to message {question.id} is kept in memory: "
                        + describe_store_error(exc),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, TROUBLE_CAP)
                    continue
                d.report_problem(where, None)
                d.report_problem("deliver", None)
                break
        finally:
            if renewer is not None:
                await _stop(renewer)
        if stored is None:
            log.info("message %s was taken over by another sender; reply dropped", question.id)
            # Withdraw the live reply: the stored one comes from the other sender.
            d.emit(ReplyAborted(question, TransientError("taken over by another sender")))
            with contextlib.suppress(StoreError):
                current = await d.store.get_message(question.id)
                if current is not None:
                    d.emit(MessageChanged(current))
            return
        d.delivered += 1
        log.info(
            "message %s delivered (conversation %s, %d chars, attempt %d)",
            question.id,
            question.conversation_id,
            len(text),
            question.attempts + 1,
        )
        # What the database now holds, without reading it back.
        delivered = dataclasses.replace(
            question,
            state="delivered",
            error=None,
            updated_at=stored.created_at,
            attempts=0,
            next_attempt_at=None,
        )
        d.emit(MessageChanged(delivered))
        d.emit(ReplyStored(delivered, stored))

    async def _fail(self, error: DeliveryError) -> None:
        """Settle a classified failure: failed, or given back for a retry (now, or after
        a backoff), charging an attempt only for what the server answered badly."""
        d, message_id = self.d, self.question.id
        reachability = self.link.reachability
        # The reason is the server's or the network's words, never the message text.
        log.info("message %s not delivered: %s: %s", message_id, error.kind, error.reason)
        now = time.time()
        updated: Message | None
        if isinstance(error, PermanentError):
            updated = await d.store.fail(message_id, d.owner, error.reason)
        else:
            charge, due = False, now
            if isinstance(error, AuthError):
                reachability.report_auth_error(error.reason)
            elif isinstance(error, UnreachableError):
                reachability.report_unreachable(error.reason, captive=error.captive)
            else:
                assert isinstance(error, TransientError)
                if error.network:
                    reachability.report_unreachable(error.reason)
                attempts = self.question.attempts
                if error.transport:
                    # The network's doing (reset, cut, dead link): no attempt is charged,
                    # but the backoff still grows with such failures in a row.
                    attempts = d.transport_failures.get(message_id, 0)
                    d.transport_failures[message_id] = attempts + 1
                delay = retry_delay(
                    attempts,
                    error.retry_after,
                    base=d.settings.backoff_base,
                    cap=d.settings.backoff_cap,
                    rng=d.rng,
                )
                charge, due = not error.transport, now + delay
            updated = await d.store.release(
                message_id,
                d.owner,
                error=error.reason,
                next_attempt_at=due,
                charge_attempt=charge,
                max_attempts=d.settings.max_attempts,
            )
        d.report_problem("deliver", None)
        if updated is not None:
            d.emit(MessageChanged(updated))
