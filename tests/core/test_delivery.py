"""End-to-end delivery: the real core, a real SQLite file, a real loopback server.

These are the acceptance tests of docs/architecture.md "One path for every message":
order and context, outages, every transient fault, permanent failures, auth
pauses, attempt bounds, restarts during backoff and untrusted reply text.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chat_tui.config import Settings
from chat_tui.core import Core
from chat_tui.events import MessageChanged, ReplyAborted, ReplyStored
from chat_tui.store import REPLY_OFFSET, Message, Store
from tests.fault_server import Fault, FaultServer
from tests.helpers import make_settings, wait_settled, wait_until

pytestmark = pytest.mark.timeout(60)


# -- helpers ---------------------------------------------------------------------------------


async def run_until_empty(core: Core, timeout: float = 20.0) -> None:
    await asyncio.wait_for(core.sender.run(until_empty=True), timeout)


@contextlib.asynccontextmanager
async def running(core: Core) -> AsyncIterator[asyncio.Task[None]]:
    """The sender running in the background (as in the TUI) for the block."""
    task = asyncio.create_task(core.sender.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def chat_requests(server: FaultServer) -> list[Any]:
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


def model_requests(server: FaultServer) -> list[Any]:
    return [r for r in server.requests if r.path == "/v1/models"]


async def assert_all_delivered_once(
    store: Store, server: FaultServer, conversation_ids: list[int]
) -> None:
    """Every user message delivered, exactly one complete reply each (the
    server's full reply, nothing partial), and exactly one completed request
    per Idempotency-Key at the server."""
    wait_settled(server)
    completed = server.completed_keys()
    for cid in conversation_ids:
        msgs = await store.all_messages(cid)
        users = [m for m in msgs if m.role == "user"]
        replies = [m for m in msgs if m.role == "assistant"]
        assert users, f"conversation {cid} is empty"
        assert len(replies) == len(users), [(m.role, m.content) for m in msgs]
        for u in users:
            assert u.state == "delivered", (u.content, u.state, u.error)
            mine = [r for r in replies if r.reply_to == u.id]
            assert len(mine) == 1
            assert mine[0].content == f"echo: {u.content}"
            assert mine[0].seq == u.seq + REPLY_OFFSET
            assert mine[0].state == "complete"
            assert completed[u.key] == 1, (u.key, completed)


def user_turns(request_body: dict) -> list[str]:
    return [m["content"] for m in request_body["messages"] if m["role"] == "user"]


# -- order and context ---------------------------------------------------------------------


async def test_in_order_with_full_history(tmp_path: Path, fault_server: FaultServer) -> None:
    settings = make_settings(fault_server.base_url, tmp_path, system_prompt="Be brief.")
    async with await Core.open(settings) as core:
        core.start_watching()
        first = await core.sender.submit(None, "one")
        cid = first.message.conversation_id
        for text in ("two", "three", "four"):
            await core.sender.submit(cid, text)
        await run_until_empty(core)
        await assert_all_delivered_once(core.store, fault_server, [cid])

    bodies = [r.body for r in chat_requests(fault_server)]
    assert len(bodies) == 4
    expected: list[dict[str, str]] = [{"role": "system", "content": "Be brief."}]
    for body, text in zip(bodies, ("one", "two", "three", "four"), strict=True):
        assert body["messages"] == [*expected, {"role": "user", "content": text}]
        expected += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": f"echo: {text}"},
        ]


async def test_endpoint_down_then_back(settings: Settings, fault_server: FaultServer) -> None:
    stored_at: list[float] = []

    def listener(event: Any) -> None:
        if isinstance(event, ReplyStored):
            stored_at.append(time.monotonic())

    async with await Core.open(settings, listener=listener) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        fault_server.stop()
        cids: list[int] = []
        for c in range(3):
            r = await core.sender.submit(None, f"c{c} m0")
            cids.append(r.message.conversation_id)
            for i in range(1, 3):
                await core.sender.submit(r.message.conversation_id, f"c{c} m{i}")
        await _down_then_back(core, fault_server, stored_at, cids)


def count_probes(core: Core) -> list[str]:
    """Record the result of every reachability probe from now on."""
    results: list[str] = []
    real_probe = core.endpoint.probe

    async def probe(*args: Any, **kwargs: Any) -> Any:
        result = await real_probe(*args, **kwargs)
        results.append(result.state)
        return result

    core.endpoint.probe = probe  # type: ignore[method-assign]
    return results


async def _down_then_back(
    core: Core, fault_server: FaultServer, stored_at: list[float], cids: list[int]
) -> None:
    probes = count_probes(core)
    async with running(core):
        await wait_until(lambda: core.reachability.state == "offline", what="offline")
        # Down for a while: several probes fail.
        await wait_until(lambda: probes.count("offline") >= 3, what="three failed probes")
        # Offline for a while: nothing is charged, nothing fails.
        await wait_until(lambda: not core.sender.sending, what="attempt given back")
        counts = await core.store.counts()
        assert counts["queued"] == 9 and counts["failed"] == 0
        assert all(i.message.attempts == 0 for i in await core.store.queue_items())

        fault_server.start()  # the same port
        back = time.monotonic()
        await wait_until(lambda: len(stored_at) >= 1, timeout=10, what="first reply")
        assert stored_at[0] - back < 2.5, f"first reply {stored_at[0] - back:.2f} s after return"
        await wait_until(lambda: len(stored_at) == 9, timeout=15, what="all replies")

    await assert_all_delivered_once(core.store, fault_server, cids)
    # In order per conversation: each request's user turns are the prefix so far.
    for c in range(3):
        seen = [
            user_turns(r.body)
            for r in chat_requests(fault_server)
            if r.outcome == "completed" and user_turns(r.body)[0] == f"c{c} m0"
        ]
        assert seen == [[f"c{c} m{j}" for j in range(i + 1)] for i in range(3)]


# -- transient faults ----------------------------------------------------------------------

TRANSIENT = [
    (Fault("status", status=500), True),
    (Fault("status", status=503), True),
    (Fault("status", status=429, headers={"Retry-After": "1"}), True),
    (Fault("hang", seconds=15), True),
    (Fault("reset"), False),  # the transport broke: the network's doing, no attempt
    (Fault("cut", after_chunks=2), True),  # closed cleanly mid-stream: the server's doing
    (Fault("no_finish"), True),
    (Fault("malformed", after_chunks=1), True),
    (Fault("html"), False),  # a captive portal: the endpoint was not reached
]


@pytest.mark.parametrize(
    ("fault", "charged"),
    TRANSIENT,
    ids=["500", "503", "429-retry-after", "hang", "reset", "cut", "no_finish", "malformed", "html"],
)
async def test_transient_fault_is_delivered_exactly_once(
    core: Core, fault_server: FaultServer, events: list[Any], fault: Fault, charged: bool
) -> None:
    await core.reachability.wait_online(5)
    fault_server.push(fault)
    first = await core.sender.submit(None, "question one")
    cid = first.message.conversation_id
    await core.sender.submit(cid, "question two")
    await run_until_empty(core, 25)

    await assert_all_delivered_once(core.store, fault_server, [cid])
    assert fault_server.queued_faults() == 0
    reqs = [r for r in chat_requests(fault_server) if r.idempotency_key == first.message.key]
    assert len(reqs) == 2
    assert reqs[0].fault == fault.kind and reqs[0].outcome != "completed"  # hang: still pending
    assert reqs[1].fault is None and reqs[1].outcome == "completed"
    # What was shown of the broken reply was withdrawn, not stored.
    aborted = [e for e in events if isinstance(e, ReplyAborted)]
    assert len(aborted) == 1 and aborted[0].question.id == first.message.id
    requeued = [
        e.message
        for e in events
        if isinstance(e, MessageChanged)
        and e.message.id == first.message.id
        and e.message.state == "queued"
        and e.message.error
    ]
    assert requeued and requeued[0].attempts == (1 if charged else 0)
    if fault.headers.get("Retry-After"):
        assert reqs[1].started - reqs[0].finished >= 0.9, "Retry-After not honoured"
    # The second question carried the first's full reply as context.
    second = [r for r in chat_requests(fault_server) if r.outcome == "completed"][-1]
    assert second.body["messages"][1] == {"role": "assistant", "content": "echo: question one"}


# -- permanent failures and auth -------------------------------------------------------------


async def test_400_fails_and_blocks_only_its_conversation(
    core: Core, fault_server: FaultServer
) -> None:
    await core.reachability.wait_online(5)
    fault_server.push(Fault("status", status=400))
    bad = await core.sender.submit(None, "bad one")
    later = await core.sender.submit(bad.message.conversation_id, "after the bad one")
    good = await core.sender.submit(None, "good one")
    await core.sender.submit(good.message.conversation_id, "good two")
    await run_until_empty(core)

    failed = await core.store.get_message(bad.message.id)
    assert failed.state == "failed"
    assert "400" in failed.error and "Injected fault" in failed.error
    assert (await core.store.get_message(later.message.id)).state == "queued"
    await assert_all_delivered_once(core.store, fault_server, [good.message.conversation_id])
    keys = {r.idempotency_key for r in chat_requests(fault_server)}
    assert later.message.key not in keys  # never sent

    # The user retries: the conversation goes on, in order.
    await core.sender.retry(bad.message.id)
    await run_until_empty(core)
    await assert_all_delivered_once(core.store, fault_server, [bad.message.conversation_id])


async def test_401_pauses_delivery_without_failing(core: Core, fault_server: FaultServer) -> None:
    await core.reachability.wait_online(5)
    fault_server.mode = "auth"
    a = await core.sender.submit(None, "a question")
    b = await core.sender.submit(None, "b question")
    async with running(core):
        await wait_until(lambda: core.reachability.state == "auth_error", what="auth_error")
        await wait_until(lambda: not core.sender.sending, what="in-flight sends settled")
        # At most one 401 per conversation that was already in flight...
        sent = len(chat_requests(fault_server))
        assert 1 <= sent <= 2
        # ...and then nothing is sent while the key is refused.
        probes = len(model_requests(fault_server))
        await wait_until(
            lambda: len(model_requests(fault_server)) >= probes + 2, what="two more probes"
        )
        assert len(chat_requests(fault_server)) == sent
        assert core.reachability.state == "auth_error"
        counts = await core.store.counts()
        assert counts["failed"] == 0 and counts["delivered"] == 0
        assert counts["queued"] == 2
        assert all(i.message.attempts == 0 for i in await core.store.queue_items())

        fault_server.mode = "ok"
        await wait_until(
            _all_delivered(core.store), timeout=10, what="delivery after the key works"
        )
    await assert_all_delivered_once(
        core.store, fault_server, [a.message.conversation_id, b.message.conversation_id]
    )


def _all_delivered(store: Store):
    async def check() -> bool:
        counts = await store.counts()
        return counts["delivered"] > 0 and counts["queued"] == counts["sending"] == 0

    return check


# -- bounds ---------------------------------------------------------------------------------


async def test_max_attempts_then_failed(tmp_path: Path, fault_server: FaultServer) -> None:
    settings = make_settings(fault_server.base_url, tmp_path, max_attempts=3)
    fault_server.push(*[Fault("status", status=500) for _ in range(10)])
    async with await Core.open(settings) as core:
        core.start_watching()
        r = await core.sender.submit(None, "doomed")
        await run_until_empty(core)
        m = await core.store.get_message(r.message.id)
    assert m.state == "failed" and m.attempts == 3 and "500" in m.error
    assert len(chat_requests(fault_server)) == 3
    assert not fault_server.completed_keys()


async def test_offline_waiting_costs_no_attempts(tmp_path: Path, fault_server: FaultServer) -> None:
    settings = make_settings(fault_server.base_url, tmp_path, max_attempts=2)
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        fault_server.stop()
        probes = count_probes(core)
        r = await core.sender.submit(None, "patient")
        async with running(core):
            # The send hits a refused connection; then several probes fail.
            await wait_until(
                lambda: probes.count("offline") >= 3, timeout=10, what="several offline probes"
            )
            m = await core.store.get_message(r.message.id)
            assert m.state == "queued" and m.attempts == 0
            assert m.error and "connect" in m.error  # it was tried, and not charged
            fault_server.start()
            await wait_until(_all_delivered(core.store), timeout=10, what="delivery")
        await assert_all_delivered_once(core.store, fault_server, [r.message.conversation_id])


async def test_restart_during_backoff_keeps_schedule(
    settings: Settings, fault_server: FaultServer
) -> None:
    fault_server.push(Fault("status", status=429, headers={"Retry-After": "2"}))
    async with await Core.open(settings) as core:
        core.start_watching()
        r = await core.sender.submit(None, "after a restart")
        mid = r.message.id

        async def charged() -> bool:
            m = await core.store.get_message(mid)
            return m.attempts == 1 and m.state == "queued"

        async with running(core):
            await wait_until(charged, what="first attempt charged")
        before = await core.store.get_message(mid)
    assert before.next_attempt_at is not None
    assert before.next_attempt_at >= fault_server.requests[-1].finished + 1.5

    # The process is gone; the schedule is in the file.
    store = await Store.open(settings.db_path)
    try:
        reopened = await store.get_message(mid)
    finally:
        await store.close()
    assert (reopened.attempts, reopened.next_attempt_at, reopened.state) == (
        1,
        before.next_attempt_at,
        "queued",
    )

    async with await Core.open(settings) as core:
        core.start_watching()
        await run_until_empty(core)
        await assert_all_delivered_once(core.store, fault_server, [r.message.conversation_id])
    reqs = chat_requests(fault_server)
    assert len(reqs) == 2
    assert reqs[1].started >= before.next_attempt_at - 0.05


# -- untrusted text --------------------------------------------------------------------------


async def test_markup_in_reply_is_stored_literally(core: Core, fault_server: FaultServer) -> None:
    text = "[bold]x[/bold] and [@click=app.quit]click me[/] \\[escaped]"
    fault_server.push(Fault("reply", text=text))
    r = await core.sender.submit(None, "say markup")
    await run_until_empty(core)
    msgs = await core.store.all_messages(r.message.conversation_id)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[1].content == text


async def test_escape_sequences_never_reach_the_database(
    core: Core, fault_server: FaultServer, settings: Settings
) -> None:
    fault_server.push(Fault("reply", text="safe\x1b]52;c;cHduZWQ=\x07 \x1b[2Jtext"))
    r = await core.sender.submit(None, "escape me")
    await run_until_empty(core)
    msgs = await core.store.all_messages(r.message.conversation_id)
    assert msgs[1].content == "safe text"


# -- the sender sleeps when there is nothing to do ---------------------------------------------


async def _cpu_over(seconds: float) -> float:
    start = time.process_time()
    await asyncio.sleep(seconds)  # the measurement window itself
    return time.process_time() - start


async def test_sender_idles_while_conversation_is_blocked(
    core: Core, fault_server: FaultServer
) -> None:
    await core.reachability.wait_online(5)
    fault_server.push(Fault("status", status=422))
    r = await core.sender.submit(None, "rejected")
    await core.sender.submit(r.message.conversation_id, "waits for the user")
    async with running(core):

        async def failed() -> bool:
            return (await core.store.get_message(r.message.id)).state == "failed"

        await wait_until(failed, what="failure")
        cpu = await _cpu_over(1.0)
    assert cpu < 0.4, f"the sender spun: {cpu:.2f} s of CPU in 1 s"


async def test_sender_idles_while_all_slots_are_busy(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    settings = make_settings(fault_server.base_url, tmp_path, concurrency=1, read_timeout=5)
    fault_server.push(Fault("slow", seconds=0.4))
    async with await Core.open(settings) as core:
        core.start_watching()
        await core.reachability.wait_online(5)
        a = await core.sender.submit(None, "slow one")
        b = await core.sender.submit(None, "waits for a free slot")
        async with running(core):
            await wait_until(lambda: core.sender.sending == 1, what="a slot taken")
            cpu = await _cpu_over(1.0)
            await wait_until(_all_delivered(core.store), timeout=10, what="both delivered")
        await assert_all_delivered_once(
            core.store, fault_server, [a.message.conversation_id, b.message.conversation_id]
        )
    assert cpu < 0.4, f"the sender spun: {cpu:.2f} s of CPU in 1 s"


async def test_duplicate_submit_is_not_queued_twice(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    settings = make_settings(fault_server.base_url, tmp_path)
    fault_server.stop()
    async with await Core.open(settings) as core:
        core.start_watching()
        r = await core.sender.submit(None, "hello?")
        again = await core.sender.submit(r.message.conversation_id, "hello?")
        assert again.duplicate is True and again.message.id == r.message.id
        msgs: list[Message] = await core.store.all_messages(r.message.conversation_id)
        assert len(msgs) == 1


async def test_endpoint_return_is_noticed_quickly_even_after_a_long_outage(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    """With the default 15 s probe cap, HTTP probes alone could miss the return for
    up to 15 s; the bare connect each second must notice it within about a second."""
    from chat_tui.core import Core
    from tests.helpers import make_settings

    settings = make_settings(fault_server.base_url, tmp_path, probe_cap=15.0)
    fault_server.stop()
    core = await Core.open(settings)
    async with core:
        core.start_watching()
        core.start_delivery()
        result = await core.sender.submit(None, "are you back?")
        while core.reachability.state != "offline":
            await asyncio.sleep(0.05)
        for _ in range(6):  # as after a long outage: the next HTTP probe is 7.5–15 s away
            core.reachability._schedule.next_delay()
        core.reachability.report_unreachable("still down")
        await asyncio.sleep(1.5)
        fault_server.start()
        back = time.monotonic()
        while (await core.store.get_message(result.message.id)).state != "delivered":
            assert time.monotonic() - back < 2.5, "the endpoint's return went unnoticed"
            await asyncio.sleep(0.05)
