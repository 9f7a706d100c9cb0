"""Submit → durable commit latency, and the UI's responsiveness while the queue works.

1. ``Sender.submit`` (one ``BEGIN IMMEDIATE`` transaction: user message +
   outbox entry, dedup check, ``synchronous=FULL``) timed 1,000 times on the
   real temp filesystem, into ten ordinary conversations and into one long
   conversation (10,000 messages: the dedup check reads that conversation).
   Target: p99 ≤ 15 ms.
2. The real ``ChatApp`` runs headless while its own core flushes 300 queued
   messages (ten conversations, one of them open, so replies stream into the
   chat view) to the fault server in its own process. The app starts offline
   and settles; then the server starts and the app is told to retry now (as
   Ctrl+R does), so the window measured is the flush itself. A probe task sleeps
   10 ms in a loop on the app's event loop and records how late it wakes: the
   lateness is how long the UI could not react to a key. Target: p99 stall
   ≤ 50 ms (the max is reported too).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time

from ._common import (
    PYTHON,
    REPO_ROOT,
    Result,
    add_conversation,
    bulk_writer,
    create_schema,
    dead_port,
    dead_url,
    log,
    main,
    make_settings,
    percentile,
    temp_dir,
)

SUBMIT_P99_MS = 15.0
STALL_P99_MS = 50.0
TICK = 0.010


def _filesystem(path: str) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, timeout=5)
        return out.stdout.splitlines()[1].split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


async def _submit_latencies(settings, targets: list[int], n: int) -> list[float]:  # type: ignore[no-untyped-def]
    from chat_tui.core import Core

    core = await Core.open(settings)  # not started: submit only commits and wakes
    rng = random.Random(3)
    out = []
    try:
        for i in range(n):
            text = f"question {i}: " + " ".join(rng.choice("abcdefgh") * 5 for _ in range(20))
            cid = targets[i % len(targets)]
            t = time.perf_counter()
            await core.sender.submit(cid, text)
            out.append((time.perf_counter() - t) * 1000)
    finally:
        await core.close()
    return out


def _submit_case(n: int, long_pairs: int) -> tuple[list[float], list[float], str]:
    with temp_dir("enqueue") as tmp:
        settings = make_settings(tmp, dead_url())
        create_schema(settings.db_path)
        rng = random.Random(5)
        with bulk_writer(settings.db_path) as db:
            small = [add_conversation(db, rng, delivered_pairs=10) for _ in range(10)]
            long = add_conversation(db, rng, delivered_pairs=long_pairs)
        fs = _filesystem(str(settings.db_path))
        ordinary = asyncio.run(_submit_latencies(settings, small, n))
        in_long = asyncio.run(_submit_latencies(settings, [long], max(100, n // 5)))
    return ordinary, in_long, fs


async def _stall_during_flush(settings, port: int, total: int) -> tuple[list[float], float, int]:  # type: ignore[no-untyped-def]
    """Start the app offline, let it settle, bring the endpoint up, time the loop."""
    from chat_tui.tui.app import ChatApp

    from ._first_frame import _css_paths

    class App(ChatApp):
        CSS_PATH = _css_paths(ChatApp)

    app = App(settings)
    lateness: list[float] = []
    when: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.composer.cursor_blink = False
        await pilot.pause()  # start-up is the startup benchmark's business
        server = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "tests.fault_server",
            "--port",
            str(port),
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert server.stdout is not None
            await asyncio.wait_for(server.stdout.readline(), 30)  # "listening on …"
            stop = False

            async def probe() -> None:
                while not stop:
                    t = time.perf_counter()
                    await asyncio.sleep(TICK)
                    lateness.append((time.perf_counter() - t - TICK) * 1000)
                    when.append(t)

            task = asyncio.create_task(probe())
            started = time.perf_counter()
            assert app.core is not None
            app.core.reachability.probe_now()  # what Ctrl+R does: no wait for the schedule
            deadline = started + 120
            while app.core.sender.delivered < total and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            stop = True
            await task
            delivered = app.core.sender.delivered
        finally:
            server.terminate()
            await server.wait()
        worst = sorted(zip(lateness, when, strict=True), reverse=True)[:5]
        log(
            "  worst stalls (ms @ s after the endpoint came back): "
            + ", ".join(f"{v:.0f} @ {w - started:.2f}" for v, w in worst)
        )
        await pilot.pause()
    return lateness, elapsed, delivered


def run(quick: bool) -> list[Result]:
    n = 300 if quick else 1_000
    long_pairs = 1_000 if quick else 5_000
    ordinary, in_long, fs = _submit_case(n, long_pairs)
    log(
        f"enqueue: {n} submits into 10 conversations, {len(in_long)} into one of "
        f"{2 * long_pairs:,} messages; synchronous=FULL on {fs} ({os.cpu_count()} CPUs)"
    )
    for label, values in (("ordinary", ordinary), ("long conversation", in_long)):
        log(
            f"  {label}: p50 {percentile(values, 50):.2f} ms, p99 {percentile(values, 99):.2f} ms, "
            f"max {max(values):.2f} ms"
        )

    total = 100 if quick else 300
    with temp_dir("stall") as tmp:
        port = dead_port()
        settings = make_settings(tmp, f"http://127.0.0.1:{port}/v1")
        create_schema(settings.db_path)
        rng = random.Random(9)
        with bulk_writer(settings.db_path) as db:
            for c in range(10):
                add_conversation(
                    db, rng, delivered_pairs=20, queued=total // 10, title=f"stall {c}"
                )
        lateness, elapsed, delivered = asyncio.run(_stall_during_flush(settings, port, total))
    stall_p99 = percentile(lateness, 99)
    stall_max = max(lateness)
    log(
        f"  TUI flush: {delivered}/{total} delivered in {elapsed:.1f} s; event-loop lateness over "
        f"{len(lateness)} ticks: p50 {percentile(lateness, 50):.1f} ms, p99 {stall_p99:.1f} ms, "
        f"max {stall_max:.1f} ms; ticks late by > 50 ms: {sum(v > 50 for v in lateness)}"
    )

    p99 = percentile(ordinary, 99)
    p99_long = percentile(in_long, 99)
    return [
        Result(
            f"submit → commit p99 ({n}, {fs})",
            p99,
            "ms",
            f"≤ {SUBMIT_P99_MS:.0f} ms",
            p99 <= SUBMIT_P99_MS,
        ),
        Result("  submit → commit p50", percentile(ordinary, 50), "ms", "", None),
        Result(
            f"submit p99, {2 * long_pairs:,}-message conversation",
            p99_long,
            "ms",
            f"≤ {SUBMIT_P99_MS:.0f} ms",
            p99_long <= SUBMIT_P99_MS,
        ),
        Result(
            f"UI stall p99 while flushing {total} in the TUI",
            stall_p99,
            "ms",
            f"≤ {STALL_P99_MS:.0f} ms",
            delivered >= total and stall_p99 <= STALL_P99_MS,
        ),
        Result("  UI stall max", stall_max, "ms", "", None),
        Result("  TUI flush rate", delivered / elapsed, "msg/s", "", None),
    ]


if __name__ == "__main__":
    main("enqueue", run)
