"""The chat window.

The delivery engine (store, endpoint, reachability, outbox) starts in
``on_mount`` and is awaited closed in ``on_unmount``. It reports through a
listener that only posts messages; handlers here are the only code that
changes widgets. SIGHUP and SIGTERM (SSH dropped, terminal closed) end the
app through the same clean path: draft saved, leases released, database closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Footer, OptionList, Static
from textual.worker import Worker, WorkerState

from ..config import Settings
from ..events import (
    DeliveryProblem,
    LocalAnswerDelta,
    LocalAnswerEnded,
    LocalAnswerStarted,
    MessageChanged,
    OutboxEvent,
    ReachabilityState,
    ReplyAborted,
    ReplyDelta,
    ReplyReasoning,
    ReplyStarted,
    ReplyStored,
)
from ..store import Conversation, Message, Store, StoreError, opened

if TYPE_CHECKING:
    from ..engine import Engine
from ..sanitize import sanitize
from .messages import EngineEvent, ExternalChange, ReachabilityChanged
from .screens.dialogs import Confirm, EditMessage, StopWaiting, TextPrompt
from .screens.queue import QueueScreen
from .screens.search import SearchChoice, SearchScreen
from .turn_actions import TurnActions
from .widgets.chat_view import PAGE_SIZE, ChatView, MessageView
from .widgets.composer import Composer
from .widgets.sidebar import ConversationList
from .widgets.status import OfflineBanner, StatusLine
from .widgets.welcome import welcome_text

log = logging.getLogger(__name__)

DRAFT_SAVE_DELAY = 0.4  # seconds of quiet typing before the draft is written
DB_WAIT_NOTICE = 0.5  # Enter: say "waiting for the database…" if queueing takes longer
EXTERNAL_POLL = 0.5  # how often to look for other processes' writes
DELTA_BATCH = 0.03  # seconds of streamed chunks gathered into one UI message


class ChatApp(TurnActions, App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "chat-tui"
    COMMAND_PALETTE_BINDING = "ctrl+p"
    NARROW = 100  # below this many columns the sidebar is hidden and overlays when shown
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+n", "new_conversation", "New"),
        Binding("ctrl+o", "queue", "Queue", tooltip="The queue: retry, edit, cancel"),
        Binding("ctrl+f", "search", "Search", tooltip="Search every conversation"),
        Binding("f3", "settings", "Settings", tooltip="Endpoint, model, theme…"),
        Binding("f1", "help", "Keys", tooltip="This list of keys"),
        Binding(
            "ctrl+r",
            "retry_now",
            "Retry now",
            show=False,
            tooltip="Check the endpoint and send queued messages now",
        ),
        Binding(
            "f4",
            "export",
            "Export",
            show=False,
            tooltip="Export the conversation (Markdown or JSON)",
        ),
        Binding("f2", "rename", "Rename", show=False, tooltip="Rename the conversation"),
        Binding("f8", "delete", "Delete", show=False, tooltip="Delete the conversation"),
        Binding(
            "ctrl+b",
            "toggle_sidebar",
            "Sidebar",
            show=False,
            tooltip="Show or hide the conversation list",
        ),
        Binding(
            "ctrl+p", "command_palette", "Palette", show=False, tooltip="Every action, by name"
        ),
        Binding(
            "ctrl+g", "regenerate", "Regenerate", show=False, tooltip="Ask again for the last reply"
        ),
        Binding(
            "f6", "edit_last", "Edit last", show=False, tooltip="Edit and resend the last message"
        ),
        Binding("alt+left", "version_prev", "Prev version", show=False),
        Binding("alt+right", "version_next", "Next version", show=False),
        Binding("ctrl+l", "keep_local", "Keep local answer", show=False),
        Binding("escape", "stop_reply", "Stop"),  # shown only while a reply streams
    ]

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.engine: Engine | None = engine
        self.current: Conversation | None = None
        self.conversations: list[Conversation] = []
        self._draft_timer: Timer | None = None
        self._refresh_timer: Timer | None = None
        self._data_version: int | None = None
        self._last_external_check = time.time()
        self.reach: ReachabilityState | None = None  # the on-screen conversation's endpoint
        self.reaches: dict[str, ReachabilityState] = {}  # every endpoint's, by name
        self._local_blocks: dict[int, Any] = {}  # fallback answers streaming, by question id
        self._new_endpoint: str | None = None  # where the next new conversation starts
        self.queued = 0
        self.exit_note: str | None = None
        self._draft_text = ""  # what the composer holds; widgets are gone by on_unmount
        self._draft_loaded = False  # nothing to save until a conversation's draft is shown
        self._engine_started = asyncio.Event()  # set once start-up has finished (or failed)
        self._exiting = False  # exit() was called: start-up stops, on_unmount takes over
        self._starting: asyncio.Task[None] | None = None
        self._theme_ready = False
        self._pending_deltas: dict[int, tuple[Message, list[str]]] = {}
        self._delta_flush: asyncio.TimerHandle | None = None
        self._sidebar_wanted: bool | None = None  # None: follow the terminal's width
        self._window_focused = True  # the terminal tells us when it changes (AppBlur/AppFocus)
        self._console_theme_pushed = False
        self._by_signal = False  # closed by SIGHUP/SIGTERM: no terminal to print to
        self._replaced: str | None = None  # the database file was deleted or replaced
        self.unsaved_draft: str | None = None  # printed after exit if it is nowhere else

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield ConversationList(id="sidebar")
            with Vertical(id="main"):
                yield Static(Content("new conversation"), id="header", markup=False)
                yield OfflineBanner()
                yield ChatView(id="chat")
                yield Composer(id="composer")
        yield StatusLine(
            self.settings.base_url,
            self.settings.model,
            tls_off=not self.settings.verify_tls,
            id="status-line",  # a cheap liveness probe in _widgets_alive
        )
        yield Footer(compact=True)

    @property
    def chat(self) -> ChatView:
        return self.query_one(ChatView)

    @property
    def composer(self) -> Composer:
        return self.query_one(Composer)

    # -- life cycle ----------------------------------------------------------------------------

    async def on_mount(self) -> None:
        if self.settings.theme and self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self._apply_look()
        self._theme_ready = True  # from now on a theme change is the user's: save it
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            loop.add_signal_handler(sig, self._exit_on_signal, sig)
        self.composer.focus()
        if not self.settings.verify_tls:
            self.notify(
                "TLS certificate verification is OFF (verify_tls = false): the "
                "connection and the API key are not protected.",
                title="Insecure",
                severity="warning",
                timeout=15,
                markup=False,
            )
        # Paint first, then load: the engine pulls in httpx and the database,
        # which the first frame does not need.
        self.call_after_refresh(self._begin_start)

    def _apply_look(self) -> None:
        """Markdown and code follow the app's theme (light code styles in light themes)."""
        from .rendering import console_theme, look

        look.dark = self.current_theme.dark
        if self._console_theme_pushed:
            self.console.pop_theme()
        self.console.push_theme(console_theme(self.current_theme))
        self._console_theme_pushed = True

    def watch_theme(self, theme: str) -> None:
        if not self._theme_ready:
            return
        self._apply_look()
        with contextlib.suppress(NoMatches):
            self.chat.restyle()
        self._save_setting("theme", theme)

    @work(group="save-settings", thread=True, exit_on_error=False)
    def _save_setting(self, key: str, value: object) -> None:
        """Write one setting to config.toml (comments and layout kept)."""
        from ..config import ConfigError
        from ..config_file import save_settings

        try:
            save_settings(self.settings.config_path, {key: value})
        except ConfigError as exc:
            self.call_from_thread(
                self.notify, f"Not saved: {exc}", severity="warning", markup=False
            )
            return
        self.settings = self.settings.replace(**{key: value})

    def _tell_missing_config(self) -> None:
        """Once, after start-up (not in the way of the first frame or the draft)."""
        from ..config import missing_config_notice

        notice = missing_config_notice()
        if notice and not self._exiting:
            self.notify(notice, title="Config file", severity="warning", timeout=6, markup=False)

    def _begin_start(self) -> None:
        # Its own task, so key presses and bindings keep flowing while it runs;
        # whatever needs the engine waits on `_engine_started` instead of being dropped.
        self._starting = asyncio.create_task(self._start_engine(), name="start-engine")

    async def _start_engine(self) -> None:
        try:
            await self._open_engine()
            self._tell_missing_config()
        except Exception as exc:  # never a traceback on the user's screen
            if self._exiting:  # closed while starting: not a failure
                log.info("start-up interrupted by exit: %s", type(exc).__name__)
            else:
                log.exception("start-up failed")
                self.exit(return_code=1, message=f"chat-tui: could not start: {exc}")
        finally:
            self._engine_started.set()

    async def _engine_ready(self) -> bool:
        """Wait until start-up is done; False if the engine could not open."""
        await self._engine_started.wait()
        return self.engine is not None

    async def _open_engine(self) -> None:
        if self.engine is None:
            from ..engine import Engine

            try:
                engine = await Engine.open(
                    self.settings,
                    listener=self._engine_listener,
                    on_reachability=self._reachability_listener,
                )
            except StoreError as exc:
                self.exit(return_code=1, message=f"chat-tui: {exc}")
                return
            self.engine = engine
            if self._exiting:  # closed while it was opening: on_unmount saves and closes
                return
        self.engine.start_watching()
        self.engine.start_delivery()
        try:
            await self._restore_rescued()
            self.conversations = await self.engine.store.list_conversations()
            await self.open_conversation(self.conversations[0].id if self.conversations else None)
            self._data_version = await self.engine.store.data_version()
        except StoreError as exc:  # e.g. damaged pages: it opened, but can't be read
            self.exit(return_code=1, message=f"chat-tui: {exc}")
            return
        self.set_interval(EXTERNAL_POLL, self._check_external_changes)
        await self._refresh_queue_and_sidebar()

    async def on_unmount(self) -> None:
        if self._starting is not None and not self._starting.done():
            await asyncio.gather(self._starting, return_exceptions=True)
        engine = self.engine
        if engine is None:
            await self._keep_early_typing(None)
            return
        if self._draft_loaded:
            await self._save_draft_at_exit(engine)
        else:
            await self._keep_early_typing(engine.store)
        self.engine = None  # timers and late messages see the engine gone, not half-closed
        waiting = 0
        if self._replaced is None:
            with contextlib.suppress(StoreError):
                waiting = await engine.store.waiting_count()
        await engine.close()
        if waiting and self.settings.handoff_on_exit:
            self._hand_off(waiting)

    def _add_exit_note(self, note: str) -> None:
        self.exit_note = f"{self.exit_note}\n{note}" if self.exit_note else note

    async def _save_draft_at_exit(self, engine: Engine) -> None:
        """Save the draft; if the database cannot take it (a full disk, the file
        gone), put it in a rescue file outside the data dir and say where. The exit
        message never claims more than what happened."""
        if self._draft_timer is not None:
            self._draft_timer.stop()
            self._draft_timer = None
        text = self._draft_text
        problem = engine.store.file_replaced()
        if problem is None:
            try:
                await engine.store.save_draft(self._current_id, text)
                return
            except StoreError as exc:
                problem = str(exc)
        if not text.strip():
            return
        from .. import rescue

        conversation = None if self._replaced else self._current_id
        try:
            path = rescue.save(self.settings.db_path, conversation, text)
        except OSError as exc:
            self.unsaved_draft = text
            self._add_exit_note(
                f"chat-tui: your draft could not be saved ({problem}; and not in a "
                f"rescue file either: {exc.strerror or exc}). It is printed below."
            )
            return
        log.warning("draft not saved in the database (%s); kept in %s", problem, path)
        self.unsaved_draft = text
        self._add_exit_note(
            f"chat-tui: your draft could not be saved in the database ({problem}). "
            f"It was kept in {path} and comes back as the draft on the next start."
        )

    async def _restore_rescued(self) -> None:
        """Text kept in rescue files by an earlier run goes back into its draft."""
        from .. import rescue

        if self.engine is None:
            return
        store = self.engine.store
        restored = 0
        for item in rescue.pending(self.settings.db_path):
            conversation = item.conversation_id
            if conversation is not None and await store.get_conversation(conversation) is None:
                conversation = None
            earlier = await store.load_draft(conversation)
            joined = f"{earlier}\n{item.text}" if earlier.strip() else item.text
            await store.save_draft(conversation, joined)  # StoreError: the file stays
            with contextlib.suppress(OSError):
                item.path.unlink()
            restored += 1
        if restored:
            self.notify(
                f"Restored {restored} draft(s) that could not be saved in the database last time.",
                title="Draft restored",
                markup=False,
                timeout=8,
            )

    async def _keep_early_typing(self, store: Store | None) -> None:
        """Closed before start-up had shown a draft: what was typed meanwhile becomes
        the draft of the conversation the app opens next time (nothing typed is lost)."""
        text = self._draft_text
        if self._draft_loaded or not text.strip():
            return
        try:
            async with contextlib.AsyncExitStack() as stack:
                if store is None:
                    store = await stack.enter_async_context(opened(self.settings.db_path))
                recent = await store.list_conversations(limit=1)
                conversation_id = recent[0].id if recent else None
                earlier = await store.load_draft(conversation_id)
                await store.save_draft(conversation_id, earlier + text)
        except StoreError as exc:
            log.warning("text typed during start-up not saved: %s", exc)

    def _hand_off(self, waiting: int) -> None:
        """Queued messages keep going out after the window closes (docs/architecture.md)."""
        from ..handoff import spawn

        try:
            pid = spawn(self.settings)
        except OSError as exc:
            self.exit_note = (
                f"chat-tui: {waiting} message(s) stay queued (no background sync: {exc})"
            )
            return
        if pid is None:
            self.exit_note = (
                f"chat-tui: {waiting} queued message(s) left to the background sync "
                "that is already running."
            )
        else:
            self.exit_note = (
                f"chat-tui: {waiting} queued message(s) handed to a background sync "
                f"(pid {pid}); they go out when the endpoint answers. "
                "`chat-tui status` shows progress."
            )

    def _exit_on_signal(self, sig: int) -> None:
        self._by_signal = True
        self.exit(return_code=0)

    def exit(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        # Every way out (quit key, SIGHUP, SIGTERM) passes here while the
        # composer still exists: take the draft now, save it in on_unmount.
        with contextlib.suppress(NoMatches):  # not composed yet
            self._draft_text = self.composer.text
        self._exiting = True
        super().exit(*args, **kwargs)  # type: ignore[arg-type]

    def _engine_listener(self, event: OutboxEvent) -> None:
        # Chunks of a streaming reply come hundreds a second; they are gathered for
        # DELTA_BATCH seconds and posted as one, so the message queue is not the cost.
        if isinstance(event, ReplyDelta):
            batch = self._pending_deltas.get(event.question.id)
            if batch is None:
                self._pending_deltas[event.question.id] = (event.question, [event.text])
            else:
                batch[1].append(event.text)
            if self._delta_flush is None:
                loop = asyncio.get_running_loop()
                self._delta_flush = loop.call_later(DELTA_BATCH, self._flush_deltas)
            return
        self._flush_deltas()  # whatever streamed before this event is shown before it
        self.post_message(EngineEvent(event))

    def _flush_deltas(self) -> None:
        if self._delta_flush is not None:
            self._delta_flush.cancel()
            self._delta_flush = None
        pending, self._pending_deltas = self._pending_deltas, {}
        for question, texts in pending.values():
            self.post_message(EngineEvent(ReplyDelta(question, "".join(texts))))

    def _reachability_listener(self, state: ReachabilityState) -> None:
        self.post_message(ReachabilityChanged(state))

    # -- conversations -------------------------------------------------------------------------

    async def open_conversation(
        self, conversation_id: int | None, *, at_seq: int | None = None
    ) -> None:
        if self.engine is None:
            return
        store = self.engine.store
        await self._save_draft_now()
        conversation = await store.get_conversation(conversation_id) if conversation_id else None
        self.current = conversation
        if conversation is None:
            welcome = None if self.conversations else welcome_text(self.settings)
            await self.chat.show_conversation(None, [], has_older=False, welcome=welcome)
        else:
            if at_seq is None:
                page = await store.messages_page(conversation.id, limit=PAGE_SIZE)
            else:
                page = await store.messages_around(conversation.id, at_seq, limit=PAGE_SIZE)
            has_older = bool(page) and len(page) >= PAGE_SIZE // 2 and page[0].seq > 10
            await self.chat.show_conversation(conversation.id, page, has_older=has_older)
            await self.chat.show_context_start(conversation.context_from_seq)
        self._show_endpoint()  # the status line: this conversation's endpoint and model
        draft = await store.load_draft(conversation.id if conversation else None)
        if not self._draft_loaded and self.composer.text:
            # Typed in the moment before the database was open: keep every key,
            # after the restored draft.
            draft = draft + self.composer.text
        with self.composer.prevent(Composer.Changed):
            self.composer.text = draft
        self.composer.in_flight = 0
        self._draft_text = draft
        self._draft_loaded = True
        self.composer.move_cursor(self.composer.document.end)
        self.query_one(ConversationList).show(self.conversations, self._current_id)
        self.sub_title = conversation.title if conversation else "new conversation"
        self._update_header()

    def _update_header(self) -> None:
        """The header line: the conversation's title and its model."""
        title = sanitize(self.current.title) if self.current else "New conversation"
        self.query_one("#header", Static).update(
            Content.assemble(
                (title or "(untitled)", "bold"),
                ("  ·  " + sanitize(self._model_for(self.current)), "$text-muted"),
            )
        )

    @property
    def _current_id(self) -> int | None:
        return self.current.id if self.current else None

    def _model_for(self, conversation: Conversation | None) -> str:
        return (conversation.model if conversation and conversation.model else None) or (
            self.settings.model
        )

    @on(OptionList.OptionSelected, "#sidebar")
    async def _conversation_chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None and int(event.option.id) != self._current_id:
            await self.open_conversation(int(event.option.id))
        self.composer.focus()

    @on(ChatView.NeedOlder)
    async def _load_older(self, event: ChatView.NeedOlder) -> None:
        if self.engine is None:
            return
        if event.chat_view.conversation_id is None:
            return
        page = await self.engine.store.messages_page(
            event.chat_view.conversation_id, before_seq=event.before_seq, limit=PAGE_SIZE
        )
        await event.chat_view.prepend_older(page, has_older=len(page) == PAGE_SIZE)

    # -- sending -------------------------------------------------------------------------------

    @on(Composer.Submitted)
    async def _submit(self, event: Composer.Submitted) -> None:
        text = event.text
        if not await self._engine_ready() or self.engine is None:
            with contextlib.suppress(NoMatches):  # closing: the draft keeps the text
                self.composer.not_sent(text)
            return
        # Another program may hold the database: say so soon, not after busy_timeout.
        # (Not a Textual timer: this handler holds the app's message queue meanwhile.)
        queueing = asyncio.ensure_future(
            self.engine.outbox.submit(
                self._current_id, text, endpoint=None if self.current else self._new_endpoint
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
            self.current = await self.engine.store.get_conversation(message.conversation_id)
            self.chat.conversation_id = message.conversation_id
            self.sub_title = self.current.title if self.current else ""
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
        self._schedule_refresh()

    def _show_db_wait(self) -> None:
        if self._widgets_alive():
            self.composer.border_subtitle = "waiting for the database… (your text stays here)"

    @work(group="offline-answers", exit_on_error=False)
    async def _answer_offline(self, question: Message) -> None:
        """Show a labelled answer at once (from history, else from the fallback
        endpoint); the question stays queued."""
        if self.engine is not None:
            await self.engine.answer_while_offline(question)

    @on(Composer.Changed)
    def _draft_changed(self) -> None:
        self._draft_text = self.composer.text
        if self._draft_timer is not None:
            self._draft_timer.stop()
        self._draft_timer = self.set_timer(DRAFT_SAVE_DELAY, self._save_draft_now)

    async def _save_draft_now(self) -> None:
        if self._draft_timer is not None:
            self._draft_timer.stop()
            self._draft_timer = None
        if self.engine is None or not self._draft_loaded:
            return
        try:
            await self.engine.store.save_draft(self._current_id, self._draft_text)
        except StoreError as exc:
            self.notify(f"Draft not saved: {exc}", severity="warning", markup=False)

    # -- engine events -------------------------------------------------------------------------

    @on(EngineEvent)
    async def _engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if not self._widgets_alive():
            return
        chat = self.chat
        if isinstance(event, ReplyDelta):
            await chat.stream_delta(event.question, event.text)
        elif isinstance(event, ReplyReasoning):
            await chat.stream_reasoning(event.question, event.text)
        elif isinstance(event, MessageChanged):
            await chat.upsert(event.message)
            self._schedule_refresh()
        elif isinstance(event, ReplyStarted):
            await chat.stream_started(event.question)
            self.refresh_bindings()  # Esc (stop) shows in the footer only while a reply streams
            self._schedule_refresh()
        elif isinstance(event, ReplyStored):
            await chat.stream_ended(event.question, event.reply)
            self.refresh_bindings()
            await self._show_context_start(event.question.conversation_id)
            self._schedule_refresh()
            self._tell_reply_landed(event.reply)
        elif isinstance(event, ReplyAborted):
            await chat.stream_ended(event.question, None)
            self.refresh_bindings()
        elif isinstance(event, DeliveryProblem):
            self.query_one(OfflineBanner).show_problem(event.text)
        elif isinstance(event, LocalAnswerStarted | LocalAnswerDelta | LocalAnswerEnded):
            await self._local_answer_event(event)

    async def _show_context_start(self, conversation_id: int) -> None:
        """Move the "not sent to the model" marker to where the last request began."""
        if self.engine is None or conversation_id != self._current_id:
            return
        try:
            conversation = await self.engine.store.get_conversation(conversation_id)
        except StoreError:
            return
        if conversation is not None and self._widgets_alive():
            self.current = conversation
            await self.chat.show_context_start(conversation.context_from_seq)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_reply":
            # Only while a reply streams in the open conversation: otherwise Esc is
            # not taken from anyone, and the footer does not offer it.
            try:
                return self.chat.streaming_question() is not None or bool(self._local_blocks)
            except NoMatches:
                return False
        return True

    async def action_stop_reply(self) -> None:
        """Stop the reply being generated: what came is kept, labelled stopped. If
        nothing came yet, ask whether to requeue or cancel the message."""
        question = self.chat.streaming_question()
        if question is None and self._local_blocks and self.engine is not None:
            for question_id in list(self._local_blocks):  # a fallback answer: keep what came
                self.engine.stop_fallback(question_id)
            return
        if question is None or self.engine is None:
            return
        if self.chat.streaming_started(question.id):
            await self.engine.outbox.stop(question.id)
            return
        self._ask_stop_waiting(question)

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def _ask_stop_waiting(self, question: Message) -> None:
        choice = await self.push_screen_wait(StopWaiting())
        if choice is None or self.engine is None:
            return
        if not await self.engine.outbox.stop(question.id, choice):
            self.notify("That reply had already finished.", markup=False, timeout=3)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """Every worker runs with exit_on_error=False; its failure is told here, once,
        in plain words (the details go to the log), never as a traceback."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        log.error("%s failed", event.worker.name, exc_info=error)
        reason = str(error) if isinstance(error, StoreError) else type(error).__name__
        self.notify(f"That did not work: {reason}", severity="error", markup=False, timeout=8)

    @on(ReachabilityChanged)
    def _reachability_changed(self, message: ReachabilityChanged) -> None:
        if not self._reach_for_endpoint(message.state):
            return  # another endpoint's: shown when its conversation is
        self.reach = message.state
        if not self._widgets_alive():
            return
        self.query_one(StatusLine).reach = message.state
        self.query_one(OfflineBanner).show_state(message.state, self.queued)
        if message.state.state not in ("online", "unknown"):
            self.run_worker(self.chat.drop_empty_streams(), group="streams", exit_on_error=False)

    def _schedule_refresh(self) -> None:
        """Coalesce bursts of changes into one sidebar/counter refresh."""
        if self._refresh_timer is None:
            self._refresh_timer = self.set_timer(0.15, self._refresh_queue_and_sidebar)

    async def _refresh_queue_and_sidebar(self) -> None:
        self._refresh_timer = None
        if self.engine is None:
            return
        store = self.engine.store
        try:
            self.queued = await store.pending_count()
            self.conversations = await store.list_conversations()
        except StoreError:
            return  # closing, or a passing lock: the next change refreshes again
        if not self._widgets_alive():
            return
        status = self.query_one(StatusLine)
        # A message being answered is not waiting: only the rest counts as queued.
        sending = min(self.engine.outbox.sending, self.queued)
        status.sending = sending
        status.queued = self.queued - sending
        if self.reach is not None:
            self.query_one(OfflineBanner).show_state(self.reach, self.queued)
        self.query_one(ConversationList).show(self.conversations, self._current_id)
        await self._refresh_queue_screen()

    def _widgets_alive(self) -> bool:
        """False while the app shuts down: its widgets go before on_unmount runs,
        and a timer or a late message may still fire in between."""
        # A cached id lookup: this runs on every engine event, and a full
        # query over hundreds of widgets made the UI crawl while flushing.
        return (
            self.is_running
            and self.screen_stack
            and (self.query_one_optional("#status-line") is not None)
        )

    async def _check_external_changes(self) -> None:
        """Show what other processes (sync, another TUI, `send`) wrote, within a second."""
        if self.engine is None or self._replaced is not None:
            return
        replaced = self.engine.store.file_replaced()
        if replaced is not None:
            await self._database_replaced(replaced)
            return
        try:
            version = await self.engine.store.data_version()
        except StoreError:
            return
        if version == self._data_version:
            return
        self._data_version = version
        self.post_message(ExternalChange())

    async def _database_replaced(self, problem: str) -> None:
        """Writing on would go to a file nobody else sees: keep every unsent text and
        the draft in rescue files, and stop with a plain message."""
        self._replaced = problem
        log.error("%s; stopping", problem)
        saved = await self.engine.rescue_unsent() if self.engine is not None else []
        kept = f" {len(saved)} unsent message(s) were kept in {saved[0].parent}." if saved else ""
        self._add_exit_note(
            f"chat-tui: {problem}, so it stopped rather than write to a file nobody sees.{kept} "
            "Start chat-tui again to use the database now at that path; kept text comes back "
            "as a draft."
        )
        self.exit(return_code=1)

    @on(ExternalChange)
    async def _external_change(self) -> None:
        if self.engine is None:
            return
        since = self._last_external_check - 2.0  # clocks of one machine; a margin for slow commits
        self._last_external_check = time.time()
        try:
            changed = await self.engine.store.messages_changed_since(since)
        except StoreError:
            return
        for message in changed:
            if not self._widgets_alive():
                return
            await self.chat.upsert(message)
        self.engine.outbox.wake()
        await self._refresh_queue_and_sidebar()

    # -- notice when a reply lands ---------------------------------------------------------------

    def on_app_blur(self) -> None:
        self._window_focused = False

    def on_app_focus(self) -> None:
        self._window_focused = True

    def _tell_reply_landed(self, reply: Message) -> None:
        """A reply arrived where the user cannot see it (the terminal is not focused,
        another conversation is open, or they scrolled up): ring, or notify (OSC 9)."""
        mode = self.settings.notify
        if mode == "off" or not self._widgets_alive():
            return
        try:
            following = self.chat.following
        except NoMatches:  # the widgets went between the event and now (shutting down)
            return
        seen = self._window_focused and reply.conversation_id == self._current_id and following
        if seen:
            return
        if mode == "bell":
            self.bell()
        elif mode == "osc" and self._driver is not None:
            self._driver.write("\x1b]9;chat-tui: a reply arrived\x07")

    # -- copy ----------------------------------------------------------------------------------

    @on(ChatView.Copied)
    def _copied(self, event: ChatView.Copied) -> None:
        self._copy_text(event.text, event.what)

    def _copy_text(self, text: str, what: str) -> None:
        # OSC 52: reaches the local clipboard through SSH, and through tmux with
        # `set -g set-clipboard on`.
        self.copy_to_clipboard(text)
        self.notify(f"Copied {len(text)} characters ({what}).", markup=False, timeout=3)

    def action_copy_last_reply(self) -> None:
        replies = [v for v in self.chat.query(MessageView) if v.message.role == "assistant"]
        if not replies:
            self.notify("No reply to copy yet.", markup=False, timeout=3)
            return
        self._copy_text(replies[-1].message.content, "the last reply")

    def action_scroll_chat(self, where: str) -> None:
        chat = self.chat
        if where == "page_up":
            chat.release_anchor()
            chat.scroll_page_up(animate=False)
        elif where == "page_down":
            chat.scroll_page_down(animate=False)
        elif where == "home":
            chat.release_anchor()
            chat.scroll_home(animate=False)
        else:
            chat.scroll_end(animate=False)
            chat.anchor()

    def action_focus_chat(self) -> None:
        self.chat.focus()

    def action_focus_composer(self) -> None:
        self.composer.focus()

    # -- actions -------------------------------------------------------------------------------

    async def action_new_conversation(self) -> None:
        if not await self._engine_ready():
            return
        await self.open_conversation(None)
        self.composer.focus()

    def action_retry_now(self) -> None:
        if self.engine is None:
            return
        self.engine.links.probe_now()
        self.engine.outbox.wake()
        self.notify("Checking the endpoint now…", timeout=2)

    async def action_queue(self) -> None:
        if self.engine is None:
            return
        await self.push_screen(QueueScreen(await self.engine.store.queue_items()))

    async def _refresh_queue_screen(self) -> None:
        if isinstance(self.screen, QueueScreen) and self.engine is not None:
            self.screen.show_items(await self.engine.store.queue_items())

    @on(QueueScreen.Action)
    async def _queue_action(self, event: QueueScreen.Action) -> None:
        if self.engine is None:
            return
        message = event.item.message
        try:
            if event.action == "retry":
                await self.engine.outbox.retry(message.id)
                self.notify(f"Message #{message.id} is queued again.", markup=False, timeout=3)
            elif event.action == "cancel" and message.state == "sending":
                # A request the server never answers: stop it (the outbox's stop
                # path; without one, say why it cannot be cancelled yet).
                stop = getattr(self.engine.outbox, "stop", None)
                if stop is None or not await stop(message.id, "cancel"):
                    self.notify(
                        f"Message #{message.id} is being sent; it cannot be stopped now.",
                        markup=False,
                        timeout=4,
                    )
                    return
                self.notify(f"Message #{message.id} stopped.", markup=False, timeout=3)
            elif event.action == "cancel":
                await self.engine.outbox.cancel(message.id)
                self.notify(
                    f"Message #{message.id} cancelled (kept in history).", markup=False, timeout=3
                )
            elif event.action == "edit":
                self._edit_message(message)
                return
            elif event.action == "open":
                await self.open_conversation(message.conversation_id, at_seq=message.seq)
                return
        except StoreError as exc:
            self.notify(str(exc), severity="error", markup=False)
        await self._refresh_queue_screen()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def _edit_message(self, message: Message) -> None:
        text: str | None = message.content
        while True:
            text = await self.push_screen_wait(EditMessage(text))
            if text is None or self.engine is None:
                return
            try:
                await self.engine.outbox.retry(message.id, text=text)
                break
            except StoreError as exc:
                # The dialog comes back with the edit in it: nothing typed is lost.
                self.notify(str(exc), severity="error", markup=False)
        self.notify(f"Message #{message.id} edited and queued again.", markup=False, timeout=3)
        await self._refresh_queue_screen()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_search(self) -> None:
        if self.engine is None:
            return
        choice: SearchChoice | None = await self.push_screen_wait(SearchScreen(self.engine.store))
        if choice is None:
            return
        await self.open_conversation(choice.conversation_id, at_seq=choice.seq)
        view = self.chat.view_for(choice.message_id)
        if view is not None:
            view.add_class("found")
            self.chat.release_anchor()  # stay on the hit, not the newest message
            # The page was just mounted: its heights are known only after the next
            # layout, so scroll then (scrolling now would use stale geometry).
            self.chat.call_after_refresh(self.chat.scroll_to_widget, view, animate=False, top=True)

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_export(self) -> None:
        if self.current is None or self.engine is None:
            self.notify("Nothing to export yet.", markup=False)
            return
        from pathlib import Path

        from ..export import default_filename, render

        default = Path.home() / default_filename(self.current, "md")
        answer = await self.push_screen_wait(
            TextPrompt("Export to (.md for Markdown, .json for JSON)", str(default))
        )
        if not answer or self.engine is None:
            return
        path = Path(answer.strip()).expanduser()
        if path.exists():
            overwrite = await self.push_screen_wait(
                Confirm(f"{path} already exists. Replace it?", yes="Replace")
            )
            if not overwrite or self.engine is None:
                self.notify("Not exported: the file is left as it was.", markup=False)
                return
        fmt = "json" if path.suffix.lower() == ".json" else "md"
        messages = await self.engine.store.all_messages(self.current.id)
        try:
            path.write_text(render(self.current, messages, fmt), encoding="utf-8")
        except OSError as exc:
            self.notify(f"Could not write {path}: {exc.strerror}", severity="error", markup=False)
            return
        self.notify(f"Exported to {path}", markup=False)

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(ConversationList)
        self._sidebar_wanted = not sidebar.display
        self._place_sidebar()
        if sidebar.display and sidebar.has_class("-overlay"):
            sidebar.focus()
        elif not sidebar.display and self.focused is None:
            self.composer.focus()

    def on_resize(self) -> None:
        self._place_sidebar()

    def _place_sidebar(self) -> None:
        """Wide: the list sits beside the chat. Narrow: hidden unless asked for, and
        then it overlays the chat instead of squeezing it."""
        sidebar = self.query_one(ConversationList)
        narrow = self.size.width < self.NARROW
        wanted = self._sidebar_wanted if self._sidebar_wanted is not None else not narrow
        sidebar.set_class(narrow, "-overlay")
        sidebar.display = wanted
        if not wanted and self.focused is sidebar:
            self.composer.focus()

    @on(OptionList.OptionSelected, "#sidebar")
    def _close_overlay_sidebar(self) -> None:
        sidebar = self.query_one(ConversationList)
        if sidebar.has_class("-overlay"):
            self._sidebar_wanted = False
            self._place_sidebar()

    def on_key(self, event: events.Key) -> None:
        """Printable keys typed while the list or the chat has focus go to the composer."""
        focused = self.focused
        if (
            event.is_printable
            and event.character
            and isinstance(focused, ConversationList | ChatView)
            # the widget's own keys (y, c, j, k in the chat) stay its own
            and event.key not in focused._bindings.key_to_bindings
            and isinstance(self.screen, Screen)
            and not isinstance(self.screen, ModalScreen)
        ):
            event.stop()
            event.prevent_default()
            self.composer.focus()
            self.composer.insert(event.character)

    def action_help(self) -> None:
        from .screens.help import HelpScreen, binding_rows
        from .screens.queue import QueueScreen as Queue

        composer_keys = [
            Binding("enter", "", "Send the message"),
            Binding("ctrl+j", "", "New line"),
            Binding("tab", "", "Go to the messages (select one to copy it)"),
            Binding("pageup,pagedown", "", "Scroll the chat"),
            Binding("ctrl+home,ctrl+end", "", "First / newest message"),
        ]
        sections = [
            ("Everywhere", self.BINDINGS),
            ("Writing", composer_keys),
            ("Messages (after Tab)", ChatView.BINDINGS),
            ("Queue (Ctrl+O)", Queue.BINDINGS),
        ]
        self.push_screen(HelpScreen(binding_rows(self, sections)))

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_settings(self) -> None:
        from .screens.settings import SettingsScreen

        cached = self._cached_models()
        screen = SettingsScreen(self.settings, sorted(self.available_themes), self.theme, cached)
        self._fetch_models(screen)
        change = await self.push_screen_wait(screen)
        if change is None or not change.values:
            return
        await self._apply_settings(change.values)

    def _models_cache(self) -> Path:
        return self.settings.data_dir / "models.json"

    def _cached_models(self) -> list[str]:
        import json

        try:
            data = json.loads(self._models_cache().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        models = data.get(self.settings.base_url) if isinstance(data, dict) else None
        return [str(m) for m in models] if isinstance(models, list) else []

    @work(group="models", exclusive=True, exit_on_error=False)
    async def _fetch_models(self, screen: Screen) -> None:
        """Ask the endpoint for its models; show them and keep them for offline use."""
        import json

        from ..endpoint import DeliveryError

        if not await self._engine_ready() or self.engine is None:
            return
        try:
            models = await self.engine.endpoint.list_models()
        except DeliveryError as exc:
            log.info("model list not available: %s", exc)
            return
        if screen.is_attached:
            screen.show_models(models)  # type: ignore[attr-defined]
        path = self._models_cache()
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            if not isinstance(data, dict):
                data = {}
            data[self.settings.base_url] = models
            path.write_text(json.dumps(data, indent=1), encoding="utf-8")
        except (OSError, ValueError) as exc:
            log.info("model list not cached: %s", exc)

    async def _apply_settings(self, values: dict[str, object]) -> None:
        """Save to config.toml (comments kept), then use the new values now."""
        from ..config import ConfigError
        from ..config_file import save_settings

        try:
            await asyncio.to_thread(save_settings, self.settings.config_path, values)
        except ConfigError as exc:
            self.notify(f"Settings not saved: {exc}", severity="error", markup=False)
            return
        theme = values.pop("theme", None)
        self.settings = self.settings.replace(**values)
        if theme is not None:
            self._theme_ready = False  # already saved with the rest
            self.theme = str(theme)
            self._apply_look()
            self.chat.restyle()
            self._theme_ready = True
        if {"base_url", "model", "system_prompt"} & values.keys():
            await self._reopen_engine()
        self.notify("Settings saved.", markup=False, timeout=3)

    async def _reopen_engine(self) -> None:
        """A new endpoint or model: close the engine (leases released) and open it
        again with the new settings; queued messages go to the new endpoint."""
        from ..engine import Engine

        await self._save_draft_now()
        old, self.engine = self.engine, None
        if old is not None:
            await old.close()
        self.engine = await Engine.open(
            self.settings,
            listener=self._engine_listener,
            on_reachability=self._reachability_listener,
        )
        self.engine.start_watching()
        self.engine.start_delivery()
        status = self.query_one(StatusLine)
        status.endpoint = self.settings.base_url
        status.set_model(self._model_for(self.current))
        self._update_header()
        self.chat.set_welcome(None if self.conversations else welcome_text(self.settings))
        await self._refresh_queue_and_sidebar()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_rename(self) -> None:
        if self.current is None or self.engine is None:
            self.notify("Nothing to rename yet: send a first message.", markup=False)
            return
        title = await self.push_screen_wait(TextPrompt("Rename conversation", self.current.title))
        if title and title.strip():
            await self.engine.store.rename_conversation(self.current.id, title)
            self.current = await self.engine.store.get_conversation(self.current.id)
            self.sub_title = title.strip()
            self._update_header()
            await self._refresh_queue_and_sidebar()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_delete(self) -> None:
        if self.current is None or self.engine is None:
            return
        doomed = self.current
        ok = await self.push_screen_wait(
            Confirm(f"Delete “{doomed.title or 'untitled'}” and all its messages?", yes="Delete")
        )
        if not ok:
            return
        await self.engine.store.delete_conversation(doomed.id)
        self.conversations = await self.engine.store.list_conversations()
        self.current = None
        await self.open_conversation(self.conversations[0].id if self.conversations else None)
        self.notify("Conversation deleted.", markup=False)

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_set_model(self) -> None:
        if self.current is None or self.engine is None:
            self.notify("Send a first message, then set this conversation's model.", markup=False)
            return
        model = await self.push_screen_wait(
            TextPrompt(
                "Model for this conversation (empty: the default)",
                self.current.model or "",
                placeholder=self.settings.model,
            )
        )
        if model is None:
            return
        await self.engine.store.configure_conversation(
            self.current.id, model=model.strip() or None, system_prompt=self.current.system_prompt
        )
        self.current = await self.engine.store.get_conversation(self.current.id)
        self.query_one(StatusLine).set_model(self._model_for(self.current))
        self._update_header()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_set_system_prompt(self) -> None:
        if self.current is None or self.engine is None:
            self.notify(
                "Send a first message, then set this conversation's system prompt.", markup=False
            )
            return
        prompt = await self.push_screen_wait(
            TextPrompt(
                "System prompt for this conversation (empty: the default)",
                self.current.system_prompt or "",
            )
        )
        if prompt is None:
            return
        await self.engine.store.configure_conversation(
            self.current.id, model=self.current.model, system_prompt=prompt.strip() or None
        )
        self.current = await self.engine.store.get_conversation(self.current.id)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "New conversation", "Start a new conversation (Ctrl+N)", self.action_new_conversation
        )
        yield SystemCommand(
            "Retry now",
            "Check the endpoint and send queued messages now (Ctrl+R)",
            self.action_retry_now,
        )
        yield SystemCommand(
            "Rename conversation", "Give this conversation a new title (F2)", self.action_rename
        )
        yield SystemCommand(
            "Delete conversation", "Delete this conversation, after asking (F8)", self.action_delete
        )
        yield SystemCommand(
            "Set model", "Choose the model for this conversation", self.action_set_model
        )
        yield SystemCommand(
            "Set system prompt",
            "Choose the system prompt for this conversation",
            self.action_set_system_prompt,
        )
        yield SystemCommand(
            "Queue", "Messages not yet delivered: retry, edit, cancel (Ctrl+O)", self.action_queue
        )
        yield SystemCommand(
            "Search history", "Full-text search of every conversation (Ctrl+F)", self.action_search
        )
        yield SystemCommand(
            "Export conversation",
            "Write this conversation to a Markdown or JSON file (F4)",
            self.action_export,
        )
        yield SystemCommand(
            "Settings", "Endpoint, model, system prompt, theme (F3)", self.action_settings
        )
        yield SystemCommand("Keys", "Every key (F1)", self.action_help)
        yield SystemCommand(
            "Copy last reply",
            "Put the newest reply on the clipboard (OSC 52: works over SSH and tmux)",
            self.action_copy_last_reply,
        )
        yield SystemCommand(
            "Toggle sidebar",
            "Show or hide the conversation list (Ctrl+B)",
            self.action_toggle_sidebar,
        )
        yield from self.turn_commands()


def run_app(settings: Settings) -> int:
    """Run the TUI until it exits; returns the process exit status."""
    app = ChatApp(settings)
    app.run()
    if app.exit_note:
        print(app.exit_note, file=sys.stderr)
    if app.unsaved_draft and not app._by_signal:  # Ctrl+Q: the terminal is still there
        print("--- your draft ---", file=sys.stderr)
        print(app.unsaved_draft, file=sys.stderr)
        print("--- end of draft ---", file=sys.stderr)
    return app.return_code or 0
