"""Write settings back to config.toml without losing the user's comments or layout.

The file is round-tripped with tomlkit (imported here, never on the start-up
path): only the keys that changed are touched, everything else stays as the
user wrote it. The write is atomic (a temporary file, then rename) and the file
stays private (0600), as it may hold the API key.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .config import ConfigError


def save_settings(path: Path, changes: dict[str, Any]) -> None:
    """Set each key of ``changes`` in ``path`` (``None`` removes the key)."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"{path}: invalid TOML, not changed: {exc}") from None
    for key, value in changes.items():
        if value is None:
            if key in doc:
                del doc[key]
        else:
            # tomlkit puts a new top-level key before the first [table] and keeps
            # the comment beside an existing one.
            doc[key] = value
    new_text = tomlkit.dumps(doc)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
