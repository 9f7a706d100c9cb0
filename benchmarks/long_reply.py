"""A long Markdown reply streamed into a long conversation.

A 30 KB Markdown reply (headings, lists, code blocks, tables) streams at 300
tokens/s (one SSE event per ~4-character token, from a server in its own
process) into a conversation of 1,000 messages, in the real ``ChatApp``
running headless at 120×40; every frame is rendered to segments as a driver
would. Figures:

* ``on screen after last byte``: from the server writing the last byte to the
  first frame painted once the whole reply is drawn (target ≤ 0.5 s);
* ``event-loop lag p95``: a 10 ms ticker in the app's loop, how late it wakes
  while the reply streams (target ≤ 50 ms);
* ``app CPU``: process CPU time / wall time from the first chunk to the reply
  on screen (target ≤ 60 % of one core).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from pathlib import Path

from ._common import (
    PYTHON,
    REPO_ROOT,
    Result,
    add_conversation,
    bulk_writer,
    create_schema,
    log,
    main,
    make_settings,
    percentile,
    temp_dir,
)

SIZE = (120, 40)
RATE = 300.0  # tokens per second
TARGET_LATE_S = 0.5
TARGET_LAG_MS = 50.0
TARGET_CPU = 0.60
VOCABULARY = (
    "the queue keeps every message safe while the network is down and sends them "
    "in order when the endpoint answers again with a reply that streams token by token"
)


def markdown_reply(size: int, seed: int = 7) -> str:
    """Realistic Markdown of about ``size`` characters."""
    rng = random.Random(seed)
    words = VOCABULARY.split()

    def sentence(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."

    parts: list[str] = []
    section = 0
    while sum(len(p) for p in parts) < size:
        section += 1
        parts.append(f"## Part {section}: {sentence(4)[:-1]}\n")
        parts.append(" ".join(sentence(rng.randint(8, 16)) for _ in range(3)) + "\n")
        parts.append("\n".join(f"- **item {i}**: {sentence(6)}" for i in range(4)) + "\n")
        parts.append(
            "```python\n"
            + "\n".join(
                f"def step_{section}_{i}(queue):\n    return queue.send({i})  # {sentence(3)}"
                for i in range(3)
            )
            + "\n```\n"
        )
        parts.append(
            "| step | state | note |\n| --- | --- | --- |\n"
            + "\n".join(f"| {i} | `queued` | {sentence(4)} |" for i in range(4))
            + "\n"
        )
        parts.append(f"1. {sentence(6)}\n2. {sentence(7)}\n3. {sentence(5)}\n")
    return "\n".join(parts)[:size].rsplit("\n", 1)[0] + "\n"


def _build(db_path: Path, pairs: int) -> int:
    create_schema(db_path)
    with bulk_writer(db_path) as db:
        return add_conversation(
            db, random.Random(42), delivered_pairs=pairs, title="long conversation"
        )


def _app_class():
    from chat_tui.tui.app import ChatApp
    from chat_tui.tui.widgets.chat_view import ChatView, MessageView

    from ._first_frame import _css_paths

    class TimedApp(ChatApp):
        """Renders every frame to segments (as a driver would) and notes when the
        whole reply was first on screen."""

        CSS_PATH = _css_paths(ChatApp)
        expected = ""

        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            self.frames = 0
            self.complete_at: float | None = None

        def _whole_reply_drawn(self) -> bool:
            chat = self.query_one(ChatView)
            for live in chat._streams.values():
                if getattr(live, "drawn", -1) >= len(self.expected):
                    return True
            return any(
                v.message.role == "assistant" and v.message.content == self.expected
                for v in list(chat.query(MessageView))[-2:]
            )

        def _display(self, screen, renderable) -> None:  # type: ignore[no-untyped-def]
            if renderable is not None and not self._batch_count and self._running:
                from textual._compositor import CompositorUpdate

                if isinstance(renderable, CompositorUpdate):
                    renderable.render_segments(self.console)
                self.frames += 1
                if self.complete_at is None and self._whole_reply_drawn():
                    self.complete_at = time.time()
            super()._display(screen, renderable)

    return TimedApp


async def _measure(settings, cid: int, reply: str, server: subprocess.Popen) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from chat_tui import startup
    from chat_tui.events import ReplyDelta

    app_class = _app_class()
    app_class.expected = reply
    startup.pause()  # as `chat-tui` does (cli.main): the app resumes and freezes (startup.py)
    app = app_class(settings)
    lags: list[float] = []
    first_chunk: dict[str, float] = {}
    streaming = asyncio.Event()

    async def ticker() -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            if streaming.is_set():
                lags.append((time.perf_counter() - start - 0.01) * 1000)

    async with app.run_test(size=SIZE) as pilot:
        app.composer.cursor_blink = False
        deadline = time.monotonic() + 20
        while (app.current is None or app.current.id != cid) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        while (app.reach is None or app.reach.state != "online") and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert app.core is not None
        listener = app.core._listener

        def noting(event) -> None:  # type: ignore[no-untyped-def]
            if isinstance(event, ReplyDelta) and "wall" not in first_chunk:
                first_chunk["wall"] = time.time()
                first_chunk["cpu"] = time.process_time()
                streaming.set()
            listener(event)

        app.core._listener = noting  # note the first chunk, then pass it on
        tick = asyncio.create_task(ticker())
        await pilot.press(*"write it all down", "enter")
        limit = time.monotonic() + len(reply) / 4 / RATE + 60
        # A plain sleep, not pilot.pause(): that one posts a callback to every widget
        # on the screen and forces a screen update each time, 50 times a second, which
        # no terminal does; it was a fifth to a third of the CPU measured as the app's.
        while app.complete_at is None and time.monotonic() < limit:
            await asyncio.sleep(0.02)
        cpu_end = time.process_time()
        wall_end = time.time()
        streaming.clear()
        tick.cancel()
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        last_byte = float(line.removeprefix("done "))
    if app.complete_at is None or "wall" not in first_chunk:
        raise RuntimeError("the reply never appeared whole on screen")
    return {
        "late": app.complete_at - last_byte,
        "lag_p95": percentile(lags, 95),
        "lag_max": max(lags),
        "cpu": (cpu_end - first_chunk["cpu"]) / (wall_end - first_chunk["wall"]),
        "stream_s": last_byte - first_chunk["wall"],
        "frames": app.frames,
    }


def run(quick: bool) -> list[Result]:
    size = 10_000 if quick else 30_000
    pairs = 200 if quick else 500
    reply = markdown_reply(size)
    with temp_dir("long-reply") as tmp:
        reply_file = tmp / "reply.md"
        reply_file.write_text(reply, encoding="utf-8")
        server = subprocess.Popen(
            [PYTHON, "-m", "benchmarks._paced_server", str(reply_file), str(RATE)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            base_url = server.stdout.readline().strip().removeprefix("listening on ")
            settings = make_settings(tmp, base_url, read_timeout=30.0, model="bench-model")
            cid = _build(settings.db_path, pairs)
            log(
                f"long_reply: {len(reply):,} characters of Markdown at {RATE:.0f} tokens/s "
                f"into {2 * pairs:,} messages"
            )
            m = asyncio.run(_measure(settings, cid, reply, server))
        finally:
            server.terminate()
            server.wait(timeout=5)
    log(
        f"  streamed for {m['stream_s']:.1f} s; {m['frames']} frames; "
        f"loop lag max {m['lag_max']:.0f} ms"
    )
    return [
        Result(
            "whole reply on screen after the last byte",
            m["late"],
            "s",
            f"≤ {TARGET_LATE_S} s",
            m["late"] <= TARGET_LATE_S,
        ),
        Result(
            "event-loop lag p95 while streaming",
            m["lag_p95"],
            "ms",
            f"≤ {TARGET_LAG_MS:.0f} ms",
            m["lag_p95"] <= TARGET_LAG_MS,
        ),
        Result(
            "app CPU while streaming",
            m["cpu"] * 100,
            "% of a core",
            f"≤ {TARGET_CPU * 100:.0f} %",
            m["cpu"] <= TARGET_CPU,
        ),
        Result("reply size", len(reply), "chars", "", None),
    ]


if __name__ == "__main__":
    main("long_reply", run)
