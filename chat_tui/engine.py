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
from .endpoint import Endpoint
from .outbox import Listener, MessageChanged, Outbox, OutboxEvent, ReplyStored
from .reachability import Reachability, ReachabilityState
from .store import Message, PastQuestion, Store, StoreError, StoreReplaced

if TYPE_CHECKING:
    from .answers import AnswerIndex

log = logging.getLogger(__name__)

RESTART_FIRST = 0.5  # seconds before a sender that died is started again, doubling…
RESTART_CAP = 10.0  # …up to this


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
        self.endpoint = Endpoint(settings)
        self.reachability = Reachability(
            self.endpoint, probe_cap=settings.probe_cap, on_change=on_reachability
        )
        self._listener = listener
        self.outbox = Outbox(
            store, self.endpoint, self.reachability, settings, listener=self._event
        )
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

    async def offline_answer(self, question: Message) -> Message | None:
        """While not online, answer from history: a labelled notice, never sent anywhere.

        The index is built on first use, off the event loop, and kept fresh as
        replies arrive. The question itself stays queued for a real reply.
        """
        if not self.settings.offline_answers or self.reachability.online:
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

    def start_watching(self) -> None:
        """Start the reachability watcher (probes at once)."""
        self._tasks.append(asyncio.create_task(self.reachability.run(), name="reachability"))

    def start_delivery(self) -> asyncio.Task[None]:
        """Start the sender; it runs until `close()`."""
        task = asyncio.create_task(self.run_delivery(), name="outbox")
        self._tasks.append(task)
        return task

    async def run_delivery(self, *, until_empty: bool = False) -> None:
        """Run the sender under a supervisor: the loop catches every error itself, and
        if it still ends with one, it is logged, shown, and started again (with a
        growing pause), so delivery never stops until the process does."""
        delay = RESTART_FIRST
        restarts = 0
        while True:
            try:
                await self.outbox.run(until_empty=until_empty)
                return
            except StoreReplaced:
                raise  # a restart would write to the same lost file
            except Exception as exc:
                restarts += 1
                log.exception("the sender stopped (restart %d in %.1f s)", restarts, delay)
                self.outbox.report_problem(
                    "supervisor",
                    f"the sender stopped ({type(exc).__name__}: {exc}); restarting",
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_CAP)
                self.outbox.report_problem("supervisor", None)

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
        await self.endpoint.aclose()
        await self.store.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
