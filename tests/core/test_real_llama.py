"""Against the real thing: llama.cpp's llama-server with SmolLM2-135M and ``-c 1024``.

Built and cached by ``scripts/prepare_llama.py`` (``.ci/run`` runs it); without
it these tests are skipped with the reason printed, except under CI, where that
is a failure. Replies are kept short (``max_reply_tokens``): the model is small
and the test machine slow, and what is tested is the client, not the prose.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from chat_tui.config import Settings
from chat_tui.core import Core
from chat_tui.events import ReplyDelta, ReplyStored
from chat_tui.tui.app import ChatApp
from chat_tui.tui.widgets.chat_view import MessageView
from tests.helpers import CliEnv, fast_config
from tests.llama import CONTEXT_TOKENS, LlamaServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the slow tier: pytest -m slow

SHORT_REPLIES = 24  # max_tokens for each reply: enough to be an answer, quick on a small machine


def real_settings(server: LlamaServer, tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "model": "smollm2",
        "data_dir": tmp / "data",
        "config_path": tmp / "none.toml",
        "connect_timeout": 2.0,
        "read_timeout": 120.0,  # a loaded machine can take a while per prompt
        "backoff_base": 0.1,
        "backoff_cap": 1.0,
        "probe_cap": 1.0,
        "max_reply_tokens": SHORT_REPLIES,
        "handoff_on_exit": False,
    }
    values.update(overrides)
    return Settings(**values)


async def deliver_all(core: Core, timeout: float) -> None:
    await asyncio.wait_for(core.sender.run(until_empty=True), timeout)


async def test_fifteen_turns_with_a_1024_token_window_are_all_answered(
    llama_server: LlamaServer,
    tmp_path: Path,
) -> None:
    """More than the window holds: the oldest turns are dropped, nothing fails.
    The window comes from the server's /props; the estimate is calibrated from usage."""
    settings = real_settings(llama_server, tmp_path)
    topics = [
        "the sea",
        "mountains",
        "rivers",
        "forests",
        "deserts",
        "islands",
        "volcanoes",
        "glaciers",
        "lakes",
        "caves",
        "rain",
        "snow",
        "wind",
        "clouds",
        "stars",
    ]
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(30)
        conversation_id = None
        for topic in topics:
            text = (
                f"Please tell me one short fact about {topic}. I am writing a long school "
                f"report about nature and {topic} is one of its chapters, so be precise."
            )
            sent = await core.sender.submit(conversation_id, text)
            conversation_id = sent.message.conversation_id
        await deliver_all(core, 800)
        assert conversation_id is not None
        messages = await core.store.all_messages(conversation_id)
        conversation = await core.store.get_conversation(conversation_id)
        limit = await core.sender.context.limit_for("smollm2")
    users = [m for m in messages if m.role == "user"]
    replies = [m for m in messages if m.role == "assistant"]
    assert [m.state for m in users] == ["delivered"] * 15
    assert len(replies) == 15 and all(r.state == "complete" for r in replies)
    assert (limit.window, limit.source) == (CONTEXT_TOKENS, "server")
    # The window really was exceeded: the last request left early turns out...
    assert conversation is not None and conversation.context_from_seq is not None
    assert conversation.context_from_seq > users[0].seq
    # ...and every request fitted, by the server's own count.
    prompts = [r.meta["usage"]["prompt_tokens"] for r in replies]
    assert all(p + SHORT_REPLIES <= CONTEXT_TOKENS for p in prompts), prompts


async def test_queued_while_down_then_delivered_in_order(
    llama_server: LlamaServer,
    tmp_path: Path,
) -> None:
    """The CLI queues three questions while the server is down; `sync` delivers
    them in order once it is back, each carrying the earlier replies as context."""
    cli = CliEnv(tmp_path, llama_server.base_url)
    cli.env["CHAT_TUI_MODEL"] = "smollm2"
    cli.write_config(fast_config(read_timeout=120.0, max_reply_tokens=SHORT_REPLIES))
    llama_server.stop()
    try:
        questions = ["What is two plus two?", "And three plus three?", "Thank you!"]
        for i, text in enumerate(questions):
            args = ["send", "--json", *(["--new"] if i == 0 else []), text]
            assert cli.json(*args)["state"] == "queued"
        status = cli.json("status", "--json")
        assert status["counts"]["queued"] == 3
    finally:
        llama_server.start()
    cli.run("sync", "--until-empty", "--timeout", "600", timeout=660, check=True)
    shown = cli.json("show", "1", "--json")
    users = [m for m in shown["messages"] if m["role"] == "user"]
    assert [(m["content"], m["state"]) for m in users] == [(q, "delivered") for q in questions]
    roles = [m["role"] for m in shown["messages"]]
    assert roles == ["user", "assistant"] * 3
    # All three turns fit: the last request carried the whole conversation.
    assert all(m["in_context"] for m in shown["messages"][:-1])


async def test_stop_mid_reply_keeps_what_came(
    llama_server: LlamaServer,
    tmp_path: Path,
) -> None:
    settings = real_settings(llama_server, tmp_path, max_reply_tokens=400)
    events: list[Any] = []
    async with await Core.open(settings, listener=events.append) as core:
        core.start_watching()
        await core.reachability.wait_online(30)
        sent = await core.sender.submit(None, "Write a very long story about a dragon.")
        sender = asyncio.create_task(core.sender.run())
        try:
            deadline = time.monotonic() + 300
            while sum(isinstance(e, ReplyDelta) for e in events) < 3:
                assert time.monotonic() < deadline, "no text from the model"
                await asyncio.sleep(0.05)
            assert await core.sender.stop(sent.message.id)
            while not any(isinstance(e, ReplyStored) for e in events):
                assert time.monotonic() < deadline, "the stop was not stored"
                await asyncio.sleep(0.05)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    # The next turn (a short reply this time) goes out with the partial reply as context.
    async with await Core.open(real_settings(llama_server, tmp_path)) as core:
        core.start_watching()
        await core.reachability.wait_online(30)
        await core.sender.submit(sent.message.conversation_id, "Go on.")
        await deliver_all(core, 300)
        messages = await core.store.all_messages(sent.message.conversation_id)
    stopped = messages[1]
    assert stopped.role == "assistant" and stopped.state == "stopped" and stopped.content
    assert messages[0].state == "delivered"
    received = "".join(e.text for e in events if isinstance(e, ReplyDelta))
    assert received.startswith(stopped.content)
    assert messages[-1].role == "assistant" and messages[-1].state == "complete"


async def test_usage_is_shown_in_the_reply_header(
    llama_server: LlamaServer,
    tmp_path: Path,
) -> None:
    app = ChatApp(real_settings(llama_server, tmp_path))
    async with app.run_test(size=(140, 30)) as pilot:
        deadline = time.monotonic() + 300
        await pilot.press(*"Hello!", "enter")
        while not [v for v in app.query(MessageView) if v.message.role == "assistant"]:
            assert time.monotonic() < deadline, "no reply"
            await pilot.pause(0.1)
        reply = next(v for v in app.query(MessageView) if v.message.role == "assistant")
        usage = reply.message.meta["usage"]
        assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= SHORT_REPLIES
        assert usage["tokens_per_second"] > 0  # llama.cpp's own timings
        header = reply.header_text
        assert f"{usage['prompt_tokens']} → {usage['completion_tokens']} tokens" in header
        assert "tok/s" in header


async def test_no_stream_mode(
    llama_server: LlamaServer,
    tmp_path: Path,
) -> None:
    settings = real_settings(llama_server, tmp_path, stream=False)
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(30)
        sent = await core.sender.submit(None, "Name a colour.")
        second = await core.sender.submit(sent.message.conversation_id, "Another one?")
        await deliver_all(core, 600)
        messages = await core.store.all_messages(sent.message.conversation_id)
        assert (await core.store.get_message(second.message.id)).state == "delivered"
    replies = [m for m in messages if m.role == "assistant"]
    assert len(replies) == 2 and all(r.state == "complete" for r in replies)
    assert all(r.meta["usage"]["completion_tokens"] > 0 for r in replies)


async def test_overflow_from_the_real_server_is_learned_and_trimmed(
    llama_server: LlamaServer,
    tmp_path: Path,
) -> None:
    """A setting that promises more than the server has (4096 vs -c 1024): llama.cpp's
    overflow error is read, its window believed, the request trimmed and resent at once."""
    settings = real_settings(llama_server, tmp_path, context_tokens=4096)
    async with await Core.open(settings) as core:
        store = core.store
        # An earlier conversation of about 2,500 tokens, written as if it had been answered.
        first, _ = await store.enqueue(None, "Tell me about rivers. " * 20)
        cid = first.conversation_id
        for i in range(12):
            message = first if i == 0 else (await store.enqueue(cid, f"More, part {i}. " * 25))[0]
            claim = await store.claim_next("seed", lease_seconds=30)
            assert claim is not None and claim.message.id == message.id
            await store.complete(message.id, "seed", "Rivers flow to the sea. " * 25)
        core.start_watching()
        await core.reachability.wait_online(30)
        sent = await core.sender.submit(cid, "What did we talk about?")
        await deliver_all(core, 300)
        question = await store.get_message(sent.message.id)
        learned = await store.context_limit(settings.base_url, "smollm2")
        conversation = await store.get_conversation(cid)
    assert question is not None and question.state == "delivered" and question.attempts == 0
    assert learned is not None and (learned[0], learned[1]) == (CONTEXT_TOKENS, "error")
    assert conversation is not None and conversation.context_from_seq is not None
    assert conversation.context_from_seq > first.seq  # the oldest turns were left out
