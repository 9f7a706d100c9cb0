"""Fitting a request into the context window for a 10,000-message conversation
(target: p95 ≤ 5 ms per request; it runs on every send).

A conversation of 5,000 delivered turns (10,000 messages: questions and
markdown replies of a few hundred characters) is built with the store's schema.
Two things are timed for each of a series of sends:

* ``context.fit`` — what the issue's target is about: choosing the turns that
  fit, newest first, with the estimate and the reply room — for a small window
  (llama.cpp's ``-c 1024``), a large one (128k tokens: thousands of turns fit)
  and an unknown one (everything is sent);
* the whole of it as the sender runs it: the claim, reading the newest turns
  that can fit (``Store.history`` with ``max_chars``), and the fit (shown for
  diagnosis: with an unknown window the whole history is read and sent).
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
    dead_url,
    log,
    main,
    make_settings,
    percentile,
    temp_dir,
)

TARGET_MS = 5.0
WINDOWS = {"1k window": 1024, "128k window": 131_072, "unknown window": None}


def _time_fit(history: list[dict[str, str]], window: int | None, repeats: int) -> list[float]:
    from chat_tui import context

    timings = []
    for i in range(repeats):
        started = time.perf_counter()
        fitted = context.fit(
            "You are a helpful assistant.",
            history,
            f"and question number {i}?",
            window=window,
            bytes_per_token=3.6,
        )
        timings.append((time.perf_counter() - started) * 1000)
        assert fitted.messages[-1]["content"].endswith(f"{i}?")
    return timings


async def _time_sends(
    settings, conversation_id: int, window: int | None, repeats: int
) -> tuple[list[float], list[dict[str, str]]]:  # type: ignore[no-untyped-def]
    """What the sender does per request: claim, read the history that can fit, fit."""
    from chat_tui import context
    from chat_tui.store import Store

    store = await Store.open(settings.db_path)
    timings = []
    history: list[dict[str, str]] = []
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            claim = await store.claim_next("bench", lease_seconds=30, with_history=False)
            assert claim is not None and claim.message.conversation_id == conversation_id
            history, _ = await store.history(
                conversation_id,
                claim.message.seq,
                max_chars=context.history_chars(window, 3.6),
            )
            context.fit(None, history, claim.message.content, window=window, bytes_per_token=3.6)
            timings.append((time.perf_counter() - started) * 1000)
            await store.release(
                claim.message.id,
                "bench",
                error="bench",
                next_attempt_at=0,
                charge_attempt=False,
                max_attempts=99,
            )
    finally:
        await store.close()
    return timings, history


def run(quick: bool) -> list[Result]:
    repeats = 50 if quick else 300
    results: list[Result] = []
    with temp_dir("context-fit") as tmp:
        settings = make_settings(tmp, dead_url())
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        create_schema(settings.db_path)
        rng = random.Random(11)
        with bulk_writer(settings.db_path) as db:
            cid = add_conversation(db, rng, delivered_pairs=5_000, queued=1)
        for label, window in WINDOWS.items():
            sends, history = asyncio.run(_time_sends(settings, cid, window, max(10, repeats // 5)))
            size = sum(len(m["content"]) for m in history)
            log(f"{label}: {len(history):,} earlier messages read ({size / 1e3:.0f} kB)")
            timings = _time_fit(history, window, repeats)
            p95 = percentile(timings, 95)
            log(f"  fit: median {percentile(timings, 50):.2f} ms, p95 {p95:.2f} ms")
            results.append(
                Result(f"fit p95, {label}", p95, "ms", f"≤ {TARGET_MS:.0f} ms", p95 <= TARGET_MS)
            )
            send_p95 = percentile(sends, 95)
            log(f"  claim + history + fit: median {percentile(sends, 50):.1f} ms")
            results.append(Result(f"claim+read+fit p95, {label}", send_p95, "ms", "", None))
    return results


if __name__ == "__main__":
    main("context_fit", run)
