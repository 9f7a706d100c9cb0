"""The cyclic garbage collector paused until the chat window's first frame.

Python's collector runs every 700 or so new container objects. Opening the chat
window creates some 50,000 objects that live as long as the program (modules,
classes, styles, the widget tree), so before the first frame it ran about 110
times, for about 40 ms, and freed 710 objects. ``pause`` (the first thing the
chat window's path does, ``cli.main``) stops it; ``resume`` (the app, once its
first frame is drawn, and again at exit) starts it again. Reference counting
frees everything else as usual meanwhile. ``python -m benchmarks startup``
measures the first frame with it.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Turn the collector back on, if ``pause`` turned it off."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()
