"""The store, endpoint client, reachability watcher and outbox, opened and closed together.

The TUI and every CLI verb use this one bundle, so there is exactly one way
to start and stop delivery (and to release leases on the way out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Settings
from .endpoint import DeliveryError, UnreachableError
from .events import (
    Listener,
    LocalAnswerDelta,
    LocalAnswerEnded,
    LocalAnswerStarted,
    MessageChanged,
    OutboxEvent,
    ReplyStored,
)
from .links import Link, Links, UnknownEndpoint, endpoint_name
from .reachability import ReachabilityState
from .sender import Outbox, supervise
from .store import Claim, Conversation, Message, PastQuestion, Store, StoreError

if TYPE_CHECKING:
    from .answers import AnswerIndex

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        listener: Listener | None = None,
        on_reachability: Callable[[ReachabilityState], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        # One client and watcher per endpoint in use; the default one is made now.
        self.links = Links(settings, store, on_reachability=on_reachability)
        self.endpoint = self.links.default.endpoint
        self.reachability = self.links.default.reachability
        if settings.fallback:
            self.links.get(settings.fallback)  # watched from the start: it must be ready
        self._listener = listener
        self.outbox = Outbox(
            store,
            self.endpoint,
            self.reachability,
            settings,
            listener=self._event,
            links=self.links,
        )
        self._fallback_stops: dict[int, asyncio.Future[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._answers: AnswerIndex | None = None
        self._answers_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    def _event(self, event: OutboxEvent) -> None:
        if isinstance(event, ReplyStored) and self._answers is not None:
            task = asyncio.get_running_loop().create_task(self._index_reply(event))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if self._listener is not None:
            self._listener(event)

    async def _index_reply(self, event: ReplyStored) -> None:
        """A newly answered question becomes available to offline answers."""
        question = event.question
        conversation = await self.store.get_conversation(question.conversation_id)
        if self._answers is not None and conversation is not None:
            self._answers.add(
                PastQuestion(
                    question.id,
                    question.conversation_id,
                    conversation.title,
                    question.content,
                    event.reply.content,
                    question.created_at,
                )
            )

    def link_for(self, conversation: Conversation | None) -> Link | None:
        """The conversation's endpoint, or None if the configuration no longer has it."""
        try:
            return self.links.for_conversation(conversation)
        except UnknownEndpoint:
            return None

    async def _primary_online(self, question: Message) -> bool:
        conversation = await self.store.get_conversation(question.conversation_id)
        link = self.link_for(conversation)
        return link is not None and link.reachability.online

    async def answer_while_offline(self, question: Message) -> Message | None:
        """A question went into the queue while its endpoint is away: an answer from
        history if one matches, else the fallback endpoint's (if it is online)."""
        notice = await self.offline_answer(question)
        if notice is None:
            notice = await self.fallback_answer(question)
        return notice

    async def fallback_answer(self, question: Message) -> Message | None:
        """Ask the ``fallback`` endpoint while the conversation's own is not online.

        Streams through the same request path as every reply (context fitting,
        overflow trimming, the reply caps), but outside the outbox: it claims
        nothing, so it can never block, delay or reorder the queue, and the
        question stays queued for its own endpoint. The answer is stored as a
        labelled notice, which no request ever carries as context. A failure
        changes nothing for the queued question.
        """
        name = self.settings.fallback
        if not name:
            return None
        conversation = await self.store.get_conversation(question.conversation_id)
        if conversation is None:
            return None
        primary_name = endpoint_name(conversation)
        primary = self.link_for(conversation)
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
        self._fallback_stops[question.id] = stop
        parts: list[str] = []

        def on_delta(text: str) -> None:
            parts.append(text)
            self._tell(LocalAnswerDelta(question, text))

        request = asyncio.ensure_future(
            self.outbox.ask(
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
            self._fallback_stops.pop(question.id, None)
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

    def stop_fallback(self, question_id: int) -> bool:
        """Stop a fallback answer being streamed; what came so far is kept."""
        stop = self._fallback_stops.get(question_id)
        if stop is None or stop.done():
            return False
        stop.set_result(None)
        return True

    def _tell(self, event: OutboxEvent) -> None:
        if self._listener is not None:
            try:
                self._listener(event)
            except Exception:  # a display bug must never stop an answer
                log.exception("listener failed")

    async def offline_answer(self, question: Message) -> Message | None:
        """While not online, answer from history: a labelled notice, never sent anywhere.

        The index is built on first use, off the event loop, and kept fresh as
        replies arrive. The question itself stays queued for a real reply.
        """
        if not self.settings.offline_answers or await self._primary_online(question):
            return None
        async with self._answers_lock:
            if self._answers is None:
                from .answers import AnswerIndex

                past = await self.store.past_questions()
                self._answers = await asyncio.to_thread(
                    AnswerIndex.build, past, self.settings.answer_threshold
                )
        found = self._answers.best(question.content, exclude_message_id=question.id)
        if found is None:
            return None
        notice = await self.store.add_notice(
            question,
            found.source.answer,
            meta={
                "kind": "offline_answer",
                "label": found.label(),
                "score": round(found.score, 1),
                "source_message_id": found.source.message_id,
                "source_conversation_id": found.source.conversation_id,
            },
        )
        if notice is not None and self._listener is not None:
            self._listener(MessageChanged(notice))
        return notice

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        listener: Listener | None = None,
        on_reachability: Callable[[ReachabilityState], None] | None = None,
    ) -> Engine:
        store = await Store.open(settings.db_path)
        try:
            return cls(settings, store, listener=listener, on_reachability=on_reachability)
        except BaseException:
            await store.close()  # an open database thread would keep the process alive
            raise

    async def watch_pending_endpoints(self) -> None:
        """Make a link (client and watcher) for every endpoint queued messages wait for."""
        await self.outbox.watch_pending_endpoints()

    def start_watching(self) -> None:
        """Start the reachability watchers (each probes at once)."""
        self.links.start_watching()

    def start_delivery(self) -> asyncio.Task[None]:
        """Start the sender; it runs until `close()`."""
        task = asyncio.create_task(self.run_delivery(), name="outbox")
        self._tasks.append(task)
        return task

    async def run_delivery(self, *, until_empty: bool = False) -> None:
        """Run the sender under a supervisor: the loop catches every error itself, and
        if it still ends with one, it is logged, shown, and started again (with a
        growing pause), so delivery never stops until the process does."""
        await supervise(self.outbox, until_empty=until_empty)

    async def rescue_unsent(self) -> list[Path]:
        """The database file is gone: keep what was typed and not yet answered in
        rescue files (outside the data dir), restored as a draft by the next start."""
        from . import rescue

        saved: list[Path] = []
        with contextlib.suppress(StoreError):
            for text in await self.store.unsent_texts():
                with contextlib.suppress(OSError):
                    saved.append(rescue.save(self.settings.db_path, None, text))
        return saved

    async def close(self) -> None:
        """Stop sending, give back leases, close the client and the database."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.store.release_all(self.outbox.owner)
        await self.links.aclose()
        await self.store.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
