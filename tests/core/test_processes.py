"""Several real processes sharing one database; processes that die mid-stream.

The leases in the outbox are what make "any number of processes share the
database; only the lease holder sends" (docs/architecture.md step 2) true. These tests
run `python -m chat_tui sync` processes against the loopback fault server and
check, at the server and in the database, that every message went out exactly
once and in order.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import sqlite3
import subprocess
from collections import defaultdict

import pytest

from chat_tui.store import Store
from tests.fault_server import Fault, FaultServer
from tests.helpers import CliEnv, wait_settled, wait_until_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]  # the slow tier: pytest -m slow


def seed(cli: CliEnv, conversations: int, per_conversation: int) -> dict[str, tuple[int, str]]:
    """Queue messages straight into the CLI's database: key -> (conversation, text)."""

    async def run() -> dict[str, tuple[int, str]]:
        store = await Store.open(cli.db_path)
        out: dict[str, tuple[int, str]] = {}
        try:
            for c in range(conversations):
                cid = None
                for i in range(per_conversation):
                    m, _ = await store.enqueue(cid, f"conv{c} msg{i}")
                    cid = m.conversation_id
                    assert m.key is not None
                    out[m.key] = (cid, m.content)
        finally:
            await store.close()
        return out

    return asyncio.run(run())


def db_rows(cli: CliEnv, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(cli.db_path, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def assert_db_delivered_once(cli: CliEnv, expected: int) -> None:
    users = db_rows(cli, "SELECT * FROM messages WHERE role = 'user' ORDER BY id")
    assert len(users) == expected
    assert {u["state"] for u in users} == {"delivered"}
    for u in users:
        replies = db_rows(
            cli, "SELECT * FROM messages WHERE role = 'assistant' AND reply_to = ?", (u["id"],)
        )
        assert len(replies) == 1, u["content"]
        assert replies[0]["content"] == f"echo: {u['content']}"  # whole, never partial
        assert replies[0]["seq"] == u["seq"] + 5
    assert db_rows(cli, "SELECT COUNT(*) FROM outbox")[0][0] == 0


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process did not finish in {timeout} s\nstdout: {out}\nstderr: {err}")
    return proc.returncode, out, err


def test_two_sync_processes_deliver_each_message_once(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    messages = seed(cli_env, conversations=8, per_conversation=5)
    fault_server.reply_delay = 0.06  # ~0.3 s per reply: the two processes overlap
    procs = [cli_env.popen("sync", "--until-empty", "--timeout", "60") for _ in range(2)]
    results = [finish(p) for p in procs]
    for code, out, err in results:
        assert code == 0, (out, err)
        assert "Traceback" not in err
    delivered = [int(re.search(r"delivered (\d+)", out)[1]) for _, out, _ in results]
    assert sum(delivered) == 40
    assert all(n > 0 for n in delivered), f"one process did all the work: {delivered}"

    wait_settled(fault_server)
    completed = fault_server.completed_keys()
    assert set(completed) == set(messages)
    assert set(completed.values()) == {1}
    assert_db_delivered_once(cli_env, 40)

    # In order per conversation, even across processes: a conversation's
    # requests never overlap, and each carries the full history before it.
    by_conv: dict[int, list] = defaultdict(list)
    for r in fault_server.requests:
        if r.path == "/v1/chat/completions":
            by_conv[messages[r.idempotency_key][0]].append(r)
    for reqs in by_conv.values():
        reqs.sort(key=lambda r: r.started)
        for earlier, later in itertools.pairwise(reqs):
            assert later.started >= earlier.finished
        texts = [messages[r.idempotency_key][1] for r in reqs]
        assert texts == sorted(texts, key=lambda t: int(t.rsplit("msg", 1)[1]))
        for r in reqs:
            users = [m["content"] for m in r.body["messages"] if m["role"] == "user"]
            assert users == texts[: texts.index(messages[r.idempotency_key][1]) + 1]


def _start_slow_sync(cli: CliEnv, fault_server: FaultServer) -> tuple[subprocess.Popen, str]:
    cli.write_config(cli.config_path.read_text() + "lease_seconds = 1\n")
    (key,) = seed(cli, conversations=1, per_conversation=1)
    fault_server.push(Fault("slow", seconds=0.5))
    proc = cli.popen("sync", "--until-empty", "--timeout", "60")
    started = fault_server.wait_for(
        lambda rs: any(r.idempotency_key == key and r.outcome == "pending" for r in rs), 15
    )
    if not started:
        proc.kill()
        pytest.fail(f"the sync process never sent: {proc.communicate()}")
    return proc, key


def test_kill_9_mid_stream_then_restart_delivers_once(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    proc, key = _start_slow_sync(cli_env, fault_server)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.communicate()
    # The dead process held the lease: its message is still "sending".
    (row,) = db_rows(
        cli_env,
        "SELECT m.state, o.lease_owner FROM messages m JOIN outbox o ON o.message_id = m.id",
    )
    assert row["state"] == "sending" and row["lease_owner"]
    # The server notices the dead client; the stream never completed.
    assert fault_server.wait_for(lambda rs: all(r.outcome != "pending" for r in rs), 10)
    assert fault_server.completed_keys()[key] == 0

    code, out, err = finish(cli_env.popen("sync", "--until-empty", "--timeout", "30"))
    assert code == 0, (out, err)
    assert "delivered 1" in out
    wait_settled(fault_server)
    assert fault_server.completed_keys()[key] == 1
    assert_db_delivered_once(cli_env, 1)
    chats = [r for r in fault_server.requests if r.path == "/v1/chat/completions"]
    assert [r.idempotency_key for r in chats] == [key, key]


def test_sigterm_releases_the_lease(cli_env: CliEnv, fault_server: FaultServer) -> None:
    proc, key = _start_slow_sync(cli_env, fault_server)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, 15)
    assert code == 0 and "Traceback" not in err, (out, err)
    (row,) = db_rows(
        cli_env,
        "SELECT m.state, o.lease_owner, o.attempts FROM messages m "
        "JOIN outbox o ON o.message_id = m.id",
    )
    assert (row["state"], row["lease_owner"], row["attempts"]) == ("queued", None, 0)
    assert fault_server.completed_keys()[key] == 0
    # The next sync needs no lease to run out.
    code, out, err = finish(cli_env.popen("sync", "--until-empty", "--timeout", "30"))
    assert code == 0, (out, err)
    assert_db_delivered_once(cli_env, 1)
    wait_until_sync(lambda: fault_server.completed_keys()[key] == 1, what="completed")


def test_lease_is_renewed_during_a_long_reply(cli_env: CliEnv, fault_server: FaultServer) -> None:
    """A reply that streams for longer than lease_seconds is not taken over by
    a second process: the holder keeps renewing its lease."""
    first, key = _start_slow_sync(cli_env, fault_server)  # ~2.5 s stream, 1 s lease
    second = cli_env.popen("sync", "--until-empty", "--timeout", "30")
    for proc in (first, second):
        code, out, err = finish(proc, 30)
        assert code == 0, (out, err)
    wait_settled(fault_server)
    chats = [r for r in fault_server.requests if r.path == "/v1/chat/completions"]
    assert [(r.idempotency_key, r.outcome) for r in chats] == [(key, "completed")]
    assert_db_delivered_once(cli_env, 1)
