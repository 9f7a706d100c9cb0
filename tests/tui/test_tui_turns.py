"""The chat window's endpoint, fallback and version keys, driven through Pilot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chat_tui.config import EndpointConfig
from chat_tui.tui.app import ChatApp
from chat_tui.tui.widgets.status import OfflineBanner, StatusLine
from chat_tui.tui.widgets.versions import LocalAnswerBlock
from tests.fault_server import FaultServer
from tests.helpers import app_settings, online, views, wait_until


@pytest.fixture
def local() -> Iterator[FaultServer]:
    server = FaultServer(reply_delay=0.5).start()
    server.reply_fn = lambda body: "a local answer, streamed in pieces " * 3
    try:
        yield server
    finally:
        server.stop()


def fallback_settings(server: FaultServer, local: FaultServer, tmp_path: Path):
    """The default endpoint is ``server`` (the "cloud"); ``local`` is the fallback."""
    return app_settings(
        server,
        tmp_path,
        endpoints={"local": EndpointConfig(local.base_url, model="local-model")},
        fallback="local",
    )


def fallback_ready(app: ChatApp) -> bool:
    """The fallback is online and the default endpoint offline."""
    return (
        app.core is not None
        and app.core.links.get("local").reachability.online
        and app.reach is not None
        and app.reach.state == "offline"
    )


async def test_fallback_block_then_keep_local(
    server: FaultServer, local: FaultServer, tmp_path: Path
) -> None:
    server.stop()  # the default endpoint (the "cloud") is gone from the start
    app = ChatApp(fallback_settings(server, local, tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(pilot, lambda: fallback_ready(app))
        await pilot.press(*"what is a tide", "enter")
        await wait_until(pilot, lambda: bool(app.query(LocalAnswerBlock)), timeout=5)
        block = app.query_one(LocalAnswerBlock)
        assert block.label == "answered by local-model on local while default is offline"
        # The stored notice replaces the live block.
        await wait_until(
            pilot,
            lambda: (
                any(v.message.meta.get("kind") == "fallback_answer" for v in views(app))
                and not app.query(LocalAnswerBlock)
            ),
        )
        notice = next(v for v in views(app) if v.message.role == "notice")
        assert notice.header_text == block.label
        assert "Offline" in str(app.query_one(OfflineBanner).render())
        question = next(v for v in views(app) if v.message.role == "user")
        assert question.message.state == "queued"
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: question.message.state == "cancelled")
        server.start()
        await wait_until(pilot, lambda: online(app))
        assert not [r for r in server.requests if r.path.endswith("/chat/completions")]


async def test_regenerate_and_switch_versions_with_keys(
    server: FaultServer, tmp_path: Path
) -> None:
    replies = iter(["the first reply", "the second reply"])
    server.reply_fn = lambda body: next(replies, "more")
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(pilot, lambda: online(app))
        await pilot.press(*"hello", "enter")
        await wait_until(
            pilot, lambda: [v.message.content for v in views(app)][-1:] == ["the first reply"]
        )
        await pilot.press("ctrl+g")
        await wait_until(
            pilot, lambda: [v.message.content for v in views(app)][-1:] == ["the second reply"]
        )
        user = next(v for v in views(app) if v.message.role == "user")
        assert "‹ 2/2 ›" in user.header_text
        assert [v.message.role for v in views(app)] == ["user", "assistant"]
        await pilot.press("alt+left")
        await wait_until(
            pilot, lambda: [v.message.content for v in views(app)][-1:] == ["the first reply"]
        )
        user = next(v for v in views(app) if v.message.role == "user")
        assert "‹ 1/2 ›" in user.header_text
        await pilot.press("alt+right")
        await wait_until(
            pilot, lambda: [v.message.content for v in views(app)][-1:] == ["the second reply"]
        )


def test_a_reachability_update_replaces_only_the_same_endpoints() -> None:
    """Coalescing kept one queued update in all: a burst from the fallback endpoint
    dropped the conversation's own endpoint going offline (regression)."""
    from chat_tui.events import ReachabilityState
    from chat_tui.tui.messages import ReachabilityChanged

    cloud_down = ReachabilityChanged(ReachabilityState("offline", "", 0.0, None, "default"))
    local_up = ReachabilityChanged(ReachabilityState("online", "", 0.0, None, "local"))
    cloud_up = ReachabilityChanged(ReachabilityState("online", "", 1.0, None, "default"))
    assert not local_up.can_replace(cloud_down)
    assert cloud_up.can_replace(cloud_down)


async def test_escape_stops_the_local_answer_and_the_question_stays_queued(
    server: FaultServer, local: FaultServer, tmp_path: Path
) -> None:
    server.stop()
    local.reply_delay = 1.0  # four pieces a second apart
    app = ChatApp(fallback_settings(server, local, tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(pilot, lambda: fallback_ready(app))
        await pilot.press(*"tell me slowly", "enter")
        await wait_until(
            pilot,
            lambda: any(b.received for b in app.query(LocalAnswerBlock)),
            timeout=5,
        )
        await pilot.press("escape")
        await wait_until(
            pilot,
            lambda: (
                any(v.message.meta.get("stopped") for v in views(app))
                and not app.query(LocalAnswerBlock)
            ),
        )
        notice = next(v for v in views(app) if v.message.role == "notice")
        assert len(notice.message.content) < len("a local answer, streamed in pieces " * 3)
        question = next(v for v in views(app) if v.message.role == "user")
        assert question.message.state == "queued"


async def test_status_line_names_another_endpoint_that_is_offline(
    server: FaultServer, local: FaultServer, tmp_path: Path
) -> None:
    local.stop()  # the fallback is away; the conversation's own endpoint is fine
    app = ChatApp(fallback_settings(server, local, tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await wait_until(
            pilot,
            lambda: (
                app.reach is not None
                and app.reach.state == "online"
                and "local offline" in str(app.query_one(StatusLine).render())
            ),
        )
        assert "Offline" not in str(app.query_one(OfflineBanner).render())
