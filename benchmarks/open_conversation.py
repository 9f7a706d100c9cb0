"""Open a conversation of 10,000 messages vs one of 100 (target: ≤ 300 ms and ≤ 1.5× the 100 case).

The database is built with the store's schema and seq scheme (user at 10,
20, 30…, the reply at +5), with realistic markdown replies of a few hundred
characters. Then the real ``ChatApp`` runs headless (``run_test``) against
an idle loopback endpoint, so it is online and nothing else repaints, and we
time ``await app.open_conversation(cid)`` up to the last frame the change
produced: every compositor frame goes through ``App._display``, which we
timestamp. A run ends when no frame came for ``QUIET`` seconds; the figure is
the last frame's time minus the start. Runs alternate between the two
conversations (and an empty one in between), so each open is a real switch.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

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

TARGET_MS = 300.0
TARGET_RATIO = 1.5
QUIET = 0.25  # seconds without a frame: the change is fully painted
SIZE = (120, 40)


def _build(db_path: Path, big_pairs: int) -> dict[str, int]:
    create_schema(db_path)
    rng = random.Random(42)
    with bulk_writer(db_path) as db:
        empty = db.execute(
            "INSERT INTO conversations (title, created_at, updated_at) VALUES ('empty', 0, 0)"
        ).lastrowid
        small = add_conversation(db, rng, delivered_pairs=50, title="100 messages")
        big = add_conversation(
            db, rng, delivered_pairs=big_pairs, title=f"{2 * big_pairs} messages"
        )
    assert empty is not None
    return {"empty": empty, "small": small, "big": big}


def _app_class():
    from chat_tui.tui.app import ChatApp

    from ._first_frame import _css_paths

    class TimedApp(ChatApp):
        """ChatApp that timestamps every frame the compositor hands to the driver."""

        CSS_PATH = _css_paths(ChatApp)

        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            self.frames: list[float] = []
            self.frame_cpu: list[float] = []  # process CPU time at each frame

        def _display(self, screen, renderable) -> None:  # type: ignore[no-untyped-def]
            if renderable is not None and not self._batch_count and self._running:
                from textual._compositor import CompositorUpdate

                if isinstance(renderable, CompositorUpdate):
                    renderable.render_segments(self.console)  # what a driver would write
                self.frames.append(time.perf_counter())
                self.frame_cpu.append(time.process_time())
            super()._display(screen, renderable)

    return TimedApp


async def _settle(app) -> None:  # type: ignore[no-untyped-def]
    """Wait until no frame has been painted for QUIET seconds."""
    while True:
        last = app.frames[-1] if app.frames else 0.0
        await asyncio.sleep(0.02)
        if app.frames and app.frames[-1] == last and time.perf_counter() - last >= QUIET:
            return


async def _measure(settings, ids: dict[str, int], runs: int) -> dict[str, dict[str, list[float]]]:  # type: ignore[no-untyped-def]
    from chat_tui import startup
    from chat_tui.tui.widgets.chat_view import MessageView

    startup.pause()  # as `chat-tui` does (cli.main): the app resumes and freezes (startup.py)
    app = _app_class()(settings)
    out: dict[str, dict[str, list[float]]] = {
        k: {"painted": [], "cpu": [], "returned": [], "views": [], "widgets": []}
        for k in ("small", "big")
    }
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        # A blinking cursor repaints every 0.5 s and would pass for a late frame.
        app.composer.cursor_blink = False
        await _settle(app)
        for _ in range(runs):
            for key in ("small", "big"):
                await app.open_conversation(ids["empty"])
                await pilot.pause()
                await _settle(app)
                start, start_cpu = time.perf_counter(), time.process_time()
                await app.open_conversation(ids[key])
                returned = time.perf_counter()
                await pilot.pause()
                await _settle(app)
                # The last frame this open produced (frames are appended in order).
                last = (
                    max(i for i, f in enumerate(app.frames) if f >= start)
                    if app.frames[-1] >= start
                    else None
                )
                painted = app.frames[last] if last is not None else returned
                cpu = app.frame_cpu[last] if last is not None else time.process_time()
                out[key]["returned"].append((returned - start) * 1000)
                out[key]["painted"].append((painted - start) * 1000)
                out[key]["cpu"].append((cpu - start_cpu) * 1000)
                out[key]["views"].append(len(app.query(MessageView)))
                out[key]["widgets"].append(len(list(app.screen.walk_children(with_self=False))))
    return out


def run(quick: bool) -> list[Result]:
    big_pairs = 1_000 if quick else 5_000
    runs = 2 if quick else 5
    from tests.fault_server import FaultServer

    with temp_dir("open") as tmp, FaultServer() as server:
        settings = make_settings(tmp, server.base_url)
        started = time.perf_counter()
        ids = _build(settings.db_path, big_pairs)
        log(
            f"open_conversation: built 100 + {2 * big_pairs:,} messages in "
            f"{time.perf_counter() - started:.1f} s; {runs} opens of each, terminal {SIZE}"
        )
        res = asyncio.run(_measure(settings, ids, runs))

    for key, label in (("small", "100"), ("big", f"{2 * big_pairs:,}")):
        r = res[key]
        log(
            f"  {label:>6} messages: painted "
            + ", ".join(f"{v:.0f}" for v in r["painted"])
            + " ms (CPU "
            + ", ".join(f"{v:.0f}" for v in r["cpu"])
            + " ms); open_conversation returned after "
            + ", ".join(f"{v:.0f}" for v in r["returned"])
            + " ms"
        )
        log(f"         {r['views'][-1]} MessageViews, {r['widgets'][-1]} widgets on screen")
    small = median(res["small"]["painted"])
    big = median(res["big"]["painted"])
    ratio = big / small if small else float("inf")
    return [
        Result(
            f"open {2 * big_pairs:,}-message conversation → painted (median)",
            big,
            "ms",
            f"≤ {TARGET_MS:.0f} ms",
            big <= TARGET_MS,
        ),
        Result(
            "open 100-message conversation → painted (median)",
            small,
            "ms",
            f"≤ {TARGET_MS:.0f} ms",
            small <= TARGET_MS,
        ),
        Result(
            f"{2 * big_pairs:,} vs 100 messages",
            ratio,
            "x",
            f"≤ {TARGET_RATIO}×",
            ratio <= TARGET_RATIO,
        ),
        Result("  CPU time of the open (big, median)", median(res["big"]["cpu"]), "ms", "", None),
        Result(
            "  open_conversation() returned (big, median)",
            median(res["big"]["returned"]),
            "ms",
            "",
            None,
        ),
        Result("  widgets mounted (big)", res["big"]["widgets"][-1], "", "", None),
        Result("  MessageViews mounted (big)", res["big"]["views"][-1], "", "", None),
    ]


if __name__ == "__main__":
    main("open_conversation", run)
