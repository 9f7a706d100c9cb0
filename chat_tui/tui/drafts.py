"""The composer's text as a draft: nothing typed is lost.

``DraftKeeper`` owns the draft's text, its debounced saving while the user
types, the keys typed before start-up had shown a draft, the drafts an earlier
run left in rescue files, and the draft at exit (in the database, or in a
rescue file outside the data dir when the database cannot take it). The App
owns one; the chat screen tells it what the composer holds. The draft belongs
to the conversation it was loaded for (or that its first message made), not to
whatever is on screen when a timer fires (docs/architecture.md, "A sick disk").
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..store import StoreError

if TYPE_CHECKING:
    from textual.timer import Timer

    from ..store import Store
    from .app import ChatApp

log = logging.getLogger(__name__)

SAVE_DELAY = 0.4  # seconds of quiet typing before the draft is written


class DraftKeeper:
    def __init__(self, app: ChatApp) -> None:
        self._app = app
        self.conversation_id: int | None = None  # whose draft it is (None: a new one)
        self.text = ""  # what the composer holds; the widgets are gone by on_unmount
        self.loaded = False  # nothing to save until a conversation's draft is shown
        self.unsaved: str | None = None  # printed after exit if it is nowhere else
        self._timer: Timer | None = None

    def typed(self, text: str) -> None:
        """The composer changed: save once the typing pauses."""
        self.text = text
        self._stop_timer()
        self._timer = self._app.set_timer(SAVE_DELAY, self.save_now)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    async def save_now(self) -> None:
        self._stop_timer()
        core = self._app.core
        if core is None or not self.loaded:
            return
        try:
            await core.store.save_draft(self.conversation_id, self.text)
        except StoreError as exc:
            self._app.notify(f"Draft not saved: {exc}", severity="warning", markup=False)

    async def load(
        self, store: Store, conversation_id: int | None, typed: Callable[[], str]
    ) -> str:
        """The draft of the conversation being opened. Keys typed in the moment
        before the database was open (``typed``: the composer's text, read once the
        draft is here) come after it: every key is kept."""
        draft = await store.load_draft(conversation_id)
        if not self.loaded and (early := typed()):
            draft += early
        self.conversation_id = conversation_id
        self.text = draft
        self.loaded = True
        return draft

    async def restore_rescued(self, store: Store) -> int:
        """Text kept in rescue files by an earlier run goes back into its draft;
        returns how many."""
        from .. import rescue

        restored = 0
        for item in rescue.pending(self._app.settings.db_path):
            conversation = item.conversation_id
            if conversation is not None and await store.get_conversation(conversation) is None:
                conversation = None
            earlier = await store.load_draft(conversation)
            joined = f"{earlier}\n{item.text}" if earlier.strip() else item.text
            await store.save_draft(conversation, joined)  # StoreError: the file stays
            with contextlib.suppress(OSError):
                item.path.unlink()
            restored += 1
        return restored

    async def keep_at_exit(self, store: Store | None, *, replaced: bool) -> str | None:
        """The app is closing: keep the draft. Returns a note for the terminal when
        it could not go where it belongs (the text is then in ``unsaved`` too)."""
        if self.loaded and store is not None:
            return await self._save_at_exit(store, replaced=replaced)
        await self._keep_early_typing(store)
        return None

    async def _save_at_exit(self, store: Store, *, replaced: bool) -> str | None:
        """Save the draft; if the database cannot take it (a full disk, the file
        gone), put it in a rescue file outside the data dir and say where. The exit
        message never claims more than what happened."""
        self._stop_timer()
        text = self.text
        problem = store.file_replaced()
        if problem is None:
            try:
                await store.save_draft(self.conversation_id, text)
                return None
            except StoreError as exc:
                problem = str(exc)
        if not text.strip():
            return None
        from .. import rescue

        conversation = None if replaced else self.conversation_id
        try:
            path = rescue.save(self._app.settings.db_path, conversation, text)
        except OSError as exc:
            self.unsaved = text
            return (
                f"chat-tui: your draft could not be saved ({problem}; and not in a "
                f"rescue file either: {exc.strerror or exc}). It is printed below."
            )
        log.warning("draft not saved in the database (%s); kept in %s", problem, path)
        self.unsaved = text
        return (
            f"chat-tui: your draft could not be saved in the database ({problem}). "
            f"It was kept in {path} and comes back as the draft on the next start."
        )

    async def _keep_early_typing(self, store: Store | None) -> None:
        """Closed before start-up had shown a draft: what was typed meanwhile becomes
        the draft of the conversation the app opens next time (nothing typed is lost)."""
        text = self.text
        if self.loaded or not text.strip():
            return
        try:
            async with contextlib.AsyncExitStack() as stack:
                if store is None:
                    from ..store import opened

                    store = await stack.enter_async_context(opened(self._app.settings.db_path))
                recent = await store.list_conversations(limit=1)
                conversation_id = recent[0].id if recent else None
                earlier = await store.load_draft(conversation_id)
                await store.save_draft(conversation_id, earlier + text)
        except StoreError as exc:
            log.warning("text typed during start-up not saved: %s", exc)
