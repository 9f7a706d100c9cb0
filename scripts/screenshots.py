"""Make SVG screenshots of the main screens from the real app.

    python scripts/screenshots.py [--out screenshots]

Each scene drives the real ChatApp (headless, through Pilot) against the
real loopback fault server and a fresh database, then saves what is on screen.
No API key is set, so none can appear in a picture.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_tui.config import Settings  # noqa: E402
from chat_tui.store import Store  # noqa: E402
from chat_tui.tui.app import ChatApp  # noqa: E402
from chat_tui.tui.screens.queue import QueueScreen  # noqa: E402
from chat_tui.tui.widgets.chat_view import MessageView  # noqa: E402
from chat_tui.tui.widgets.composer import Composer  # noqa: E402
from tests.fault_server import Fault, FaultServer  # noqa: E402

SIZE = (110, 34)

MARKDOWN_REPLY = """\
Here are three ways to **reverse a list** in Python:

1. `items.reverse()` reverses *in place*.
2. `items[::-1]` makes a reversed copy.
3. `list(reversed(items))` works with any iterable.

```python
items = [1, 2, 3]
print(items[::-1])  # [3, 2, 1]
```

| way | copies? |
| --- | --- |
| `reverse()` | no |
| slicing | yes |
"""


def settings_for(server: FaultServer, data_dir: Path) -> Settings:
    return Settings(
        base_url=server.base_url,
        data_dir=data_dir,
        config_path=data_dir / "none.toml",
        model="llama3.2",
        connect_timeout=1.0,
        read_timeout=5.0,
        probe_cap=2.0,
        backoff_base=0.05,
        backoff_cap=0.2,
        handoff_on_exit=False,
    )


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("the screen never reached the expected state")
        await pilot.pause(0.05)


async def seed(db: Path, title: str, pairs: list[tuple[str, str]]) -> None:
    store = await Store.open(db)
    try:
        conversation = await store.create_conversation(title)
        for question, answer in pairs:
            message, _ = await store.enqueue(conversation.id, question)
            claim = await store.claim_next("seed", lease_seconds=30)
            assert claim is not None and claim.message.id == message.id
            await store.complete(message.id, "seed", answer, meta={"model": "llama3.2"})
    finally:
        await store.close()


def replies(app: ChatApp) -> int:
    return sum(1 for v in app.query(MessageView) if v.message.role == "assistant")


def still(app: ChatApp) -> None:
    """No blinking cursor, so pictures are stable."""
    app.query_one(Composer).cursor_blink = False


async def scene_chat(server: FaultServer, data: Path, save: Callable[[ChatApp], None]) -> None:
    await seed(data / "chat.db", "Packing for Lisbon", [("What should I pack?", "Layers.")])
    server.push(Fault(kind="reply", text=MARKDOWN_REPLY))
    app = ChatApp(settings_for(server, data))
    async with app.run_test(size=SIZE) as pilot:
        still(app)
        await pilot.press("ctrl+n", *"How do I reverse a list in Python?", "enter")
        await wait_until(pilot, lambda: replies(app) == 1)
        await pilot.pause(0.3)
        save(app)


async def scene_offline(server: FaultServer, data: Path, save: Callable[[ChatApp], None]) -> None:
    await seed(
        data / "chat.db", "Trip planning", [("How long is the train to Porto?", "About 3 hours.")]
    )
    server.stop()
    app = ChatApp(settings_for(server, data))
    async with app.run_test(size=SIZE) as pilot:
        still(app)
        await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "offline")
        for text in ("Which station does it leave from?", "Is there a dining car?"):
            await pilot.press(*text, "enter")
        await wait_until(pilot, lambda: app.queued == 2)
        await pilot.press(*"and do I need to book seats")
        await pilot.pause(0.3)
        save(app)
    server.start()


async def scene_queue(server: FaultServer, data: Path, save: Callable[[ChatApp], None]) -> None:
    server.push(
        Fault(
            kind="status",
            status=400,
            body='{"error": {"message": "This model\'s maximum context length is 8192 tokens"}}',
        )
    )
    app = ChatApp(settings_for(server, data))
    async with app.run_test(size=SIZE) as pilot:
        still(app)
        await pilot.press(*"Summarise this very long document…", "enter")
        await wait_until(
            pilot, lambda: any(v.message.state == "failed" for v in app.query(MessageView))
        )
        server.stop()
        await pilot.press(*"And list the key dates", "enter")
        await pilot.press("ctrl+n", *"Draft a reply to Ana", "enter")
        await wait_until(pilot, lambda: app.queued >= 2)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen))
        await pilot.pause(0.3)
        save(app)
    server.start()


async def scene_offline_answer(
    server: FaultServer, data: Path, save: Callable[[ChatApp], None]
) -> None:
    await seed(
        data / "chat.db",
        "Kitchen notes",
        [
            (
                "How long should I boil an egg for a runny yolk?",
                "About **6 minutes** from boiling water, then straight into cold water.",
            ),
        ],
    )
    server.stop()
    app = ChatApp(settings_for(server, data))
    async with app.run_test(size=SIZE) as pilot:
        still(app)
        await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "offline")
        await pilot.press("ctrl+n", *"how long do I boil an egg for a runny yolk", "enter")
        await wait_until(
            pilot, lambda: any(v.message.role == "notice" for v in app.query(MessageView))
        )
        await pilot.pause(0.3)
        save(app)
    server.start()


async def scene_failed(server: FaultServer, data: Path, save: Callable[[ChatApp], None]) -> None:
    server.push(
        Fault(
            kind="status",
            status=404,
            body='{"error": {"message": "model \\"llama9\\" not found, try pulling it first"}}',
        )
    )
    app = ChatApp(settings_for(server, data))
    async with app.run_test(size=SIZE) as pilot:
        still(app)
        await pilot.press(*"Hello, are you there?", "enter")
        await wait_until(
            pilot, lambda: any(v.message.state == "failed" for v in app.query(MessageView))
        )
        await pilot.press(*"One more thing…", "enter")
        await pilot.pause(0.5)
        save(app)


SCENES: dict[str, Callable[[FaultServer, Path, Callable[[ChatApp], None]], Awaitable[None]]] = {
    "chat-streamed-markdown": scene_chat,
    "offline-banner-and-queue-counter": scene_offline,
    "queue-screen": scene_queue,
    "offline-answer": scene_offline_answer,
    "failed-message-with-reason": scene_failed,
}


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, scene in SCENES.items():
        with tempfile.TemporaryDirectory() as tmp, FaultServer() as server:

            def save(app: ChatApp, name: str = name) -> None:
                app.save_screenshot(filename=f"{name}.svg", path=str(out))

            await scene(server, Path(tmp), save)
            print(f"wrote {out / (name + '.svg')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    asyncio.run(main(parser.parse_args().out))
