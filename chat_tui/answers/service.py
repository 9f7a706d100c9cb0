"""The offline-answer service: past replies offered while an endpoint is away.

It listens to the sender's events: every stored reply (``ReplyStored``) makes
its question available for later offline answers. The index is built from
the store on first use, off the event loop; until then nothing is kept, and
the build reads every past question anyway.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..config import Settings
from ..events import ReplyStored, SenderEvent
from ..store import Message, PastQuestion, Store

if TYPE_CHECKING:
    from .index import AnswerIndex


class OfflineAnswers:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._index: AnswerIndex | None = None
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    def hear(self, event: SenderEvent) -> None:
        """A listener of the sender's events: index each newly answered question."""
        if isinstance(event, ReplyStored) and self._index is not None:
            task = asyncio.get_running_loop().create_task(self._add(event))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _add(self, event: ReplyStored) -> None:
        question = event.question
        conversation = await self.store.get_conversation(question.conversation_id)
        if self._index is not None and conversation is not None:
            self._index.add(
                PastQuestion(
                    question.id,
                    question.conversation_id,
                    conversation.title,
                    question.content,
                    event.reply.content,
                    question.created_at,
                )
            )

    async def answer(self, question: Message) -> Message | None:
        """The best past reply to ``question``, stored as a labelled notice (never
        sent anywhere), or None if nothing matches well enough."""
        async with self._lock:
            if self._index is None:
                from .index import AnswerIndex

                past = await self.store.past_questions()
                self._index = await asyncio.to_thread(
                    AnswerIndex.build, past, self.settings.answer_threshold
                )
        found = self._index.best(question.content, exclude_message_id=question.id)
        if found is None:
            return None
        return await self.store.add_notice(
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
