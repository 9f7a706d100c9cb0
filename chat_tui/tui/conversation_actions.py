"""The chat screen's actions on conversations, as a mixin of ChatScreen.

New (Ctrl+N), rename (F2), delete (F8), export (F4), a conversation's model and
system prompt (palette), the queue (Ctrl+O) and search (Ctrl+F), copying, and
the layout (sidebar, scrolling, focus). ``ChatScreen.check_action`` lets an
action through only when what it needs (the core, a conversation) is there
(``commands.py``); the dialogs return what the user chose through ``dismiss``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.css.query import NoMatches

from ..store import StoreError
from .messages import QueueAction
from .widgets.chat_view import ChatView, MessageView
from .widgets.sidebar import ConversationList
from .widgets.status import StatusLine

if TYPE_CHECKING:
    from ..store import Message, QueueItem
    from .screens.chat import ChatScreen
    from .screens.search import SearchChoice

NARROW = 100  # below this many columns the sidebar is hidden and overlays when shown


class ConversationActions:
    """Mixed into ChatScreen: relies on its core, current conversation and widgets."""

    # -- copy --------------------------------------------------------------------------------

    def on_chat_view_copied(self: ChatScreen, event: ChatView.Copied) -> None:
        self._copy_text(event.text, event.what)

    def _copy_text(self: ChatScreen, text: str, what: str) -> None:
        # OSC 52: reaches the local clipboard through SSH, and through tmux with
        # `set -g set-clipboard on`.
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {len(text)} characters ({what}).", markup=False, timeout=3)

    def action_copy_last_reply(self: ChatScreen) -> None:
        replies = [v for v in self.chat.query(MessageView) if v.message.role == "assistant"]
        if not replies:
            self.notify("No reply to copy yet.", markup=False, timeout=3)
            return
        self._copy_text(replies[-1].message.content, "the last reply")

    # -- scrolling and focus -----------------------------------------------------------------

    def action_scroll_chat(self: ChatScreen, where: str) -> None:
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

    def action_focus_chat(self: ChatScreen) -> None:
        self.chat.focus()

    def action_focus_composer(self: ChatScreen) -> None:
        self.composer.focus()

    # -- the sidebar -------------------------------------------------------------------------

    def action_toggle_sidebar(self: ChatScreen) -> None:
        sidebar = self.query_one(ConversationList)
        self._sidebar_wanted = not sidebar.display
        self.place_sidebar()
        if sidebar.display and sidebar.has_class("-overlay"):
            sidebar.focus()
        elif not sidebar.display and self.focused is None:
            self.composer.focus()

    def place_sidebar(self: ChatScreen) -> None:
        """Wide: the list sits beside the chat. Narrow: hidden unless asked for, and
        then it overlays the chat instead of squeezing it."""
        try:
            sidebar = self.query_one(ConversationList)
        except NoMatches:  # not composed yet, or gone
            return
        narrow = self.app.size.width < NARROW
        wanted = self._sidebar_wanted if self._sidebar_wanted is not None else not narrow
        sidebar.set_class(narrow, "-overlay")
        sidebar.display = wanted
        if not wanted and self.focused is sidebar:
            self.composer.focus()

    def _close_overlay_sidebar(self: ChatScreen) -> None:
        sidebar = self.query_one(ConversationList)
        if sidebar.has_class("-overlay"):
            self._sidebar_wanted = False
            self.place_sidebar()

    # -- conversations -----------------------------------------------------------------------

    async def action_new_conversation(self: ChatScreen) -> None:
        if not await self.chat_app.core_ready():  # Ctrl+N during start-up: after it
            return
        await self.open_conversation(None)
        self.composer.focus()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_rename(self: ChatScreen) -> None:
        from .screens.dialogs import TextPrompt

        title = await self.app.push_screen_wait(
            TextPrompt("Rename conversation", self.current.title)
        )
        if title and title.strip():
            await self.core.store.rename_conversation(self.current.id, title)
            self.current = await self.core.store.get_conversation(self.current.id)
            self.app.sub_title = title.strip()
            self._update_header()
            await self.refresh_queue_and_sidebar()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_delete(self: ChatScreen) -> None:
        from .screens.dialogs import Confirm

        doomed = self.current
        ok = await self.app.push_screen_wait(
            Confirm(f"Delete “{doomed.title or 'untitled'}” and all its messages?", yes="Delete")
        )
        if not ok:
            return
        await self.core.store.delete_conversation(doomed.id)
        self.conversations = await self.core.store.list_conversations()
        self.current = None
        await self.open_conversation(self.conversations[0].id if self.conversations else None)
        self.notify("Conversation deleted.", markup=False)

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_export(self: ChatScreen) -> None:
        from ..export import default_filename, render
        from .screens.dialogs import Confirm, TextPrompt

        conversation = self.current
        default = Path.home() / default_filename(conversation, "md")
        answer = await self.app.push_screen_wait(
            TextPrompt("Export to (.md for Markdown, .json for JSON)", str(default))
        )
        if not answer or self.core is None:
            return
        path = Path(answer.strip()).expanduser()
        if path.exists():
            overwrite = await self.app.push_screen_wait(
                Confirm(f"{path} already exists. Replace it?", yes="Replace")
            )
            if not overwrite or self.core is None:
                self.notify("Not exported: the file is left as it was.", markup=False)
                return
        fmt = "json" if path.suffix.lower() == ".json" else "md"
        messages = await self.core.store.all_messages(conversation.id)
        try:
            path.write_text(render(conversation, messages, fmt), encoding="utf-8")
        except OSError as exc:
            self.notify(f"Could not write {path}: {exc.strerror}", severity="error", markup=False)
            return
        self.notify(f"Exported to {path}", markup=False)

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_set_model(self: ChatScreen) -> None:
        from .screens.dialogs import TextPrompt

        model = await self.app.push_screen_wait(
            TextPrompt(
                "Model for this conversation (empty: the default)",
                self.current.model or "",
                placeholder=self.settings.model,
            )
        )
        if model is None:
            return
        await self.core.store.configure_conversation(
            self.current.id, model=model.strip() or None, system_prompt=self.current.system_prompt
        )
        self.current = await self.core.store.get_conversation(self.current.id)
        self.query_one(StatusLine).set_model(self._model_for(self.current))
        self._update_header()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_set_system_prompt(self: ChatScreen) -> None:
        from .screens.dialogs import TextPrompt

        prompt = await self.app.push_screen_wait(
            TextPrompt(
                "System prompt for this conversation (empty: the default)",
                self.current.system_prompt or "",
            )
        )
        if prompt is None:
            return
        await self.core.store.configure_conversation(
            self.current.id, model=self.current.model, system_prompt=prompt.strip() or None
        )
        self.current = await self.core.store.get_conversation(self.current.id)

    # -- search ------------------------------------------------------------------------------

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_search(self: ChatScreen) -> None:
        from .screens.search import SearchScreen

        search = partial(self.core.store.search, limit=100)
        choice: SearchChoice | None = await self.app.push_screen_wait(SearchScreen(search))
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

    # -- the queue ---------------------------------------------------------------------------

    async def action_queue(self: ChatScreen) -> None:
        from .screens.queue import QueueScreen

        items = await self.core.store.queue_items()
        # The screen's actions come back here as messages, handled one at a time in
        # the order asked; "open" closes it with the item.
        screen = QueueScreen(
            items, act=lambda action, item: self.post_message(QueueAction(action, item))
        )
        await self.app.push_screen(screen, self._open_queued)

    async def _open_queued(self: ChatScreen, item: QueueItem | None) -> None:
        if item is not None:
            await self.open_conversation(item.message.conversation_id, at_seq=item.message.seq)

    async def on_queue_action(self: ChatScreen, event: QueueAction) -> None:
        if self.core is None:
            return
        message = event.item.message
        sender = self.core.sender
        try:
            if event.action == "retry":
                await sender.retry(message.id)
                self.notify(f"Message #{message.id} is queued again.", markup=False, timeout=3)
            elif event.action == "cancel" and message.state == "sending":
                # A request the server never answers: stop it (the sender's stop
                # path; without one, say why it cannot be cancelled yet).
                stop = getattr(sender, "stop", None)
                if stop is None or not await stop(message.id, "cancel"):
                    self.notify(
                        f"Message #{message.id} is being sent; it cannot be stopped now.",
                        markup=False,
                        timeout=4,
                    )
                    return
                self.notify(f"Message #{message.id} stopped.", markup=False, timeout=3)
            elif event.action == "cancel":
                await sender.cancel(message.id)
                self.notify(
                    f"Message #{message.id} cancelled (kept in history).", markup=False, timeout=3
                )
            elif event.action == "edit":
                self._edit_message(message)
                return
        except StoreError as exc:
            self.notify(str(exc), severity="error", markup=False)
        await self._refresh_queue_screen()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def _edit_message(self: ChatScreen, message: Message) -> None:
        from .screens.dialogs import EditMessage

        text: str | None = message.content
        while True:
            text = await self.app.push_screen_wait(EditMessage(text))
            if text is None or self.core is None:
                return
            try:
                await self.core.sender.retry(message.id, text=text)
                break
            except StoreError as exc:
                # The dialog comes back with the edit in it: nothing typed is lost.
                self.notify(str(exc), severity="error", markup=False)
        self.notify(f"Message #{message.id} edited and queued again.", markup=False, timeout=3)
        await self._refresh_queue_screen()
