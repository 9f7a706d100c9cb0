"""Regenerate, edit and branch: earlier versions are kept, nothing is deleted, and a
regenerate takes the one outbox path (so it survives kill -9 and is sent once)."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chat_tui.core import Core
from chat_tui.store import Message, StoreError
from tests.fault_server import Fault, FaultServer
from tests.helpers import CliEnv, wait_settled, wait_until


async def _delivered(core: Core, message_id: int) -> Message:
    async def done() -> bool:
        m = await core.store.get_message(message_id)
        return m is not None and m.state == "delivered"

    await wait_until(done, what=f"message {message_id} delivered")
    message = await core.store.get_message(message_id)
    assert message is not None
    return message


async def _two_turns(core: Core) -> tuple[int, Message, Message]:
    core.start_delivery()
    first = (await core.sender.submit(None, "first question")).message
    await _delivered(core, first.id)
    second = (await core.sender.submit(first.conversation_id, "second question")).message
    await _delivered(core, second.id)
    return first.conversation_id, first, second


def _chat_requests(server: FaultServer) -> list[Any]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


async def test_regenerate_keeps_the_old_reply_and_switching_changes_the_context(
    core: Core, fault_server: FaultServer
) -> None:
    cid, _first, second = await _two_turns(core)
    replies = iter(["a better answer", "the third answer"])
    fault_server.reply_fn = lambda body: next(replies, "later")
    again = await core.sender.resend(second.id)
    assert again.state == "queued" and again.key != second.key  # a new request
    await _delivered(core, second.id)
    request = _chat_requests(fault_server)[-1]
    assert request.idempotency_key == again.key
    # The request carries the turns before it, not the reply being replaced.
    assert [m["content"] for m in request.body["messages"]] == [
        "first question",
        "echo: first question",
        "second question",
    ]
    messages = await core.store.all_messages(cid)
    assert messages[-1].content == "a better answer"
    shown = await core.store.get_message(second.id)
    assert shown is not None and shown.meta == {"version": 2, "versions": 2}
    versions = await core.store.turn_versions(cid)
    assert [(v["version"], v["reply"]) for v in versions[second.seq]] == [
        (1, "echo: second question")
    ]
    # Switch back to version 1: it is what the next request carries.
    await core.store.show_version(second.id, 1)
    assert (await core.store.all_messages(cid))[-1].content == "echo: second question"
    third = (await core.sender.submit(cid, "third")).message
    await _delivered(core, third.id)
    contents = [m["content"] for m in _chat_requests(fault_server)[-1].body["messages"]]
    assert "echo: second question" in contents and "a better answer" not in contents
    # Both versions are still there to switch to.
    versions = await core.store.turn_versions(cid)
    assert {v["reply"] for v in versions[second.seq]} == {
        "echo: second question",
        "a better answer",
    }


async def test_only_the_last_answered_turn_is_regenerated_in_place(core: Core) -> None:
    _cid, first, _second = await _two_turns(core)
    with pytest.raises(StoreError, match="branch"):
        await core.store.resend_turn(first.id)
    queued = (await core.sender.submit(first.conversation_id, "x")).message
    with pytest.raises(StoreError):
        await core.store.resend_turn(queued.id)  # not answered yet


async def test_editing_the_last_message_replaces_the_turn_keeping_the_old_one(
    core: Core, fault_server: FaultServer
) -> None:
    cid, _first, second = await _two_turns(core)
    await core.sender.resend(second.id, text="second question, reworded")
    await _delivered(core, second.id)
    messages = await core.store.all_messages(cid)
    assert [m.content for m in messages[-2:]] == [
        "second question, reworded",
        "echo: second question, reworded",
    ]
    (old,) = (await core.store.turn_versions(cid))[second.seq]
    assert old["question"] == "second question" and old["reply"] == "echo: second question"


async def test_editing_an_earlier_message_makes_a_linked_branch(
    core: Core, fault_server: FaultServer
) -> None:
    cid, _first, second = await _two_turns(core)
    third = (await core.sender.submit(cid, "third question")).message
    await _delivered(core, third.id)
    before = [(m.role, m.content) for m in await core.store.all_messages(cid)]
    edited = await core.store.branch(second.id, "second, asked differently")
    core.sender.wake()
    branch = await core.store.get_conversation(edited.conversation_id)
    assert branch is not None and branch.id != cid
    assert branch.title == "first question (branch)"
    assert (branch.branch_of, branch.branch_seq) == (cid, second.seq)
    await _delivered(core, edited.id)
    assert [(m.role, m.content) for m in await core.store.all_messages(branch.id)] == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second, asked differently"),
        ("assistant", "echo: second, asked differently"),
    ]
    request = _chat_requests(fault_server)[-1]
    assert [m["content"] for m in request.body["messages"]] == [
        "first question",
        "echo: first question",
        "second, asked differently",
    ]
    # The original is untouched.
    assert [(m.role, m.content) for m in await core.store.all_messages(cid)] == before


# -- through the CLI, across processes ---------------------------------------------------------


def _db(cli: CliEnv, sql: str) -> list[sqlite3.Row]:
    con = sqlite3.connect(cli.db_path)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _send_and_deliver(cli: CliEnv, text: str, *extra: str) -> dict[str, Any]:
    sent = cli.json("send", "--json", *extra, text)
    cli.run("sync", "--until-empty", "--timeout", "30", check=True)
    return sent


def test_regenerate_killed_mid_stream_is_delivered_once_after_restart(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    cli_env.write_config(cli_env.config_path.read_text() + "lease_seconds = 1\n")
    sent = _send_and_deliver(cli_env, "tell me about tides", "--new")
    mid = sent["message_id"]
    out = cli_env.run("regenerate", str(mid), check=True).stdout
    assert "queued again" in out
    (row,) = _db(cli_env, f"SELECT key FROM messages WHERE id = {mid}")
    key = row["key"]
    fault_server.push(Fault("slow", seconds=0.5))
    proc = cli_env.popen("sync", "--until-empty", "--timeout", "60")
    try:
        started = fault_server.wait_for(
            lambda rs: any(r.idempotency_key == key and r.outcome == "pending" for r in rs), 15
        )
        assert started, "the regenerate was never sent"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.communicate()
    assert fault_server.wait_for(lambda rs: all(r.outcome != "pending" for r in rs), 10)
    assert fault_server.completed_keys()[key] == 0
    done = cli_env.run("sync", "--until-empty", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    wait_settled(fault_server)
    assert fault_server.completed_keys()[key] == 1
    shown = cli_env.json("show", str(sent["conversation_id"]), "--json")
    user, reply = shown["messages"]
    assert user["version"] == 2 and reply["content"] == "echo: tell me about tides"
    assert [v["version"] for v in user["versions"]] == [1]
    assert user["versions"][0]["reply"] == "echo: tell me about tides"
    rows = _db(cli_env, "SELECT COUNT(*) AS n FROM messages WHERE role = 'assistant'")
    assert rows[0]["n"] == 1  # one reply shown; the earlier one lives on as version 1


def test_versions_and_branch_links_survive_export_and_import(
    cli_env: CliEnv, fault_server: FaultServer, tmp_path: Path
) -> None:
    replies = iter(["reply A", "reply B", "reply C", "reply D", "reply E"])
    fault_server.reply_fn = lambda body: next(replies, "more")
    sent = _send_and_deliver(cli_env, "question one", "--new")
    cid = sent["conversation_id"]
    second = _send_and_deliver(cli_env, "question two", "-c", str(cid))
    cli_env.run("regenerate", str(second["message_id"]), check=True)
    cli_env.run("sync", "--until-empty", "--timeout", "30", check=True)
    out = cli_env.run("edit", str(sent["message_id"]), "question one, edited", check=True).stdout
    assert "branch" in out
    cli_env.run("sync", "--until-empty", "--timeout", "30", check=True)
    listed = cli_env.json("list", "--json")
    branch_id = max(c["id"] for c in listed)
    branch = cli_env.json("show", str(branch_id), "--json")
    assert branch["branch_of"] == cid and branch["title"] == "question one (branch)"

    exported = tmp_path / "export.json"
    cli_env.run("export", str(cid), "--format", "json", "-o", str(exported), check=True)
    data = json.loads(exported.read_text())
    assert data["messages"][2]["version"] == 2
    assert data["messages"][2]["versions"][0]["reply"] == "reply B"
    markdown = cli_env.run("export", str(cid), check=True).stdout
    assert "Version 1 of 2" in markdown and "reply B" in markdown

    out = cli_env.run("import", str(exported), check=True).stdout
    new_id = int(out.rsplit(" ", 1)[1])
    imported = cli_env.json("show", str(new_id), "--json")
    strip = ("id", "created_at", "in_context")
    assert [{k: v for k, v in m.items() if k not in strip} for m in imported["messages"]] == [
        {k: v for k, v in m.items() if k not in strip} for m in data["messages"]
    ]
    # The imported turn still switches between its versions.
    user_two = imported["messages"][2]["id"]
    cli_env.run("version", str(user_two), "1", check=True)
    again = cli_env.json("show", str(new_id), "--json")
    assert again["messages"][3]["content"] == "reply B"
    assert again["messages"][2]["version"] == 1
    assert [v["reply"] for v in again["messages"][2]["versions"]] == ["reply C"]
