"""The Textual app: the core's life cycle (store, links, sender).

The core (store, links, sender, offline answers) starts in ``on_mount``,
after the first frame, and is awaited closed in ``on_unmount``. It reports
through listeners that only post messages to the chat screen
(``screens/chat.py``), whose handlers are the only code that changes its
widgets. SIGHUP and SIGTERM (SSH dropped, terminal closed) end the app through
the same clean path: draft saved, leases released, database closed, queued
messages handed to a background sync. A terminal that hung up without a SIGHUP
reaching the app (it is checked every second) ends it the same way, and an exit
after a hang-up that has not finished within ``HANGUP_GRACE`` seconds is cut short.
Frames drawn after the hang-up go nowhere (``driver.py``): a failed write must
not stop the app before it has saved the draft. The app also watches for other
processes' writes and for its database file being replaced, and applies the
settings (a new endpoint or model reopens the core).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from textual import on
from textual.app import App, SystemCommand
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.worker import Worker

from .. import startup
from ..config import Settings
from ..store import StoreError
from .commands import BY_ACTION, app_bindings, palette_commands
from .drafts import DraftKeeper
from .driver import hangup_safe
from .messages import CoreRelay
from .screens.chat import ChatScreen, report_worker_failure
from .settings_flow import SettingsFlow
from .widgets.chat_view import ChatView
from .widgets.composer import Composer

if TYPE_CHECKING:
    from ..core import Core
    from ..events import ReachabilityState
    from ..store import Conversation

log = logging.getLogger(__name__)

HANGUP_GRACE = 20.0  # seconds an exit after SIGHUP/SIGTERM may take before it is cut short


def _cut_short() -> None:
    log.error("closing after a hang-up took over %.0f s; ending the process", HANGUP_GRACE)
    logging.shutdown()
    os._exit(0)


class ChatApp(SettingsFlow, App[int]):
    """The core's life cycle around the chat screen (the module's docstring). The
    screen's state that tests and scripts read (``current``, ``reach``, ``queued``,
    ``composer``…) is reachable through the app too."""

    CSS_PATH = "app.tcss"
    TITLE = "chat-tui"
    COMMAND_PALETTE_BINDING = "ctrl+p"
    # Every key is bound on the chat screen (commands.py); the App binds Quit (a
    # priority key: it works over any dialog) and the palette.
    BINDINGS = app_bindings()

    def __init__(self, settings: Settings, *, core: Core | None = None) -> None:
        super().__init__()
        self.driver_class = hangup_safe(self.driver_class)
        self.settings = settings
        self._core: Core | None = core
        self._chat_screen: ChatScreen | None = None
        self.drafts = DraftKeeper(self)
        self.exit_note: str | None = None
        self.window_focused = True  # the terminal tells us when it changes (AppBlur/AppFocus)
        self._core_started = asyncio.Event()  # set once start-up has finished (or failed)
        self._exiting = False  # exit() was called: start-up stops, on_unmount takes over
        self._starting: asyncio.Task[None] | None = None
        self._relay = CoreRelay(lambda: self.chat_screen)  # the core's listeners
        self._by_signal = False  # closed by SIGHUP/SIGTERM: no terminal to print to
        self._tty: int | None = None  # the terminal watched for a hang-up
        self._replaced: str | None = None  # the database file was deleted or replaced

    # -- the chat screen, and what the tests and scripts read through the app ------------------

    def get_default_screen(self) -> ChatScreen:
        # Composed in its own task, beside the app's (empty) compose: the first frame
        # comes sooner than when the app composed the layout. (As the base screen of
        # a mode, Textual would compose it first and paint it twice unseen: 100 ms.)
        self._chat_screen = ChatScreen()
        return self._chat_screen

    @property
    def chat_screen(self) -> ChatScreen:
        assert self._chat_screen is not None, "the app has not started"
        return self._chat_screen

    @property
    def core(self) -> Core | None:
        return self._core

    @core.setter
    def core(self, core: Core | None) -> None:
        self._core = core
        screen = self._chat_screen
        if screen is not None and screen.is_attached:
            screen.refresh_bindings()  # what needs the core is greyed out without it

    @property
    def current(self) -> Conversation | None:
        return self._chat_screen.current if self._chat_screen else None

    @property
    def conversations(self) -> list[Conversation]:
        return self.chat_screen.conversations

    @property
    def reach(self) -> ReachabilityState | None:
        """The reachability of the on-screen conversation's endpoint."""
        return self._chat_screen.reach if self._chat_screen else None

    @property
    def queued(self) -> int:
        return self._chat_screen.queued if self._chat_screen else 0

    @property
    def chat(self) -> ChatView:
        return self.chat_screen.chat

    @property
    def composer(self) -> Composer:
        return self.chat_screen.composer

    @property
    def unsaved_draft(self) -> str | None:
        """A draft that could go nowhere at exit: printed after the app closes."""
        return self.drafts.unsaved

    async def open_conversation(
        self, conversation_id: int | None, *, at_seq: int | None = None
    ) -> None:
        await self.chat_screen.open_conversation(conversation_id, at_seq=at_seq)

    # -- start-up ------------------------------------------------------------------------------

    async def on_mount(self) -> None:
        if self.settings.theme and self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self._apply_look()
        self._theme_ready = True  # from now on a theme change is the user's: save it
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            loop.add_signal_handler(sig, self._exit_on_signal, sig)
        if not self.is_headless and sys.__stdin__ is not None and sys.__stdin__.isatty():
            self._tty = sys.__stdin__.fileno()
            self.set_interval(1.0, self._check_terminal)
        if not self.settings.verify_tls:
            self.notify(
                "TLS certificate verification is OFF (verify_tls = false): the "
                "connection and the API key are not protected.",
                title="Insecure",
                severity="warning",
                timeout=15,
                markup=False,
            )
        # Paint first, then load: the core pulls in httpx and the database,
        # which the first frame does not need.
        self.call_after_refresh(self._begin_start)

    def _begin_start(self) -> None:
        startup.resume()  # the first frame is drawn: the collector runs again
        # Its own task, so key presses and bindings keep flowing while it runs;
        # whatever needs the core waits on `_core_started` instead of being dropped.
        self._starting = asyncio.create_task(self._start_core(), name="start-core")

    async def _start_core(self) -> None:
        try:
            await self._open_core()
            self._tell_missing_config()
        except Exception as exc:  # never a traceback on the user's screen
            if self._exiting:  # closed while starting: not a failure
                log.info("start-up interrupted by exit: %s", type(exc).__name__)
            else:
                log.exception("start-up failed")
                self.exit(return_code=1, message=f"chat-tui: could not start: {exc}")
        finally:
            self._core_started.set()

    async def core_ready(self) -> bool:
        """Wait until start-up is done; False if the core could not open."""
        await self._core_started.wait()
        return self.core is not None

    async def _open_core(self) -> None:
        if self.core is None:
            try:
                core = await self._new_core()
            except StoreError as exc:
                self.exit(return_code=1, message=f"chat-tui: {exc}")
                return
            self.core = core
            startup.freeze_long_lived()  # httpx, aiosqlite, the store: here to stay
            if self._exiting:  # closed while it was opening: on_unmount saves and closes
                return
        self.core.start_watching()
        self.core.start_delivery()
        screen = self.chat_screen
        try:
            store = self.core.store
            restored = await self.drafts.restore_rescued(store)
            if restored:
                self.notify(
                    f"Restored {restored} draft(s) that could not be saved in the database "
                    "last time.",
                    title="Draft restored",
                    markup=False,
                    timeout=8,
                )
            conversations = screen.conversations = await store.list_conversations()
            await screen.open_conversation(conversations[0].id if conversations else None)
            await screen.follow_other_processes()
        except StoreError as exc:  # e.g. damaged pages: it opened, but can't be read
            self.exit(return_code=1, message=f"chat-tui: {exc}")
            return
        await screen.refresh_queue_and_sidebar()

    async def _new_core(self) -> Core:
        from ..core import Core

        return await Core.open(
            self.settings,
            listener=self._relay.event,
            on_reachability=self._relay.reachability,
        )

    def _tell_missing_config(self) -> None:
        """Once, after start-up (not in the way of the first frame or the draft)."""
        from ..config import missing_config_notice

        notice = missing_config_notice()
        if notice and not self._exiting:
            self.notify(notice, title="Config file", severity="warning", timeout=6, markup=False)

    # -- the database file replaced -----------------------------------------------------------

    async def database_replaced(self, problem: str) -> None:
        """Writing on would go to a file nobody else sees: keep every unsent text and
        the draft in rescue files, and stop with a plain message."""
        self._replaced = problem
        log.error("%s; stopping", problem)
        saved = await self.core.rescue_unsent() if self.core is not None else []
        kept = f" {len(saved)} unsent message(s) were kept in {saved[0].parent}." if saved else ""
        self._add_exit_note(
            f"chat-tui: {problem}, so it stopped rather than write to a file nobody sees.{kept} "
            "Start chat-tui again to use the database now at that path; kept text comes back "
            "as a draft."
        )
        self.exit(return_code=1)

    # -- shutdown ------------------------------------------------------------------------------

    def _check_terminal(self) -> None:
        """End as on SIGHUP once the terminal has hung up (an SSH drop, a closed
        window) even when no signal reached the app: its input then reads as an
        endless end of file, which would keep the app spinning instead of exiting."""
        if self._exiting or self._tty is None:
            return
        import termios  # POSIX only, like the signals above

        try:
            termios.tcgetattr(self._tty)
        except (termios.error, OSError, ValueError):
            log.warning("the terminal hung up; closing")
            self._exit_on_signal(signal.SIGHUP)

    def _exit_on_signal(self, sig: int) -> None:
        if self._by_signal:
            return
        self._by_signal = True
        # No terminal to wait for: if closing hangs all the same, end the process
        # anyway; the database is safe (WAL), at worst the last keystrokes are lost.
        watchdog = threading.Timer(HANGUP_GRACE, _cut_short)
        watchdog.daemon = True
        watchdog.start()
        self.exit(return_code=0)

    def exit(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        # Every way out (quit key, SIGHUP, SIGTERM) passes here while the
        # composer still exists: take the draft now, save it in on_unmount.
        if self._chat_screen is not None:
            with contextlib.suppress(NoMatches):  # not composed yet
                self.drafts.text = self._chat_screen.composer.text
        self._exiting = True
        super().exit(*args, **kwargs)  # type: ignore[arg-type]

    async def on_unmount(self) -> None:
        if self._starting is not None and not self._starting.done():
            await asyncio.gather(self._starting, return_exceptions=True)
        core = self.core
        note = await self.drafts.keep_at_exit(
            core.store if core is not None else None, replaced=self._replaced is not None
        )
        if note:
            self._add_exit_note(note)
        if core is None:
            return
        self.core = None  # timers and late messages see the core gone, not half-closed
        waiting = 0
        if self._replaced is None:
            with contextlib.suppress(StoreError):
                waiting = await core.store.waiting_count()
        await core.close()
        if waiting and self.settings.handoff_on_exit:
            self._hand_off(waiting)

    def _add_exit_note(self, note: str) -> None:
        self.exit_note = f"{self.exit_note}\n{note}" if self.exit_note else note

    def _hand_off(self, waiting: int) -> None:
        """Queued messages keep going out after the window closes (docs/architecture.md)."""
        from ..handoff import spawn

        try:
            pid = spawn(self.settings)
        except OSError as exc:
            self.exit_note = handoff_note(waiting, None, exc)
            return
        self.exit_note = handoff_note(waiting, pid)

    # -- a new endpoint or model -------------------------------------------------------------

    async def reopen_core(self) -> None:
        """A new endpoint or model: close the core (leases released) and open it
        again with the new settings; queued messages go to the new endpoint."""
        await self.drafts.save_now()
        old, self.core = self.core, None
        if old is not None:
            await old.close()
        self.core = await self._new_core()
        self.core.start_watching()
        self.core.start_delivery()
        await self.chat_screen.endpoint_changed()

    # -- commands that are the app's -----------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        command = BY_ACTION.get(action)
        if command is None or not command.app:
            return True
        ready = command.can_run(core=self.core is not None, conversation=self.current is not None)
        return True if ready else None  # greyed out

    def action_retry_now(self) -> None:
        self.core.links.probe_now()
        self.core.sender.wake()
        self.notify("Checking the endpoint now…", timeout=2)

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_focus_composer(self) -> None:
        """The chat view's Tab/Escape (``app.focus_composer``)."""
        self.chat_screen.action_focus_composer()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)

    # -- window focus, resize, workers ---------------------------------------------------------

    def on_app_blur(self) -> None:
        self.window_focused = False

    def on_app_focus(self) -> None:
        self.window_focused = True

    def on_resize(self) -> None:
        if self._chat_screen is not None:
            self._chat_screen.place_sidebar()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        report_worker_failure(self, event)


def handoff_note(waiting: int, pid: int | None, error: OSError | None = None) -> str:
    """What the terminal is told about the queue left behind."""
    if error is not None:
        return f"chat-tui: {waiting} message(s) stay queued (no background sync: {error})"
    if pid is None:
        return (
            f"chat-tui: {waiting} queued message(s) left to the background sync "
            "that is already running."
        )
    return (
        f"chat-tui: {waiting} queued message(s) handed to a background sync "
        f"(pid {pid}); they go out when the endpoint answers. "
        "`chat-tui status` shows progress."
    )


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
