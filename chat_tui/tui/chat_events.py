"""What the core and other processes report, shown on the chat screen (a mixin
of ChatScreen).

The App's ``CoreRelay`` posts the core's events and reachability updates to
the chat screen, and the App's poll posts ``ExternalChange`` when another process
(sync, a second TUI, ``chat-tui send``) wrote to the database. These handlers
turn them into widgets: the streaming reply, message states, the banner, the
status line's counters (bound to the screen's reactives), the sidebar, and a
bell or OSC 9 notice when a reply lands unseen. They run whatever screen is on
top, so a dialog hides nothing that happened meanwhile.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual.css.query import NoMatches

from ..store import StoreError
from .messages import CoreEvent, ExternalChange, ReachabilityChanged
from .widgets.sidebar import ConversationList
from .widgets.status import OfflineBanner

if TYPE_CHECKING:
    from ..events import SenderEvent
    from ..store import Message
    from .screens.chat import ChatScreen

REFRESH_DELAY = 0.15  # bursts of changes make one sidebar/counter refresh
EXTERNAL_POLL = 0.5  # how often to look for other processes' writes


class ChatEvents:
    """Mixed into ChatScreen: relies on its core, current conversation and widgets."""

    async def on_core_event(self: ChatScreen, message: CoreEvent) -> None:
        async with self._view_lock:
            await self._show_event(message.event)

    async def _show_event(self: ChatScreen, event: SenderEvent) -> None:
        # Loaded with the core, long before its first event (not on the first frame's path).
        from ..events import (
            DeliveryProblem,
            LocalAnswerDelta,
            LocalAnswerEnded,
            LocalAnswerStarted,
            MessageChanged,
            ReplyAborted,
            ReplyDelta,
            ReplyReasoning,
            ReplyStarted,
            ReplyStored,
        )

        if not self._widgets_alive():
            return
        chat = self.chat
        if isinstance(event, ReplyDelta):
            await chat.stream_delta(event.question, event.text)
        elif isinstance(event, ReplyReasoning):
            await chat.stream_reasoning(event.question, event.text)
        elif isinstance(event, MessageChanged):
            await chat.upsert(event.message)
            self.schedule_refresh()
        elif isinstance(event, ReplyStarted):
            await chat.stream_started(event.question)
            self.refresh_bindings()  # Esc (stop) shows in the footer only while a reply streams
            self.schedule_refresh()
        elif isinstance(event, ReplyStored):
            await chat.stream_ended(event.question, event.reply)
            self.refresh_bindings()
            await self._show_context_start(event.question.conversation_id)
            self.schedule_refresh()
            self._tell_reply_landed(event.reply)
        elif isinstance(event, ReplyAborted):
            await chat.stream_ended(event.question, None)
            self.refresh_bindings()
        elif isinstance(event, DeliveryProblem):
            self.query_one(OfflineBanner).show_problem(event.text)
        elif isinstance(event, LocalAnswerStarted | LocalAnswerDelta | LocalAnswerEnded):
            await self._local_answer_event(event)

    async def _show_context_start(self: ChatScreen, conversation_id: int) -> None:
        """Move the "not sent to the model" marker to where the last request began."""
        if self.core is None or conversation_id != self.current_id:
            return
        try:
            conversation = await self.core.store.get_conversation(conversation_id)
        except StoreError:
            return
        if conversation is not None and self._widgets_alive():
            self.current = conversation
            await self.chat.show_context_start(conversation.context_from_seq)

    def _tell_reply_landed(self: ChatScreen, reply: Message) -> None:
        """A reply arrived where the user cannot see it (the terminal is not focused,
        another conversation is open, or they scrolled up): ring, or notify (OSC 9)."""
        mode = self.settings.notify
        if mode == "off" or not self._widgets_alive():
            return
        try:
            following = self.chat.following
        except NoMatches:  # the widgets went between the event and now (shutting down)
            return
        app = self.chat_app
        seen = app.window_focused and reply.conversation_id == self.current_id and following
        if seen:
            return
        if mode == "bell":
            app.bell()
        elif mode == "osc" and app._driver is not None:
            app._driver.write("\x1b]9;chat-tui: a reply arrived\x07")

    def on_reachability_changed(self: ChatScreen, message: ReachabilityChanged) -> None:
        if not self._reach_for_endpoint(message.state):
            return  # another endpoint's: shown when its conversation is
        self.reach = message.state
        if self._widgets_alive() and message.state.state not in ("online", "unknown"):
            self.run_worker(self.chat.drop_empty_streams(), group="streams", exit_on_error=False)

    def schedule_refresh(self: ChatScreen) -> None:
        """Coalesce bursts of changes into one sidebar/counter refresh."""
        if self._refresh_timer is None:
            self._refresh_timer = self.set_timer(REFRESH_DELAY, self.refresh_queue_and_sidebar)

    async def refresh_queue_and_sidebar(self: ChatScreen) -> None:
        self._refresh_timer = None
        core = self.core
        if core is None:
            return
        try:
            queued = await core.store.pending_count()
            self.conversations = await core.store.list_conversations()
        except StoreError:
            return  # closing, or a passing lock: the next change refreshes again
        if not self._widgets_alive():
            return
        # A message being answered is not waiting: only the rest counts as queued.
        self.sending = min(core.sender.sending, queued)
        self.waiting = queued - self.sending
        self.queued = queued
        self.query_one(ConversationList).show(self.conversations, self.current_id)
        await self._refresh_queue_screen()

    async def _refresh_queue_screen(self: ChatScreen) -> None:
        from .screens.queue import QueueScreen

        screen = self.app.screen
        if isinstance(screen, QueueScreen) and self.core is not None:
            screen.show_items(await self.core.store.queue_items())

    async def follow_other_processes(self: ChatScreen) -> None:
        """From now on (the core is open), show within a second what other
        processes wrote; the database file deleted or replaced stops the app."""
        self._data_version = await self.core.store.data_version()
        self._external_poll = self.set_interval(EXTERNAL_POLL, self._check_external_changes)

    async def _check_external_changes(self: ChatScreen) -> None:
        core = self.core
        if core is None:
            return
        replaced = core.store.file_replaced()
        if replaced is not None:
            self._external_poll.stop()  # once: the app stops (in its own task)
            self.app.call_next(self.chat_app.database_replaced, replaced)
            return
        try:
            version = await core.store.data_version()
        except StoreError:
            return
        if version != self._data_version:
            self._data_version = version
            self.post_message(ExternalChange())

    async def on_external_change(self: ChatScreen, message: ExternalChange) -> None:
        """Show what other processes (sync, another TUI, `send`) wrote."""
        if self.core is None:
            return
        since = self._last_external_check - 2.0  # clocks of one machine; a margin for slow commits
        self._last_external_check = time.time()
        try:
            changed = await self.core.store.messages_changed_since(since)
        except StoreError:
            return
        async with self._view_lock:
            for message in changed:
                if not self._widgets_alive():
                    return
                await self.chat.upsert(message)
        self.core.sender.wake()
        await self.refresh_queue_and_sidebar()
