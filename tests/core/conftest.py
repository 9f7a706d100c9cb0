"""Fixtures of the core tests: an event list and a real core on the loopback fault
server (with ``settings`` from tests/conftest.py), and the real llama.cpp server
(``llama_server``, skipped with the reason printed when ``scripts/prepare_llama.py`` has
not prepared it).

The tests here drive the headless core (outbox, endpoint, core) in the test process
or as `python -m chat_tui sync` processes: no widgets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from chat_tui.config import Settings
from chat_tui.core import Core
from tests.llama import llama_server  # noqa: F401 - the fixture, used by name


@pytest.fixture
def events() -> list[Any]:
    return []


@pytest.fixture
async def core(settings: Settings, events: list[Any]) -> AsyncIterator[Core]:
    """An open core (reachability watcher running, no sender started)."""
    eng = await Core.open(settings, listener=events.append)
    try:
        eng.start_watching()
        yield eng
    finally:
        await eng.close()
