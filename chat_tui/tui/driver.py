"""The terminal driver, made safe for a terminal that hangs up.

Textual writes every frame through a writer thread with a short queue. When the
terminal hangs up (an SSH drop, a closed window), a write fails with EIO, the
thread dies of it, and once its queue is full the next frame blocks the app's
event loop for good: the draft is never saved and the exit never finishes. Here
the thread writes through ``TerminalOutput``, which turns a failed write into
"the terminal is gone" and drops what follows, so the app keeps running until it
notices the hang-up and closes cleanly (``ChatApp._check_terminal``).
"""

from __future__ import annotations

import sys
from typing import IO, Any


class TerminalOutput:
    """A text file whose writes stop failing once the terminal behind it is gone."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self._file.write(text)
            except (OSError, ValueError):  # EIO after a hang-up; a closed file
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._file.flush()
            except (OSError, ValueError):
                self.gone = True

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return self._file.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def hangup_safe(driver_class: type[Any]) -> type[Any]:
    """The driver Textual would use, writing through ``TerminalOutput`` where it
    drives a POSIX terminal (the Linux driver, also used on macOS)."""
    if sys.platform == "win32" or driver_class.__name__ != "LinuxDriver":
        return driver_class

    class HangupSafeDriver(driver_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._file = TerminalOutput(self._file)

    return HangupSafeDriver
