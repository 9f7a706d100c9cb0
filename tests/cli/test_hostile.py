"""Hostile servers, hostile files and hostile environments.

Every case here asks the same three questions of the real program (real
`python -m chat_tui` processes, the real TUI, a real loopback server, real
SQLite files): does the user get a clear message, is there no traceback, and
is nothing the user typed lost?

How the awkward environments are made (we run as root in CI sandboxes, and
root ignores file permissions):

* Read-only data dir / database: the CLI runs with CAP_DAC_OVERRIDE,
  CAP_DAC_READ_SEARCH and CAP_FOWNER dropped from its bounding set (prctl in
  ``preexec_fn``), so uid 0 is held to ordinary permission checks, against a
  directory owned by ``nobody`` (skipped when not root: only root can make a
  directory that belongs to someone else). A data dir below a regular file
  (ENOTDIR) and one below /proc need no privileges and are tested everywhere.
* A full disk: ``PRAGMA max_page_count`` on the program's own connection (the
  pragma is per connection, so the CLI gets it from a small wrapper,
  ``cli_with_pragma``; the TUI test sets it on the app's connection). SQLite
  then fails page allocation with SQLITE_FULL, "database or disk is full",
  as on a full file system. (RLIMIT_FSIZE was tried: it yields EFBIG, which
  SQLite reports as a generic "disk I/O error", not as a full disk.)
* A locked database: another process holds ``BEGIN EXCLUSIVE``; the waiting
  CLI gets a shorter busy_timeout the same way, only so the test is quick.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tests.fault_server as fault_server_module
from chat_tui.config import Settings
from chat_tui.store import Store
from chat_tui.tui.app import ChatApp
from chat_tui.tui.widgets.chat_view import MessageView
from tests.fault_server import Fault, FaultServer
from tests.helpers import REPO_ROOT, CliEnv, Terminal, fast_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # the slow tier: pytest -m slow

# Anything a terminal would act on: C0 (but newline and tab), DEL, C1, bidi overrides.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

HOSTILE_REPLY = (
    "\x1b[2J\x1b[H\x1b]0;pwned title\x07\x1b]52;c;ZXZpbA==\x07"
    "\x1b]8;;http://evil.example/\x1b\\disguised link\x1b]8;;\x1b\\ "
    "[bold]not bold[/bold] [@click=app.quit]click me[/] [link=http://evil.example]x[/link] "
    "\x9b31mC1 csi\x9b0m \x07bell\rover\r\nwritten \u202eevil\u202c done"
)
MARKUP = (
    "[bold]not bold[/bold]",
    "[@click=app.quit]click me[/]",
    "[link=http://evil.example]x[/link]",
)


def assert_clean(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def assert_no_controls(text: str, what: str) -> None:
    found = CONTROL.search(text)
    assert found is None, f"{what}: control character {found.group()!r} in {text[:400]!r}"


def send(cli: CliEnv, *args: str, input: str | None = None) -> dict:
    proc = cli.run("send", "--json", *args, input=input)
    assert_clean(proc, 0)
    return json.loads(proc.stdout)


def show(cli: CliEnv, cid: int) -> dict:
    return cli.json("show", str(cid), "--json")


# -- untrusted reply text ------------------------------------------------------------------------


def test_escape_sequences_and_markup_in_replies_and_errors_via_cli(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    fault_server.push(Fault("reply", text=HOSTILE_REPLY))
    ok = send(cli_env, "first \x1b]0;typed title\x07question\x1b[31m red")
    assert_clean(cli_env.run("sync", "--once"), 0)

    proc = cli_env.run("show", str(ok["conversation_id"]))
    assert_clean(proc, 0)
    out = proc.stdout
    for byte in ("\x1b", "\x07", "\x9b", "\x9d", "\r"):
        assert byte not in out
    assert_no_controls(out.replace("\n", "").replace("\t", ""), "show")
    for literal in MARKUP:  # markup is text, shown as typed by the model
        assert literal in out
    assert "disguised link" in out and "C1 csi" in out and "written evil done" in out
    assert "pwned title" not in out and "ZXZpbA" not in out  # OSC payloads are dropped

    # A failing message with a hostile error body (as a proxy could send) and a
    # hostile title: `status` prints both, cleanly (and `search` prints the reply).
    body = json.dumps({"error": {"message": "\x1b[2Jdenied \x1b]0;t\x07[@click=app.quit]q[/]"}})
    fault_server.push(Fault("status", status=400, body=body))
    send(cli_env, "--new", "title \x1b]0;evil\x07here\x1b[5m blink")
    assert_clean(cli_env.run("sync", "--once"), 0)
    printed = {}
    for verb in ("status", "search"):
        proc = cli_env.run(*([verb, "bold"] if verb == "search" else [verb]))
        assert_clean(proc, 0)
        assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout, verb
        assert_no_controls(proc.stdout.replace("\n", "").replace("\t", ""), verb)
        printed[verb] = proc.stdout
    status = printed["status"]
    assert "[failed]" in status and "HTTP 400" in status
    assert "denied" in status and "[@click=app.quit]q[/]" in status
    assert "[@click=app.quit]click me[/]" in printed["search"]
    assert "title here blink" in status
    # --json keeps the structure valid even with hostile content.
    data = cli_env.json("status", "--json")
    assert "\x1b" not in json.dumps(data, ensure_ascii=False)


def measured_sync_once(cli: CliEnv) -> dict:
    """`sync --once` with its peak RSS, measured in a fresh parent whose only child it is."""
    measure = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': p.returncode, 'out': p.stdout, 'err': p.stderr,\n"
        "    'seconds': time.monotonic() - t,\n"
        "    'rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", measure, *cli.argv("sync", "--once")],
        env=cli.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    result = json.loads(proc.stdout)
    assert result["rc"] == 0, result
    assert "Traceback" not in result["err"]
    return result


def test_50_mb_reply_is_capped_labelled_and_memory_stays_bounded(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    fault_server.push(Fault("huge", size=50_000_000))
    sent = send(cli_env, "tell me everything")
    result = measured_sync_once(cli_env)
    assert "delivered 1" in result["out"]
    assert result["rss_mb"] < 300, f"peak RSS {result['rss_mb']:.0f} MB"
    assert result["seconds"] < 30, result["seconds"]

    messages = show(cli_env, sent["conversation_id"])["messages"]
    assert [(m["role"], m["state"]) for m in messages] == [
        ("user", "delivered"),
        ("assistant", "complete"),
    ]
    reply = messages[1]["content"]
    assert reply.startswith("x" * 1000)
    assert len(reply) <= 1_000_000 + 200
    assert "reply cut at 1,000,000 characters" in reply[-200:]


def _endless_line(handler: Any) -> None:
    handler.wfile.write(b"data: ")
    while handler._pause(0):
        handler.wfile.write(b"x" * 65536)


def _data_lines_never_ending_an_event(handler: Any) -> None:
    while handler._pause(0):
        handler.wfile.write(b'data: {"choices": []}\n' * 4096)


def _only_comments(handler: Any) -> None:
    while handler._pause(0.01):
        handler.wfile.write(b": keep-alive\n\n")


@pytest.mark.parametrize(
    "body",
    [_endless_line, _data_lines_never_ending_an_event, _only_comments],
    ids=["one endless line", "no blank line", "comments only"],
)
def test_stream_without_events_is_bounded_in_memory_and_time(
    cli_env: CliEnv,
    fault_server: FaultServer,
    monkeypatch: pytest.MonkeyPatch,
    body: Callable[[Any], None],
) -> None:
    """A stream that sends bytes but never a complete event: the per-event checks
    never run, so the reader itself must bound what it buffers and for how long."""

    def endless(handler: Any, fault: Fault, request: dict) -> bool:
        handler.close_connection = True
        handler._sse_open()
        body(handler)
        return False

    monkeypatch.setattr(fault_server_module._Handler, "_fault_endless", endless)
    cli_env.write_config(fast_config(max_reply_seconds=1.0, backoff_base=30.0, backoff_cap=60.0))
    fault_server.push(Fault("endless"))
    sent = send(cli_env, "hello?")
    result = measured_sync_once(cli_env)
    assert result["seconds"] < 8, result["seconds"]
    assert result["rss_mb"] < 150, f"peak RSS {result['rss_mb']:.0f} MB"
    messages = show(cli_env, sent["conversation_id"])["messages"]
    # No text ever arrived, so nothing may be stored as a reply: cut for size or
    # for time, it is a transient failure and the message waits for a retry.
    assert [m["state"] for m in messages] == ["queued"]
    assert (
        "without a complete event" in messages[0]["error"]
        or "sent no text in 1 s" in messages[0]["error"]
    )


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_invalid_utf8_and_nul_never_reach_the_database(
    cli_env: CliEnv, fault_server: FaultServer, stream: bool
) -> None:
    cli_env.write_config(fast_config(stream=stream))
    fault_server.push(Fault("bad_utf8"))
    sent = send(cli_env, "garbage please")
    assert_clean(cli_env.run("sync", "--once"), 0)
    messages = show(cli_env, sent["conversation_id"])["messages"]
    assert [m["state"] for m in messages] == ["delivered", "complete"]
    assert "bad:" in messages[1]["content"] and ":end" in messages[1]["content"]

    conn = sqlite3.connect(cli_env.db_path)
    conn.text_factory = bytes
    try:
        rows = conn.execute("SELECT content, error, meta FROM messages").fetchall()
    finally:
        conn.close()
    for row in rows:
        for raw in row:
            if raw is None:
                continue
            assert b"\x00" not in raw
            raw.decode("utf-8")  # strict: no invalid bytes, no encoded surrogates
    out = cli_env.run("show", str(sent["conversation_id"])).stdout
    assert "\x00" not in out


def test_invalid_utf8_typed_on_stdin_or_argv_is_queued_not_a_traceback(
    cli_env: CliEnv,
) -> None:
    raw = subprocess.run(
        cli_env.argv("send", "--json", "-"),
        env=cli_env.env,
        cwd=REPO_ROOT,
        input=b"caf\xc3\xa9 \xff\xfe broken bytes",
        capture_output=True,
        timeout=30,
    )
    assert raw.returncode == 0, raw.stderr
    assert b"Traceback" not in raw.stderr
    first = json.loads(raw.stdout)
    argv = subprocess.run(
        cli_env.argv(
            "send", "--json", "-c", str(first["conversation_id"]), os.fsdecode(b"arg \xff here")
        ),
        env=cli_env.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert_clean(argv, 0)
    contents = [m["content"] for m in show(cli_env, first["conversation_id"])["messages"]]
    # The readable parts are kept; undecodable bytes become U+FFFD.
    assert contents == ["café \ufffd\ufffd broken bytes", "arg \ufffd here"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_endless_reply_is_cut_by_max_reply_seconds(
    cli_env: CliEnv, fault_server: FaultServer, stream: bool
) -> None:
    # A long backoff: the cut non-stream reply is not retried within this --once.
    seconds = 1.0 if stream else 0.5
    cli_env.write_config(
        fast_config(max_reply_seconds=seconds, stream=stream, backoff_base=30.0, backoff_cap=60.0)
    )
    fault_server.push(Fault("endless"))
    sent = send(cli_env, "never stop")
    started = time.monotonic()
    proc = cli_env.run("sync", "--once", timeout=30)
    elapsed = time.monotonic() - started
    assert_clean(proc, 0)
    assert elapsed < 8, f"sync --once took {elapsed:.1f} s with max_reply_seconds = {seconds}"
    messages = show(cli_env, sent["conversation_id"])["messages"]
    if stream:
        # What arrived in time is the reply, visibly labelled as cut.
        assert [m["state"] for m in messages] == ["delivered", "complete"]
        reply = messages[1]["content"]
        assert reply.startswith("endless endless")
        assert "reply cut at" in reply and "still streaming after 1 s" in reply
    else:
        # A JSON body cut short cannot be parsed: a transient failure, retried later.
        assert [m["state"] for m in messages] == ["queued"]
        status = cli_env.json("status", "--json")
        (item,) = status["items"]
        assert item["attempts"] == 1
        assert "within 0.5 s" in item["last_error"], item["last_error"]


# -- damaged, locked, unwritable and full databases -------------------------------------------


async def _damaged_database(path: Path) -> None:
    """A real chat-tui database whose every page but the first is garbage: it opens,
    then every query fails (the hard case: the damage shows after start-up)."""
    store = await Store.open(path)
    for i in range(20):
        await store.enqueue(None, f"conversation {i} " + "filler " * 150)
    await store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(page, len(data), page):
        data[offset : offset + page] = os.urandom(page)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["garbage", "damaged pages"])
async def test_corrupt_database_is_named_and_untouched(cli_env: CliEnv, damage: str) -> None:
    if damage == "garbage":
        cli_env.data_dir.mkdir(parents=True)
        cli_env.db_path.write_bytes(b"definitely not SQLite " * 500)
    else:
        await _damaged_database(cli_env.db_path)
    before = cli_env.db_path.read_bytes()
    for verb in (["list"], ["send", "hello"], ["status", "--json"], ["show", "1"]):
        proc = cli_env.run(*verb)
        assert_clean(proc, 1)
        assert str(cli_env.db_path) in proc.stderr, (verb, proc.stderr)
        assert "damaged" in proc.stderr, (verb, proc.stderr)
    assert cli_env.db_path.read_bytes() == before


async def test_tui_with_damaged_pages_exits_with_a_message(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    await _damaged_database(db)
    before = db.read_bytes()
    term = Terminal(tmp_path, fault_server.base_url)
    try:
        code = term.wait(20)
        term.drain(0.2)
    finally:
        term.kill()
    assert code == 1, term.output[-2000:]
    assert b"damaged or not a chat-tui database" in term.output
    assert b"Traceback" not in term.output
    assert db.read_bytes() == before


def cli_with_pragma(pragma: str) -> list[str]:
    """argv for the real CLI whose database connection also runs ``pragma`` after the
    program's own settings (the program is otherwise unchanged)."""
    code = (
        "import sys\n"
        "import chat_tui.store as store\n"
        "configure = store.Store._configure\n"
        "async def patched(self):\n"
        "    await configure(self)\n"
        f"    await self._db.execute({pragma!r})\n"
        "store.Store._configure = patched\n"
        "from chat_tui.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return [sys.executable, "-c", code]


LOCKER = (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "c.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.readline()\n"
    "c.execute('ROLLBACK')\n"
    "c.close()\n"
)


def test_locked_database_send_fails_clearly_then_works(cli_env: CliEnv) -> None:
    first = send(cli_env, "before the lock")
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(cli_env.db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        # The send waits out busy_timeout (10 s in the program; 1.5 s here to keep
        # the suite fast), then says so. Readers are not blocked meanwhile (WAL).
        started = time.monotonic()
        sender = subprocess.Popen(
            [
                *cli_with_pragma("PRAGMA busy_timeout = 1500"),
                "send",
                "-c",
                str(first["conversation_id"]),
                "while locked",
            ],
            env=cli_env.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        reader = cli_env.popen("show", str(first["conversation_id"]), "--json")
        out, err = sender.communicate(timeout=40)
        assert time.monotonic() - started >= 1.4  # it did wait for the other program
        assert sender.returncode == 1, (out, err)
        assert "locked" in err and str(cli_env.db_path) in err
        assert "Traceback" not in err
        read_out, read_err = reader.communicate(timeout=40)
        assert reader.returncode == 0, read_err
        assert [m["content"] for m in json.loads(read_out)["messages"]] == ["before the lock"]
    finally:
        if locker.poll() is None:
            assert locker.stdin is not None
            locker.stdin.write("\n")
            locker.stdin.flush()
        locker.wait(10)
    assert locker.returncode == 0
    # Released: the same command now works, and nothing was lost or doubled.
    again = send(cli_env, "-c", str(first["conversation_id"]), "while locked")
    assert again["state"] == "queued"
    contents = [m["content"] for m in show(cli_env, first["conversation_id"])["messages"]]
    assert contents == ["before the lock", "while locked"]


def _drop_root_file_powers() -> None:
    """preexec_fn: uid 0 without the capabilities that bypass file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _can_drop_root_file_powers(tmp: Path) -> bool:
    """True if a child with the powers dropped is refused a file it may not read."""
    locked = tmp / "no-access"
    locked.write_text("secret")
    locked.chmod(0)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", f"open({str(locked)!r}).read()"],
            preexec_fn=_drop_root_file_powers,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        locked.unlink()
    return probe.returncode != 0 and b"PermissionError" in probe.stderr


def _run_unprivileged(cli: CliEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli.argv(*args),
        env=cli.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=_drop_root_file_powers,
    )


def _make_foreign_read_only(path: Path) -> None:
    """Owned by nobody and read-only: the program's own chmod 0700 cannot undo it."""
    os.chown(path, 65534, 65534)
    path.chmod(0o555 if path.is_dir() else 0o444)


@pytest.mark.parametrize("where", ["below a file", "below /proc"])
def test_data_dir_that_cannot_exist(cli_env: CliEnv, tmp_path: Path, where: str) -> None:
    if where == "below a file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        data_dir = blocker / "data"
    else:
        data_dir = Path("/proc/chat-tui-test-data")
    cli_env.env["CHAT_TUI_DATA_DIR"] = str(data_dir)
    for verb in (["send", "hello"], ["list"], ["status"], ["sync"]):
        proc = cli_env.run(*verb)
        assert_clean(proc, 1)
        assert str(data_dir) in proc.stderr, proc.stderr
        assert "data directory" in proc.stderr


async def test_tui_with_unusable_data_dir_exits_with_a_message(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = Settings(
        base_url=fault_server.base_url,
        data_dir=blocker / "data",
        config_path=tmp_path / "none.toml",
        handoff_on_exit=False,
    )
    app = ChatApp(settings)
    async with app.run_test() as pilot:
        await pilot.pause()
    assert app.return_code == 1


def test_read_only_data_dir_and_database(cli_env: CliEnv, tmp_path: Path) -> None:
    # The program chmods its data dir to 0700, which undoes a read-only mode on a dir
    # the user owns; a really unwritable dir belongs to someone else, and only root
    # can make one. Root must then lose the powers that bypass file permissions.
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory owned by another user")
    if not _can_drop_root_file_powers(tmp_path):
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (prctl refused)")
    # 1. An empty data dir nobody lets us write to.
    cli_env.data_dir.mkdir(parents=True)
    _make_foreign_read_only(cli_env.data_dir)
    proc = _run_unprivileged(cli_env, "send", "hello")
    assert_clean(proc, 1)
    assert str(cli_env.db_path) in proc.stderr and "Permission denied" in proc.stderr
    assert not cli_env.db_path.exists()

    # 2. An existing database, read-only, in a read-only dir.
    cli_env.data_dir.chmod(0o700)
    os.chown(cli_env.data_dir, 0, 0)
    sent = send(cli_env, "already here")
    for path in cli_env.data_dir.iterdir():
        _make_foreign_read_only(path)
    _make_foreign_read_only(cli_env.data_dir)
    before = cli_env.db_path.read_bytes()
    for verb in (["send", "more"], ["list"], ["status"], ["sync"]):
        proc = _run_unprivileged(cli_env, *verb)
        assert_clean(proc, 1)
        assert str(cli_env.db_path) in proc.stderr, proc.stderr
        assert "writable" in proc.stderr or "Permission denied" in proc.stderr, proc.stderr
    assert cli_env.db_path.read_bytes() == before
    cli_env.data_dir.chmod(0o700)  # let pytest clean up
    conn = sqlite3.connect(cli_env.db_path)
    try:
        assert conn.execute("SELECT content FROM messages").fetchall() == [("already here",)]
        assert sent["message_id"] == 1
    finally:
        conn.close()


LONG_PASTE = "a long pasted log\n" + "\n".join(f"line {i}: " + "z" * 70 for i in range(300))


def test_full_disk_cli_send_fails_clearly(cli_env: CliEnv) -> None:
    first = send(cli_env, "while there was space")
    # max_page_count = 1 means "the current size": the file cannot grow any more.
    proc = subprocess.run(
        [*cli_with_pragma("PRAGMA max_page_count = 1"), "send", "-"],
        env=cli_env.env,
        cwd=REPO_ROOT,
        input=LONG_PASTE,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert_clean(proc, 1)
    assert "full" in proc.stderr and str(cli_env.db_path) in proc.stderr, proc.stderr
    assert [m["content"] for m in show(cli_env, first["conversation_id"])["messages"]] == [
        "while there was space"
    ]
    # Space again: the same input goes in.
    send(cli_env, "-", input=LONG_PASTE)
    contents = [m["content"] for m in show(cli_env, first["conversation_id"])["messages"]]
    assert contents == ["while there was space", LONG_PASTE]


async def test_full_disk_in_tui_keeps_the_text(fault_server: FaultServer, tmp_path: Path) -> None:
    settings = Settings(
        base_url=fault_server.base_url,
        data_dir=tmp_path,
        config_path=tmp_path / "none.toml",
        handoff_on_exit=False,
        connect_timeout=1.0,
        read_timeout=3.0,
    )
    app = ChatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + 10
        while app.core is None or not app.drafts.loaded:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        assert app.core is not None
        await app.core.store._db.execute("PRAGMA max_page_count = 1")
        app.composer.text = LONG_PASTE  # a paste
        await pilot.press("enter")
        deadline = time.monotonic() + 10

        def refusals() -> list[str]:
            return [
                str(n.message)
                for n in app._notifications
                if n.severity == "error" and "full" in str(n.message)
            ]

        while not refusals():
            assert time.monotonic() < deadline, [str(n.message) for n in app._notifications]
            await pilot.pause(0.05)
        assert str(settings.db_path) in refusals()[0]
        assert app.composer.text == LONG_PASTE
        assert not list(app.query(MessageView))
        # Space freed: Enter again queues it and only then clears the composer.
        await app.core.store._db.execute("PRAGMA max_page_count = 1073741823")
        await pilot.press("enter")
        deadline = time.monotonic() + 10
        while not list(app.query(MessageView)):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        assert app.query(MessageView).first().message.content == LONG_PASTE
        assert app.composer.text == ""
        assert app.is_running


# -- configuration ------------------------------------------------------------------------------


BAD_CONFIGS = {
    "bad TOML": ('model = "m"\nread_timeout = = 3\n', ["line 2", "column"]),
    "wrong type": ('max_attempts = "six"\n', ["max_attempts"]),
    "bool for a number": ("read_timeout = true\n", ["read_timeout"]),
    "unknown key": ("max_attemps = 3\n", ["max_attemps", "unknown"]),
    "ftp base_url": ('base_url = "ftp://example.com/v1"\n', ["base_url"]),
    "base_url without host": ('base_url = "http://"\n', ["base_url"]),
    "broken IPv6 base_url": ('base_url = "http://[::1/v1"\n', ["base_url"]),
    "bad port": ('base_url = "http://127.0.0.1:99999/v1"\n', ["base_url"]),
    "nan timeout": ("read_timeout = nan\n", ["read_timeout"]),
    "infinite cap": ("probe_cap = inf\n", ["probe_cap"]),
    "negative": ("connect_timeout = -1\n", ["connect_timeout"]),
    "not UTF-8": (b'model = "caf\xe9"\n', ["UTF-8"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
@pytest.mark.parametrize("verb", [[], ["status"]], ids=["tui", "status"])
def test_invalid_config_is_exit_2_with_a_clear_message(
    cli_env: CliEnv, case: str, verb: list[str]
) -> None:
    text, expected = BAD_CONFIGS[case]
    del cli_env.env["OPENAI_BASE_URL"]  # the environment would override the file's base_url
    if isinstance(text, bytes):
        cli_env.config_path.write_bytes(text)
    else:
        cli_env.write_config(text)
    proc = cli_env.run(*verb, timeout=20)
    assert_clean(proc, 2)
    assert "invalid configuration" in proc.stderr
    for part in expected:
        assert part in proc.stderr, (part, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    assert not cli_env.db_path.exists()


def test_invalid_base_url_from_environment_and_flag(cli_env: CliEnv) -> None:
    cli_env.env["OPENAI_BASE_URL"] = "localhost:11434"
    assert_clean(cli_env.run("status"), 2)
    del cli_env.env["OPENAI_BASE_URL"]
    proc = cli_env.run("status", "--base-url", "http://[oops")
    assert_clean(proc, 2)
    assert "base_url" in proc.stderr


def test_config_path_is_a_directory(cli_env: CliEnv, tmp_path: Path) -> None:
    cli_env.env["CHAT_TUI_CONFIG"] = str(tmp_path)
    proc = cli_env.run("list")
    assert_clean(proc, 2)
    assert str(tmp_path) in proc.stderr


# -- a captive portal ------------------------------------------------------------------------------


def test_captive_portal_costs_no_attempt_and_delivers_later(
    cli_env: CliEnv, fault_server: FaultServer
) -> None:
    sent = send(cli_env, "behind a portal")

    fault_server.mode = "captive"
    status = cli_env.json("status", "--json")
    assert status["reachability"]["state"] == "captive"
    assert status["items"][0]["attempts"] == 0
    human = cli_env.run("status")
    assert_clean(human, 0)
    assert "login page" in human.stdout
    proc = cli_env.run("sync", "--once")
    assert_clean(proc, 5)
    assert "login page" in proc.stderr

    # The probe passes but the chat request itself gets the portal page.
    fault_server.mode = "ok"
    fault_server.push(Fault("html"))
    proc = cli_env.run("sync", "--once")
    assert_clean(proc, 0)
    assert "delivered 0; 1 still queued" in proc.stdout
    (item,) = cli_env.json("status", "--json")["items"]
    assert item["state"] == "queued" and item["attempts"] == 0
    assert "captive" in item["last_error"] or "login" in item["last_error"]

    proc = cli_env.run("sync", "--once")
    assert_clean(proc, 0)
    assert "delivered 1" in proc.stdout
    messages = show(cli_env, sent["conversation_id"])["messages"]
    assert [(m["content"], m["state"]) for m in messages] == [
        ("behind a portal", "delivered"),
        ("echo: behind a portal", "complete"),
    ]
    chats = [r for r in fault_server.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 2 and len({r.idempotency_key for r in chats}) == 1
    assert "<html" not in json.dumps(messages).lower()
