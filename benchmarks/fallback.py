"""Primary unreachable, fallback local: submit → first token of the local answer
(target: median ≤ 1.0 s), with the real llama.cpp server and SmolLM2-135M.

The conversation's endpoint is a loopback port nobody listens on; the
fallback is a real ``llama-server`` (built and cached by
``scripts/prepare_llama.py``). Each run submits a fresh question through the
core (the durable enqueue included) and asks for the answer the TUI asks
for on submit (history first, then the fallback); the clock stops at the
first ``LocalAnswerDelta`` event, which is what the TUI paints. Beside it,
the model's own time to first token: the same kind of streamed request
straight to the server with httpx, interleaved with ours (same load), the
floor for the figure above.
"""

from __future__ import annotations

import asyncio
import time

from ._common import Result, dead_url, log, main, make_settings, median, temp_dir

TARGET_S = 1.0
IDLE_GAP = 1.5  # seconds between requests, so each finds the server's one slot free
QUESTIONS = [
    "Name a colour of the sky.",
    "What do bees make?",
    "Say a word that rhymes with cat.",
    "What is two plus two?",
    "Name a fruit that is yellow.",
    "What animal says moo?",
    "Name a planet.",
]


async def _fallback_runs(base_url: str, tmp, runs: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    from chat_tui.config import EndpointConfig
    from chat_tui.core import Core
    from chat_tui.events import LocalAnswerDelta

    settings = make_settings(
        tmp,
        dead_url(),
        endpoints={"local": EndpointConfig(base_url, model="smollm2")},
        fallback="local",
    )
    first: dict[int, float] = {}

    def listener(event: object) -> None:
        if isinstance(event, LocalAnswerDelta) and event.question.id not in first:
            first[event.question.id] = time.perf_counter()

    times: list[float] = []
    floor: list[float] = []
    core = await Core.open(settings, listener=listener)
    try:
        core.start_watching()
        core.start_delivery()
        local = core.links.get("local").reachability
        deadline = time.monotonic() + 30
        while not local.online or core.reachability.state == "unknown":
            if time.monotonic() > deadline:
                raise RuntimeError("the fallback or the primary's state never settled")
            await asyncio.sleep(0.05)
        for i in range(runs):
            text = QUESTIONS[i % len(QUESTIONS)] + f" ({i})"
            start = time.perf_counter()
            result = await core.sender.submit(None, text)
            task = asyncio.ensure_future(core.answer_while_offline(result.message))
            while result.message.id not in first and not task.done():
                await asyncio.sleep(0.002)
            if result.message.id in first:
                times.append(first[result.message.id] - start)
            else:
                times.append(float("inf"))
            core.stop_fallback(result.message.id)  # the first token is what we time
            await task
            # llama-server has one slot: let it notice the closed stream and go
            # idle, then measure its own first token under the same load.
            await asyncio.sleep(IDLE_GAP)
            floor.extend(await _model_ttft(base_url, 1, offset=i))
            await asyncio.sleep(IDLE_GAP)
    finally:
        await core.close()
    return times, floor


async def _loopback_runs(tmp, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    """The same path with an instant loopback server as the fallback: what chat-tui
    itself adds (enqueue, history lookup, request building, stream parsing)."""
    from chat_tui.config import EndpointConfig
    from chat_tui.core import Core
    from chat_tui.events import LocalAnswerDelta
    from tests.fault_server import FaultServer

    server = FaultServer().start()
    first: dict[int, float] = {}

    def listener(event: object) -> None:
        if isinstance(event, LocalAnswerDelta) and event.question.id not in first:
            first[event.question.id] = time.perf_counter()

    settings = make_settings(
        tmp,
        dead_url(),
        endpoints={"local": EndpointConfig(server.base_url, model="m")},
        fallback="local",
    )
    times: list[float] = []
    try:
        async with await Core.open(settings, listener=listener) as core:
            core.start_watching()
            core.start_delivery()
            deadline = time.monotonic() + 30
            while not core.links.get("local").reachability.online or (
                core.reachability.state == "unknown"
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the loopback fallback never came online")
                await asyncio.sleep(0.05)
            for i in range(runs):
                start = time.perf_counter()
                result = await core.sender.submit(None, f"{QUESTIONS[i % len(QUESTIONS)]} {i}")
                await core.answer_while_offline(result.message)
                times.append(first.get(result.message.id, float("inf")) - start)
    finally:
        server.stop()
    return times


async def _model_ttft(base_url: str, runs: int, offset: int = 0) -> list[float]:
    import httpx

    times: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(runs):
            body = {
                "model": "smollm2",
                "stream": True,
                "max_tokens": 8,
                "messages": [{"role": "user", "content": QUESTIONS[(i + offset) % len(QUESTIONS)]}],
            }
            start = time.perf_counter()
            async with client.stream("POST", f"{base_url}/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and '"content":"' in line.replace(" ", ""):
                        times.append(time.perf_counter() - start)
                        break
    return times


def run(quick: bool) -> list[Result]:
    from tests.llama import LlamaServer, prepared

    paths = prepared()
    if paths is None:
        log("fallback: llama-server is not prepared (python scripts/prepare_llama.py); skipped")
        return [Result("skipped: llama-server not prepared", 0, "exit", "", None)]
    runs = 3 if quick else 7
    server = LlamaServer(paths)
    server.start()
    try:
        with temp_dir("fallback") as tmp:
            ours, floor = asyncio.run(_fallback_runs(server.base_url, tmp, runs))
    finally:
        server.close()
    with temp_dir("fallback-loopback") as tmp:
        ours_only = asyncio.run(_loopback_runs(tmp, 20))
    log(
        "fallback: same path, instant loopback server as the fallback: "
        + ", ".join(f"{v * 1000:.0f}" for v in ours_only)
        + " ms"
    )
    log(
        "fallback: submit → first local token "
        + ", ".join(f"{v:.3f}" for v in ours)
        + " s; the model's own first token "
        + ", ".join(f"{v:.3f}" for v in floor)
        + " s"
    )
    return [
        Result(
            f"primary down: submit → first token of the local answer (median of {runs})",
            median(ours),
            "s",
            f"≤ {TARGET_S:.1f} s",
            median(ours) <= TARGET_S,
        ),
        Result("  the model's own time to first token (median)", median(floor), "s", "", None),
        Result(
            "  the same path, instant loopback fallback (median of 20)",
            median(ours_only) * 1000,
            "ms",
            "",
            None,
        ),
    ]


if __name__ == "__main__":
    main("fallback", run)
