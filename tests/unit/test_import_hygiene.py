"""The headless core never imports textual or rich (docs/architecture.md, "Process model")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "chat_tui"
FORBIDDEN = ("textual", "rich")


def core_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "tui" not in p.relative_to(PACKAGE).parts]


def test_core_sources_do_not_import_textual_or_rich() -> None:
    offenders = []
    for path in core_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert core_modules(), "no core modules found"
    assert offenders == []


def test_importing_the_core_loads_neither_textual_nor_rich() -> None:
    modules = sorted(
        "chat_tui." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in core_modules()
        if p.name not in ("__main__.py",)
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_chat_windows_first_frame_path_leaves_the_heavy_parts_for_later() -> None:
    """`chat-tui` imports the CLI and the app before its first frame; the database
    driver, the HTTP client and the verbs' parsers load after it (docs/architecture.md,
    "Start-up")."""
    code = (
        "import sys\n"
        "from chat_tui.cli import main\n"
        "from chat_tui.cli.shared import window_args\n"
        "window_args(['--model', 'm'])\n"
        "import chat_tui.tui.app\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlite3', 'aiosqlite', 'httpx', 'httpcore', 'argparse') or m in "
        "('chat_tui.cli.parser', 'chat_tui.cli.browse', 'chat_tui.core', "
        "'chat_tui.store.composed'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
