"""Real network and disk faults, at full length (the issue's targets).

Needs root: a network namespace behind a veth pair with the fault server
inside, nftables rules inside that namespace, a small tmpfs (see
tests/netlab.py and docs/testing-faults.md). Settings are the defaults the
issue measured with (connect 5 s, read 120 s, lease 30 s, stall 30 s, probes
1 s → 15 s). Where the lab cannot be built, the reason is printed and the rows
say so.

Figures:
* silent drop mid-stream → offline shown (≤ 10 s after the last byte);
  link back → reply stored (≤ stream time + 5 s);
* stale connection while the endpoint answers → attempt given up (≤ 30 s);
* message queued into a dead pooled connection → given up (≤ 10 s);
* a model silent 60 s before its first token, endpoint reachable → not cut;
* connection attempts per second while offline, direct and through a proxy (≤ 1/s);
* database locked 30 s, or the disk full, then cleared → delivered (≤ 5 s after),
  with the sender never restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from ._common import Result, log, main, temp_dir

STREAM_S = 4 * 1.0 + 1.0  # a "slow" reply: 4 pieces and the finish, 1 s apart


def _settings(base_url: str, tmp: Path, **extra: Any):  # type: ignore[no-untyped-def]
    from chat_tui.config import Settings

    return Settings(
        base_url=base_url,
        data_dir=tmp / "data",
        config_path=tmp / "none.toml",
        model="test-model",
        api_key=None,
        **extra,
    )


async def _until(predicate, timeout: float, step: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` (sync or async) is true; raises TimeoutError."""
    started = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError
        await asyncio.sleep(step)


class _Run:
    """One core, as the TUI runs it, with its events."""

    def __init__(self, settings, *, deliver: bool = True) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings
        self.deliver = deliver
        self.events: list[Any] = []

    async def __aenter__(self):  # type: ignore[no-untyped-def]
        from chat_tui.core import Core

        self.core = await Core.open(self.settings, listener=self.events.append)
        self.core.start_watching()
        if self.deliver:
            self.start()
        return self

    def start(self) -> None:
        self.sender = self.core.start_delivery()

    async def __aexit__(self, *exc: object) -> None:
        await self.core.close()

    def has(self, kind: str, message_id: int | None = None) -> bool:
        return any(
            type(e).__name__ == kind
            and getattr(e, "text", "") is not None
            and (
                message_id is None
                or getattr(e, "question", None) is None
                or e.question.id == message_id
            )
            for e in self.events
        )

    async def state(self, message_id: int) -> str:
        message = await self.core.store.get_message(message_id)
        return message.state if message else "?"


async def _silent_drop(lab, tmp: Path) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from tests.fault_server import Fault

    async with _Run(_settings(lab.base_url, tmp)) as run:
        await run.core.reachability.wait_online(10)
        lab.push(Fault("slow", seconds=1.0))
        sent = (await run.core.sender.submit(None, "tunnel")).message.id
        await _until(lambda: run.has("ReplyDelta", sent), 15)
        lab.drop()
        offline = await _until(lambda: run.core.reachability.state == "offline", 60)
        await _until(lambda: run.has("ReplyAborted", sent), 60)
        lab.heal()
        stored = await _until(lambda: run.has("ReplyStored", sent), 60)
        lab.heal()
    return offline, stored


async def _stale(lab, tmp: Path) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    from tests.fault_server import Fault

    async with _Run(_settings(lab.base_url, tmp)) as run:
        await run.core.reachability.wait_online(10)
        lab.push(Fault("slow", seconds=1.0))
        sent = (await run.core.sender.submit(None, "stale")).message.id
        await _until(lambda: run.has("ReplyDelta", sent), 15)
        lab.kill_established()
        given_up = await _until(lambda: run.has("ReplyAborted", sent), 150)
        why = next(e.error.reason for e in run.events if type(e).__name__ == "ReplyAborted")
        await _until(lambda: run.has("ReplyStored", sent), 60)
        lab.heal()
    return given_up, why


async def _dead_pool(lab, tmp: Path) -> float:  # type: ignore[no-untyped-def]
    async with _Run(_settings(lab.base_url, tmp)) as run:
        await run.core.reachability.wait_online(10)
        first = (await run.core.sender.submit(None, "one")).message
        await _until(lambda: run.has("ReplyStored", first.id), 15)
        lab.drop()
        second = (await run.core.sender.submit(first.conversation_id, "two")).message.id
        given_up = await _until(lambda: run.has("ReplyAborted", second), 150)
        lab.heal()
        await _until(lambda: run.has("ReplyStored", second), 60)
    return given_up


async def _first_token(lab, tmp: Path, silence: float) -> tuple[bool, float]:  # type: ignore[no-untyped-def]
    from tests.fault_server import Fault

    async with _Run(_settings(lab.base_url, tmp)) as run:
        await run.core.reachability.wait_online(10)
        lab.push(Fault("think", seconds=silence))
        sent = (await run.core.sender.submit(None, "think")).message.id
        took = await _until(lambda: run.has("ReplyStored", sent), silence + 60)
        return not run.has("ReplyAborted"), took


async def _offline_rate(base_url: str, tmp: Path, seconds: float, count) -> float:  # type: ignore[no-untyped-def]
    async with _Run(_settings(base_url, tmp)) as run:
        await asyncio.sleep(seconds)
        assert run.core.reachability.state == "offline"
    return count() / seconds


async def _locked(base_url: str, tmp: Path, hold: float) -> tuple[float, bool, str]:
    from tests.netlab import hold_exclusive

    async with _Run(_settings(base_url, tmp), deliver=False) as run:
        await run.core.reachability.wait_online(10)
        message = (await run.core.sender.submit(None, "behind a lock")).message
        holder = hold_exclusive(run.settings.db_path, hold)
        run.start()  # its first claim waits busy_timeout (10 s), then fails, and so on
        await asyncio.to_thread(holder.join, hold + 10)
        after = await _until(lambda: run.has("ReplyStored", message.id), 60)
        shown = next((e.text for e in run.events if getattr(e, "text", None)), "nothing shown")
        return after, not run.sender.done(), shown


async def _disk_full(base_url: str, tmp: Path) -> tuple[float, bool, str]:
    from tests.netlab import fill, small_disk

    with small_disk(tmp / "disk") as disk:
        settings = _settings(base_url, tmp).replace(data_dir=disk / "data")
        async with _Run(settings, deliver=False) as run:
            await run.core.reachability.wait_online(10)
            message = (await run.core.sender.submit(None, "on a full disk")).message
            async with run.core.store._lock:  # fold the WAL: new writes need new pages
                await run.core.store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(disk)
            run.start()
            await _until(lambda: run.has("DeliveryProblem"), 60)
            shown = next(e.text for e in run.events if getattr(e, "text", None))
            await asyncio.sleep(5)
            filler.unlink()
            after = await _until(lambda: run.has("ReplyStored", message.id), 60)
            return after, not run.sender.done(), shown


def run(quick: bool) -> list[Result]:
    from tests.fault_server import FaultServer
    from tests.netlab import CountingListener, NetLab, NetLabUnavailable

    logging.getLogger("chat_tui").addHandler(logging.NullHandler())  # figures, not log lines
    results: list[Result] = []
    silence = 20.0 if quick else 60.0
    lock_s = 12.0 if quick else 30.0
    rate_s = 10.0 if quick else 30.0
    try:
        with temp_dir("netfaults") as tmp, NetLab() as lab:
            log(f"netfaults: lab {lab.base_url} (namespace {lab.netns})")
            offline, stored = asyncio.run(_silent_drop(lab, tmp / "a"))
            log(
                f"  silent drop mid-stream: offline after {offline:.1f} s; "
                f"stored {stored:.1f} s after heal"
            )
            results += [
                Result(
                    "silent drop mid-stream → offline shown", offline, "s", "≤ 10 s", offline <= 10
                ),
                Result(
                    "link back → reply stored",
                    stored,
                    "s",
                    f"≤ {STREAM_S + 5:.0f} s (stream + 5)",
                    stored <= STREAM_S + 5,
                ),
            ]
            given_up, why = asyncio.run(_stale(lab, tmp / "b"))
            log(f"  stale connection: given up after {given_up:.1f} s ({why})")
            results.append(
                Result(
                    "stale connection, endpoint answering → given up",
                    given_up,
                    "s",
                    "≤ 30 s",
                    given_up <= 30,
                )
            )
            dead = asyncio.run(_dead_pool(lab, tmp / "c"))
            log(f"  dead pooled connection: given up after {dead:.1f} s")
            results.append(
                Result(
                    "queued into a dead pooled connection → given up",
                    dead,
                    "s",
                    "≤ 10 s",
                    dead <= 10,
                )
            )
            uncut, took = asyncio.run(_first_token(lab, tmp / "d", silence))
            log(
                f"  {silence:.0f} s silent first token: {'not cut' if uncut else 'CUT'}, "
                f"stored after {took:.1f} s"
            )
            results.append(
                Result(
                    f"{silence:.0f} s silent first token, endpoint reachable: cut",
                    0 if uncut else 1,
                    "",
                    "never (0)",
                    uncut,
                )
            )
            lab.reset()
            lab.count_syns()
            direct = asyncio.run(_offline_rate(lab.base_url, tmp / "e", rate_s, lab.syns))
            lab.heal()
            log(
                f"  offline (connections refused), direct: {direct:.2f} connection "
                f"attempts/s over {rate_s:.0f} s"
            )
            results.append(
                Result(
                    "connection attempts while offline, direct",
                    direct * 60,
                    "/min",
                    "≤ 60/min",
                    direct <= 1.0,
                )
            )
    except NetLabUnavailable as exc:
        log(f"netfaults: network lab unavailable: {exc}")
        results.append(Result(f"network lab unavailable: {exc}", 0, "", "", None))

    proxy = CountingListener()
    saved = {k: os.environ.get(k) for k in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")}
    try:
        os.environ["HTTP_PROXY"] = os.environ["http_proxy"] = f"http://127.0.0.1:{proxy.port}"
        os.environ.pop("NO_PROXY", None)
        os.environ.pop("no_proxy", None)
        with temp_dir("netfaults") as tmp, FaultServer() as server:
            rate = asyncio.run(_offline_rate(server.base_url, tmp, rate_s, lambda: proxy.accepted))
            log(f"  broken proxy: {rate:.2f} connection attempts/s over {rate_s:.0f} s")
            results.append(
                Result(
                    "connection attempts while offline, broken proxy",
                    rate * 60,
                    "/min",
                    "≤ 60/min",
                    rate <= 1.0,
                )
            )
    finally:
        proxy.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    with temp_dir("netfaults") as tmp, FaultServer() as server:
        after, alive, shown = asyncio.run(_locked(server.base_url, tmp / "l", lock_s))
        log(f"  database locked {lock_s:.0f} s (busy_timeout 10 s), shown: {shown}")
        log(f"  delivered {after:.2f} s after the release; sender never restarted: {alive}")
        results.append(
            Result(
                f"locked {lock_s:.0f} s, released → delivered",
                after,
                "s",
                "≤ 5 s",
                after <= 5 and alive,
            )
        )
        try:
            after, alive, shown = asyncio.run(_disk_full(server.base_url, tmp / "f"))
            log(f"  disk full ({shown}): delivered {after:.2f} s after space came back")
            results.append(
                Result("disk full, freed → delivered", after, "s", "≤ 5 s", after <= 5 and alive)
            )
        except NetLabUnavailable as exc:
            log(f"  disk full: {exc}")
            results.append(Result(f"disk full: {exc}", 0, "", "", None))
    return results


if __name__ == "__main__":
    main("netfaults", run)
