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
from dataclasses import dataclass

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
    ReplyStarted,
    ReplyStored,
)
from .reachability import Reachability
from .store import Claim, Message, Store, StoreError, StoreReplaced

log = logging.getLogger(__name__)

EXPIRY_SWEEP = 30.0  # seconds between max_age sweeps
IDLE_RECHECK = 1.0  # how often an idle sender looks for work written by other processes
# After the database refused a write (locked, disk full) or the loop hit a bug: wait
# this long, doubling up to TROUBLE_CAP, before trying again. Short, so delivery
# resumes within seconds of the fault clearing.
TROUBLE_FIRST = 0.25
TROUBLE_CAP = 2.0


def describe_store_error(exc: Exception) -> str:
    return f"cannot write the database: {exc}; retrying"


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
    ) -> None:
        self.store = store
        self.endpoint = endpoint
        self.reachability = reachability
        self.settings = settings
        self.owner = owner or make_owner_id()
        self._listener = listener
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # conversation id → send task
        self._last_sweep = 0.0
        self._problems: dict[str, str] = {}  # where → what keeps the sender from going on
        self._problem: str | None = None  # what was last told to the listeners
        self._transport_failures: dict[int, int] = {}  # message id → uncharged failures
        self.delivered = 0  # counters for `sync` and the benchmarks
        self.failures = 0
        self.problems = 0  # times the loop caught an error and went on

    # -- the user's side --------------------------------------------------------------------

    async def submit(self, conversation_id: int | None, text: str) -> SubmitResult:
        """Queue a message durably. Returns after the commit; raises StoreError if it can't."""
        message, duplicate = await self.store.enqueue(
            conversation_id, text, dedup_window=self.settings.dedup_window
        )
        if not duplicate:
            self._emit(MessageChanged(message))
        self.wake()
        self.reachability.probe_now()
        return SubmitResult(message, duplicate)

    async def retry(self, message_id: int, *, text: str | None = None) -> Message:
        message = await self.store.retry(message_id, text=text)
        self._emit(MessageChanged(message))
        self.wake()
        self.reachability.probe_now()
        return message

    async def cancel(self, message_id: int) -> Message:
        message = await self.store.cancel(message_id)
        self._emit(MessageChanged(message))
        self.wake()
        return message

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
                    if self.reachability.online:
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
            if not self.reachability.online:
                await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
                return self.delivered - before

    async def _fill_slots(self) -> None:
        while len(self._in_flight) < self.settings.concurrency and self.reachability.online:
            claim = await self.store.claim_next(
                self.owner,
                lease_seconds=self.settings.lease_seconds,
                exclude_conversations=self._in_flight.keys(),
            )
            if claim is None:
                return
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
        if self.reachability.online and len(self._in_flight) < self.settings.concurrency:
            due = await self.store.next_due()
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.time()))
        waiters = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.reachability.wait_change()),
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
        conversation = claim.conversation
        system_prompt = conversation.system_prompt or self.settings.system_prompt
        request = [{"role": "system", "content": system_prompt}] if system_prompt else []
        request += claim.history
        request.append({"role": "user", "content": question.content})
        model = conversation.model or self.settings.model

        renewer = asyncio.create_task(self._renew_lease(claim))
        try:
            reply = await self.endpoint.chat(
                request,
                model=model,
                idempotency_key=question.key or str(question.id),
                on_delta=lambda text: self._emit(ReplyDelta(question, text)),
            )
        except DeliveryError as error:
            await _stop(renewer)
            self._emit(ReplyAborted(question, error))
            await self._handle_failure(claim, error)
            return
        except asyncio.CancelledError:
            renewer.cancel()
            self._emit(ReplyAborted(question, TransientError("stopped")))
            raise
        self.reachability.report_success()
        self._transport_failures.pop(question.id, None)
        stored = await self._commit_reply(claim, reply, model, renewer)
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
            len(reply.text),
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

    async def _commit_reply(
        self, claim: Claim, reply: Reply, model: str, renewer: asyncio.Task[None]
    ) -> Message | None:
        """Store a finished reply. If the database refuses (a full disk), keep the reply
        in memory and try again with backoff, the lease renewed meanwhile, until it
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
                        reply.text,
                        meta={"model": reply.model or model, "finish_reason": reply.finish_reason},
                    )
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
                return stored
        finally:
            await _stop(renewer)

    async def _renew_lease(self, claim: Claim) -> None:
        """Keep the lease while a long reply streams, so nobody else takes it over."""
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            expires = time.time() + self.settings.lease_seconds
            try:
                if not await self.store.renew_lease(claim.message.id, self.owner, expires):
                    return
            except StoreError:
                log.warning("could not renew the lease of message %s", claim.message.id)

    async def _handle_failure(self, claim: Claim, error: DeliveryError) -> None:
        message_id = claim.message.id
        self.failures += 1
        # The reason is the server's or the network's words, never the message text.
        log.info("message %s not delivered: %s: %s", message_id, error.kind, error.reason)
        now = time.time()
        updated: Message | None
        if isinstance(error, PermanentError):
            updated = await self.store.fail(message_id, self.owner, error.reason)
        elif isinstance(error, AuthError):
            self.reachability.report_auth_error(error.reason)
            updated = await self.store.release(
                message_id,
                self.owner,
                error=error.reason,
                next_attempt_at=now,
                charge_attempt=False,
                max_attempts=self.settings.max_attempts,
            )
        elif isinstance(error, UnreachableError):
            self.reachability.report_unreachable(error.reason, captive=error.captive)
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
                self.reachability.report_unreachable(error.reason)
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
