"""Stopping a reply: kept as the reply (labelled stopped), or the message requeued or
cancelled when nothing came; from this process or another one (`chat-tui cancel`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chat_tui.core import Core
from chat_tui.events import ReplyDelta, ReplyStored
from chat_tui.store import REPLY_OFFSET
from tests.fault_server import Fault, FaultServer
from tests.helpers import CliEnv, wait_until

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def running(core: Core) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(core.sender.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def state_of(core: Core, message_id: int) -> str | None:
    message = await core.store.get_message(message_id)
    return message.state if message else None


async def test_stop_mid_reply_keeps_the_text_as_a_stopped_reply(
    core: Core, fault_server: FaultServer, events: list[Any]
) -> None:
    await core.reachability.wait_online(5)
    fault_server.push(Fault("slow", seconds=0.4))
    sent = await core.sender.submit(None, "tell me a long story")
    question = sent.message
    async with running(core):
        await wait_until(lambda: any(isinstance(e, ReplyDelta) for e in events), 10, what="text")
        assert await core.sender.stop(question.id)
        await wait_until(
            lambda: any(isinstance(e, ReplyStored) for e in events), 5, what="the stopped reply"
        )
        messages = await core.store.all_messages(question.conversation_id)
        reply = messages[-1]
        assert reply.role == "assistant" and reply.state == "stopped"
        received = "".join(e.text for e in events if isinstance(e, ReplyDelta))
        assert reply.content == received and 0 < len(reply.content) < len(
            "echo: tell me a long story"
        )
        assert reply.meta["stopped"] is True
        assert await state_of(core, question.id) == "delivered"
        # The next turn carries the partial reply as context.
        nxt = await core.sender.submit(question.conversation_id, "go on")
        await wait_until(
            lambda: _is(core, nxt.message.id, "delivered"), 10, what="next turn delivered"
        )
    last = [r for r in fault_server.requests if r.path == "/v1/chat/completions"][-1]
    assert last.body["messages"][:2] == [
        {"role": "user", "content": "tell me a long story"},
        {"role": "assistant", "content": reply.content},
    ]


async def _is(core: Core, message_id: int, state: str) -> bool:
    return await state_of(core, message_id) == state


@pytest.mark.parametrize("action", ["requeue", "cancel"])
async def test_stop_before_the_first_byte(
    core: Core, fault_server: FaultServer, action: str
) -> None:
    await core.reachability.wait_online(5)
    fault_server.push(Fault("stall_first_byte", seconds=20))
    sent = await core.sender.submit(None, "are you there?")
    mid = sent.message.id
    async with running(core):
        await wait_until(lambda: any(r.fault for r in fault_server.requests), 5, what="request")
        started = time.monotonic()
        assert await core.sender.stop(mid, action)
        if action == "cancel":
            await wait_until(lambda: _is(core, mid, "cancelled"), 3, what="cancelled")
            assert time.monotonic() - started < 1.0
            assert await core.store.queue_items() == []
        else:
            # Back in the queue with no attempt charged, and sent again at once.
            await wait_until(lambda: _is(core, mid, "delivered"), 10, what="resent")
            message = await core.store.get_message(mid)
            assert message is not None and message.attempts == 0
    messages = await core.store.all_messages(sent.message.conversation_id)
    assert all(m.state != "stopped" for m in messages)  # nothing came: no stopped reply


async def test_cancel_from_another_process_stops_the_holder(
    core: Core, fault_server: FaultServer, cli_env: CliEnv, events: list[Any]
) -> None:
    """`chat-tui cancel ID` while this process holds the lease and streams: the
    holder notices the flag within a second, keeps the text, marks it stopped."""
    # The core and the CLI share one database.
    cli_settings = core.settings
    cli_env.env["CHAT_TUI_DATA_DIR"] = str(cli_settings.data_dir)
    await core.reachability.wait_online(5)
    fault_server.push(Fault("slow", seconds=1.0))
    sent = await core.sender.submit(None, "a slow answer please")
    mid = sent.message.id
    async with running(core):
        await wait_until(lambda: any(isinstance(e, ReplyDelta) for e in events), 10, what="text")
        started = time.monotonic()
        proc = await asyncio.to_thread(cli_env.run, "cancel", str(mid), timeout=20)
        took = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        assert "stopped" in proc.stdout
        assert await state_of(core, mid) == "delivered"
    messages = await core.store.all_messages(sent.message.conversation_id)
    reply = next(m for m in messages if m.seq == sent.message.seq + REPLY_OFFSET)
    assert reply.state == "stopped" and reply.content
    # Within a second of the flag, plus a subprocess start-up (about 1 s on a busy machine).
    assert took < 4.0


async def test_cancel_from_another_process_before_any_text_cancels(
    core: Core, fault_server: FaultServer, cli_env: CliEnv
) -> None:
    cli_env.env["CHAT_TUI_DATA_DIR"] = str(core.settings.data_dir)
    await core.reachability.wait_online(5)
    fault_server.push(Fault("stall_first_byte", seconds=20))
    sent = await core.sender.submit(None, "hello?")
    async with running(core):
        await wait_until(lambda: any(r.fault for r in fault_server.requests), 5, what="request")
        proc = await asyncio.to_thread(cli_env.run, "cancel", str(sent.message.id), timeout=20)
        assert proc.returncode == 0, proc.stderr
        assert "cancelled" in proc.stdout
    assert await state_of(core, sent.message.id) == "cancelled"


async def test_stop_of_a_message_not_being_sent_is_refused(core: Core) -> None:
    sent = await core.sender.submit(None, "queued only")
    assert not await core.sender.stop(sent.message.id)
    with pytest.raises(ValueError):
        await core.sender.stop(sent.message.id, "explode")
