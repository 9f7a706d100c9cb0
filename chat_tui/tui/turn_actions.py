"""The chat screen's actions for endpoints and turns, as a mixin of ChatScreen.

Stop the reply being generated (Esc), regenerate (Ctrl+G), edit the last
message (F6), edit an earlier one into a branch (palette), switch a turn's
versions (Alt+← / Alt+→), keep a fallback answer and cancel its question
(Ctrl+L), choose the conversation's endpoint (palette). Every change goes
through the store and the one outbox; these handlers only ask and show.
``ChatScreen.check_action`` lets an action through only when what it needs (the
core, a conversation) is there (``commands.py``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from textual import work
from textual.css.query import NoMatches

from ..store import StoreError
from .widgets.status import StatusLine

if TYPE_CHECKING:
    from ..events import ReachabilityState
    from ..store import Message
    from .screens.chat import ChatScreen


class TurnActions:
    """Mixed into ChatScreen: relies on its core, current conversation and chat view."""

    # -- endpoints ---------------------------------------------------------------------------

    def _endpoint_name(self: ChatScreen) -> str:
        if self.current is not None:
            return self.current.endpoint or "default"
        return self._new_endpoint or "default"

    def _show_endpoint(self: ChatScreen) -> None:
        """The status line and banner follow the conversation on screen's endpoint."""
        name = self._endpoint_name()
        try:
            own = self.settings.for_endpoint(name)
            where = own.base_url if name == "default" else f"{name} ({own.base_url})"
            model = (self.current.model if self.current else None) or own.model
        except KeyError:
            where, model = f"{name} (not configured)", "?"
        status = self.query_one(StatusLine)
        self._show_elsewhere()
        status.endpoint = where
        status.set_model(model)
        reach = self.reaches.get(name)
        if reach is None and self.core is not None:
            link = self.core.link_for(self.current) if self.current else None
            reach = link.reachability.current if link is not None else None
        if reach is not None:
            self.reach = reach  # bound to the status line and the banner

    def _reach_for_endpoint(self: ChatScreen, state: ReachabilityState) -> bool:
        """Remember each endpoint's state; True if it is the one on screen. The
        status line names the other endpoints in use that are not online."""
        self.reaches[state.endpoint] = state
        self._show_elsewhere()
        return state.endpoint == self._endpoint_name()

    def _show_elsewhere(self: ChatScreen) -> None:
        current = self._endpoint_name()
        away = sorted(
            name
            for name, reach in self.reaches.items()
            if name != current and reach.state in ("offline", "captive", "auth_error")
        )
        with contextlib.suppress(NoMatches):
            self.query_one(StatusLine).set_elsewhere(away)

    def _primary_offline(self: ChatScreen) -> bool:
        if self.core is None:
            return False
        link = self.core.link_for(self.current)
        return link is None or not link.reachability.online

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_set_endpoint(self: ChatScreen) -> None:
        from .screens.dialogs import TextPrompt

        names = self.settings.endpoint_names
        name = await self.app.push_screen_wait(
            TextPrompt(
                f"Endpoint for this conversation ({', '.join(names)})",
                self._endpoint_name(),
            )
        )
        if name is None:
            return
        name = name.strip() or "default"
        if name not in names:
            self.notify(f"No endpoint named {name!r}.", severity="error", markup=False)
            return
        if self.current is None:
            self._new_endpoint = name  # the next new conversation starts there
        else:
            await self.core.store.set_endpoint(self.current.id, name)
            self.current = await self.core.store.get_conversation(self.current.id)
            self.core.links.get(name)  # watched from now on
            self.core.sender.wake()
        self._show_endpoint()
        self.notify(f"This conversation now uses {name}.", markup=False, timeout=3)

    # -- stopping a reply ---------------------------------------------------------------------

    async def action_stop_reply(self: ChatScreen) -> None:
        """Stop the reply being generated: what came is kept, labelled stopped. If
        nothing came yet, ask whether to requeue or cancel the message."""
        question = self.chat.streaming_question()
        if question is None and self._local_blocks and self.core is not None:
            for question_id in list(self._local_blocks):  # a fallback answer: keep what came
                self.core.stop_fallback(question_id)
            return
        if question is None or self.core is None:
            return
        if self.chat.streaming_started(question.id):
            await self.core.sender.stop(question.id)
            return
        self._ask_stop_waiting(question)

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def _ask_stop_waiting(self: ChatScreen, question: Message) -> None:
        from .screens.dialogs import StopWaiting

        choice = await self.app.push_screen_wait(StopWaiting())
        if choice is None or self.core is None:
            return
        if not await self.core.sender.stop(question.id, choice):
            self.notify("That reply had already finished.", markup=False, timeout=3)

    # -- the fallback answer ------------------------------------------------------------------

    async def _local_answer_event(self: ChatScreen, event: Any) -> None:
        from ..events import LocalAnswerDelta, LocalAnswerEnded, LocalAnswerStarted
        from .widgets.versions import mount_local_answer

        chat = self.chat
        question: Message = event.question
        if isinstance(event, LocalAnswerStarted):
            if question.conversation_id == chat.conversation_id:
                self._local_blocks[question.id] = await mount_local_answer(
                    chat, question, event.label
                )
                self.refresh_bindings()  # Esc stops it
        elif isinstance(event, LocalAnswerDelta):
            block = self._local_blocks.get(question.id)
            if block is not None:
                await block.write(event.text)
        elif isinstance(event, LocalAnswerEnded):
            block = self._local_blocks.pop(question.id, None)
            self.refresh_bindings()
            if block is not None:
                await block.stop()
                if event.notice is not None:
                    await chat.upsert(event.notice)
                await block.remove()
            if event.error and question.conversation_id == chat.conversation_id:
                self.notify(
                    f"The fallback could not answer ({event.error}); the question stays queued.",
                    severity="warning",
                    markup=False,
                    timeout=5,
                )

    async def action_keep_local(self: ChatScreen) -> None:
        """ "Good enough": keep the fallback's answer and cancel the queued question."""
        messages = await self.core.store.messages_page(self.current.id, limit=20)
        answered = {m.reply_to for m in messages if m.meta.get("kind") == "fallback_answer"} | set(
            self._local_blocks
        )
        waiting = [
            m
            for m in messages
            if m.role == "user" and m.id in answered and m.state in ("queued", "sending", "failed")
        ]
        if not waiting:
            self.notify("No queued question here has a local answer.", markup=False, timeout=3)
            return
        question = waiting[-1]
        self.core.stop_fallback(question.id)  # still streaming: keep what came
        try:
            await self.core.sender.cancel(question.id)
        except StoreError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.notify(
            "Kept the local answer; the question is cancelled (kept in history).",
            markup=False,
            timeout=4,
        )

    # -- regenerate, edit, versions, branch ------------------------------------------------

    async def _last_question(self: ChatScreen) -> Message | None:
        messages = await self.core.store.messages_page(self.current.id, limit=20)
        users = [m for m in messages if m.role == "user" and m.state != "cancelled"]
        return users[-1] if users else None

    async def action_regenerate(self: ChatScreen) -> None:
        question = await self._last_question()
        if question is None:
            return
        try:
            await self.core.sender.resend(question.id)
        except StoreError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        await self._reload_current()
        self.notify("Asking again; the earlier reply is kept (Alt+← shows it).", timeout=3)

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_edit_last(self: ChatScreen) -> None:
        from .screens.dialogs import EditMessage

        question = await self._last_question()
        if question is None:
            return
        if question.state != "delivered":
            self._edit_message(question)  # not answered yet: the queue's edit
            return
        text = await self.app.push_screen_wait(EditMessage(question.content))
        if text is None:
            return
        try:
            await self.core.sender.resend(question.id, text=text)
        except StoreError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        await self._reload_current()

    @work(group="dialogs", exclusive=True, exit_on_error=False)
    async def action_branch(self: ChatScreen) -> None:
        from .screens.dialogs import EditMessage
        from .widgets.versions import PickMessage

        messages = await self.core.store.all_messages(self.current.id)
        questions = [m for m in messages if m.role == "user" and m.state == "delivered"]
        if not questions:
            self.notify("Nothing answered here to branch from yet.", markup=False)
            return
        chosen = await self.app.push_screen_wait(
            PickMessage("Edit which message? (a new conversation branches there)", questions)
        )
        message = next((m for m in questions if m.id == chosen), None)
        if message is None:
            return
        text = await self.app.push_screen_wait(EditMessage(message.content))
        if text is None:
            return
        try:
            edited = await self.core.store.branch(message.id, text)
        except StoreError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.core.sender.wake()
        self.conversations = await self.core.store.list_conversations()
        await self.open_conversation(edited.conversation_id)
        self.notify("Branched: the original conversation is unchanged.", markup=False, timeout=4)

    async def _switch_version(self: ChatScreen, step: int) -> None:
        messages = await self.core.store.messages_page(self.current.id, limit=40)
        turns = [m for m in messages if m.role == "user" and int(m.meta.get("versions", 1)) > 1]
        if not turns:
            self.notify("This conversation has no earlier versions.", markup=False, timeout=3)
            return
        turn = turns[-1]
        total, shown = int(turn.meta["versions"]), int(turn.meta.get("version", 1))
        target = shown + step
        if not 1 <= target <= total:
            return
        try:
            await self.core.store.show_version(turn.id, target)
        except StoreError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        await self._reload_current()

    async def action_version_prev(self: ChatScreen) -> None:
        await self._switch_version(-1)

    async def action_version_next(self: ChatScreen) -> None:
        await self._switch_version(+1)

    async def _reload_current(self: ChatScreen) -> None:
        if self.current is not None:
            await self.open_conversation(self.current.id)
