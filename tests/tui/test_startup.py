"""The collector is paused on the way to the chat window's first frame, runs again
once it is drawn, with what exists then (and once the core is open) frozen out of
later collections (chat_tui/startup.py); other commands never touch it."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from chat_tui import startup
from chat_tui.cli import main
from chat_tui.tui.app import ChatApp
from tests.fault_server import FaultServer
from tests.helpers import app_settings, wait_until


@pytest.fixture
def collector_restored():  # type: ignore[no-untyped-def]
    yield
    startup.resume()
    gc.enable()
    gc.unfreeze()
    startup._ours = False  # the next test's app is not the chat window's own process


@pytest.mark.usefixtures("collector_restored")
async def test_the_collector_runs_again_once_the_first_frame_is_drawn(
    server: FaultServer, tmp_path: Path
) -> None:
    gc.unfreeze()
    startup.pause()
    assert not gc.isenabled()
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, gc.isenabled, what="the collector running again")
        assert gc.get_freeze_count() > 10_000  # the program's long-lived objects
        assert not tracked(app)  # frozen with the first frame
        await wait_until(pilot, app.core_ready)
        assert not tracked(app.core)  # frozen once the core opened


def tracked(obj: object) -> bool:
    """Whether later collections still walk ``obj`` (frozen objects are not listed)."""
    return any(o is obj for o in gc.get_objects())


@pytest.mark.usefixtures("collector_restored")
def test_resume_leaves_a_collector_it_did_not_pause_alone() -> None:
    gc.disable()  # someone else's choice (an embedding program, a profiler)
    startup.resume()
    assert not gc.isenabled()
    gc.enable()
    startup.pause()
    startup.resume()
    assert gc.isenabled()


def test_a_verb_never_pauses_the_collector(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_TUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHAT_TUI_CONFIG", str(tmp_path / "none.toml"))
    assert main(["paths"]) == 0
    assert gc.isenabled()
    assert "database:" in capsys.readouterr().out


@pytest.mark.usefixtures("collector_restored")
def test_a_chat_window_that_never_opens_leaves_the_collector_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("base_url = [not toml\n")
    monkeypatch.setenv("CHAT_TUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHAT_TUI_CONFIG", str(config))
    assert main([]) == 2  # the window's path, stopped by the invalid config
    assert gc.isenabled()
    assert "invalid TOML" in capsys.readouterr().err
