"""The scenes of the main screens, shared by the snapshot tests and
``scripts/screenshots.py``: the README's pictures are the tested screens.

Each scene seeds a fresh database, sets up the loopback fault server, builds
the real ``ChatApp`` and drives it with Pilot. Deterministic: the clock shown
on screen is frozen, the cursor does not blink, the server listens on a fixed
port (the status line shows the endpoint).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chat_tui.config import Settings
from chat_tui.tui.app import ChatApp
from chat_tui.tui.screens.help import HelpScreen
from chat_tui.tui.screens.queue import QueueScreen
from chat_tui.tui.screens.search import SearchScreen
from chat_tui.tui.screens.settings import SettingsScreen
from chat_tui.tui.widgets.chat_view import MessageView
from chat_tui.tui.widgets.composer import Composer
from tests.fault_server import Fault, FaultServer
from tests.helpers import online, seed_history, wait_until

SCENE_MODEL = "llama3.2"  # the model on screen and in the seeded replies
SEEDED = {"model": SCENE_MODEL}  # the meta of a seeded reply
SCENE_PORT = 47231  # fixed, so the endpoint on screen is the same in every picture

MARKDOWN_REPLY = """\
## Reversing a list

Three ways to **reverse a list** in Python:

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


@contextlib.contextmanager
def frozen_display() -> Iterator[None]:
    """Times on screen read the same in every run: 09:30, 'in 5 s'."""
    from chat_tui.tui import formatting
    from chat_tui.tui.screens import search
    from chat_tui.tui.widgets import message, sidebar, status

    def clock(ts: float, now: float | None = None) -> str:
        return "09:30"

    def until(ts: float | None, now: float | None = None) -> str:
        return "in 5 s"

    patched = [
        (formatting, "clock", clock),
        (formatting, "until", until),
        (message, "clock", clock),
        (sidebar, "clock", clock),
        (search, "clock", clock),
        (status, "until", until),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patched]
    for module, name, value in patched:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def settings_for(server: FaultServer, data_dir: Path) -> Settings:
    return Settings(
        base_url=server.base_url,
        data_dir=data_dir,
        config_path=data_dir / "config.toml",
        model=SCENE_MODEL,
        connect_timeout=1.0,
        read_timeout=5.0,
        probe_cap=2.0,
        backoff_base=0.05,
        backoff_cap=0.2,
        handoff_on_exit=False,
    )


def still(app: ChatApp) -> None:
    """No blinking cursor, so pictures are stable."""
    app.query_one(Composer).cursor_blink = False


def replies(app: ChatApp) -> int:
    return sum(1 for v in app.query(MessageView) if v.message.role == "assistant")


@dataclass
class Scene:
    name: str
    run: Callable[..., Awaitable[None]]  # (pilot, app, server) -> None
    seed: Callable[[Path], Awaitable[None]] | None = None
    server_down: bool = False
    faults: list[Fault] = field(default_factory=list)


async def _welcome(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: online(app) and bool(app.query(".welcome")))


async def _seed_lisbon(data: Path) -> None:
    await seed_history(
        data / "chat.db", [("What should I pack?", "Layers.")], "Packing for Lisbon", SEEDED
    )


async def _chat(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: online(app) and replies(app) == 1)
    await pilot.press("ctrl+n", *"How do I reverse a list in Python?", "enter")
    await wait_until(
        pilot,
        lambda: (
            app.current is not None
            and app.current.title.startswith("How do I")
            and replies(app) == 1
        ),
    )


async def _seed_trip(data: Path) -> None:
    await seed_history(
        data / "chat.db",
        [("How long is the train to Porto?", "About 3 hours.")],
        "Trip planning",
        SEEDED,
    )


async def _offline(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "offline")
    for text in ("Which station does it leave from?", "Is there a dining car?"):
        await pilot.press(*text, "enter")
    await wait_until(pilot, lambda: app.queued == 2)
    await pilot.press(*"and do I need to book seats")


async def _queue(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: online(app))
    await pilot.press(*"Summarise this very long document…", "enter")
    await wait_until(
        pilot, lambda: any(v.message.state == "failed" for v in app.query(MessageView))
    )
    server.stop()
    await pilot.press(*"And list the key dates", "enter")
    await wait_until(pilot, lambda: app.queued >= 1)
    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen))


async def _settings(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: online(app))
    await pilot.press("f3")
    await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
    await wait_until(pilot, lambda: bool(app.screen.models))  # type: ignore[attr-defined]
    from textual.widgets import Input

    for entry in app.screen.query(Input):
        entry.cursor_blink = False


async def _help(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: online(app))
    await pilot.press("f1")
    await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))


async def _search(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: online(app) and replies(app) == 1)
    await pilot.press("ctrl+f", *"train")
    await wait_until(
        pilot,
        lambda: (
            isinstance(app.screen, SearchScreen)
            and app.screen.shown_query == "train"
            and bool(app.screen.hits)
        ),
    )
    from textual.widgets import Input

    app.screen.query_one(Input).cursor_blink = False  # the cursor shown, not mid-blink


async def _seed_kitchen(data: Path) -> None:
    await seed_history(
        data / "chat.db",
        [
            (
                "How long should I boil an egg for a runny yolk?",
                "About **6 minutes** from boiling water, then straight into cold water.",
            )
        ],
        "Kitchen notes",
        SEEDED,
    )


async def _offline_answer(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: app.reach is not None and app.reach.state == "offline")
    await pilot.press("ctrl+n", *"how long do I boil an egg for a runny yolk", "enter")
    await wait_until(pilot, lambda: any(v.message.role == "notice" for v in app.query(MessageView)))


async def _failed(pilot, app: ChatApp, server: FaultServer) -> None:
    await wait_until(pilot, lambda: online(app))
    await pilot.press(*"Hello, are you there?", "enter")
    await wait_until(
        pilot, lambda: any(v.message.state == "failed" for v in app.query(MessageView))
    )
    await pilot.press(*"One more thing…", "enter")
    await wait_until(pilot, lambda: len(list(app.query(MessageView))) == 2)


SCENES = {
    scene.name: scene
    for scene in [
        Scene("welcome", _welcome),
        Scene(
            "chat-streamed-markdown",
            _chat,
            seed=_seed_lisbon,
            faults=[Fault(kind="reply", text=MARKDOWN_REPLY)],
        ),
        Scene("offline-banner-and-queue-counter", _offline, seed=_seed_trip, server_down=True),
        Scene(
            "queue-screen",
            _queue,
            faults=[
                Fault(
                    kind="status",
                    status=400,
                    body='{"error": {"message": "maximum context length is 8192 tokens"}}',
                )
            ],
        ),
        Scene("settings", _settings),
        Scene("help", _help),
        Scene("search", _search, seed=_seed_trip),
        Scene("offline-answer", _offline_answer, seed=_seed_kitchen, server_down=True),
        Scene(
            "failed-message-with-reason",
            _failed,
            faults=[
                Fault(
                    kind="status",
                    status=404,
                    body='{"error": {"message": "model \\"llama9\\" not found, try pulling it"}}',
                )
            ],
        ),
    ]
}


@contextlib.contextmanager
def scene_lock() -> Iterator[None]:
    """One scene at a time on this machine: every scene uses the same port and data dir,
    so two test runs at once would take each other's database away."""
    import tempfile

    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to share the machine with
        yield
        return
    with open(Path(tempfile.gettempdir()) / "chat-tui-scene.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def scene_dir() -> Path:
    """An empty data dir at the same path every time (the settings screen shows it)."""
    import shutil
    import tempfile

    path = Path(tempfile.gettempdir()) / "chat-tui-scene"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    return path


class SceneRun:
    """Set a scene up (server on the fixed port, seeded database) and build the app.
    ``close()`` stops the server."""

    def __init__(self, scene: Scene, data_dir: Path) -> None:
        import asyncio

        self.scene = scene
        self.server = FaultServer(port=SCENE_PORT).start()
        self.server.tokens_per_second = 42.0  # a reply's header shows it: keep it fixed
        if scene.seed is not None:
            asyncio.run(scene.seed(data_dir))
        for fault in scene.faults:
            self.server.push(fault)
        if scene.server_down:
            self.server.stop()
        self.app = ChatApp(settings_for(self.server, data_dir))

    async def run_before(self, pilot) -> None:
        # The chat screen composes in its own task: it may not be there yet.
        await wait_until(pilot, lambda: bool(self.app.query(Composer)))
        still(self.app)
        await self.scene.run(pilot, self.app, self.server)
        await pilot.pause(0.3)
        self.app.clear_notifications()

    def close(self) -> None:
        self.server.stop()
