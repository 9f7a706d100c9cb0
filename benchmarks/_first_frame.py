"""Child process of the startup benchmark: start the TUI headless, report its first frame.

Run as ``python -m benchmarks._first_frame``; settings come from the
environment the parent set (temp data dir, a config file that does not exist,
an endpoint nobody listens on). Prints ``T <label> <time.time()>`` lines to
the real stdout (Textual redirects ``sys.stdout`` while it runs) and exits.

"First frame": Textual's ``Screen._compositor_refresh`` hands each composed
frame to ``App._display``, the one place a real driver writes it to the
terminal (the headless driver returns early there). The first call outside a
``batch_update`` (compose and ``on_mount`` run inside one) with something to
show is the first frame a user would see. We render it to terminal bytes as
a real driver would, so that cost is counted too.
"""

from __future__ import annotations

import os
import time

T_INTERPRETER = time.time()  # the interpreter is up and running our code


def _report(label: str, when: float) -> None:
    os.write(1, f"T {label} {when:.6f}\n".encode())


def _css_paths(app_class: type) -> list[str]:
    import inspect
    from pathlib import Path

    base = Path(inspect.getfile(app_class)).parent
    paths = app_class.CSS_PATH or []
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    return [str(base / p) for p in paths]


def bare() -> None:
    """The floor: a bare Textual app (a Static and a Footer), measured the same way."""
    from textual.app import App
    from textual.widgets import Footer, Static

    t_imported = time.time()

    class BareApp(App):
        _seen_frame = False

        def compose(self):  # type: ignore[no-untyped-def]
            yield Static("hello")
            yield Footer()

        def _display(self, screen, renderable) -> None:  # type: ignore[no-untyped-def]
            if (
                not self._seen_frame
                and renderable is not None
                and not self._batch_count
                and self._running
            ):
                from textual._compositor import CompositorUpdate

                if isinstance(renderable, CompositorUpdate):
                    renderable.render_segments(self.console)
                self._seen_frame = True
                _report("frame", time.time())
                self.exit()
            super()._display(screen, renderable)

    _report("interpreter", T_INTERPRETER)
    _report("imported", t_imported)
    BareApp().run(headless=True)


def main() -> None:
    import sys

    if "--bare" in sys.argv:
        bare()
        return
    # The same path as `chat-tui`: the CLI module, the collector paused as `cli.main`
    # does for the chat window (chat_tui/startup.py), the settings, then the TUI.
    from chat_tui import startup
    from chat_tui.cli import load_settings

    startup.pause()
    settings = load_settings()
    from chat_tui.tui.app import ChatApp

    t_imported = time.time()

    class FirstFrameApp(ChatApp):
        # CSS_PATH is relative to the defining class's file: keep the app's own.
        CSS_PATH = _css_paths(ChatApp)
        _seen_frame = False

        def _display(self, screen, renderable) -> None:  # type: ignore[no-untyped-def]
            if (
                not self._seen_frame
                and renderable is not None
                and not self._batch_count
                and self._running
            ):
                from textual._compositor import CompositorUpdate

                if isinstance(renderable, CompositorUpdate):
                    renderable.render_segments(self.console)  # what a driver would write
                self._seen_frame = True
                _report("frame", time.time())
                self.exit()
            super()._display(screen, renderable)

    _report("interpreter", T_INTERPRETER)
    _report("imported", t_imported)
    app = FirstFrameApp(settings)
    app.run(headless=True)
    _report("exited", time.time())


if __name__ == "__main__":
    main()
