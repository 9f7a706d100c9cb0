"""Security properties, checked against the real program and real files.

* The API key goes to the endpoint and nowhere else: not the database (and
  its -wal), the log, any CLI output, exports, error messages or a screenshot
  of the TUI, even when a server echoes the Authorization header back in its
  error messages. Each test also proves the key *was* sent, so none can pass
  by never using it.
* Private file modes are enforced by the program, not by a friendly umask.
* TLS certificates are verified unless the user turns that off, and then the
  CLI and the TUI say so.
* Links in replies are never opened; the user is shown where they point.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import ssl
import stat
import subprocess
import threading
import time
import webbrowser
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import tests.fault_server as fault_server_module
from chat_tui.config import Settings
from chat_tui.endpoint import Endpoint, UnreachableError
from chat_tui.logs import MAX_BYTES, setup_logging
from chat_tui.tui.app import ChatApp
from chat_tui.tui.widgets.chat_view import MessageView
from chat_tui.tui.widgets.status import OfflineBanner, StatusLine
from tests.fault_server import Fault, FaultServer
from tests.helpers import REPO_ROOT, CliEnv, fast_config, wait_until

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-test-SECRET-4f9c2e71b8d0a6"


def echo_authorization(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the fault server's "auth" mode echo the Authorization header in its
    401 body, as some proxies and self-hosted servers do. Returns what was echoed."""
    echoed: list[str] = []
    original = fault_server_module._Handler._apply_mode

    def apply_mode(self: Any, mode: str) -> None:
        if mode != "auth":
            original(self, mode)
            return
        header = self.headers.get("Authorization", "")
        echoed.append(header)
        self._send_error_json(
            401, f"Incorrect API key provided: {header}", "invalid_request_error", "invalid_api_key"
        )

    monkeypatch.setattr(fault_server_module._Handler, "_apply_mode", apply_mode)
    return echoed


def error_body(message: str) -> str:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}})


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


# -- the API key --------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["environment", "config file"])
def test_api_key_is_sent_but_never_stored_or_printed(
    cli_env: CliEnv,
    fault_server: FaultServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    source: str,
) -> None:
    echoed = echo_authorization(monkeypatch)
    if source == "environment":
        cli_env.env["OPENAI_API_KEY"] = SECRET
    else:
        cli_env.write_config(fast_config(api_key=SECRET))
    outputs: list[str] = []

    def run(*args: str, code: int = 0) -> str:
        proc = cli_env.run(*args)
        outputs.extend([proc.stdout, proc.stderr])
        assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        return proc.stdout

    first = json.loads(run("send", "--json", "first question"))
    cid = str(first["conversation_id"])
    # Keep a read transaction open so the WAL cannot be checkpointed away: its
    # frames (every write below) stay on disk for the byte check at the end.
    reader = sqlite3.connect(cli_env.db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM messages").fetchone()
    try:
        assert "delivered 1" in run("sync", "--once")
        # A server that echoes the key back: in the probe (status) ...
        fault_server.mode = "auth"
        status = json.loads(run("status", "--json"))
        assert status["reachability"]["state"] == "auth_error"
        assert "Incorrect API key provided" in status["reachability"]["detail"]
        run("status")
        fault_server.mode = "ok"
        if source == "environment":  # (the full tour once; the config file shares the code)
            # ... in a chat 401 (the message waits), and in a 400 that fails it for good.
            json.loads(run("send", "--json", "-c", cid, "second question"))
            fault_server.push(Fault("status", status=401, body=error_body(f"bad key {SECRET}")))
            assert "delivered 0" in run("sync", "--once")
            fault_server.push(
                Fault("status", status=400, body=error_body(f"key {SECRET} may not use this model"))
            )
            run("sync", "--once")
            items = json.loads(run("status", "--json"))["items"]
            assert [i["state"] for i in items] == ["failed"]
            assert "may not use this model" in items[0]["last_error"]
            run("status")
            for args in (
                ["show", cid],
                ["show", cid, "--json"],
                ["export", cid, "--format", "json"],
                ["search", "question"],
            ):
                run(*args)
            for args in (["show", "999"], ["send", "-c", "999", "nowhere"]):
                run(*args, code=1)
        export_file = tmp_path / "export.md"
        run("export", cid, "-o", str(export_file))
        run("paths")
        wal = Path(str(cli_env.db_path) + "-wal")
        assert wal.exists() and wal.stat().st_size > 0
        stored = {p: p.read_bytes() for p in files_under(cli_env.data_dir)}
    finally:
        reader.close()

    # Not vacuous: the key was sent, and the server did echo it back.
    assert f"Bearer {SECRET}" in {r.headers.get("Authorization") for r in fault_server.requests}
    assert echoed and all(SECRET in e for e in echoed)
    for text in outputs:
        assert SECRET not in text
    assert any("[redacted]" in text for text in outputs)  # the echo was seen, and masked
    assert SECRET.encode() not in export_file.read_bytes()
    log = cli_env.data_dir / "chat-tui.log"
    assert cli_env.db_path in stored and log in stored
    assert b"auth_error" in stored[log]  # the log did record the refusal (without the key)
    for path, data in stored.items():
        assert SECRET.encode() not in data, path
    for path in files_under(cli_env.data_dir):  # after the final checkpoint, too
        assert SECRET.encode() not in path.read_bytes(), path


async def test_api_key_not_in_a_tui_screenshot(
    fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    echoed = echo_authorization(monkeypatch)
    fault_server.mode = "auth"
    settings = Settings(
        base_url=fault_server.base_url,
        api_key=SECRET,
        data_dir=tmp_path,
        config_path=tmp_path / "none.toml",
        handoff_on_exit=False,
        connect_timeout=1.0,
        read_timeout=3.0,
    )
    app = ChatApp(settings)
    async with app.run_test(size=(160, 40)) as pilot:
        banner = app.query_one(OfflineBanner)
        deadline = time.monotonic() + 10
        while not (
            app.reach is not None
            and app.reach.state == "auth_error"
            and banner.has_class("-visible")
        ):
            assert time.monotonic() < deadline, "no auth_error state"
            await pilot.pause(0.05)
        await pilot.press(*"hello", "enter")
        deadline = time.monotonic() + 10
        while not list(app.query(MessageView)):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        svg = app.export_screenshot()
        path = Path(app.save_screenshot(path=str(tmp_path), filename="shot.svg"))
        text = svg.replace("&#160;", " ")
        assert "Incorrect API key provided" in text  # the echoed detail is on screen…
        assert SECRET not in text  # …without the key
        assert SECRET.encode() not in path.read_bytes()
        assert SECRET not in str(banner.render())
    assert echoed and all(SECRET in e for e in echoed)
    assert f"Bearer {SECRET}" in {r.headers.get("Authorization") for r in fault_server.requests}
    for stored in files_under(tmp_path):
        assert SECRET.encode() not in stored.read_bytes(), stored


# -- file modes ---------------------------------------------------------------------------------


def _permissive_umask() -> None:
    os.umask(0o022)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_modes_despite_a_permissive_umask(cli_env: CliEnv) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            cli_env.argv(*args),
            env=cli_env.env,
            cwd=REPO_ROOT,
            text=True,
            capture_output=True,
            timeout=30,
            preexec_fn=_permissive_umask,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    run("send", "hello")
    data, db = cli_env.data_dir, cli_env.db_path
    log = data / "chat-tui.log"
    assert mode_of(data) == 0o700
    assert mode_of(db) == 0o600
    assert mode_of(log) == 0o600
    run("sync", "--handoff")  # the hand-off lock file
    assert mode_of(data / "sync.lock") == 0o600

    # While a process has the database open, its -wal and -shm exist: private too.
    watcher = subprocess.Popen(
        cli_env.argv("sync", "--watch"),
        env=cli_env.env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_permissive_umask,
    )
    try:
        wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
        deadline = time.monotonic() + 10
        while not (wal.exists() and shm.exists()):
            assert time.monotonic() < deadline, "no -wal/-shm appeared"
            time.sleep(0.02)
        time.sleep(0.2)
        assert mode_of(wal) == 0o600 and mode_of(shm) == 0o600
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(10)

    # Files and dirs left permissive (by an older version, or by hand) are tightened.
    data.chmod(0o755)
    for path in (db, log):
        path.chmod(0o644)
    run("list")
    assert mode_of(data) == 0o700 and mode_of(db) == 0o600 and mode_of(log) == 0o600


def test_rotated_log_stays_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", config_path=tmp_path / "none.toml")
    settings.data_dir.mkdir(mode=0o700)
    settings.log_path.write_bytes(b"x" * (MAX_BYTES + 10))
    settings.log_path.chmod(0o600)
    logger = logging.getLogger("chat_tui")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    old_umask = os.umask(0o022)
    try:
        setup_logging(settings, verb="test")
        logger.warning("a line that makes the log roll over")
    finally:
        os.umask(old_umask)
        for handler in logger.handlers[:]:
            if handler not in saved[2]:
                handler.close()
                logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    rolled = Path(f"{settings.log_path}.1")
    assert rolled.exists() and rolled.stat().st_size > MAX_BYTES
    assert mode_of(settings.log_path) == 0o600
    assert mode_of(rolled) == 0o600


# -- TLS ----------------------------------------------------------------------------------------


class TlsServer:
    """A minimal OpenAI-compatible server on loopback HTTPS with a self-signed cert."""

    def __init__(self, cert: Path, key: Path) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._json({"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._json(
                    {
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "over TLS"},
                            }
                        ]
                    }
                )

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # refused handshakes are the point of the test

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.base_url = f"https://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip(
            "needs the openssl CLI to make a self-signed certificate "
            "(the cryptography package is not installed either)"
        )
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def tls_server(self_signed: tuple[Path, Path]) -> Iterator[TlsServer]:
    server = TlsServer(*self_signed)
    try:
        yield server
    finally:
        server.stop()


async def test_tls_is_verified_by_default(tls_server: TlsServer, tmp_path: Path) -> None:
    assert Settings().verify_tls is True
    settings = Settings(
        base_url=tls_server.base_url,
        data_dir=tmp_path,
        config_path=tmp_path / "none.toml",
        connect_timeout=2.0,
    )
    endpoint = Endpoint(settings)
    try:
        probe = await endpoint.probe()
        assert probe.state == "offline"
        assert "certificate" in probe.detail.lower()
        with pytest.raises(UnreachableError) as caught:
            await endpoint.chat([{"role": "user", "content": "hi"}], model="m", idempotency_key="k")
        assert "certificate" in caught.value.reason.lower()
    finally:
        await endpoint.aclose()
    # The same server is fine once verification is off: it was only the certificate.
    insecure = Endpoint(settings.replace(verify_tls=False))
    try:
        assert (await insecure.probe()).state == "online"
        reply = await insecure.chat(
            [{"role": "user", "content": "hi"}], model="m", idempotency_key="k"
        )
        assert reply.text == "over TLS"
    finally:
        await insecure.aclose()


def test_cli_refuses_a_self_signed_certificate(cli_env: CliEnv, tls_server: TlsServer) -> None:
    cli_env.env["OPENAI_BASE_URL"] = tls_server.base_url
    status = cli_env.json("status", "--json")
    assert status["reachability"]["state"] == "offline"
    assert "certificate" in status["reachability"]["detail"].lower()


def test_cli_warns_when_tls_verification_is_off(cli_env: CliEnv, tls_server: TlsServer) -> None:
    cli_env.env["OPENAI_BASE_URL"] = tls_server.base_url
    quiet = cli_env.run("status")
    assert quiet.returncode == 0 and "TLS" not in quiet.stderr
    cli_env.write_config(fast_config(verify_tls=False))
    for args in (["status"], ["status", "--json"]):
        proc = cli_env.run(*args)
        assert proc.returncode == 0, proc.stderr
        warning = [line for line in proc.stderr.splitlines() if "TLS" in line]
        assert len(warning) == 1 and "off" in warning[0].lower(), proc.stderr
        assert "TLS" not in proc.stdout  # stdout stays clean for scripts
    assert json.loads(proc.stdout)["reachability"]["state"] == "online"


async def test_tui_warns_when_tls_verification_is_off(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    settings = Settings(
        base_url=fault_server.base_url,
        data_dir=tmp_path,
        verify_tls=False,
        config_path=tmp_path / "none.toml",
        handoff_on_exit=False,
    )
    app = ChatApp(settings)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_until(pilot, lambda: any("TLS" in str(n.message) for n in app._notifications))
        warnings = [n for n in app._notifications if "TLS" in str(n.message)]
        assert warnings and warnings[0].severity == "warning"
        assert "off" in str(warnings[0].message).lower()
        assert "TLS" in str(app.query_one(StatusLine).render())
    safe = ChatApp(settings.replace(verify_tls=True))
    async with safe.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.2)
        assert not [n for n in safe._notifications if "TLS" in str(n.message)]
        assert "TLS" not in str(safe.query_one(StatusLine).render())


# -- links in replies ---------------------------------------------------------------------------


async def test_links_in_replies_are_shown_not_opened(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    def record(url: str, *args: Any, **kwargs: Any) -> bool:
        opened.append(url)
        return True

    for name in ("open", "open_new", "open_new_tab"):
        monkeypatch.setattr(webbrowser, name, record)
    monkeypatch.setattr(ChatApp, "open_url", lambda self, url, **kw: opened.append(url))
    target = "https://evil.example/login?next=[b]x[/b]"
    fault_server.push(Fault("reply", text=f"[Click here]({target}) to continue."))
    settings = Settings(
        base_url=fault_server.base_url,
        data_dir=tmp_path,
        config_path=tmp_path / "none.toml",
        handoff_on_exit=False,
    )
    app = ChatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"login?", "enter")
        deadline = time.monotonic() + 10
        while not any(v.message.role == "assistant" for v in app.query(MessageView)):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        reply = next(v for v in app.query(MessageView) if v.message.role == "assistant")
        # The stored reply shows the link's text and, beside it, where it really
        # goes; nothing on it is clickable.
        import io

        from rich.console import Console

        console = Console(width=200, file=io.StringIO(), color_system=None)
        console.print(reply._renderable())
        screen_text = console.file.getvalue()
        assert "Click here" in screen_text
        # (markdown-it percent-encodes the brackets; the real host is what matters)
        assert "(https://evil.example/login?next=" in screen_text
        await pilot.click(reply, offset=(4, 1))
        await pilot.pause(0.2)
        assert opened == []
        assert app.is_running
