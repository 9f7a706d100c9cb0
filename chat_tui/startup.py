"""The cyclic garbage collector, tuned for the chat window's life.

Python's collector runs every 700 or so new container objects, and every so
often it walks every object the program has. Opening the chat window creates
some 50,000 objects that live as long as the program (modules, classes, styles,
the widget tree). Before the first frame the collector ran about 110 times, for
about 40 ms, and freed 710 objects. Later, each full collection walked them all
again (about 150 ms while opening a long conversation here, one stall of the
event loop).

So the chat window's path (``cli.main``) calls ``pause`` first thing. The app
calls ``resume`` once its first frame is drawn (``cli.main`` again at the end,
for a window that never drew one): what exists by then is moved out of every
later collection (``gc.freeze``) and the collector runs again.
``freeze_long_lived`` does the same once the core is open (httpx, aiosqlite, the
store). Reference counting frees everything else as usual throughout. Other
commands, and tests that build the app themselves, leave the collector alone.
``python -m benchmarks startup`` measures the first frame with it;
``open_conversation`` and ``long_reply`` take the same path.
"""

from __future__ import annotations

import gc

_paused = False
_ours = False  # the chat window's process: the collector is ours to tune


def pause() -> None:
    global _paused, _ours
    if gc.isenabled():
        gc.disable()
        _paused = _ours = True


def resume() -> None:
    """Freeze what exists and turn the collector back on, if ``pause`` turned it off."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def freeze_long_lived() -> None:
    """Move what exists now out of later collections (in the chat window only)."""
    if _ours and not _paused:
        gc.freeze()
