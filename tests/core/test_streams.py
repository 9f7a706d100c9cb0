"""What real servers really send: [DONE] without finish_reason, reasoning deltas and
inline <think>, usage chunks, servers refusing stream_options, and errors inside
200 answers. The real client against the loopback server, plus the core where
the result is stored."""

from __future__ import annotations

import asyncio
import http.client
import json
from pathlib import Path
from typing import Any

import pytest

from chat_tui.config import Settings
from chat_tui.core import Core
from chat_tui.endpoint import (
    AuthError,
    Endpoint,
    PermanentError,
    ThinkSplitter,
    TransientError,
)
from chat_tui.events import ReplyReasoning
from tests.fault_server import Fault, FaultServer
from tests.helpers import make_settings

pytestmark = pytest.mark.timeout(60)

MESSAGES = [{"role": "user", "content": "hi there"}]


async def ask(
    settings: Settings, stream: bool = True
) -> tuple[Any, list[str], list[str], Endpoint]:
    ep = Endpoint(settings.replace(stream=stream))
    deltas: list[str] = []
    thoughts: list[str] = []
    try:
        reply = await ep.chat(
            MESSAGES,
            model="m",
            idempotency_key="k",
            on_delta=deltas.append,
            on_reasoning=thoughts.append,
        )
    finally:
        await ep.aclose()
    return reply, deltas, thoughts, ep


# -- [DONE] and finish_reason --------------------------------------------------------------------


@pytest.mark.parametrize("finish", [None, ""], ids=["null", "empty"])
async def test_done_after_chunks_without_finish_reason_is_a_whole_reply(
    settings: Settings, fault_server: FaultServer, finish: str | None
) -> None:
    fault_server.push(Fault("done_no_finish", finish=finish))
    reply, deltas, _, _ = await ask(settings)
    assert reply.text == "echo: hi there" == "".join(deltas)
    assert reply.finish_reason == "stop"


async def test_neither_done_nor_finish_reason_is_a_cut_stream(
    settings: Settings, fault_server: FaultServer
) -> None:
    fault_server.push(Fault("no_finish"))
    with pytest.raises(TransientError, match="ended before"):
        await ask(settings)


# -- reasoning --------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["reasoning_content", "reasoning", "think"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_reasoning_is_kept_apart_from_the_answer(
    settings: Settings, fault_server: FaultServer, style: str, stream: bool
) -> None:
    fault_server.push(Fault("reasoning", style=style, thinking="First, \x1b[31mconsider."))
    reply, deltas, thoughts, _ = await ask(settings, stream)
    assert reply.text == "echo: hi there" == "".join(deltas)
    assert reply.reasoning == "First, consider." == "".join(thoughts)  # sanitized too
    assert "<think>" not in reply.text


async def test_reasoning_only_reply_is_stored_and_labelled(
    core: Core, fault_server: FaultServer, events: list[Any]
) -> None:
    await core.reachability.wait_online(5)
    fault_server.push(Fault("reasoning", text="", thinking="Hmm, hard to say."))
    sent = await core.sender.submit(None, "what is the answer?")
    await asyncio.wait_for(core.sender.run(until_empty=True), 20)
    messages = await core.store.all_messages(sent.message.conversation_id)
    reply = messages[-1]
    assert reply.role == "assistant" and reply.content == ""
    assert reply.meta["reasoning"] == "Hmm, hard to say."
    assert reply.meta["reasoning_only"] is True
    assert [e.text for e in events if isinstance(e, ReplyReasoning)]
    # Never sent back as context: the next request carries the (empty) answer only.
    await core.sender.submit(sent.message.conversation_id, "and now?")
    await asyncio.wait_for(core.sender.run(until_empty=True), 20)
    last = [r for r in fault_server.requests if r.path == "/v1/chat/completions"][-1]
    assert "Hmm" not in json.dumps(last.body["messages"])


def test_think_splitter_handles_tags_split_across_pieces() -> None:
    splitter = ThinkSplitter()
    text = "  <think>I ponder</think>\nThe answer is <think> literal."
    thinking, answer = "", ""
    for ch in text:
        t, a = splitter.feed(ch)
        thinking += t
        answer += a
    t, a = splitter.flush()
    assert (thinking + t, answer + a) == ("I ponder", "The answer is <think> literal.")


def test_think_splitter_leaves_ordinary_replies_alone() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<thin") == ("", "")
    assert splitter.feed("g>") == ("", "<thing>")
    unclosed = ThinkSplitter()
    assert unclosed.feed("<think>still thinking") == ("still thinking", "")
    assert unclosed.flush() == ("", "")


# -- usage ------------------------------------------------------------------------------------


async def test_usage_is_asked_for_and_read_from_the_usage_only_chunk(
    settings: Settings, fault_server: FaultServer
) -> None:
    reply, _, _, _ = await ask(settings)
    body = fault_server.requests[-1].body
    assert body["stream_options"] == {"include_usage": True}
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 2 + 4  # the server's count: 8 bytes / 4 + 4
    assert reply.usage.completion_tokens == len("echo: hi there") // 4


async def test_a_server_refusing_stream_options_is_asked_again_once_and_remembered(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.reject_stream_options = True
    settings = make_settings(fault_server.base_url, tmp_path)
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        # One conversation, so "two" is sent after "one" is answered: two conversations
        # would race, both asked before the first refusal arrived.
        first = await core.sender.submit(None, "one")
        await core.sender.submit(first.message.conversation_id, "two")
        await asyncio.wait_for(core.sender.run(until_empty=True), 20)
    chats = [r for r in fault_server.requests if r.path == "/v1/chat/completions"]
    assert [("stream_options" in r.body, r.outcome) for r in chats] == [
        (True, "bad_request"),
        (False, "completed"),
        (False, "completed"),
    ]
    # A later process does not ask with it again.
    fault_server.requests.clear()
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        await core.sender.submit(None, "three")
        await asyncio.wait_for(core.sender.run(until_empty=True), 20)
    chats = [r for r in fault_server.requests if r.path == "/v1/chat/completions"]
    assert [("stream_options" in r.body, r.outcome) for r in chats] == [(False, "completed")]


async def test_usage_and_speed_are_stored_with_the_reply(
    core: Core, fault_server: FaultServer
) -> None:
    await core.reachability.wait_online(5)
    fault_server.reply_delay = 0.05
    sent = await core.sender.submit(None, "count the tokens for me please")
    await asyncio.wait_for(core.sender.run(until_empty=True), 20)
    reply = (await core.store.all_messages(sent.message.conversation_id))[-1]
    usage = reply.meta["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["tokens_per_second"] > 0
    assert reply.as_json()["usage"] == usage


# -- errors inside 200 answers -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["error_body", "error_event", "error_data"])
@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, TransientError), (400, PermanentError), (401, AuthError), (429, TransientError)],
)
async def test_errors_inside_200_answers_are_classified(
    settings: Settings, fault_server: FaultServer, kind: str, status: int, expected: type
) -> None:
    fault_server.push(Fault(kind, status=status))
    stream = kind != "error_body"
    with pytest.raises(expected) as info:
        await ask(settings, stream)
    assert "Injected error" in info.value.reason
    if expected is TransientError:
        assert not isinstance(info.value, PermanentError | AuthError)


# -- the fault server's new shapes, on the wire -----------------------------------------------


def raw_chat(port: int, body: dict[str, Any]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            json.dumps(body),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_fault_server_sends_usage_only_chunk_when_asked(fault_server: FaultServer) -> None:
    body = {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    status, text = raw_chat(fault_server.port, body)
    lines = data_lines(text)
    assert status == 200 and lines[-1] == "[DONE]"
    usage_chunk = json.loads(lines[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == 6
    _, plain = raw_chat(fault_server.port, {"messages": MESSAGES, "stream": True})
    assert all('"usage"' not in line for line in data_lines(plain))


def test_fault_server_reasoning_and_done_without_finish(fault_server: FaultServer) -> None:
    fault_server.push(Fault("reasoning", style="reasoning"), Fault("done_no_finish", finish=""))
    _, text = raw_chat(fault_server.port, {"messages": MESSAGES, "stream": True})
    chunks = [json.loads(x) for x in data_lines(text) if x != "[DONE]"]
    assert any("reasoning" in c["choices"][0]["delta"] for c in chunks)
    _, text = raw_chat(fault_server.port, {"messages": MESSAGES, "stream": True})
    lines = data_lines(text)
    finishes = [json.loads(x)["choices"][0]["finish_reason"] for x in lines if x != "[DONE]"]
    assert lines[-1] == "[DONE]" and set(finishes) == {""}


@pytest.mark.parametrize(
    ("style", "words"),
    [
        ("llama", "request (6 tokens) exceeds the available context size (5 tokens)"),
        ("openai", "maximum context length is 5 tokens"),
    ],
)
def test_fault_server_overflow_wordings(fault_server: FaultServer, style: str, words: str) -> None:
    fault_server.context_tokens = 5
    fault_server.overflow_style = style
    status, text = raw_chat(fault_server.port, {"messages": MESSAGES})
    assert status == 400 and words in json.loads(text)["error"]["message"]
    if style == "openai":
        assert json.loads(text)["error"]["code"] == "context_length_exceeded"
    fault_server.context_tokens = 1000
    status, _ = raw_chat(fault_server.port, {"messages": MESSAGES})
    assert status == 200
