"""Snapshot tests of the main screens at 80×24 and 120×40 (pytest-textual-snapshot).

The scenes are those of ``scripts/screenshots.py`` (tests/scenes.py). Update
after a deliberate change of the look with ``pytest tests/tui/test_snapshots.py
--snapshot-update`` and look at the pictures before committing them (they are kept in
``__snapshots__/test_snapshots/`` beside this module).
"""

from __future__ import annotations

import socket

import pytest

from tests.scenes import SCENE_PORT, SCENES, SceneRun, frozen_display, scene_dir, scene_lock

SIZES = [(80, 24), (120, 40)]


def _port_free() -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind(("127.0.0.1", SCENE_PORT))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(SCENES))
def test_screen(snap_compare, name: str, size: tuple[int, int]) -> None:
    with scene_lock():  # another test run on this machine waits for this scene
        if not _port_free():
            pytest.skip(f"port {SCENE_PORT} (the scenes' fixed endpoint) is in use")
        run = SceneRun(SCENES[name], scene_dir())
        try:
            with frozen_display():
                assert snap_compare(run.app, terminal_size=size, run_before=run.run_before)
        finally:
            run.close()
