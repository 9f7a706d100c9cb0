"""The chat screen: the conversation list, the chat, the composer, the status line.

It opens conversations and sends what is typed. The App (``tui/app.py``) owns
the core's life cycle and posts the core's events to this screen, so they
reach its widgets even while a dialog (queue, search, settings) is on top. The
rest lives in mixins, one room each: ``ChatEvents`` (the core's events and
other processes' writes shown), ``ConversationActions`` (the conversation, the
queue, search, copy, layout) and ``TurnActions`` (endpoints, fallback answers,
regenerate, edit, versions). Which actions may run, and the keys, come from the
table of commands (``tui/commands.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from textual import events, on, work
from textual.app import ComposeResult
from textual.content import Content
from textual.css.query import NoMatches
from textual.dom import DOMNode
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, OptionList, Static
from textual.worker import Worker, WorkerState

from ...sanitize import sanitize
from ...store import StoreError
from ..chat_events import ChatEvents
from ..commands import BY_ACTION, hinted, screen_bindings
from ..conversation_actions import ConversationActions
from ..turn_actions import TurnActions
from ..widgets.chat_view import PAGE_SIZE, ChatView
from ..widgets.composer import Composer
from ..widgets.sidebar import ConversationList
from ..widgets.status import OfflineBanner, StatusLine
from ..widgets.welcome import welcome_text

if TYPE_CHECKING:
    from ...config import Settings
    from ...core import Core
    from ...events import ReachabilityState
    from ...store import Conversation, Message
    from ..app import ChatApp

log = logging.getLogger(__name__)

DB_WAIT_NOTICE = 0.5  # Enter: say "waiting for the database…" if queueing takes longer


def report_worker_failure(node: DOMNode, event: Worker.StateChanged) -> None:
    """Every worker runs with exit_on_error=False; its failure is told here, once,
    in plain words (the details go to the log), never as a traceback."""
    if event.state != WorkerState.ERROR:
        return
    error = event.worker.error
    log.error("%s failed", event.worker.name, exc_info=error)
    reason = str(error) if isinstance(error, StoreError) else type(error).__name__
    node.notify(f"That did not work: {reason}", severity="error", markup=False, timeout=8)


class ChatScreen(ChatEvents, ConversationActions, TurnActions, Screen[None]):
    """The app's default screen: one conversation at a time, and every key."""

    BINDINGS = screen_bindings()

    # The one on screen. (Not bindings=True: recomposing the footer on every open cost
    # 100 ms of CPU, and no command shown in the footer needs a conversation.)
    current: var[Conversation | None] = var(None)
    # The on-screen conversation's endpoint, and the queue: bound to the status
    # line and the offline banner (compose).
    reach: var[ReachabilityState | None] = var(None)
    queued: var[int] = var(0)  # every message not yet delivered, in all conversations
    sending: var[int] = var(0)  # of those, being answered right now: not a reason for alarm
    waiting: var[int] = var(0)  # the rest: queued and not being answered

    def __init__(self) -> None:
        super().__init__()
        self.conversations: list[Conversation] = []
        self.reaches: dict[str, ReachabilityState] = {}  # every endpoint's, by name
        self._local_blocks: dict[int, Any] = {}  # fallback answers streaming, by question id
        self._new_endpoint: str | None = None  # where the next new conversation starts
        self._refresh_timer: Timer | None = None
        self._sidebar_wanted: bool | None = None  # None: follow the terminal's width
        self._last_external_check = time.time()
        self._data_version: int | None = None  # the database's, as last seen
        self._external_poll: Timer | None = None
        # Keys run their actions in the App's task, this screen's handlers in its own
        # (one task did both before the chat screen was its own): the core's events
        # wait while a conversation is being (re)loaded, so they land in the view it
        # builds, and no conversation opens while a message is being queued.
        self._view_lock = asyncio.Lock()

    # -- what the screen works with ----------------------------------------------------------

    @property
    def chat_app(self) -> ChatApp:
        return cast("ChatApp", self.app)

    @property
    def core(self) -> Core | None:
        return self.chat_app.core

    @property
    def settings(self) -> Settings:
        return self.chat_app.settings

    @property
    def chat(self) -> ChatView:
        return self.query_one("#chat", ChatView)  # by id: a cached lookup

    @property
    def composer(self) -> Composer:
        return self.query_one("#composer", Composer)

    @property
    def current_id(self) -> int | None:
        return self.current.id if self.current else None

    def _widgets_alive(self) -> bool:
        """False while the app shuts down: the widgets go before on_unmount runs,
        and a timer or a late message may still fire in between. (This screen's
        own widgets, whatever screen is on top.)"""
        # A cached id lookup: this runs on every core event, and a full
        # query over hundreds of widgets made the UI crawl while flushing.
        return self.app.is_running and self.query_one_optional("#status-line") is not None

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        settings = self.settings
        # No containers (each one more widget to mount and lay out before the first
        # frame): the sidebar docks left, the status line and the footer dock below
        # it, and the rest stacks in what is left (app.tcss).
        yield ConversationList(id="sidebar")
        yield Static(Content("new conversation"), id="header", markup=False)
        yield OfflineBanner().data_bind(reach=ChatScreen.reach, queued=ChatScreen.queued)
        yield ChatView(id="chat")
        yield Composer(id="composer")
        yield StatusLine(
            settings.base_url,
            settings.model,
            tls_off=not settings.verify_tls,
            id="status-line",  # a cheap liveness probe in _widgets_alive
        ).data_bind(reach=ChatScreen.reach, queued=ChatScreen.waiting, sending=ChatScreen.sending)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.composer.focus()
        self.place_sidebar()

    # -- conversations -----------------------------------------------------------------------

    async def open_conversation(
        self, conversation_id: int | None, *, at_seq: int | None = None
    ) -> None:
        async with self._view_lock:
            await self._open_conversation(conversation_id, at_seq)

    async def _open_conversation(self, conversation_id: int | None, at_seq: int | None) -> None:
        core = self.core
        if core is None:  # also reached from start-up and from other screens' choices
            return
        store = core.store
        drafts = self.chat_app.drafts
        await drafts.save_now()
        conversation = await store.get_conversation(conversation_id) if conversation_id else None
        self.current = conversation
        if conversation is None:
            welcome = None if self.conversations else welcome_text(self.settings)
            await self.chat.show_conversation(None, [], has_older=False, welcome=welcome)
        else:
            if at_seq is None:
                page = await store.page(conversation.id, limit=PAGE_SIZE)
            else:
                page = await store.page_around(conversation.id, at_seq, limit=PAGE_SIZE)
            await self.chat.show_conversation(
                conversation.id, page.messages, has_older=page.has_older
            )
            await self.chat.show_context_start(conversation.context_from_seq)
        self._show_endpoint()  # the status line: this conversation's endpoint and model
        composer = self.composer
        draft = await drafts.load(store, self.current_id, typed=lambda: composer.text)
        with composer.prevent(Composer.Changed):
            composer.text = draft
        composer.in_flight = 0
        composer.move_cursor(composer.document.end)
        self.query_one(ConversationList).show(self.conversations, self.current_id)
        self.app.sub_title = conversation.title if conversation else "new conversation"
        self._update_header()

    async def endpoint_changed(self) -> None:
        """The settings changed the endpoint or the model (the core was reopened)."""
        status = self.query_one(StatusLine)
        status.endpoint = self.settings.base_url
        status.set_model(self._model_for(self.current))
        self._update_header()
        self.chat.set_welcome(None if self.conversations else welcome_text(self.settings))
        await self.refresh_queue_and_sidebar()

    def _update_header(self) -> None:
        """The header line: the conversation's title and its model."""
        title = sanitize(self.current.title) if self.current else "New conversation"
        self.query_one("#header", Static).update(
            Content.assemble(
                (title or "(untitled)", "bold"),
                ("  ·  " + sanitize(self._model_for(self.current)), "$text-muted"),
            )
        )

    def _model_for(self, conversation: Conversation | None) -> str:
        return (conversation.model if conversation and conversation.model else None) or (
            self.settings.model
        )

    @on(OptionList.OptionSelected, "#sidebar")
    async def _conversation_chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None and int(event.option.id) != self.current_id:
            await self.open_conversation(int(event.option.id))
        self.composer.focus()
        self._close_overlay_sidebar()

    @on(ChatView.NeedOlder)
    async def _load_older(self, event: ChatView.NeedOlder) -> None:
        async with self._view_lock:
            if self.core is None or event.chat_view.conversation_id is None:
                return
            page = await self.core.store.page(
                event.chat_view.conversation_id, before_seq=event.before_seq, limit=PAGE_SIZE
            )
            await event.chat_view.prepend_older(page.messages, has_older=page.has_older)

    # -- sending -----------------------------------------------------------------------------

    @on(Composer.Submitted)
    async def _submit(self, event: Composer.Submitted) -> None:
        text = event.text
        if not await self.chat_app.core_ready() or self.core is None:
            with contextlib.suppress(NoMatches):  # closing: the draft keeps the text
                self.composer.not_sent(text)
            return
        async with self._view_lock:  # no other conversation opens until it is queued
            await self._queue(self.core, text)

    async def _queue(self, core: Core, text: str) -> None:
        # Another program may hold the database: say so soon, not after busy_timeout.
        # (Not a Textual timer: this handler holds the screen's message queue meanwhile.)
        queueing = asyncio.ensure_future(
            core.sender.submit(
                self.current_id, text, endpoint=None if self.current else self._new_endpoint
            )
        )
        try:
            done, _ = await asyncio.wait([queueing], timeout=DB_WAIT_NOTICE)
            if not done:
                self._show_db_wait()
            result = await queueing
        except StoreError as exc:
            # The text stays in the composer: nothing typed is lost.
            self.composer.not_sent(text)
            self.notify(str(exc), title="Not queued", severity="error", markup=False, timeout=10)
            return
        finally:
            if self._widgets_alive():
                self.composer.border_subtitle = ""
        # Remove exactly what was queued; what was typed after Enter stays.
        self.composer.sent(text)
        message = result.message
        if self.current is None or self.current.id != message.conversation_id:
            # The first message made the conversation: the draft is now its draft.
            self.current = await core.store.get_conversation(message.conversation_id)
            self.chat_app.drafts.conversation_id = message.conversation_id
            self.chat.conversation_id = message.conversation_id
            self.app.sub_title = self.current.title if self.current else ""
            self._update_header()
            await self.chat.upsert(message)
        if result.duplicate:
            self.notify(
                "The same message is already queued in this conversation; it was not queued twice.",
                title="Already queued",
                markup=False,
            )
        elif self._primary_offline():
            self._answer_offline(message)
        self.schedule_refresh()

    def _show_db_wait(self) -> None:
        if self._widgets_alive():
            self.composer.border_subtitle = "waiting for the database… (your text stays here)"

    @work(group="offline-answers", exit_on_error=False)
    async def _answer_offline(self, question: Message) -> None:
        """Show a labelled answer at once (from history, else from the fallback
        endpoint); the question stays queued."""
        if self.core is not None:
            await self.core.answer_while_offline(question)

    @on(Composer.Changed)
    def _draft_changed(self) -> None:
        self.chat_app.drafts.typed(self.composer.text)

    # -- what the keys may do ----------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_reply":
            # Only while a reply streams in the open conversation: otherwise Esc is
            # not taken from anyone, and the footer does not offer it.
            try:
                return self.chat.streaming_question() is not None or bool(self._local_blocks)
            except NoMatches:
                return False
        command = BY_ACTION.get(action)
        if command is None or command.app:
            return True
        if command.can_run(core=self.core is not None, conversation=self.current is not None):
            return True
        return None  # greyed out: its key does nothing (on_key says why, where it can)

    def on_key(self, event: events.Key) -> None:
        for command in hinted(event.key):
            if not self.check_action(command.action, ()):
                event.stop()
                event.prevent_default()
                self.notify(command.hint, markup=False)
                return
        # Printable keys typed while the list or the chat has focus go to the composer;
        # so do those typed before anything had focus (in the moment the screen was
        # being composed, the app forwarded them to the screen itself).
        focused = self.focused
        if (
            event.is_printable
            and event.character
            and (
                focused is None
                or (
                    isinstance(focused, ConversationList | ChatView)
                    # the widget's own keys (y, c, j, k in the chat) stay its own
                    and event.key not in focused._bindings.key_to_bindings
                )
            )
        ):
            event.stop()
            event.prevent_default()
            self.composer.focus()
            self.composer.insert(event.character)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        report_worker_failure(self, event)
