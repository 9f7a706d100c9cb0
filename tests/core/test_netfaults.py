"""Real network and disk faults: the sender never dies, a dead link is noticed in
seconds, and nothing typed or paid for is lost.

The network cases run against the fault server inside a network namespace
behind a veth pair (tests/netlab.py), with nftables rules that drop, reset or
kill the traffic; the disk cases use a real SQLite file locked by a second
connection (``BEGIN EXCLUSIVE``) and a small tmpfs that fills up. They need
root; where the kernel refuses, they skip and say why. Each measures its own
figure against the target in the issue, with the suite's shorter settings
where the default would take long (the full-length figures are in
benchmarks/netfaults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_tui.config import Settings
from chat_tui.core import Core
from chat_tui.endpoint import Endpoint
from chat_tui.events import (
    DeliveryProblem,
    ReplyAborted,
    ReplyDelta,
    ReplyStarted,
    ReplyStored,
)
from tests.fault_server import Fault, FaultServer
from tests.helpers import CliEnv, make_settings, tmpfs, wait_until
from tests.netlab import (
    CountingListener,
    NetLab,
    NetLabUnavailable,
    fill,
    hold_exclusive,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]  # the slow tier: pytest -m slow


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def lab() -> Iterator[NetLab]:
    net = NetLab()
    try:
        net.start()
    except NetLabUnavailable as exc:
        print(f"network lab unavailable: {exc}")
        pytest.skip(f"network lab unavailable: {exc}")
    try:
        yield net
    finally:
        net.stop()


@contextlib.asynccontextmanager
async def running_core(settings: Settings, events: list[Any]) -> AsyncIterator[Core]:
    """An core as the TUI runs it: watcher and supervised sender."""
    core = await Core.open(settings, listener=events.append)
    try:
        core.start_watching()
        core.start_delivery()
        yield core
    finally:
        await core.close()


def lab_settings(lab: NetLab, tmp: Path, **extra: Any) -> Settings:
    # The issue's own figures: connect 5 s, read 120 s, lease 30 s; probes on the
    # default schedule. Only the message backoff is short.
    values: dict[str, Any] = {
        "connect_timeout": 5.0,
        "read_timeout": 120.0,
        "lease_seconds": 30.0,
        "probe_cap": 15.0,
    }
    values.update(extra)
    return make_settings(lab.base_url, tmp, **values)


async def state_of(core: Core, message_id: int) -> tuple[str, int]:
    message = await core.store.get_message(message_id)
    assert message is not None
    return message.state, message.attempts


async def wait_delivered(core: Core, message_id: int, timeout: float) -> float:
    started = time.monotonic()

    async def delivered() -> bool:
        return (await state_of(core, message_id))[0] == "delivered"

    await wait_until(delivered, timeout, interval=0.05, what=f"message {message_id} delivered")
    return time.monotonic() - started


async def replies(core: Core, conversation_id: int) -> list[str]:
    return [m.content for m in await core.store.all_messages(conversation_id) if m.role != "user"]


def started(events: list[Any], message_id: int) -> bool:
    return any(isinstance(e, ReplyStarted) and e.question.id == message_id for e in events)


def first_delta(events: list[Any], message_id: int) -> bool:
    return any(isinstance(e, ReplyDelta) and e.question.id == message_id for e in events)


# -- the network -------------------------------------------------------------------------------


async def test_silent_drop_mid_stream_is_noticed_in_seconds(lab: NetLab, tmp_path: Path) -> None:
    """Target: offline shown ≤ 10 s after the last byte (was 29.9 s); no attempt
    charged; the reply stored soon after the link is back."""
    events: list[Any] = []
    async with running_core(lab_settings(lab, tmp_path), events) as core:
        assert await core.reachability.wait_online(10)
        lab.push(Fault("slow", seconds=1.0))
        sent = await core.sender.submit(None, "through the tunnel")
        mid = sent.message.id
        await wait_until(lambda: first_delta(events, mid), 10, what="the first token")
        lab.drop()
        dropped = time.monotonic()
        await wait_until(lambda: core.reachability.state == "offline", 15, what="offline")
        noticed = time.monotonic() - dropped
        print(f"silent drop mid-stream → offline shown after {noticed:.1f} s")
        assert noticed <= 10.0
        await wait_until(
            lambda: any(isinstance(e, ReplyAborted) for e in events), 5, what="stream given up"
        )
        assert await state_of(core, mid) == ("queued", 0)  # the network's doing: no attempt
        lab.heal()
        back = await wait_delivered(core, mid, 20)
        print(f"link back → reply stored after {back:.1f} s")
        assert back <= 2.5 + 5.0  # stream time + 5 s
        assert await replies(core, sent.message.conversation_id) == ["echo: through the tunnel"]


async def test_message_on_a_dead_pooled_connection_is_given_up_fast(
    lab: NetLab, tmp_path: Path
) -> None:
    """Target: a message queued into a dead pooled connection is given up ≤ 10 s
    (was 120.7 s), then delivered once the link is back."""
    events: list[Any] = []
    async with running_core(lab_settings(lab, tmp_path), events) as core:
        assert await core.reachability.wait_online(10)
        first = await core.sender.submit(None, "one")
        await wait_delivered(core, first.message.id, 10)  # its connection is now pooled
        lab.drop()
        second = await core.sender.submit(first.message.conversation_id, "two")
        started = time.monotonic()
        await wait_until(
            lambda: any(
                isinstance(e, ReplyAborted) and e.question.id == second.message.id for e in events
            ),
            15,
            what="the dead request given up",
        )
        given_up = time.monotonic() - started
        print(f"request on a dead pooled connection given up after {given_up:.1f} s")
        assert given_up <= 10.0
        assert core.reachability.state == "offline"
        assert await state_of(core, second.message.id) == ("queued", 0)
        lab.heal()
        await wait_delivered(core, second.message.id, 20)
        assert await replies(core, first.message.conversation_id) == ["echo: one", "echo: two"]


async def test_resets_mid_stream_cost_no_attempts(lab: NetLab, tmp_path: Path) -> None:
    """Two connections reset mid-stream with max_attempts = 1: the message is not
    failed (resets are the network's doing) and is delivered once the link heals."""
    events: list[Any] = []
    settings = lab_settings(lab, tmp_path, max_attempts=1, backoff_base=0.05, backoff_cap=0.2)
    async with running_core(settings, events) as core:
        assert await core.reachability.wait_online(10)
        lab.push(*[Fault("slow", seconds=0.5) for _ in range(2)])
        sent = await core.sender.submit(None, "reset me")
        mid = sent.message.id
        for n in range(1, 3):

            def deltas(n: int = n) -> bool:
                return sum(isinstance(e, ReplyDelta) and e.question.id == mid for e in events) >= n

            def aborts(n: int = n) -> bool:
                return sum(isinstance(e, ReplyAborted) for e in events) >= n

            await wait_until(deltas, 20, what=f"stream {n} flowing")
            lab.reset()
            await wait_until(aborts, 10, what=f"reset {n} noticed")
            state, attempts = await state_of(core, mid)
            assert (state, attempts) == ("queued", 0), (state, attempts)
            lab.heal()
        await wait_delivered(core, mid, 20)
        assert await replies(core, sent.message.conversation_id) == ["echo: reset me"]


async def test_stale_connection_is_cut_at_the_stall_limit(lab: NetLab, tmp_path: Path) -> None:
    """Only the open connection dies (the endpoint still answers new ones, so the
    link checks pass): the flowing stream is cut at stall_timeout and the message
    goes out again on a new connection. The default 30 s is in the benchmark."""
    events: list[Any] = []
    settings = lab_settings(lab, tmp_path, stall_timeout=4.0)
    async with running_core(settings, events) as core:
        assert await core.reachability.wait_online(10)
        lab.push(Fault("slow", seconds=1.0))
        sent = await core.sender.submit(None, "stale")
        mid = sent.message.id
        await wait_until(lambda: first_delta(events, mid), 10, what="the first token")
        assert lab.kill_established(), "no established connection to kill"
        killed = time.monotonic()
        await wait_until(
            lambda: any(isinstance(e, ReplyAborted) for e in events), 15, what="stall cut"
        )
        cut = time.monotonic() - killed
        print(f"stale connection (endpoint answering) given up after {cut:.1f} s")
        assert 3.0 <= cut <= 4.0 + 2.0
        aborted = next(e for e in events if isinstance(e, ReplyAborted))
        assert "stalled" in aborted.error.reason
        await wait_delivered(core, mid, 15)
        assert await replies(core, sent.message.conversation_id) == ["echo: stale"]


async def test_a_silent_first_token_is_not_cut(lab: NetLab, tmp_path: Path) -> None:
    """A model silent before its first token while its endpoint answers is never
    cut, however short the stall limit (60 s in the benchmark)."""
    events: list[Any] = []
    settings = lab_settings(lab, tmp_path, stall_timeout=1.5)
    async with running_core(settings, events) as core:
        assert await core.reachability.wait_online(10)
        lab.push(Fault("think", seconds=4.5))
        sent = await core.sender.submit(None, "think hard")
        took = await wait_delivered(core, sent.message.id, 20)
        print(f"4.5 s silent first token: delivered after {took:.1f} s, not cut")
        assert not any(isinstance(e, ReplyAborted) for e in events)
        chats = [r for r in lab.requests() if r["path"].endswith("/chat/completions")]
        assert len(chats) == 1 and core.reachability.online


async def test_a_new_local_address_drops_the_pool(lab: NetLab, tmp_path: Path) -> None:
    """The laptop's address changes (Wi-Fi → phone) mid-stream while the endpoint
    answers: the change is seen within seconds, the pooled connections dropped,
    and the message delivered from the new address without an attempt charged."""
    events: list[Any] = []
    async with running_core(lab_settings(lab, tmp_path), events) as core:
        assert await core.reachability.wait_online(10)
        await asyncio.sleep(0.2)  # the watcher has noted the local address
        lab.push(Fault("slow", seconds=1.0))
        sent = await core.sender.submit(None, "moving")
        mid = sent.message.id
        await wait_until(lambda: first_delta(events, mid), 10, what="the first token")
        drops = core.endpoint.pool_drops
        lab.move_client()
        moved = time.monotonic()
        await wait_until(lambda: core.endpoint.pool_drops > drops, 10, what="pool dropped")
        await wait_delivered(core, mid, 20)
        took = time.monotonic() - moved
        print(f"address changed mid-stream → delivered from the new address after {took:.1f} s")
        assert took <= 10.0
        assert (await state_of(core, mid))[1] == 0
        assert await replies(core, sent.message.conversation_id) == ["echo: moving"]


# -- proxies and names -------------------------------------------------------------------------


async def test_a_dead_proxy_is_named_and_backed_off(
    tmp_path: Path, fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check goes through the proxy (no direct connects), the reason names it,
    and while offline there is at most about one connection attempt a second."""
    proxy = CountingListener()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        settings = make_settings(fault_server.base_url, tmp_path, probe_cap=15.0)
        events: list[Any] = []
        seconds = 4.0
        async with running_core(settings, events) as core:
            assert core.endpoint.proxy == f"http://127.0.0.1:{proxy.port}"
            await asyncio.sleep(seconds)
            detail = core.reachability.current.detail
            assert core.reachability.state == "offline"
        direct = [r for r in fault_server.requests]
        rate = proxy.accepted / seconds
        print(
            f"dead proxy: {proxy.accepted} connections in {seconds:.0f} s ({rate:.2f}/s): {detail}"
        )
        assert "proxy" in detail and str(proxy.port) in detail
        assert direct == []  # nothing went around the proxy
        assert 1 <= proxy.accepted <= seconds + 1
    finally:
        proxy.close()


async def test_a_refused_proxy_and_an_unknown_name_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        dead_port = sock.getsockname()[1]  # closed when the block ends: refused
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{dead_port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    endpoint = Endpoint(make_settings("http://10.213.0.2:9/v1", tmp_path))
    try:
        probe = await endpoint.probe()
    finally:
        await endpoint.aclose()
    assert probe.state == "offline"
    assert f"proxy 127.0.0.1:{dead_port}" in probe.detail, probe.detail
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name)
    endpoint = Endpoint(make_settings("http://no-such-host.invalid:9/v1", tmp_path))
    try:
        probe = await endpoint.probe()
    finally:
        await endpoint.aclose()
    assert probe.state == "offline" and "DNS" in probe.detail, probe.detail


# -- the database ------------------------------------------------------------------------------


async def test_the_sender_survives_a_lock_held_past_busy_timeout(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """The claim itself fails (the old sender died here for good): a banner line
    is shown, and the message queued before the lock goes out ≤ 5 s after it ends."""
    events: list[Any] = []
    settings = make_settings(fault_server.base_url, tmp_path)
    # Queued first, by another process's store, with the sender not yet running.
    core = await Core.open(settings, listener=events.append)
    try:
        queued = await core.sender.submit(None, "waiting behind a lock")
        async with core.store._lock:
            await core.store._db.execute("PRAGMA busy_timeout = 300")
        holder = hold_exclusive(settings.db_path, 2.0)
        core.start_watching()
        sender = core.start_delivery()
        await wait_until(
            lambda: any(isinstance(e, DeliveryProblem) and e.text for e in events),
            5,
            what="the problem shown",
        )
        shown = next(e.text for e in events if isinstance(e, DeliveryProblem) and e.text)
        assert shown.startswith("cannot write the database") and "retrying" in shown
        await asyncio.to_thread(holder.join, 10)
        released = time.monotonic()
        await wait_until(
            lambda: any(isinstance(e, ReplyStored) for e in events), 10, what="delivered"
        )
        after = time.monotonic() - released
        print(f"lock released → delivered after {after:.2f} s, sender never restarted")
        assert after <= 5.0
        assert not sender.done()
        assert isinstance(events[-1], DeliveryProblem) or any(
            isinstance(e, DeliveryProblem) and e.text is None for e in events
        )
        assert (await state_of(core, queued.message.id))[0] == "delivered"
    finally:
        await core.close()


async def test_a_full_disk_does_not_stop_the_sender(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """The disk fills while messages wait: the sender reports it and keeps trying;
    freeing the disk delivers within 5 s, with no restart."""
    with tmpfs(tmp_path / "disk") as disk:
        settings = make_settings(fault_server.base_url, tmp_path, data_dir=disk / "data")
        events: list[Any] = []
        core = await Core.open(settings, listener=events.append)
        try:
            queued = [await core.sender.submit(None, f"full disk {n}") for n in range(3)]
            # Fold the WAL so the sender's writes need new pages on the full disk.
            async with core.store._lock:
                await core.store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(disk)
            core.start_watching()
            sender = core.start_delivery()
            await wait_until(
                lambda: any(isinstance(e, DeliveryProblem) and e.text for e in events),
                10,
                what="the full disk reported",
            )
            shown = next(e.text for e in events if isinstance(e, DeliveryProblem) and e.text)
            assert "full" in shown and "nothing was lost" not in shown, shown
            await asyncio.sleep(1.0)
            assert not sender.done()
            filler.unlink()
            freed = time.monotonic()
            for sent in queued:
                await wait_delivered(core, sent.message.id, 10)
            after = time.monotonic() - freed
            print(f"disk freed → 3 messages delivered after {after:.2f} s, no restart")
            assert after <= 5.0 and not sender.done()
        finally:
            await core.close()


async def test_a_reply_arriving_on_a_full_disk_is_kept_until_it_commits(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """The reply was paid for: it waits in memory (lease renewed) while the disk is
    full and is stored when space comes back; the server is asked once."""
    with tmpfs(tmp_path / "disk") as disk:
        settings = make_settings(
            fault_server.base_url, tmp_path, data_dir=disk / "data", lease_seconds=2.0
        )
        events: list[Any] = []
        async with running_core(settings, events) as core:
            assert await core.reachability.wait_online(5)
            fault_server.push(Fault("think", seconds=1.5))
            sent = await core.sender.submit(None, "expensive question")
            await wait_until(lambda: started(events, sent.message.id), 5, what="the request")
            async with core.store._lock:
                await core.store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(disk)
            await wait_until(
                lambda: any(
                    isinstance(e, DeliveryProblem) and e.text and "kept in memory" in e.text
                    for e in events
                ),
                10,
                what="the reply kept in memory",
            )
            await asyncio.sleep(2.5)  # longer than the lease
            filler.unlink()
            await wait_delivered(core, sent.message.id, 10)
            assert await replies(core, sent.message.conversation_id) == ["echo: expensive question"]
            chats = [r for r in fault_server.requests if r.path == "/v1/chat/completions"]
            assert len(chats) == 1


# -- the sender's own bugs ---------------------------------------------------------------------


async def test_the_sender_loop_survives_its_own_bug(
    tmp_path: Path, fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[Any] = []
    async with running_core(make_settings(fault_server.base_url, tmp_path), events) as core:
        assert await core.reachability.wait_online(5)
        real = core.store.next_due
        calls = 0

        async def broken(*args: Any, **kwargs: Any) -> float | None:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise RuntimeError("a bug")
            return await real(*args, **kwargs)

        monkeypatch.setattr(core.store, "next_due", broken)
        sent = await core.sender.submit(None, "despite the bug")
        await wait_delivered(core, sent.message.id, 10)
        assert calls >= 2
        assert any(
            isinstance(e, DeliveryProblem) and e.text and "RuntimeError" in e.text for e in events
        )


async def test_a_sender_that_dies_anyway_is_restarted(
    tmp_path: Path, fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure that escapes the loop's own guard: the supervisor shows it and
    starts the sender again."""
    events: list[Any] = []
    core = await Core.open(make_settings(fault_server.base_url, tmp_path), listener=events.append)
    try:
        real = core.sender.run
        calls = 0

        async def run(**kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("escaped the loop")
            await real(**kwargs)

        monkeypatch.setattr(core.sender, "run", run)
        core.start_watching()
        sender = core.start_delivery()
        sent = await core.sender.submit(None, "after a restart")
        await wait_delivered(core, sent.message.id, 10)
        assert calls == 2 and not sender.done()
        assert any(
            isinstance(e, DeliveryProblem) and e.text and "restarting" in e.text for e in events
        )
    finally:
        await core.close()


# -- a sender that slept past its lease --------------------------------------------------------


async def test_a_reply_taken_over_by_another_sender_withdraws_the_live_one(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """This process was stopped past its lease and another sender delivered the
    message: the late reply is dropped and its live bubble withdrawn (no leftover
    "streaming…" beside the stored reply)."""
    events: list[Any] = []
    settings = make_settings(fault_server.base_url, tmp_path)
    async with running_core(settings, events) as core:
        assert await core.reachability.wait_online(5)
        fault_server.push(Fault("think", seconds=1.5))
        sent = await core.sender.submit(None, "who answers")
        mid = sent.message.id
        await wait_until(lambda: started(events, sent.message.id), 5, what="the request")
        # Another sender takes the lease over (ours ran out while we were stopped).
        with sqlite3.connect(settings.db_path, timeout=10) as other:
            other.execute(
                "UPDATE outbox SET lease_owner = 'other-sender', lease_expires = ? "
                "WHERE message_id = ?",
                (time.time() + 60, mid),
            )
        await wait_until(
            lambda: any(isinstance(e, ReplyAborted) and e.question.id == mid for e in events),
            10,
            what="the live reply withdrawn",
        )
        assert not any(isinstance(e, ReplyStored) for e in events)
        aborted = next(e for e in events if isinstance(e, ReplyAborted))
        assert "taken over" in aborted.error.reason


def test_sync_watch_keeps_going_through_a_full_disk(tmp_path: Path, cli_env: CliEnv) -> None:
    """`sync --watch` used to exit 1 when the database refused the claim; now it says
    nothing on the terminal, keeps trying, and delivers once space is back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = FaultServer(port=port)  # not started: the endpoint is down at first
    with tmpfs(tmp_path / "disk") as disk:
        cli_env.env["CHAT_TUI_DATA_DIR"] = str(disk / "data")
        cli_env.env["OPENAI_BASE_URL"] = server.base_url
        sent = cli_env.json("send", "--json", "--new", "through a full disk")
        sync = cli_env.popen("sync", "--watch")
        try:
            time.sleep(1.0)  # offline: nothing to claim yet
            db = sqlite3.connect(disk / "data" / "chat.db")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
            filler = fill(disk)
            server.start()  # online: the claim now meets the full disk
            time.sleep(3.0)
            assert sync.poll() is None, "sync --watch died on a full disk"
            filler.unlink()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not server.completed_keys():
                time.sleep(0.1)
            show = cli_env.json("show", "--json", str(sent["conversation_id"]))
            states = [m["state"] for m in show["messages"]]
            assert states == ["delivered", "complete"], states
            assert sync.poll() is None
        finally:
            sync.terminate()
            _out, err = sync.communicate(timeout=15)
            server.stop()
        assert "Traceback" not in err and "Logging error" not in err, err
        assert sync.returncode == 0, err
