"""Where typed text goes when the database cannot take it: a file outside the data dir.

When the draft cannot be saved at exit (a full disk, a database that was
deleted or replaced while the app ran), the text is written to a small file
in the user's runtime dir (``$XDG_RUNTIME_DIR``, a tmpfs on most systems), or
else the temp dir: a private folder per user, 0700, files 0600. The exit
message names the file; the next start puts its text back into the draft and
removes it. Files are kept per database, so a second data dir never picks up
another's text.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "draft-"
_serial = itertools.count()  # several files in one second keep their order


@dataclass(frozen=True, slots=True)
class Rescued:
    path: Path
    conversation_id: int | None
    text: str


def rescue_dir(db_path: Path) -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    tag = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:12]
    return Path(base) / f"chat-tui-{os.getuid()}" / tag


def save(db_path: Path, conversation_id: int | None, text: str) -> Path:
    """Write ``text`` to a new private file; returns its path. Raises OSError."""
    folder = rescue_dir(db_path)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(folder.parent, 0o700)
        os.chmod(folder, 0o700)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{PREFIX}c{conversation_id or 0}-{stamp}-{os.getpid()}-{next(_serial):03d}.txt"
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        data = text.encode("utf-8")
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    return path


def pending(db_path: Path) -> list[Rescued]:
    """Text rescued by earlier runs for this database, oldest first."""
    folder = rescue_dir(db_path)
    found: list[Rescued] = []
    with contextlib.suppress(OSError):
        for path in sorted(folder.glob(f"{PREFIX}c*.txt")):
            try:
                conversation = int(path.name[len(PREFIX) + 1 :].split("-", 1)[0]) or None
                text = path.read_text(encoding="utf-8", errors="replace")
            except (OSError, ValueError):
                continue
            found.append(Rescued(path, conversation, text))
    return found
