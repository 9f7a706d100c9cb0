"""Endpoint comes back → first queued reply stored (target: median ≤ 2 s).

Five messages wait in three conversations while the endpoint is down (a
loopback port nobody listens on, so connections are refused at once). The
real core runs with default settings (probe schedule 1 s → 15 s cap) and
sees the outage for ``OUTAGE`` seconds. Then the fault server starts on that
very port, and we time from its ``start()`` to the first ``ReplyStored``
event (and to the last of the five). Median over several runs.

The HTTP probes back off while offline (about 0.5–1 s, 1–2 s, 2–4 s, 4–8 s,
then 7.5–15 s apart), so after a long outage they alone could take up to 15 s
to notice the return; the client also tries a bare TCP connect each second
while offline. Both a short outage (a blip) and a long one are measured.
"""

from __future__ import annotations

import asyncio
import random
import time

from ._common import (
    Result,
    add_conversation,
    bulk_writer,
    create_schema,
    log,
    main,
    make_settings,
    median,
    temp_dir,
)

TARGET_S = 2.0
OUTAGE = 3.0  # seconds the core sees the endpoint down, short outage
LONG_OUTAGE = 20.0


async def _outage_then_back(settings, server, outage: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from chat_tui.core import Core
    from chat_tui.events import ReplyStored

    stored: list[float] = []

    def listener(event: object) -> None:
        if isinstance(event, ReplyStored):
            stored.append(time.perf_counter())

    core = await Core.open(settings, listener=listener)
    try:
        core.start_watching()
        core.start_delivery()
        await asyncio.sleep(outage)
        if stored or core.reachability.state != "offline":
            raise RuntimeError(f"expected offline, got {core.reachability.state}")
        back = time.perf_counter()
        server.start()  # same port: the endpoint is back
        deadline = back + 60
        while len(stored) < 5 and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
    finally:
        await core.close()
        server.stop()
    if not stored:
        return float("inf"), float("inf")
    return stored[0] - back, stored[-1] - back


def _once(outage: float) -> tuple[float, float]:
    from tests.fault_server import FaultServer

    server = FaultServer().start()
    server.stop()  # keep the port; nothing listens until start() again
    with temp_dir("reconnect") as tmp:
        settings = make_settings(tmp, server.base_url)
        create_schema(settings.db_path)
        rng = random.Random(11)
        with bulk_writer(settings.db_path) as db:
            for queued in (2, 2, 1):
                add_conversation(db, rng, delivered_pairs=3, queued=queued)
        return asyncio.run(_outage_then_back(settings, server, outage))


def run(quick: bool) -> list[Result]:
    runs = 3 if quick else 5
    log(
        f"reconnect: 5 messages queued in 3 conversations, default probe schedule; "
        f"{runs} runs after a {OUTAGE:.0f} s outage"
        + ("" if quick else f", 1 run after a {LONG_OUTAGE:.0f} s outage")
    )
    first, last = [], []
    for _ in range(runs):
        f, la = _once(OUTAGE)
        first.append(f)
        last.append(la)
    log(
        "  first reply after "
        + ", ".join(f"{v:.2f}" for v in first)
        + " s; all five after "
        + ", ".join(f"{v:.2f}" for v in last)
        + " s"
    )
    results = [
        Result(
            f"server back → first reply, {OUTAGE:.0f} s outage (median of {runs})",
            median(first),
            "s",
            f"≤ {TARGET_S:.0f} s",
            median(first) <= TARGET_S,
        ),
        Result("  server back → all 5 replies (median)", median(last), "s", "", None),
    ]
    if not quick:
        # After a long outage the HTTP probes are 7.5–15 s apart; what must notice
        # the return is the bare connect the client tries each second while offline.
        long_runs = [_once(LONG_OUTAGE)[0] for _ in range(3)]
        log(
            f"  after a {LONG_OUTAGE:.0f} s outage: first reply after "
            + ", ".join(f"{v:.2f}" for v in long_runs)
            + " s"
        )
        name = f"server back → first reply, {LONG_OUTAGE:.0f} s outage (median of 3)"
        results.append(
            Result(
                name, median(long_runs), "s", f"≤ {TARGET_S:.0f} s", median(long_runs) <= TARGET_S
            )
        )
    return results


if __name__ == "__main__":
    main("reconnect", run)
