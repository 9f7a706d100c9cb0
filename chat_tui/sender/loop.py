"""The sender: every message goes enqueue → claim → send → complete.

There is no other path. The TUI, ``chat-tui send``/``sync`` and the tests all
drive this class, online or not; offline is only a state in which claiming
waits. See docs/architecture.md "One path for every message" for the contract.

``Sender`` takes the user's side (submit, retry, cancel, stop) and runs the
loop that claims what is deliverable and starts one attempt per conversation
(``attempt.Deliverer``), up to ``concurrency`` at a time. It does I/O and
reports what happened through one ``listener`` callback with small event
objects; it never touches a widget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass

from .. import context
from ..config import Settings
from ..endpoint import Endpoint, Reply
from ..events import Listener, MessageChanged, SenderEvent
from ..links import Link, Links
from ..reachability import Reachability
from ..store import Claim, Message, Store, StoreError, StoreReplaced
from .attempt import Deliverer
from .request import Requester, Sent, TextCallback
from .stops import STOP_ACTIONS
from .supervisor import TROUBLE_CAP, TROUBLE_FIRST, Problems, describe_store_error

log = logging.getLogger(__name__)

EXPIRY_SWEEP = 30.0  # seconds between max_age sweeps
IDLE_RECHECK = 1.0  # how often an idle sender looks for work written by other processes
PENDING_ENDPOINTS_RECHECK = 1.0  # seconds between looks for endpoints queued messages wait for


@dataclass(frozen=True, slots=True)
class SubmitResult:
    message: Message
    duplicate: bool


def _log_failure(task: asyncio.Future[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("releasing leases failed: %s", task.exception())


def make_owner_id() -> str:
    """A lease owner name unique to this process (host, pid, random)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Sender:
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
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # conversation id → send task
        self.context = self.links.default.context
        self._last_sweep = 0.0
        self._last_pending_check = 0.0
        self._problems = Problems(self._emit)
        self._requester = Requester(store, settings)
        self._deliverer = Deliverer(
            store,
            settings,
            self.owner,
            self.links,
            self._requester,
            emit=self._emit,
            report_problem=self.report_problem,
            rng=rng or random.Random(),
        )

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
        local = self._deliverer.stops.get(message_id)
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

    @property
    def delivered(self) -> int:
        """Replies stored by this sender (for `sync` and the benchmarks)."""
        return self._deliverer.delivered

    async def ask(
        self,
        claim: Claim,
        link: Link,
        model: str,
        on_delta: TextCallback,
        on_reasoning: TextCallback,
        *,
        idempotency_key: str,
    ) -> tuple[Reply, context.Fitted]:
        """One request through the same path as a delivery (fitting, overflow
        trimming, caps), with no lease and no store write: a fallback answer."""
        return await self._requester.send(
            claim, link, model, Sent(), on_delta, on_reasoning, idempotency_key=idempotency_key
        )

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
        self._problems.report(where, text)

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
                with_history=False,  # the request reads what can fit the window
            )
            if claim is None:
                return
            link = self.links.for_conversation(claim.conversation)
            # Learn the model's window before the send starts (once per model and
            # process), so concurrent sends don't race to ask, or past each other.
            try:
                await self._requester.check_usage_option(link)
                await link.context.limit_for(claim.conversation.model or link.model)
            except StoreError as exc:
                log.info("context limits not read: %s", exc)
            cid = claim.message.conversation_id
            task = asyncio.create_task(
                self._deliverer.deliver(claim), name=f"deliver-{claim.message.id}"
            )
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

    def _emit(self, event: SenderEvent) -> None:
        if self._listener is not None:
            try:
                self._listener(event)
            except Exception:  # a display bug must never stop delivery
                log.exception("outbox listener failed")
