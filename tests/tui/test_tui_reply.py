"""The TUI's side of issue 11: the Thinking block, stopping a reply with Escape,
the usage header line and the "not sent to the model" marker (Pilot, real server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from chat_tui.config import Settings
from chat_tui.store import Message
from chat_tui.tui.app import ChatApp
from chat_tui.tui.screens.dialogs import StopWaiting
from chat_tui.tui.widgets.chat_view import ChatView, MessageView, StreamingReply
from tests.fault_server import Fault, FaultServer
from tests.helpers import app_settings, online, wait_until

pytestmark = pytest.mark.timeout(60)


def reply_settings(server: FaultServer, data_dir: Path, **overrides: object) -> Settings:
    """The app's test settings with a model name (the usage line shows it) and time to think."""
    return app_settings(
        server, data_dir, **({"read_timeout": 5.0, "model": "test-model"} | overrides)
    )


def replies(app: ChatApp) -> list[MessageView]:
    return [v for v in app.query(MessageView) if v.message.role == "assistant"]


def footer_offers_stop(app: ChatApp) -> bool:
    return any(
        b.binding.action == "stop_reply" and b.enabled for b in app.screen.active_bindings.values()
    )


async def test_thinking_shows_live_then_folds_when_the_answer_starts(
    server: FaultServer, tmp_path: Path
) -> None:
    server.push(
        Fault(
            "reasoning",
            thinking="Step one. Step two. Step three. Step four.",
            text="The answer is 42.",
            delay=0.3,
        )
    )
    app = ChatApp(reply_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"think hard", "enter")
        await wait_until(pilot, lambda: bool(app.query(StreamingReply)))
        live = app.query_one(StreamingReply)
        await wait_until(pilot, lambda: live._thinking_box is not None)
        assert live._thinking_box is not None and not live._thinking_box.collapsed
        assert "Thinking" in str(live._thinking_box.title)
        await wait_until(pilot, lambda: live.received > 0)
        assert live._thinking_box.collapsed  # folded once the answer began
        await wait_until(pilot, lambda: bool(replies(app)))
        stored = replies(app)[0]
        assert stored.message.content == "The answer is 42."
        assert stored.message.meta["reasoning"].startswith("Step one.")
        lines = [str(part) for part in stored._renderable().renderable.renderables]
        assert lines[1].startswith("▸ Thinking") and "Step one" not in "".join(lines)
        app.chat.scroll_end(animate=False)
        await pilot.pause()
        await pilot.click(stored, offset=(3, 1))
        assert stored.show_reasoning
        lines = [str(part) for part in stored._renderable().renderable.renderables]
        assert any(line.startswith("Step one.") for line in lines)


async def test_escape_stops_a_reply_and_keeps_it_labelled_stopped(
    server: FaultServer, tmp_path: Path
) -> None:
    server.push(Fault("slow", seconds=0.5))
    app = ChatApp(reply_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: online(app))
        assert not footer_offers_stop(app)  # Esc is offered only while a reply streams
        await pilot.press(*"a long story please", "enter")
        await wait_until(pilot, lambda: bool(app.query(StreamingReply)))
        live = app.query_one(StreamingReply)
        await wait_until(pilot, lambda: live.received > 0)
        assert footer_offers_stop(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: bool(replies(app)))
        reply = replies(app)[0]
        assert reply.message.state == "stopped"
        assert "stopped" in reply.header_text
        assert 0 < len(reply.message.content) < len("echo: a long story please")
        user = next(v for v in app.query(MessageView) if v.message.role == "user")
        assert user.message.state == "delivered"
        assert not footer_offers_stop(app)


@pytest.mark.parametrize(("button", "state"), [("#cancel", "cancelled"), ("#wait", "sending")])
async def test_escape_before_the_first_byte_asks_what_to_do(
    server: FaultServer, tmp_path: Path, button: str, state: str
) -> None:
    server.push(Fault("stall_first_byte", seconds=20))
    app = ChatApp(reply_settings(server, tmp_path, read_timeout=30.0))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"hello?", "enter")
        await wait_until(pilot, lambda: bool(app.query(StreamingReply)))
        await wait_until(pilot, lambda: any(r.fault for r in server.requests))
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, StopWaiting))
        await pilot.click(button)
        await pilot.pause(1.5)  # more than the stop poll: a stop would have landed
        user = next(v for v in app.query(MessageView) if v.message.role == "user")
        await wait_until(pilot, lambda: user.message.state == state)
        assert not replies(app)


async def test_usage_in_the_reply_header(server: FaultServer, tmp_path: Path) -> None:
    app = ChatApp(reply_settings(server, tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press(*"count my tokens", "enter")
        await wait_until(pilot, lambda: bool(replies(app)))
        usage = replies(app)[0].message.meta["usage"]
        header = replies(app)[0].header_text
        assert f"{usage['prompt_tokens']} → {usage['completion_tokens']} tokens" in header


async def test_marker_shows_where_the_models_memory_starts(
    server: FaultServer, tmp_path: Path
) -> None:
    server.context_tokens = 450
    app = ChatApp(reply_settings(server, tmp_path))
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: online(app))
        for i in range(6):
            app.composer.text = f"turn {i} " + "many words here " * 12
            await pilot.press("enter")
            await wait_until(pilot, lambda i=i: len(replies(app)) == i + 1, 15)
        await wait_until(pilot, lambda: bool(app.query(".context-marker")))
        marker = app.query_one(".context-marker")
        order = list(app.chat.children)
        after = order[order.index(marker) + 1]
        assert isinstance(after, MessageView) and after.message.role == "user"
        assert after.message.seq == app.current.context_from_seq
        assert after.message.seq > 10  # the first turns are above it, not sent
        # Reopening the conversation shows it in the same place.
        await app.open_conversation(app.current.id)
        await wait_until(pilot, lambda: bool(app.query(".context-marker")))


def turn_message(id: int, seq: int, role: str, reply_to: int | None = None) -> Message:
    return Message(
        id=id,
        conversation_id=1,
        seq=seq,
        role=role,
        content=f"{role} {id}",
        state="queued" if role == "user" else "complete",
        created_at=0.0,
        updated_at=0.0,
        reply_to=reply_to,
    )


class ChatHost(App):
    def compose(self) -> ComposeResult:
        yield ChatView()


async def test_a_streaming_reply_goes_after_its_question_and_notices_before_the_next_turn() -> None:
    # Placed by what the messages answer, not by the store's numbering: the seqs here
    # are packed tight (five after the question is past the next turn), only in order.
    question = turn_message(1, 10, "user")
    notice = turn_message(2, 11, "notice", reply_to=1)
    nxt = turn_message(3, 14, "user")
    app = ChatHost()
    async with app.run_test(size=(80, 30)) as pilot:
        chat = app.query_one(ChatView)
        await chat.show_conversation(1, [question, notice, nxt], has_older=False)
        await chat.stream_started(question)
        await pilot.pause()
        order = [
            "stream" if isinstance(w, StreamingReply) else w.message.id  # type: ignore[attr-defined]
            for w in chat.children
            if isinstance(w, (MessageView, StreamingReply))
        ]
        assert order == [1, 2, "stream", 3]
        reply = turn_message(4, 12, "assistant", reply_to=1)
        await chat.stream_ended(question, reply)
        await pilot.pause()
        assert [w.message.id for w in chat.query(MessageView)] == [1, 2, 4, 3]
