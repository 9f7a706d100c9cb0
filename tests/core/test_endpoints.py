"""Named endpoints and the fallback answer, against two real loopback servers: one
plays the cloud endpoint, the other the local model (and the real llama.cpp server
as the local model, when it is prepared).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_tui.config import ConfigError, EndpointConfig, Settings, load_settings
from chat_tui.core import Core
from chat_tui.events import LocalAnswerDelta, LocalAnswerEnded, LocalAnswerStarted
from chat_tui.store import Message
from tests.fault_server import Fault, FaultServer
from tests.helpers import make_settings, wait_until

LOCAL_TEXT = "LOCAL-ANSWER-7f3a the local model's view"


@pytest.fixture
def cloud() -> Iterator[FaultServer]:
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def local() -> Iterator[FaultServer]:
    server = FaultServer().start()
    server.reply_fn = lambda body: LOCAL_TEXT
    try:
        yield server
    finally:
        server.stop()


def two_endpoints(tmp: Path, cloud_url: str, local_url: str, **extra: Any) -> Settings:
    endpoints = {
        "cloud": EndpointConfig(cloud_url, model="cloud-model"),
        "local": EndpointConfig(local_url, model="local-model"),
    }
    return make_settings(local_url, tmp, endpoints=endpoints, fallback="local", **extra)


@pytest.fixture
async def duo(
    tmp_path: Path, cloud: FaultServer, local: FaultServer
) -> AsyncIterator[tuple[Core, list[Any]]]:
    events: list[Any] = []
    core = await Core.open(
        two_endpoints(tmp_path, cloud.base_url, local.base_url), listener=events.append
    )
    try:
        core.start_watching()
        core.start_delivery()
        yield core, events
    finally:
        await core.close()


async def _message(core: Core, message_id: int) -> Message:
    message = await core.store.get_message(message_id)
    assert message is not None
    return message


def _bodies(server: FaultServer) -> list[str]:
    return [json.dumps(r.body) for r in server.requests if r.path.endswith("/chat/completions")]


async def _first_turn_on_cloud(core: Core) -> int:
    first = await core.sender.submit(None, "what is a lighthouse", endpoint="cloud")
    cid = first.message.conversation_id

    async def delivered() -> bool:
        return (await _message(core, first.message.id)).state == "delivered"

    await wait_until(delivered, what="the first question delivered by the cloud")
    return cid


def _cable_pulled(core: Core, cloud: FaultServer) -> None:
    """The cloud endpoint goes away, and its watcher knows at once."""
    cloud.stop()
    core.links.get("cloud").reachability.report_unreachable("cable pulled")


# -- config ---------------------------------------------------------------------------------------


def test_endpoint_tables_load_with_the_key_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'model = "flat-model"\nfallback = "local"\n'
        '[endpoints.cloud]\nbase_url = "https://api.example.com/v1/"\n'
        'api_key_env = "CLOUD_KEY"\nmodel = "gpt-x"\n'
        '[endpoints.local]\nbase_url = "http://127.0.0.1:11434/v1"\n'
    )
    env = {"CHAT_TUI_CONFIG": str(config), "CLOUD_KEY": "sk-secret"}
    import os

    old = os.environ.get("CLOUD_KEY")
    os.environ["CLOUD_KEY"] = "sk-secret"
    try:
        settings = load_settings(environ=env)
        cloud = settings.for_endpoint("cloud")
    finally:
        if old is None:
            del os.environ["CLOUD_KEY"]
        else:
            os.environ["CLOUD_KEY"] = old
    assert settings.endpoint_names == ["default", "cloud", "local"]
    assert settings.model == "flat-model"  # the flat keys stay the default endpoint
    assert cloud.base_url == "https://api.example.com/v1"
    assert cloud.api_key == "sk-secret" and cloud.model == "gpt-x"
    assert settings.for_endpoint("local").model == "flat-model"  # no model: the default's
    assert "sk-secret" not in repr(settings.endpoints)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[endpoints.x]\nbase_url = "http://h/v1"\napi_key = "sk"\n', "api_key_env"),
        ("[endpoints.x]\nmodel = 'm'\n", "needs a base_url"),
        ('[endpoints.x]\nbase_url = "ftp://h"\n', "http://"),
        ('[endpoints.x]\nbase_url = "http://h/v1"\ncolour = "red"\n', "unknown setting"),
        ('fallback = "nowhere"\n', "names no endpoint"),
        ('[endpoints.default]\nbase_url = "http://h/v1"\n', "flat"),
    ],
)
def test_bad_endpoint_tables_say_why(tmp_path: Path, text: str, words: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_settings(environ={"CHAT_TUI_CONFIG": str(config)})


# -- one outbox, several endpoints --------------------------------------------------------------


async def test_an_offline_endpoint_holds_only_its_own_conversations(
    duo: tuple[Core, list[Any]], cloud: FaultServer, local: FaultServer
) -> None:
    core, _ = duo
    cloud.stop()
    on_cloud = await core.sender.submit(None, "for the cloud", endpoint="cloud")
    on_local = await core.sender.submit(None, "for the local one", endpoint="local")

    async def local_delivered() -> bool:
        return (await _message(core, on_local.message.id)).state == "delivered"

    await wait_until(local_delivered, what="the local conversation delivered")
    await wait_until(
        lambda: core.links.get("cloud").reachability.state == "offline", what="cloud offline"
    )
    assert (await _message(core, on_cloud.message.id)).state == "queued"
    assert not any("for the cloud" in b for b in _bodies(local))  # never sent elsewhere
    cloud.start()

    async def cloud_delivered() -> bool:
        return (await _message(core, on_cloud.message.id)).state == "delivered"

    await wait_until(cloud_delivered, timeout=15, what="the cloud conversation delivered")
    assert cloud.completed_keys()[on_cloud.message.key] == 1
    (request,) = [r for r in cloud.requests if r.path.endswith("/chat/completions")]
    assert request.body["model"] == "cloud-model"


async def test_moving_a_conversation_sends_its_queue_to_the_new_endpoint(
    duo: tuple[Core, list[Any]], cloud: FaultServer, local: FaultServer
) -> None:
    core, _ = duo
    cloud.stop()
    queued = await core.sender.submit(None, "move me", endpoint="cloud")
    await core.store.set_endpoint(queued.message.conversation_id, "local")
    core.sender.wake()

    async def delivered() -> bool:
        return (await _message(core, queued.message.id)).state == "delivered"

    await wait_until(delivered, what="delivered by the endpoint it moved to")
    assert local.completed_keys()[queued.message.key] == 1


# -- the fallback answer ------------------------------------------------------------------------


async def test_fallback_answers_at_once_and_the_primary_never_sees_it(
    duo: tuple[Core, list[Any]], cloud: FaultServer, local: FaultServer
) -> None:
    core, events = duo
    cid = await _first_turn_on_cloud(core)
    _cable_pulled(core, cloud)
    result = await core.sender.submit(cid, "and a second question about lighthouses")
    question = result.message

    notice = await asyncio.wait_for(core.answer_while_offline(question), 10)
    assert notice is not None and notice.role == "notice"
    assert notice.content == LOCAL_TEXT
    assert notice.meta["kind"] == "fallback_answer"
    assert notice.meta["label"] == "answered by local-model on local while cloud is offline"
    started = [e for e in events if isinstance(e, LocalAnswerStarted)]
    assert started and started[0].label == notice.meta["label"]
    assert "".join(e.text for e in events if isinstance(e, LocalAnswerDelta)) == LOCAL_TEXT
    assert any(isinstance(e, LocalAnswerEnded) and e.notice == notice for e in events)
    # The local model got the conversation so far, under its own key.
    (asked,) = [r for r in local.requests if r.path.endswith("/chat/completions")]
    contents = [m["content"] for m in asked.body["messages"]]
    assert contents[0] == "what is a lighthouse" and contents[-1] == question.content
    assert asked.body["model"] == "local-model"
    assert asked.idempotency_key != question.key
    # Still queued for the cloud; it goes out when the cloud is back.
    assert (await _message(core, question.id)).state in ("queued", "sending")
    cloud.start()

    async def delivered() -> bool:
        return (await _message(core, question.id)).state == "delivered"

    await wait_until(delivered, timeout=15, what="the real reply from the cloud")
    messages = await core.store.all_messages(cid)
    order = [(m.role, m.meta.get("kind")) for m in messages if m.seq >= question.seq]
    assert order == [("user", None), ("notice", "fallback_answer"), ("assistant", None)]
    assert messages[-1].content == f"echo: {question.content}"
    for body in _bodies(cloud):
        assert "LOCAL-ANSWER-7f3a" not in body
    assert cloud.completed_keys()[question.key] == 1
    # …and later requests never carry it either.
    third = await core.sender.submit(cid, "a third one")

    async def third_delivered() -> bool:
        return (await _message(core, third.message.id)).state == "delivered"

    await wait_until(third_delivered, what="the third question delivered")
    last = [r for r in cloud.requests if r.path.endswith("/chat/completions")][-1]
    assert len(last.body["messages"]) == 5  # two earlier turns and the question
    assert all("LOCAL-ANSWER" not in m["content"] for m in last.body["messages"])


async def test_history_answers_come_first_and_both_down_means_only_the_queue(
    duo: tuple[Core, list[Any]], cloud: FaultServer, local: FaultServer
) -> None:
    core, _ = duo
    cid = await _first_turn_on_cloud(core)
    _cable_pulled(core, cloud)
    # A question asked before: history answers, the local model is not asked.
    again = await core.sender.submit(cid, "What is a lighthouse?")
    notice = await core.answer_while_offline(again.message)
    assert notice is not None and notice.meta["kind"] == "offline_answer"
    assert _bodies(local) == []
    # Both down: no local answer, the question waits in the queue.
    local.stop()
    core.links.get("local").reachability.report_unreachable("no local server")
    fresh = await core.sender.submit(cid, "something never asked before, about tides")
    assert await core.answer_while_offline(fresh.message) is None
    assert (await _message(core, fresh.message.id)).state in ("queued", "sending")
    kinds = [m.meta.get("kind") for m in await core.store.all_messages(cid)]
    assert "fallback_answer" not in kinds


async def test_a_failing_fallback_changes_nothing_for_the_queued_question(
    duo: tuple[Core, list[Any]], cloud: FaultServer, local: FaultServer
) -> None:
    core, events = duo
    cid = await _first_turn_on_cloud(core)
    _cable_pulled(core, cloud)
    local.push(Fault("cut", after_chunks=1))
    question = (await core.sender.submit(cid, "a question the local model chokes on")).message
    assert await core.answer_while_offline(question) is None
    assert any(isinstance(e, LocalAnswerEnded) and e.error for e in events)
    assert (await _message(core, question.id)).state in ("queued", "sending")
    cloud.start()

    async def delivered() -> bool:
        return (await _message(core, question.id)).state == "delivered"

    await wait_until(delivered, timeout=15, what="the cloud reply after a failed fallback")
    assert [m.role for m in await core.store.all_messages(cid)][-2:] == ["user", "assistant"]


async def test_keeping_the_local_answer_cancels_the_question(
    duo: tuple[Core, list[Any]], cloud: FaultServer, local: FaultServer
) -> None:
    core, _ = duo
    cid = await _first_turn_on_cloud(core)
    _cable_pulled(core, cloud)
    question = (await core.sender.submit(cid, "good enough from the local model?")).message
    assert await core.answer_while_offline(question) is not None
    kept = await core.sender.cancel(question.id)  # the TUI's key and `chat-tui cancel`
    assert kept.state == "cancelled"
    cloud.start()
    await wait_until(
        lambda: core.links.get("cloud").reachability.online, timeout=15, what="cloud back"
    )
    after = await core.sender.submit(cid, "next question")

    async def delivered() -> bool:
        return (await _message(core, after.message.id)).state == "delivered"

    await wait_until(delivered, what="the next question delivered")
    assert question.key not in cloud.completed_keys()
    assert not any("good enough" in b for b in _bodies(cloud))
    notices = [m for m in await core.store.all_messages(cid) if m.role == "notice"]
    assert [n.content for n in notices] == [LOCAL_TEXT]  # the local answer is kept


async def test_the_fallback_answer_can_be_stopped_and_keeps_what_came(
    duo: tuple[Core, list[Any]], cloud: FaultServer, local: FaultServer
) -> None:
    core, events = duo
    local.reply_delay = 0.2  # a slow local model: each piece 0.2 s apart
    local.reply_fn = lambda body: "one two three four five six seven eight nine ten " * 3
    cid = await _first_turn_on_cloud(core)
    _cable_pulled(core, cloud)
    question = (await core.sender.submit(cid, "tell me slowly")).message
    task = asyncio.ensure_future(core.answer_while_offline(question))
    await wait_until(
        lambda: any(isinstance(e, LocalAnswerDelta) for e in events), what="a first piece"
    )
    assert core.stop_fallback(question.id)
    notice = await asyncio.wait_for(task, 5)
    assert notice is not None and notice.meta.get("stopped") is True
    assert 0 < len(notice.content) < len("one two three four five six seven eight nine ten " * 3)


# -- the real local model ---------------------------------------------------------------------


@pytest.mark.slow  # a real model answering
async def test_real_llama_server_answers_while_the_cloud_is_away(
    tmp_path: Path,
    cloud: FaultServer,
    llama_server: Any,
) -> None:
    settings = make_settings(
        cloud.base_url,
        tmp_path,
        endpoints={"local": EndpointConfig(llama_server.base_url, model="smollm2")},
        fallback="local",
        read_timeout=60.0,
    )
    events: list[Any] = []
    async with await Core.open(settings, listener=events.append) as core:
        core.start_watching()
        core.start_delivery()
        first = await core.sender.submit(None, "Say hello.")
        cid = first.message.conversation_id

        async def delivered(mid: int) -> bool:
            return (await _message(core, mid)).state == "delivered"

        await wait_until(lambda: delivered(first.message.id), what="first reply from the cloud")
        cloud.stop()
        core.reachability.report_unreachable("cable pulled")
        await wait_until(
            lambda: core.links.get("local").reachability.online, timeout=30, what="llama up"
        )
        question = (await core.sender.submit(cid, "Name a colour of the sky.")).message
        notice = await asyncio.wait_for(core.answer_while_offline(question), 60)
        assert notice is not None and notice.content.strip()
        assert notice.meta["label"] == "answered by smollm2 on local while default is offline"
        assert any(isinstance(e, LocalAnswerDelta) for e in events)
        cloud.start()
        await wait_until(lambda: delivered(question.id), timeout=20, what="the cloud's reply")
        for body in _bodies(cloud):
            assert notice.content not in body


def test_send_wait_prints_the_fallback_answer_and_models_lists_from_cache(
    tmp_path: Path, cloud: FaultServer, local: FaultServer
) -> None:
    from tests.helpers import CliEnv, fast_config

    cli = CliEnv(tmp_path, cloud.base_url)
    cli.write_config(
        'fallback = "local"\n'
        + fast_config()
        + f'[endpoints.local]\nbase_url = "{local.base_url}"\nmodel = "local-model"\n'
    )
    listed = cli.json("models", "--json")
    assert listed["models"] == ["test-model"] and listed["cached"] is False
    cloud.stop()
    proc = cli.run("send", "--wait", "--timeout", "4", "--new", "a question while away")
    assert proc.returncode == 5, proc.stderr  # offline: the question stays queued
    assert "[answered by local-model on local while default is offline]" in proc.stderr
    assert LOCAL_TEXT in proc.stderr
    cached = cli.json("models", "--json")
    assert cached["cached"] is True and cached["models"] == ["test-model"]
    assert cached["age_seconds"] >= 0
    text = cli.run("models")
    assert "cached" in text.stderr and "test-model" in text.stdout
    bad = cli.run("models", "--endpoint", "nowhere")
    assert bad.returncode == 2 and "no endpoint named" in bad.stderr
    status = cli.json("status", "--json")
    assert status["endpoints"]["local"]["state"] == "online"
    assert status["counts"]["queued"] == 1
