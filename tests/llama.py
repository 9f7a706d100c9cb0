"""A real llama.cpp server (SmolLM2-135M) on a loopback port, for the real-server tests.

The binary and model are built and cached by ``scripts/prepare_llama.py``
(``.ci/run`` runs it first). Without them the tests that use ``llama_server``
are skipped with the reason printed, except under CI (``CI`` set), where a
missing server is a failure: CI must never pass by skipping the real thing.

Use: ``def test_x(llama_server): llama_server.base_url`` ("http://127.0.0.1:PORT/v1").
``stop()`` and ``start()`` take the server down and bring it back on the same
port, for queued-while-down tests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTEXT_TOKENS = 1024
START_TIMEOUT = 120.0


def prepared() -> dict[str, str] | None:
    """Where the cached server and model are, or None if they are not built yet."""
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "prepare_llama.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One ``llama-server`` process; restartable on the same port."""

    def __init__(self, paths: dict[str, str], *, context: int = CONTEXT_TOKENS) -> None:
        self.paths = paths
        self.context = context
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # Kept open for the server's whole life (its output goes there): closed in close().
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="llama-server-", suffix=".log", delete=False
        )

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self) -> LlamaServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (self.paths["lib_dir"], env.get("LD_LIBRARY_PATH")) if p
        )
        command = [
            self.paths["server"],
            "-m", self.paths["model"],
            "-c", str(self.context),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "-t", "2",
            "-np", "1",
            "--seed", "1",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.root_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama-server not healthy after {START_TIMEOUT} s: {self.tail()}")

    def tail(self, size: int = 2000) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def require_llama() -> dict[str, str]:
    paths = prepared()
    if paths is None:
        reason = "llama-server is not prepared: run `python scripts/prepare_llama.py` (~10 min)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-server tests, but {reason}")
        pytest.skip(reason)
    return paths


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    """A running llama-server with ``-c 1024``, shared by one test module."""
    server = LlamaServer(require_llama())
    try:
        server.start()
        yield server
    finally:
        server.close()
