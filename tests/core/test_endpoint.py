"""The endpoint client against a real loopback server that fails on command.

Each failure the network or a provider can produce must land in the right
class (docs/architecture.md step 5), because the class decides whether a message is
retried, failed, or whether delivery pauses.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator

import pytest

from chat_tui.config import Settings
from chat_tui.core import Core
from chat_tui.endpoint import (
    CAP_MARKER,
    AuthError,
    Endpoint,
    PermanentError,
    Reply,
    TransientError,
    UnreachableError,
)
from tests.fault_server import Fault, FaultServer
from tests.helpers import wait_settled, wait_until

pytestmark = pytest.mark.timeout(30)

MESSAGES = [{"role": "user", "content": "hi there"}]


@pytest.fixture
async def endpoint(settings: Settings) -> AsyncIterator[Endpoint]:
    ep = Endpoint(settings)
    try:
        yield ep
    finally:
        await ep.aclose()


async def chat(ep: Endpoint, key: str = "key-1") -> Reply:
    return await ep.chat(MESSAGES, model="test-model", idempotency_key=key)


# -- probe ---------------------------------------------------------------------------------------


async def test_probe_online(endpoint: Endpoint, fault_server: FaultServer) -> None:
    result = await endpoint.probe()
    assert result.state == "online"
    assert fault_server.requests[-1].path == "/v1/models"


async def test_probe_offline_when_server_stopped(
    endpoint: Endpoint, fault_server: FaultServer
) -> None:
    fault_server.stop()
    started = time.monotonic()
    result = await endpoint.probe()
    assert result.state == "offline"
    assert time.monotonic() - started < 3


async def test_probe_captive(endpoint: Endpoint, fault_server: FaultServer) -> None:
    fault_server.mode = "captive"
    assert (await endpoint.probe()).state == "captive"


async def test_probe_auth_error(endpoint: Endpoint, fault_server: FaultServer) -> None:
    fault_server.mode = "auth"
    result = await endpoint.probe()
    assert result.state == "auth_error"
    assert "Incorrect API key" in result.detail


# -- a good reply --------------------------------------------------------------------------------


async def test_stream_reply_and_request_shape(
    endpoint: Endpoint, fault_server: FaultServer
) -> None:
    deltas: list[str] = []
    reply = await endpoint.chat(
        MESSAGES, model="test-model", idempotency_key="abc-123", on_delta=deltas.append
    )
    assert reply.text == "echo: hi there" and reply.finish_reason == "stop"
    assert "".join(deltas) == reply.text and len(deltas) > 1  # really streamed
    assert fault_server.wait_for(lambda rs: rs[-1].outcome != "pending", 5)
    rec = fault_server.requests[-1]
    assert rec.outcome == "completed"
    assert rec.idempotency_key == "abc-123"
    assert rec.body["stream"] is True and rec.body["messages"] == MESSAGES
    assert rec.body["model"] == "test-model"


async def test_non_streaming_mode(settings: Settings, fault_server: FaultServer) -> None:
    ep = Endpoint(settings.replace(stream=False))
    try:
        reply = await chat(ep)
    finally:
        await ep.aclose()
    assert reply.text == "echo: hi there" and reply.finish_reason == "stop"
    rec = fault_server.requests[-1]
    assert fault_server.wait_for(lambda rs: rs[-1].outcome != "pending", 5)
    assert not rec.body.get("stream") and rec.outcome == "completed"


async def test_api_key_sent_as_bearer(settings: Settings, fault_server: FaultServer) -> None:
    ep = Endpoint(settings.replace(api_key="sk-test-xyz"))
    try:
        await chat(ep)
    finally:
        await ep.aclose()
    headers = {k.lower(): v for k, v in fault_server.requests[-1].headers.items()}
    assert headers["authorization"] == "Bearer sk-test-xyz"


# -- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408])
async def test_server_errors_are_transient(
    endpoint: Endpoint, fault_server: FaultServer, status: int
) -> None:
    fault_server.push(Fault("status", status=status))
    with pytest.raises(TransientError) as info:
        await chat(endpoint)
    assert type(info.value) is TransientError
    assert info.value.status == status


async def test_429_with_retry_after_is_transient(
    endpoint: Endpoint, fault_server: FaultServer
) -> None:
    fault_server.push(Fault("status", status=429, headers={"Retry-After": "7"}))
    with pytest.raises(TransientError) as info:
        await chat(endpoint)
    assert type(info.value) is TransientError
    assert info.value.retry_after == 7.0 and info.value.status == 429


async def test_429_insufficient_quota_is_permanent(
    endpoint: Endpoint, fault_server: FaultServer
) -> None:
    body = json.dumps(
        {"error": {"code": "insufficient_quota", "message": "You exceeded your current quota"}}
    )
    fault_server.push(
        Fault("status", status=429, body=body, headers={"Content-Type": "application/json"})
    )
    with pytest.raises(PermanentError) as info:
        await chat(endpoint)
    assert "exceeded your current quota" in info.value.reason


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_client_errors_are_permanent_with_servers_reason(
    endpoint: Endpoint, fault_server: FaultServer, status: int
) -> None:
    body = json.dumps(
        {"error": {"message": f"context too long ({status})", "type": "invalid_request_error"}}
    )
    fault_server.push(
        Fault("status", status=status, body=body, headers={"Content-Type": "application/json"})
    )
    with pytest.raises(PermanentError) as info:
        await chat(endpoint)
    assert f"context too long ({status})" in info.value.reason
    assert str(status) in info.value.reason


async def test_plain_text_error_body_is_the_reason(
    endpoint: Endpoint, fault_server: FaultServer
) -> None:
    fault_server.push(Fault("status", status=400, body="model 'nope' not found"))
    with pytest.raises(PermanentError) as info:
        await chat(endpoint)
    assert "model 'nope' not found" in info.value.reason


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_statuses(endpoint: Endpoint, fault_server: FaultServer, status: int) -> None:
    fault_server.push(Fault("status", status=status))
    with pytest.raises(AuthError):
        await chat(endpoint)


async def test_html_is_captive(endpoint: Endpoint, fault_server: FaultServer) -> None:
    fault_server.push(Fault("html"))
    with pytest.raises(UnreachableError) as info:
        await chat(endpoint)
    assert info.value.captive is True


async def test_connection_refused_is_unreachable(
    endpoint: Endpoint, fault_server: FaultServer
) -> None:
    fault_server.stop()
    with pytest.raises(UnreachableError) as info:
        await chat(endpoint)
    assert info.value.captive is False


async def test_hang_times_out_after_read_timeout(
    endpoint: Endpoint, fault_server: FaultServer, settings: Settings
) -> None:
    fault_server.push(Fault("hang", seconds=10))
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        await chat(endpoint)
    elapsed = time.monotonic() - started
    assert not isinstance(info.value, UnreachableError | PermanentError)
    assert settings.read_timeout - 0.2 <= elapsed < settings.read_timeout + 2
    assert "timeout" in info.value.reason


@pytest.mark.parametrize(
    "fault",
    [
        Fault("reset"),
        Fault("cut", after_chunks=0),
        Fault("cut", after_chunks=2),
        Fault("no_finish"),
        Fault("malformed", after_chunks=0),
        Fault("malformed", after_chunks=2),
    ],
    ids=["reset", "cut0", "cut2", "no_finish", "malformed0", "malformed2"],
)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_broken_replies_are_transient(
    settings: Settings, fault_server: FaultServer, fault: Fault, stream: bool
) -> None:
    ep = Endpoint(settings.replace(stream=stream))
    deltas: list[str] = []
    fault_server.push(fault)
    try:
        with pytest.raises(TransientError) as info:
            await ep.chat(MESSAGES, model="m", idempotency_key="k", on_delta=deltas.append)
    finally:
        await ep.aclose()
    assert not isinstance(info.value, UnreachableError)
    assert fault_server.wait_for(lambda rs: rs[-1].outcome != "pending", 5)
    assert fault_server.requests[-1].outcome == f"fault:{fault.kind}"


# -- what comes back -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_escape_sequences_are_stripped(
    settings: Settings, fault_server: FaultServer, stream: bool
) -> None:
    evil = (
        "Hello \x1b[31mred\x1b[0m world\x1b]0;pwned title\x07!"
        "\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\ \x1b[2J\rend\x9b1m"
    )
    fault_server.push(Fault("reply", text=evil))
    ep = Endpoint(settings.replace(stream=stream))
    try:
        reply = await chat(ep)
    finally:
        await ep.aclose()
    assert reply.text == "Hello red world!link end"
    assert not any(ch in reply.text for ch in "\x1b\x07\r\x9b")


async def test_huge_reply_is_capped_and_labelled(
    settings: Settings, fault_server: FaultServer
) -> None:
    ep = Endpoint(settings.replace(max_reply_chars=100_000))
    fault_server.push(Fault("huge", size=600_000))
    try:
        reply = await chat(ep)
    finally:
        await ep.aclose()
    assert reply.capped is True
    body, _, label = reply.text.partition("\n\n[chat-tui: reply cut at")
    assert body == "x" * 100_000
    assert "100,000 characters" in label and "too long" in label
    assert len(reply.text) < 100_000 + len(CAP_MARKER) + 40


async def test_huge_non_streamed_reply_is_capped(
    settings: Settings, fault_server: FaultServer
) -> None:
    ep = Endpoint(settings.replace(max_reply_chars=100_000, stream=False))
    fault_server.push(Fault("huge", size=150_000))
    try:
        reply = await chat(ep)
    finally:
        await ep.aclose()
    assert reply.capped is True
    assert reply.text.startswith("x" * 100_000 + "\n\n[chat-tui: reply cut at 100,000")


async def test_reply_just_under_the_cap_is_whole(
    settings: Settings, fault_server: FaultServer
) -> None:
    ep = Endpoint(settings.replace(max_reply_chars=100_000))
    fault_server.push(Fault("huge", size=100_000))
    try:
        reply = await chat(ep)
    finally:
        await ep.aclose()
    assert reply.capped is False and reply.text == "x" * 100_000


async def test_endless_stream_is_cut_by_size(settings: Settings, fault_server: FaultServer) -> None:
    ep = Endpoint(settings.replace(max_reply_chars=200))
    fault_server.push(Fault("endless"))
    try:
        reply = await asyncio.wait_for(chat(ep), 10)
    finally:
        await ep.aclose()
    assert reply.capped is True
    assert reply.text.startswith("endless endless")
    assert "too long" in reply.text
    assert len(reply.text.partition("\n\n[chat-tui")[0]) == 200
    # The client hung up: the server's endless loop noticed and stopped.
    assert fault_server.wait_for(lambda rs: rs[-1].outcome != "pending", 5)


async def test_endless_stream_is_cut_by_time(settings: Settings, fault_server: FaultServer) -> None:
    ep = Endpoint(settings.replace(max_reply_seconds=1.0))
    fault_server.push(Fault("endless"))
    started = time.monotonic()
    try:
        reply = await asyncio.wait_for(chat(ep), 10)
    finally:
        await ep.aclose()
    assert 0.9 <= time.monotonic() - started < 5
    assert reply.capped is True and "still streaming" in reply.text
    assert reply.text.startswith("endless ")


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_bad_utf8_delivers_with_nul_removed(
    settings: Settings, fault_server: FaultServer, stream: bool
) -> None:
    ep = Endpoint(settings.replace(stream=stream))
    fault_server.push(Fault("bad_utf8"))
    try:
        reply = await chat(ep)
    finally:
        await ep.aclose()
    assert "\x00" not in reply.text
    assert "bad:" in reply.text and "nul::end" in reply.text
    assert "\ufffd" in reply.text  # invalid bytes shown as replacement characters
    # Nothing else was lost or duplicated around the bad bytes.
    assert re.sub(r"bad:.*?nul::end", "", reply.text, flags=re.S) == "echo: hi there"
    assert reply.finish_reason == "stop"


# -- the idempotency key, end to end -------------------------------------------------------------


async def test_idempotency_key_is_message_key_on_every_attempt(
    core: Core, fault_server: FaultServer
) -> None:
    fault_server.push(Fault("status", status=500), Fault("cut"), Fault("status", status=503))
    result = await core.sender.submit(None, "keyed")
    key = result.message.key
    assert key
    await asyncio.wait_for(core.sender.run(until_empty=True), 15)
    chats = [r for r in fault_server.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 4
    assert {r.headers.get("Idempotency-Key") for r in chats} == {key}
    wait_settled(fault_server)
    assert fault_server.completed_keys()[key] == 1
    await wait_until(lambda: fault_server.queued_faults() == 0, what="faults used up")


async def test_oversized_json_body_fails_once_with_a_reason(fault_server, tmp_path) -> None:
    from chat_tui.endpoint import Endpoint, PermanentError
    from tests.helpers import make_settings

    settings = make_settings(fault_server.base_url, tmp_path, stream=False, max_reply_chars=1000)
    fault_server.reply_fn = lambda body: "y" * 100_000  # beyond 4 × 1000 chars + 64 KiB
    endpoint = Endpoint(settings)
    try:
        with pytest.raises(PermanentError, match="larger than"):
            await endpoint.chat([{"role": "user", "content": "hi"}], model="m", idempotency_key="k")
    finally:
        await endpoint.aclose()


async def test_reachability_survives_a_probe_that_raises(tmp_path) -> None:
    from chat_tui.reachability import Reachability

    class Exploding:
        calls = 0

        async def probe(self):
            Exploding.calls += 1
            raise RuntimeError("boom")

    reach = Reachability(Exploding(), probe_cap=0.2)  # type: ignore[arg-type]
    task = asyncio.create_task(reach.run())
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while Exploding.calls < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert Exploding.calls >= 3 and not task.done()
        assert reach.state == "offline" and "RuntimeError" in reach.current.detail
    finally:
        task.cancel()
