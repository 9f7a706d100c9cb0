"""The delivery engine: every message goes enqueue → claim → send → complete.

There is no other path. The TUI, ``chat-tui send``/``sync`` and the tests all
drive this class, online or not; offline is only a state in which claiming
waits. See docs/architecture.md "One path for every message" for the contract.

The engine does I/O and reports what happened through one ``listener``
callback with small event objects; it never touches a widget.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import context
from .backoff import retry_delay
from .config import Settings
from .endpoint import (
    AuthError,
    DeliveryError,
    Endpoint,
    PermanentError,
    Reply,
    TransientError,
    UnreachableError,
)
from .events import (  # re-exported: the engine's events live in a light module
    DeliveryProblem,
    Listener,
    MessageChanged,
    OutboxEvent,
    ReplyAborted,
    ReplyDelta,
    ReplyReasoning,
    ReplyStarted,
    ReplyStored,
)
from .links import Link, Links
from .reachability import Reachability
from .store import Claim, Message, Store, StoreError, StoreReplaced

log = logging.getLogger(__name__)

context_callback = Callable[[str], None]

EXPIRY_SWEEP = 30.0  # seconds between max_age sweeps
IDLE_RECHECK = 1.0  # how often an idle sender looks for work written by other processes
# After the database refused a write (locked, disk full) or the loop hit a bug: wait
# this long, doubling up to TROUBLE_CAP, before trying again. Short, so delivery
# resumes within seconds of the fault clearing.
TROUBLE_FIRST = 0.25
TROUBLE_CAP = 2.0


def describe_store_error(exc: Exception) -> str:
    return f"cannot write the database: {exc}; retrying"


STOP_POLL = 0.5  # how often a sender looks for a stop asked by another process
PENDING_ENDPOINTS_RECHECK = 1.0  # seconds between looks for endpoints queued messages wait for
STOP_ACTIONS = ("requeue", "cancel")  # what becomes of a message stopped before any reply
USAGE_OPTION_KEY = "no_stream_options:"  # meta key: this endpoint refuses stream_options


@dataclass(slots=True)
class _Sent:
    """What the request being sent carries: the user seq of its oldest earlier turn
    (None: the question alone), for the "not sent to the model" marker."""

    context_from: int | None = None


@dataclass(frozen=True, slots=True)
class SubmitResult:
    message: Message
    duplicate: bool


def _log_failure(task: asyncio.Future[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("releasing leases failed: %s", task.exception())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def make_owner_id() -> str:
    """A lease owner name unique to this process (host, pid, random)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Outbox:
    def __init__(
        self,
        store: Store,
        endpoint: Endpoint,
        reachability: Reachability,
        settings: Settings,
        *,
        listener: Listener | None = None,
        owner: str | None = None,
        rng: random.Random | None = None,
        links: Links | None = None,
    ) -> None:
        self.store = store
        self.endpoint = endpoint
        self.reachability = reachability
        self.settings = settings
        # Each conversation's endpoint: the default one is ``endpoint`` above.
        self.links = links or Links(settings, store, default=(endpoint, reachability))
        self.owner = owner or make_owner_id()
        self._listener = listener
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # conversation id → send task
        self._stops: dict[int, asyncio.Future[str]] = {}  # message id → stop asked here
        self.context = self.links.default.context
        self._last_sweep = 0.0
        self._problems: dict[str, str] = {}  # where → what keeps the sender from going on
        self._problem: str | None = None  # what was last told to the listeners
        self._transport_failures: dict[int, int] = {}  # message id → uncharged failures
        self._last_pending_check = 0.0
        self.delivered = 0  # counters for `sync` and the benchmarks
        self.failures = 0
        self.problems = 0  # times the loop caught an error and went on

    # -- the user's side --------------------------------------------------------------------

    async def submit(
        self, conversation_id: int | None, text: str, *, endpoint: str | None = None
    ) -> SubmitResult:
        """Queue a message durably. Returns after the commit; raises StoreError if it can't.

        ``endpoint``: the endpoint a new conversation belongs to (None: the default).
        """
        message, duplicate = await self.store.enqueue(
            conversation_id, text, dedup_window=self.settings.dedup_window, endpoint=endpoint
        )
        if not duplicate:
            self._emit(MessageChanged(message))
        self.wake()
        self.links.probe_now()
        return SubmitResult(message, duplicate)

    async def resend(self, message_id: int, *, text: str | None = None) -> Message:
        """Regenerate the last reply, or send the last question again edited: the turn
        as it was is kept as a version, and the question takes the one path."""
        message = await self.store.resend_turn(message_id, text=text)
        self._emit(MessageChanged(message))
        self.wake()
        self.links.probe_now()
        return message

    async def retry(self, message_id: int, *, text: str | None = None) -> Message:
        message = await self.store.retry(message_id, text=text)
        self._emit(MessageChanged(message))
        self.wake()
        self.links.probe_now()
        return message

    async def cancel(self, message_id: int) -> Message:
        message = await self.store.cancel(message_id)
        self._emit(MessageChanged(message))
        self.wake()
        return message

    async def stop(self, message_id: int, action: str = "requeue") -> bool:
        """Stop a reply being generated. What came is kept as the reply, labelled
        stopped, and the message counts as delivered; if nothing came yet, the
        message goes back to the queue (``requeue``) or is cancelled (``cancel``).

        Works for a message another process is sending too: the flag in its
        outbox row is seen by that process within ``STOP_POLL``. False if the
        message is not being sent.
        """
        if action not in STOP_ACTIONS:
            raise ValueError(f"unknown stop action {action!r}")
        local = self._stops.get(message_id)
        if local is not None:
            if not local.done():
                local.set_result(action)
            return True
        return await self.store.request_stop(message_id, action)

    def wake(self) -> None:
        self._wake.set()

    @property
    def sending(self) -> int:
        return len(self._in_flight)

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, *, until_empty: bool = False) -> None:
        """Deliver until cancelled (or, with ``until_empty``, until nothing is deliverable).

        ``until_empty`` stops once no message can go out without the user:
        messages behind a failed one wait for the user and do not keep it
        running. While offline it keeps waiting; give it a timeout from outside.
        """
        delay = TROUBLE_FIRST
        try:
            while True:
                try:
                    replaced = self.store.file_replaced()
                    if replaced is not None:
                        raise StoreReplaced(replaced)
                    await self._sweep_expired()
                    await self._watch_pending_endpoints()
                    if self.links.any_online:
                        await self._fill_slots()
                    if (
                        until_empty
                        and not self._in_flight
                        and await self.store.waiting_count() == 0
                    ):
                        return
                    await self._wait_for_work()
                except StoreReplaced as exc:
                    # Writing on would go to a file nobody else sees: stop, say why.
                    log.error("sender stopped: %s", exc)
                    self.report_problem("loop", f"{exc}; delivery stopped")
                    raise
                except StoreError as exc:
                    # The database refused (another program's lock held past
                    # busy_timeout, a full disk, the file gone): say so, wait a
                    # little, try again. Nothing is lost: what was queued stays queued.
                    log.warning("sender: %s", exc)
                    await self._trouble(describe_store_error(exc), delay)
                    delay = min(delay * 2, TROUBLE_CAP)
                    continue
                except Exception as exc:  # our own bug must not end delivery for good
                    log.exception("sender loop failed; going on")
                    await self._trouble(
                        f"the sender hit an unexpected error ({type(exc).__name__}); retrying",
                        delay,
                    )
                    delay = min(delay * 2, TROUBLE_CAP)
                    continue
                delay = TROUBLE_FIRST
                self.report_problem("loop", None)
        finally:
            await self._stop_in_flight()

    def report_problem(self, where: str, text: str | None) -> None:
        """Tell the listeners what keeps the sender from going on (None: cleared).

        ``where`` is the part of the sender that has (or no longer has) the
        problem, so one part clearing does not hide another's.
        """
        if text is None:
            self._problems.pop(where, None)
        else:
            self._problems[where] = text
        shown = next(reversed(self._problems.values()), None)
        if shown == self._problem:
            return
        self._problem = shown
        if shown is not None:
            self.problems += 1
        self._emit(DeliveryProblem(shown))

    @property
    def problem(self) -> str | None:
        return self._problem

    async def _trouble(self, text: str, delay: float) -> None:
        self.report_problem("loop", text)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            # A submit or "retry now" tries again at once.
            await asyncio.wait_for(self._wake.wait(), delay)

    async def deliver_available(self) -> int:
        """Send what is deliverable now, then return how many were delivered.

        Used by ``chat-tui sync --once``: no waiting for backoff or for a
        network that is not there.
        """
        before = self.delivered
        await self._sweep_expired()
        while True:
            await self._fill_slots()
            if not self._in_flight:
                return self.delivered - before
            await asyncio.wait(self._in_flight.values(), return_when=asyncio.FIRST_COMPLETED)
            if not self.links.any_online:
                await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
                return self.delivered - before

    async def _watch_pending_endpoints(self) -> None:
        if time.monotonic() - self._last_pending_check >= PENDING_ENDPOINTS_RECHECK:
            await self.watch_pending_endpoints()

    async def watch_pending_endpoints(self) -> None:
        """Make sure every endpoint that queued messages wait for is watched."""
        now = time.monotonic()
        self._last_pending_check = now
        try:
            names = await self.store.pending_endpoints()
        except StoreError:
            return
        for name in names:
            if self.links.configured(name):
                self.links.get(name)

    async def _fill_slots(self) -> None:
        while len(self._in_flight) < self.settings.concurrency and self.links.any_online:
            claim = await self.store.claim_next(
                self.owner,
                lease_seconds=self.settings.lease_seconds,
                exclude_conversations=self._in_flight.keys(),
                endpoints=self.links.online_names(),
                with_history=False,  # _request reads what can fit the window
            )
            if claim is None:
                return
            link = self.links.for_conversation(claim.conversation)
            # Learn the model's window before the send starts (once per model and
            # process), so concurrent sends don't race to ask, or past each other.
            try:
                await self._check_usage_option(link)
                await link.context.limit_for(claim.conversation.model or link.model)
            except StoreError as exc:
                log.info("context limits not read: %s", exc)
            cid = claim.message.conversation_id
            task = asyncio.create_task(self._deliver(claim), name=f"deliver-{claim.message.id}")
            self._in_flight[cid] = task
            task.add_done_callback(lambda _t, cid=cid: self._finished(cid))

    def _finished(self, conversation_id: int) -> None:
        self._in_flight.pop(conversation_id, None)
        self._wake.set()

    async def _wait_for_work(self) -> None:
        """Sleep until something could have changed: a wake, a due time, reachability."""
        # Clear before the awaits below, so a wake() that happens while we ask
        # the database (a submit, a finished send) is not lost.
        self._wake.clear()
        timeout = IDLE_RECHECK
        # With every slot busy a due message cannot be claimed anyway; a
        # finishing send wakes us. (Waiting for its due time here would spin.)
        if self.links.any_online and len(self._in_flight) < self.settings.concurrency:
            due = await self.store.next_due(self.links.online_names())
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.time()))
        waiters = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.links.wait_change()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _sweep_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < EXPIRY_SWEEP:
            return
        self._last_sweep = now
        for message in await self.store.expire_old(self.settings.max_age):
            self._emit(MessageChanged(message))

    async def _stop_in_flight(self) -> None:
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Shielded so a second cancel can't cut the release short; the task's own
        # failure is collected here, never left for asyncio to print on a screen.
        release = asyncio.ensure_future(self.store.release_all(self.owner))
        release.add_done_callback(_log_failure)
        with contextlib.suppress(StoreError, asyncio.CancelledError):
            await asyncio.shield(release)

    # -- one delivery ------------------------------------------------------------------------

    async def _deliver(self, claim: Claim) -> None:
        try:
            await self._send(claim)
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

    async def _send(self, claim: Claim) -> None:
        question = claim.message
        self._emit(MessageChanged(question))
        self._emit(ReplyStarted(question))
        link = self.links.for_conversation(claim.conversation)
        model = claim.conversation.model or link.model
        parts: list[str] = []
        thoughts: list[str] = []

        def on_delta(text: str) -> None:
            parts.append(text)
            self._emit(ReplyDelta(question, text))

        def on_reasoning(text: str) -> None:
            thoughts.append(text)
            self._emit(ReplyReasoning(question, text))

        sent = _Sent()
        stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._stops[question.id] = stop
        renewer = asyncio.create_task(self._renew_lease(claim, stop))
        request = asyncio.create_task(
            self._request(claim, link, model, sent, on_delta, on_reasoning)
        )
        try:
            await asyncio.wait((request, stop), return_when=asyncio.FIRST_COMPLETED)
            if not request.done():  # the user stopped it
                await _stop(request)
                await _stop(renewer)
                await self._finish_stopped(claim, stop.result(), model, parts, thoughts, sent)
                return
            try:
                reply, fitted = request.result()
            except DeliveryError as error:
                await _stop(renewer)
                self._emit(ReplyAborted(question, error))
                await self._handle_failure(claim, error)
                return
        except asyncio.CancelledError:
            renewer.cancel()
            request.cancel()
            self._emit(ReplyAborted(question, TransientError("stopped")))
            raise
        finally:
            self._stops.pop(question.id, None)
        link.reachability.report_success()
        self._transport_failures.pop(question.id, None)
        meta: dict[str, object] = {
            "model": reply.model or model,
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
        await self._store_reply(claim, reply.text, meta, "complete", sent, renewer)
        if reply.usage is not None:
            try:
                await link.context.learn_usage(model, fitted, reply.usage.prompt_tokens)
            except StoreError as exc:  # a calibration not saved costs nothing
                log.info("token calibration not saved: %s", exc)

    async def _request(
        self,
        claim: Claim,
        link: Link,
        model: str,
        sent: _Sent,
        on_delta: context_callback,
        on_reasoning: context_callback,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[Reply, context.Fitted]:
        """Fit the request into the model's window and send it; an overflow error
        trims harder and sends again at once (no backoff, no attempt charged).

        Also asks a fallback endpoint (``link`` is then the fallback's)."""
        await self._check_usage_option(link)
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

    async def ask(
        self,
        claim: Claim,
        link: Link,
        model: str,
        on_delta: context_callback,
        on_reasoning: context_callback,
        *,
        idempotency_key: str,
    ) -> tuple[Reply, context.Fitted]:
        """One request through the same path as a delivery (fitting, overflow
        trimming, caps), with no lease and no store write: a fallback answer."""
        return await self._request(
            claim, link, model, _Sent(), on_delta, on_reasoning, idempotency_key=idempotency_key
        )

    async def _check_usage_option(self, link: Link) -> None:
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

    async def _finish_stopped(
        self,
        claim: Claim,
        action: str,
        model: str,
        parts: list[str],
        thoughts: list[str],
        sent: _Sent,
    ) -> None:
        """The user stopped the reply: keep what came, or requeue/cancel if nothing did."""
        question = claim.message
        text = "".join(parts)
        reasoning = "".join(thoughts)
        if text.strip() or reasoning.strip():
            meta: dict[str, object] = {"model": model, "finish_reason": "stopped", "stopped": True}
            if reasoning:
                meta["reasoning"] = reasoning
                if not text.strip():
                    meta["reasoning_only"] = True
            await self._store_reply(claim, text, meta, "stopped", sent)
            log.info("message %s: reply stopped by the user after %d chars", question.id, len(text))
            return
        self._emit(ReplyAborted(question, TransientError("stopped by the user")))
        updated: Message | None
        if action == "cancel":
            updated = await self.store.cancel_sending(question.id, self.owner)
        else:
            updated = await self.store.release(
                question.id,
                self.owner,
                error="stopped by the user before the reply began; queued again",
                next_attempt_at=time.time(),
                charge_attempt=False,
                max_attempts=self.settings.max_attempts,
            )
        log.info("message %s stopped before any reply: %s", question.id, action)
        if updated is not None:
            self._emit(MessageChanged(updated))

    async def _store_reply(
        self,
        claim: Claim,
        text: str,
        meta: dict[str, object],
        state: str,
        sent: _Sent,
        renewer: asyncio.Task[None] | None = None,
    ) -> None:
        """Store a reply. If the database refuses (a full disk), keep the reply in
        memory and try again with backoff, the lease renewed meanwhile, until it
        commits or the process exits: a reply already paid for is not thrown away."""
        question = claim.message
        where = f"reply-{question.id}"
        delay = TROUBLE_FIRST
        try:
            while True:
                try:
                    stored = await self.store.complete(
                        question.id,
                        self.owner,
                        text,
                        meta=meta,
                        state=state,
                        context_from_seq=sent.context_from,
                    )
                except StoreReplaced:
                    raise  # retrying would write to a file nobody else sees
                except StoreError as exc:
                    log.warning("reply to message %s kept in memory: %s", question.id, exc)
                    self.report_problem(
                        where,
                        f"the reply to message {question.id} is kept in memory: "
                        + describe_store_error(exc),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, TROUBLE_CAP)
                    continue
                self.report_problem(where, None)
                self.report_problem("deliver", None)
                break
        finally:
            if renewer is not None:
                await _stop(renewer)
        if stored is None:
            log.info("message %s was taken over by another sender; reply dropped", question.id)
            # Withdraw the live reply: the stored one comes from the other sender.
            self._emit(ReplyAborted(question, TransientError("taken over by another sender")))
            with contextlib.suppress(StoreError):
                current = await self.store.get_message(question.id)
                if current is not None:
                    self._emit(MessageChanged(current))
            return
        self.delivered += 1
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
        self._emit(MessageChanged(delivered))
        self._emit(ReplyStored(delivered, stored))

    async def _renew_lease(self, claim: Claim, stop: asyncio.Future[str]) -> None:
        """Keep the lease while a long reply streams, so nobody else takes it over,
        and notice a stop asked by another process (`chat-tui cancel`, a second TUI)."""
        interval = self.settings.lease_seconds / 3
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(min(STOP_POLL, interval))
            try:
                action = await self.store.stop_requested(claim.message.id, self.owner)
                if action and not stop.done():
                    stop.set_result(action if action in STOP_ACTIONS else "requeue")
                if time.monotonic() - renewed < interval:
                    continue
                renewed = time.monotonic()
                expires = time.time() + self.settings.lease_seconds
                if not await self.store.renew_lease(claim.message.id, self.owner, expires):
                    return
            except StoreError:
                log.warning("could not renew the lease of message %s", claim.message.id)

    async def _handle_failure(self, claim: Claim, error: DeliveryError) -> None:
        message_id = claim.message.id
        reachability = self.links.for_conversation(claim.conversation).reachability
        self.failures += 1
        # The reason is the server's or the network's words, never the message text.
        log.info("message %s not delivered: %s: %s", message_id, error.kind, error.reason)
        now = time.time()
        updated: Message | None
        if isinstance(error, PermanentError):
            updated = await self.store.fail(message_id, self.owner, error.reason)
        elif isinstance(error, AuthError):
            reachability.report_auth_error(error.reason)
            updated = await self.store.release(
                message_id,
                self.owner,
                error=error.reason,
                next_attempt_at=now,
                charge_attempt=False,
                max_attempts=self.settings.max_attempts,
            )
        elif isinstance(error, UnreachableError):
            reachability.report_unreachable(error.reason, captive=error.captive)
            updated = await self.store.release(
                message_id,
                self.owner,
                error=error.reason,
                next_attempt_at=now,
                charge_attempt=False,
                max_attempts=self.settings.max_attempts,
            )
        else:
            assert isinstance(error, TransientError)
            if error.network:
                reachability.report_unreachable(error.reason)
            attempts = claim.message.attempts
            if error.transport:
                # The network's doing (reset, cut, dead link): no attempt is charged,
                # but the backoff still grows with such failures in a row.
                attempts = self._transport_failures.get(message_id, 0)
                self._transport_failures[message_id] = attempts + 1
            delay = retry_delay(
                attempts,
                error.retry_after,
                base=self.settings.backoff_base,
                cap=self.settings.backoff_cap,
                rng=self._rng,
            )
            updated = await self.store.release(
                message_id,
                self.owner,
                error=error.reason,
                next_attempt_at=now + delay,
                charge_attempt=not error.transport,
                max_attempts=self.settings.max_attempts,
            )
        self.report_problem("deliver", None)
        if updated is not None:
            self._emit(MessageChanged(updated))

    def _emit(self, event: OutboxEvent) -> None:
        if self._listener is not None:
            try:
                self._listener(event)
            except Exception:  # a display bug must never stop delivery
                log.exception("outbox listener failed")
