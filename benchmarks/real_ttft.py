"""Client overhead against the real llama.cpp server: time to first token through
chat-tui minus curl's (target: median ≤ 30 ms).

Needs the server and model that ``scripts/prepare_llama.py`` builds and caches
(without them this reports that and measures nothing). One ``llama-server``
(SmolLM2-135M, ``-c 1024``) runs on a loopback port; the same request (same
messages, ``max_tokens``, ``stream_options``) is sent, in turns, by:

* ``curl -sN`` — the clock starts before the process is spawned and stops at
  the first ``data:`` line with content on its output (so curl's figure
  includes its own start-up, a few ms: the comparison is generous to curl's
  side only by that);
* raw ``httpx`` in this process — the floor for any Python client;
* chat-tui — ``Sender.submit`` (the durable commit, ``synchronous=FULL``), the
  claim, the context fit, the request, until the first reply text reaches the
  listener, with the core already open as in the TUI.

Each send is a new conversation with the same text, so the server's prompt
cache treats all three alike. The figure is the difference of the medians.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ._common import REPO_ROOT, Result, log, main, make_settings, median, temp_dir

TARGET_MS = 30.0
PROMPT = "Name one colour."
MAX_TOKENS = 8


def _body() -> dict:
    return {
        "model": "smollm2",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": MAX_TOKENS,
    }


def _first_content(line: str) -> bool:
    if not line.startswith("data: ") or "[DONE]" in line:
        return False
    try:
        chunk = json.loads(line[6:])
    except ValueError:
        return False
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def _curl_once(url: str) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["curl", "-sN", "-H", "Content-Type: application/json", "-d", json.dumps(_body()), url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = None
    for line in proc.stdout:
        if first is None and _first_content(line.strip()):
            first = time.perf_counter() - started
    proc.wait(timeout=60)
    if first is None:
        raise RuntimeError("curl saw no content")
    return first * 1000


async def _httpx_once(client, url: str) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=_body()) as response:
        async for line in response.aiter_lines():
            if first is None and _first_content(line.strip()):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("httpx saw no content")
    return first * 1000


async def _measure(base_url: str, tmp: Path, rounds: int) -> dict[str, list[float]]:
    import httpx

    from chat_tui.core import Core
    from chat_tui.events import ReplyDelta

    settings = make_settings(
        tmp, base_url, model="smollm2", max_reply_tokens=MAX_TOKENS, read_timeout=120.0
    )
    first_delta: asyncio.Future[float] | None = None

    def listener(event: object) -> None:
        if isinstance(event, ReplyDelta) and first_delta is not None and not first_delta.done():
            first_delta.set_result(time.perf_counter())

    url = f"{base_url}/chat/completions"
    out: dict[str, list[float]] = {"curl": [], "httpx": [], "chat-tui": []}
    async with (
        httpx.AsyncClient(timeout=120) as client,
        await Core.open(settings, listener=listener) as core,
    ):
        core.start_watching()
        await core.reachability.wait_online(30)
        sender = asyncio.create_task(core.sender.run())
        try:
            for n in range(rounds + 1):  # round 0 warms everything up and is not counted
                curl = await asyncio.to_thread(_curl_once, url)
                raw = await _httpx_once(client, url)
                first_delta = asyncio.get_running_loop().create_future()
                started = time.perf_counter()
                sent = await core.sender.submit(None, PROMPT)
                ours = (await asyncio.wait_for(first_delta, 120) - started) * 1000
                while (await core.store.get_message(sent.message.id)).state != "delivered":
                    await asyncio.sleep(0.02)
                if n:
                    out["curl"].append(curl)
                    out["httpx"].append(raw)
                    out["chat-tui"].append(ours)
                    log(
                        f"round {n}: curl {curl:.1f} ms, httpx {raw:.1f} ms, chat-tui {ours:.1f} ms"
                    )
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return out


def run(quick: bool) -> list[Result]:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.llama import LlamaServer, prepared

    paths = prepared()
    if paths is None:
        log("llama-server is not prepared: run `python scripts/prepare_llama.py` (~10 min)")
        return [Result("not measured: llama-server not prepared", 0, "", "", None)]
    if shutil.which("curl") is None:
        log("curl is not installed: the raw httpx client is the baseline")
    rounds = 5 if quick else 15
    server = LlamaServer(paths)
    try:
        server.start()
        with temp_dir("real-ttft") as tmp:
            times = asyncio.run(_measure(server.base_url, tmp, rounds))
    finally:
        server.close()
    baseline = "curl" if shutil.which("curl") and times["curl"] else "httpx"
    overhead = median(times["chat-tui"]) - median(times[baseline])
    results = [
        Result(f"chat-tui − {baseline}, median TTFT", overhead, "ms", f"≤ {TARGET_MS:.0f} ms",
               overhead <= TARGET_MS),
        Result("chat-tui − raw httpx, median TTFT",
               median(times["chat-tui"]) - median(times["httpx"]), "ms", "", None),
    ]  # fmt: skip
    for name, values in times.items():
        if values:
            results.append(Result(f"{name} TTFT median", median(values), "ms", "", None))
    if baseline == "curl":
        # What curl's figure carries beside the request: starting the process.
        spawns = []
        for _ in range(7):
            started = time.perf_counter()
            subprocess.run(["curl", "--version"], capture_output=True, check=False)
            spawns.append((time.perf_counter() - started) * 1000)
        results.append(Result("curl process start + exit (median)", median(spawns), "ms", "", None))
    # The fastest round of each: what is left when the shared machine is quiet.
    best = min(times["chat-tui"]) - min(times[baseline])
    results.append(Result(f"chat-tui − {baseline}, fastest rounds", best, "ms", "", None))
    return results


if __name__ == "__main__":
    main("real_ttft", run)
