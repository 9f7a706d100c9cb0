"""The context window never kills a conversation (issue: "Real models, long conversations").

Unit tests of fitting and of reading overflow errors, then the real core
against the loopback server with a context window of its own: long
conversations trimmed, overflow errors (llama.cpp, OpenAI, vLLM, LM Studio
wordings) retried at once, limits learned and remembered, and a single turn
too long failing with a reason.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from chat_tui import context
from chat_tui.config import ConfigError, load_settings
from chat_tui.context import fit, parse_overflow
from chat_tui.core import Core
from chat_tui.store import Store
from tests.fault_server import Fault, FaultServer, prompt_tokens
from tests.helpers import make_settings

pytestmark = pytest.mark.timeout(60)


def history(n_pairs: int, size: int = 400) -> list[dict[str, str]]:
    out = []
    for i in range(n_pairs):
        out.append({"role": "user", "content": f"q{i} " + "x" * size})
        out.append({"role": "assistant", "content": f"a{i} " + "y" * size})
    return out


# -- fitting -------------------------------------------------------------------------------------


def test_unknown_window_sends_everything() -> None:
    fitted = fit("sys", history(50), "now?", window=None)
    assert fitted.kept_turns == 50 and fitted.dropped_turns == 0
    assert fitted.messages[0] == {"role": "system", "content": "sys"}
    assert fitted.messages[-1] == {"role": "user", "content": "now?"}


def test_oldest_pairs_dropped_system_and_newest_kept() -> None:
    turns = history(50)
    fitted = fit("be brief", turns, "newest question", window=2048, bytes_per_token=4.0)
    assert 0 < fitted.kept_turns < 50
    assert fitted.kept_turns + fitted.dropped_turns == 50
    sent = fitted.messages
    assert sent[0]["role"] == "system" and sent[-1]["content"] == "newest question"
    # Whole pairs, the newest ones, in order.
    assert sent[1:-1] == turns[2 * fitted.dropped_turns :]
    assert sent[1]["role"] == "user" and sent[-2]["role"] == "assistant"
    # It fits, with room for the reply (25 % of 2048 = 512).
    total = sum(context.estimate_tokens(m["content"], 4.0) for m in sent)
    assert total * context.SAFETY <= 2048 - 512


def test_reply_room_default_and_setting() -> None:
    assert context.reply_room(1024) == 256  # 25 %, at least 256
    assert context.reply_room(8192) == 2048
    assert context.reply_room(600) == 256  # the floor
    assert context.reply_room(400) == 200  # never more than half the window
    assert context.reply_room(8192, 100) == 100


def test_single_turn_too_long_is_flagged_not_dropped() -> None:
    fitted = fit(None, history(3), "z" * 20_000, window=1024)
    assert fitted.too_long and fitted.kept_turns == 0
    assert fitted.messages == [{"role": "user", "content": "z" * 20_000}]


def test_max_turns_trims_harder() -> None:
    fitted = fit(None, history(10, 10), "q", window=100_000, max_turns=3)
    assert fitted.kept_turns == 3 and fitted.dropped_turns == 7


def test_estimate_counts_bytes_not_characters() -> None:
    # CJK text is 3 bytes a character and about a token per character: never underestimated.
    assert context.estimate_tokens("字" * 300) >= 300


# -- reading overflow errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "limit", "requested"),
    [
        (
            "HTTP 400: request (1049 tokens) exceeds the available context size (1024 tokens), "
            "try increasing it",
            1024,
            1049,
        ),
        (
            "HTTP 400: This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9000 tokens. Please reduce the length of the messages.",
            8192,
            9000,
        ),
        (
            "HTTP 400: This model's maximum context length is 2048 tokens. However, you "
            "requested 2100 tokens (2000 in the messages, 100 in the completion).",
            2048,
            2100,
        ),
        (
            "HTTP 400: Trying to keep the first 5000 tokens when context the overflows. However, "
            "the model is loaded with context length of only 4096 tokens, which is not enough.",
            4096,
            5000,
        ),
        ("HTTP 400: prompt is too long: 210000 tokens > 200000 maximum", 200000, 210000),
        ("HTTP 400: the request exceeds the available context size, try increasing it", None, None),
        ("the server failed: context_length_exceeded", None, None),
    ],
    ids=["llama.cpp", "openai", "vllm", "lmstudio", "anthropic", "llama-bare", "code-only"],
)
def test_overflow_errors_are_read(reason: str, limit: int | None, requested: int | None) -> None:
    assert parse_overflow(reason) == context.Overflow(limit, requested)


@pytest.mark.parametrize(
    "reason",
    [
        "HTTP 400: Injected fault: HTTP 400",
        "HTTP 404: model 'x' not found",
        "HTTP 400: max_tokens must be at least 1",
    ],
)
def test_other_errors_are_not_overflow(reason: str) -> None:
    assert parse_overflow(reason) is None


# -- settings -----------------------------------------------------------------------------------


def test_per_model_settings_from_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'context_tokens = 4096\n[models."small:1b"]\ncontext_tokens = 1024\nreply_tokens = 200\n'
    )
    settings = load_settings(environ={"CHAT_TUI_CONFIG": str(config)})
    assert settings.context_tokens == 4096
    assert settings.models == {"small:1b": {"context_tokens": 1024, "reply_tokens": 200}}


@pytest.mark.parametrize(
    "text",
    ['[models."m"]\ncontext = 5\n', '[models."m"]\ncontext_tokens = "big"\n', "models = 3\n"],
)
def test_bad_model_settings_are_named(tmp_path: Path, text: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match="models"):
        load_settings(environ={"CHAT_TUI_CONFIG": str(config)})


# -- the real core against a server with a window ------------------------------------------


async def talk(core: Core, conversation_id: int | None, texts: list[str]) -> int:
    """Queue ``texts`` in one conversation and deliver them all; returns its id."""
    for text in texts:
        result = await core.sender.submit(conversation_id, text)
        conversation_id = result.message.conversation_id
    await asyncio.wait_for(core.sender.run(until_empty=True), 40)
    assert conversation_id is not None
    return conversation_id


def chat_requests(server: FaultServer) -> list:
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


@pytest.mark.parametrize("style", ["llama", "openai", "vllm", "lmstudio", "bare"])
async def test_long_conversation_never_blocked_by_overflow(
    tmp_path: Path, fault_server: FaultServer, style: str
) -> None:
    """The server has a 600-token window and does not say so: the first overflow
    error teaches it; every turn is answered; no attempt is charged."""
    fault_server.context_tokens = 600
    fault_server.overflow_style = style
    settings = make_settings(fault_server.base_url, tmp_path)
    texts = [f"turn {i}: " + "tell me more about the sea " * 8 for i in range(20)]
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        cid = await talk(core, None, texts)
        messages = await core.store.all_messages(cid)
        conversation = await core.store.get_conversation(cid)
    users = [m for m in messages if m.role == "user"]
    assert [m.state for m in users] == ["delivered"] * 20
    assert all(m.attempts == 0 for m in users)
    replies = [m for m in messages if m.role == "assistant"]
    assert len(replies) == 20 and all(m.content.startswith("echo: turn") for m in replies)
    # Every request that was answered fitted; the ones refused were trimmed and resent.
    completed = [r for r in chat_requests(fault_server) if r.outcome == "completed"]
    assert len(completed) == 20
    assert all(prompt_tokens(r.body) <= 600 for r in completed)
    last = completed[-1].body["messages"]
    assert last[-1]["content"] == texts[-1] and len(last) < 2 * 20
    # Overflows were few: after the first, the limit is known (and the numbers calibrate).
    overflows = [r for r in chat_requests(fault_server) if r.outcome == "overflow"]
    assert 1 <= len(overflows) <= (6 if style == "bare" else 3)
    # The marker's data: the last request started somewhere after the first turn.
    assert conversation is not None and conversation.context_from_seq is not None
    assert conversation.context_from_seq > users[0].seq
    assert conversation.context_to_seq == users[-1].seq


async def test_window_from_props_fits_the_first_time_and_is_remembered_offline(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.context_tokens = 700
    fault_server.report_context = True
    settings = make_settings(fault_server.base_url, tmp_path)
    texts = [f"q{i} " + "words and more words " * 10 for i in range(12)]
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        await talk(core, None, texts)
        stored = await core.store.context_limit(settings.base_url, settings.model)
    assert [r.outcome for r in chat_requests(fault_server)] == ["completed"] * 12
    assert stored is not None and stored[0] == 700 and stored[1] == "server"
    assert stored[2] is not None  # the ratio, calibrated from usage.prompt_tokens
    # Another process, the server no longer answering /props: the stored window is used.
    fault_server.report_context = False
    fault_server.requests.clear()
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        limit = await core.sender.context.limit_for(settings.model)
        assert limit.window == 700 and limit.source == "server"
        convs = await core.store.list_conversations()
        await talk(core, convs[0].id, ["and one more " * 10])
    assert [r.outcome for r in chat_requests(fault_server)] == ["completed"]


async def test_setting_beats_server_and_per_model_table(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.context_tokens = 5000
    fault_server.report_context = True
    settings = make_settings(
        fault_server.base_url,
        tmp_path,
        context_tokens=100_000,
        models={"test-model": {"context_tokens": 500}},
    )
    async with await Core.open(settings) as core:
        limit = await core.sender.context.limit_for("test-model")
        assert (limit.window, limit.source) == (500, "setting")
        other = await core.sender.context.limit_for("other-model")
        assert (other.window, other.source) == (100_000, "setting")
    assert not [r for r in fault_server.requests if r.path == "/props"]


async def test_single_turn_too_long_fails_with_a_reason(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.context_tokens = 300
    settings = make_settings(fault_server.base_url, tmp_path)
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        first = await core.sender.submit(None, "short one")
        huge = await core.sender.submit(first.message.conversation_id, "word " * 2000)
        await asyncio.wait_for(core.sender.run(until_empty=True), 30)
        failed = await core.store.get_message(huge.message.id)
    assert failed is not None and failed.state == "failed"
    assert "too long for the model's context window on its own" in (failed.error or "")
    assert "context_tokens" in (failed.error or "")
    # It tried: once with the earlier turn, once alone; never more.
    tries = [r for r in chat_requests(fault_server) if r.outcome == "overflow"]
    assert len(tries) == 2


async def test_one_overflow_naming_a_tiny_window_trims_to_the_newest_turn(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """An overflow error out of the blue (OpenAI wording, a 30-token window): the
    request is resent at once with the newest turn only, and delivered."""
    settings = make_settings(fault_server.base_url, tmp_path)
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        cid = await talk(core, None, ["one", "two"])
        fault_server.push(Fault("overflow", style="openai", size=30))
        await talk(core, cid, ["three"])
        messages = await core.store.all_messages(cid)
    assert [m.state for m in messages if m.role == "user"] == ["delivered"] * 3
    resent = chat_requests(fault_server)[-1].body["messages"]
    assert [m["content"] for m in resent] == ["three"]  # trimmed to the newest turn


async def test_show_json_tells_which_messages_were_in_context(
    tmp_path: Path, fault_server: FaultServer, cli_env
) -> None:
    fault_server.context_tokens = 400
    for i in range(8):
        cli_env.run("send", *(["--new"] if i == 0 else ["-c", "1"]), f"m{i} " + "z" * 300)
    cli_env.run("sync", "--until-empty", "--timeout", "40", check=True)
    shown = cli_env.json("show", "1", "--json")
    flags = [(m["role"], m["in_context"]) for m in shown["messages"]]
    assert flags[-2:] == [("user", True), ("assistant", False)]  # the question; not its reply
    assert flags[0] == ("user", False)  # the oldest turn was not sent
    kept = [m for m in shown["messages"] if m["in_context"]]
    # In order and contiguous: the memory starts at one turn and runs to the question.
    first = shown["messages"].index(kept[0])
    assert all(m["in_context"] for m in shown["messages"][first:-1])
    exported = json.loads(cli_env.run("export", "1", "--format", "json", check=True).stdout)
    assert [m["in_context"] for m in exported["messages"]] == [f for _, f in flags]


async def test_store_remembers_limits_per_endpoint_and_model(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "c.db")
    try:
        await store.save_context_limit("http://a/v1", "m", window=1024, source="error")
        await store.save_context_limit("http://a/v1", "m", bytes_per_token=3.7)
        await store.save_context_limit("http://b/v1", "m", window=8192, source="server")
        assert await store.context_limit("http://a/v1", "m") == (1024, "error", 3.7)
        assert await store.context_limit("http://b/v1", "m") == (8192, "server", None)
        assert await store.context_limit("http://a/v1", "other") is None
    finally:
        await store.close()


async def test_an_overflow_beats_a_setting_that_promises_too_much(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.context_tokens = 500
    settings = make_settings(fault_server.base_url, tmp_path, context_tokens=100_000)
    texts = [f"q{i} " + "some words " * 30 for i in range(8)]
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        cid = await talk(core, None, texts)
    overflows = [r for r in chat_requests(fault_server) if r.outcome == "overflow"]
    assert overflows  # the setting was believed until the server said otherwise
    # The next process starts from what the server said, not from the setting.
    fault_server.requests.clear()
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        limit = await core.sender.context.limit_for(settings.model)
        assert (limit.window, limit.source) == (500, "error")
        await talk(core, cid, ["one more " * 20])
    assert [r.outcome for r in chat_requests(fault_server)] == ["completed"]
