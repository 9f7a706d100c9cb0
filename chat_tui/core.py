"""The parts of a running chat-tui, made, wired, started and closed together.

The store, one link per endpoint in use (client, reachability watcher,
context keeper), the sender (``Sender``), the offline-answer service and the
fallback. The TUI and every CLI verb use this one bundle, so there is exactly
one way to start and stop delivery (and to release leases on the way out).

Events: the sender reports to ``events``; the offline answers and the
``listener`` given here (the TUI, a CLI verb) are its subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from .answers import OfflineAnswers
from .config import Settings
from .events import Broadcast, Listener, MessageChanged, SenderEvent
from .fallback import Fallback
from .links import Link, Links
from .reachability import ReachabilityState
from .sender import Sender, supervise
from .store import Conversation, Message, Store, StoreError

log = logging.getLogger(__name__)


class Core:
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
        self.answers = OfflineAnswers(settings, store)
        self.events = Broadcast()
        self.events.subscribe(self.answers.hear)  # stored replies become offline answers
        self.events.subscribe(self._pass_on)
        self.sender = Sender(
            store,
            self.endpoint,
            self.reachability,
            settings,
            listener=self.events,
            links=self.links,
        )
        self.fallback = Fallback(settings, store, self.links, self.sender, self._tell)
        self._tasks: list[asyncio.Task[None]] = []

    def _pass_on(self, event: SenderEvent) -> None:
        if self._listener is not None:
            self._listener(event)

    def _tell(self, event: SenderEvent) -> None:
        if self._listener is not None:
            try:
                self._listener(event)
            except Exception:  # a display bug must never stop an answer
                log.exception("listener failed")

    def link_for(self, conversation: Conversation | None) -> Link | None:
        """The conversation's endpoint, or None if the configuration no longer has it."""
        return self.links.known(conversation)

    # -- answers while the endpoint is away ----------------------------------------------

    async def answer_while_offline(self, question: Message) -> Message | None:
        """A question went into the queue while its endpoint is away: an answer from
        history if one matches, else the fallback endpoint's (if it is online)."""
        notice = await self.offline_answer(question)
        if notice is None:
            notice = await self.fallback_answer(question)
        return notice

    async def offline_answer(self, question: Message) -> Message | None:
        """While not online, answer from history: a labelled notice, never sent anywhere.

        The question itself stays queued for a real reply.
        """
        if not self.settings.offline_answers or await self._primary_online(question):
            return None
        notice = await self.answers.answer(question)
        if notice is not None and self._listener is not None:
            self._listener(MessageChanged(notice))
        return notice

    async def _primary_online(self, question: Message) -> bool:
        conversation = await self.store.get_conversation(question.conversation_id)
        link = self.link_for(conversation)
        return link is not None and link.reachability.online

    async def fallback_answer(self, question: Message) -> Message | None:
        """Ask the ``fallback`` endpoint while the conversation's own is not online."""
        return await self.fallback.answer(question)

    def stop_fallback(self, question_id: int) -> bool:
        """Stop a fallback answer being streamed; what came so far is kept."""
        return self.fallback.stop(question_id)

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        listener: Listener | None = None,
        on_reachability: Callable[[ReachabilityState], None] | None = None,
    ) -> Core:
        store = await Store.open(settings.db_path)
        try:
            return cls(settings, store, listener=listener, on_reachability=on_reachability)
        except BaseException:
            await store.close()  # an open database thread would keep the process alive
            raise

    async def watch_pending_endpoints(self) -> None:
        """Make a link (client and watcher) for every endpoint queued messages wait for."""
        await self.sender.watch_pending_endpoints()

    def start_watching(self) -> None:
        """Start the reachability watchers (each probes at once)."""
        self.links.start_watching()

    def start_delivery(self) -> asyncio.Task[None]:
        """Start the sender; it runs until `close()`."""
        task = asyncio.create_task(self.run_delivery(), name="sender")
        self._tasks.append(task)
        return task

    async def run_delivery(self, *, until_empty: bool = False) -> None:
        """Run the sender under a supervisor: the loop catches every error itself, and
        if it still ends with one, it is logged, shown, and started again (with a
        growing pause), so delivery never stops until the process does."""
        await supervise(self.sender, until_empty=until_empty)

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
            await self.store.release_all(self.sender.owner)
        await self.links.aclose()
        await self.store.close()

    async def __aenter__(self) -> Core:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
