"""Flush 1,000 queued messages over 20 conversations (target: ≥ 200 messages/s).

The queue is written straight into a fresh database (the store's schema and
seq scheme, one outbox entry per message, all due). Then the real core
starts as ``chat-tui sync --until-empty`` runs it: ``Core.start_watching()``
and ``outbox.run(until_empty=True)``, against the fault server answering at
once (streaming, its default) in its own process on loopback. The clock runs
from ``start_watching()`` (the first probe included) to ``run()`` returning,
and every message must have a stored reply. Repeated for several
``concurrency`` settings (conversations sent in parallel by one process).

A second database adds a long history in other conversations (a heavy
user's file) under the same queue, and times the queue queries the sender
runs between messages (``next_due``, ``waiting_count``, ``claim_next``),
whose cost must not grow with the history.

Note: the fault server closes the connection after each streamed reply
(``Connection: close``), so every message pays a TCP connect; endpoints with
keep-alive are a little faster than this.
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
    server_process,
    temp_dir,
)

TARGET = 200.0  # messages per second
CONCURRENCY = (1, 4, 8)


# Read-only queries run between messages; ours, not the issue's: they must not
# grow with the history, and 2 ms is what they take on a small database.
QUERY_TARGET_MS = 2.0


async def _queue_queries(settings) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median latency of the queries the sender runs per message, on the given database."""
    from chat_tui.store import Store

    store = await Store.open(settings.db_path)
    out: dict[str, list[float]] = {"next_due": [], "waiting_count": [], "claim_next": []}
    try:
        for _ in range(7):
            for name in ("next_due", "waiting_count"):
                t = time.perf_counter()
                await getattr(store, name)()
                out[name].append((time.perf_counter() - t) * 1000)
        for _ in range(7):
            t = time.perf_counter()
            claim = await store.claim_next("bench", lease_seconds=30)
            out["claim_next"].append((time.perf_counter() - t) * 1000)
            if claim is not None:
                await store.release(
                    claim.message.id,
                    "bench",
                    error="bench",
                    next_attempt_at=0,
                    charge_attempt=False,
                    max_attempts=6,
                )
    finally:
        await store.close()
    return {k: median(v) for k, v in out.items()}


async def _flush(settings) -> tuple[float, float, int, int]:  # type: ignore[no-untyped-def]
    from chat_tui.core import Core

    core = await Core.open(settings)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        core.start_watching()
        await asyncio.wait_for(core.sender.run(until_empty=True), timeout=300)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        counts = await core.store.counts()
        return elapsed, cpu, core.sender.delivered, counts["delivered"]
    finally:
        await core.close()


def _one(  # type: ignore[no-untyped-def]
    base_url: str,
    conversations: int,
    per_conversation: int,
    concurrency: int,
    *,
    history: int = 0,
    queries: dict[str, float] | None = None,
):
    with temp_dir("flush") as tmp:
        settings = make_settings(tmp, base_url, concurrency=concurrency)
        create_schema(settings.db_path)
        rng = random.Random(1)
        with bulk_writer(settings.db_path) as db:
            for _ in range(history // 1000):  # old conversations of 1,000 messages each
                add_conversation(db, rng, delivered_pairs=500, title="history")
            for c in range(conversations):
                add_conversation(
                    db, rng, delivered_pairs=0, queued=per_conversation, title=f"flush {c}"
                )
        if queries is not None:
            queries.update(asyncio.run(_queue_queries(settings)))
        return asyncio.run(_flush(settings))


def run(quick: bool) -> list[Result]:
    conversations, per = (20, 10) if quick else (20, 50)
    history = 10_000 if quick else 50_000
    total = conversations * per
    log(
        f"flush: {total} queued messages over {conversations} conversations, "
        f"fault server in its own process, streaming replies"
    )
    results = []
    with server_process() as base_url:
        _one(base_url, 2, 5, 4)  # warm-up: imports, first connections; not counted
        for concurrency in CONCURRENCY:
            elapsed, cpu, delivered, stored = _one(base_url, conversations, per, concurrency)
            rate = delivered / elapsed
            log(
                f"  concurrency {concurrency}: {delivered}/{total} delivered ({stored} stored) "
                f"in {elapsed:.2f} s, {rate:.0f} msg/s, client CPU {cpu:.2f} s "
                f"({cpu / max(delivered, 1) * 1000:.1f} ms per message)"
            )
            ok = delivered == total and stored == total
            results.append(
                Result(
                    f"{total} messages, concurrency {concurrency}",
                    rate,
                    "msg/s",
                    f"≥ {TARGET:.0f} msg/s",
                    ok and rate >= TARGET,
                )
            )
            results.append(
                Result(
                    f"  client CPU per message, concurrency {concurrency}",
                    cpu / max(delivered, 1) * 1000,
                    "ms",
                    "",
                    None,
                )
            )

        queries: dict[str, float] = {}
        elapsed, cpu, delivered, _stored = _one(
            base_url, conversations, per, 4, history=history, queries=queries
        )
        rate = delivered / elapsed
        log(
            f"  with {history:,} messages of history in other conversations, concurrency 4: "
            f"{delivered}/{total} in {elapsed:.2f} s, {rate:.0f} msg/s; queue queries: "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in queries.items())
        )
        results.append(
            Result(
                f"{total} messages, {history // 1000}k history, concurrency 4",
                rate,
                "msg/s",
                f"≥ {TARGET:.0f} msg/s",
                delivered == total and rate >= TARGET,
            )
        )
        for name, ms in queries.items():
            if name == "claim_next":  # a write transaction (fsync): shown, not judged
                results.append(
                    Result(
                        f"  {name}() with {history // 1000}k history (median)", ms, "ms", "", None
                    )
                )
                continue
            results.append(
                Result(
                    f"  {name}() with {history // 1000}k history (median)",
                    ms,
                    "ms",
                    f"≤ {QUERY_TARGET_MS:.0f} ms",
                    ms <= QUERY_TARGET_MS,
                )
            )
    return results


if __name__ == "__main__":
    main("flush", run)
