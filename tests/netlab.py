"""A small real network for fault tests: a namespace behind a veth pair, the fault
server inside it, and nftables rules that drop, reset or kill its traffic.

Why: a dead link, a silent drop or a stale connection cannot be faked on
loopback (the kernel answers for both ends at once). Here the client (the
test process, in the root namespace) talks to the fault server across a real
veth link; nftables rules *inside the lab's own namespace* break that link the
way a train's Wi-Fi does. Nothing outside the namespace pair is touched: the
addresses are a private /29 the lab creates and removes.

Layout (X is chosen per lab so parallel runs do not collide)::

    root namespace                          namespace ctui9-<pid>-<n>
    c9h…  10.213.X.1  the client's address  c9n…  10.213.X.2  fault server
          10.213.X.3  control requests only  (nft table inet ctui9 filters here)

Control requests to the server (push a fault, read its records) leave from
10.213.X.3, and the rules only match 10.213.X.1, so a "dead link" for the
client still lets the test steer the server.

Needs root (``ip netns``, ``nft``). ``NetLabUnavailable`` says why when the
kernel or the tools refuse; tests turn that into a printed skip.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.fault_server import Fault

REPO_ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


class NetLabUnavailable(Exception):
    """The lab cannot be built here (not root, no netns, no nft); the text says why."""


def _run(*argv: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetLabUnavailable(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc


class NetLab:
    def __init__(self) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.netns = f"ctui9-{pid}-{n}"
        self.host_if = f"c9h{pid % 100000}{n}"[:15]
        self.lab_if = f"c9n{pid % 100000}{n}"[:15]
        third = (pid * 7 + n * 13) % 250 + 3
        self.prefix = f"10.213.{third}"
        self.client_ip = f"{self.prefix}.1"
        self.server_ip = f"{self.prefix}.2"
        self.control_ip = f"{self.prefix}.3"
        self.spare_ip = f"{self.prefix}.4"  # where the client "moves" (Wi-Fi → phone)
        self.port = 0
        self._server: subprocess.Popen[str] | None = None
        self._made_netns = False

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> NetLab:
        if os.geteuid() != 0:
            raise NetLabUnavailable("needs root (network namespaces and nftables)")
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise NetLabUnavailable(f"`{tool}` is not installed")
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        _run("ip", "netns", "add", self.netns)
        self._made_netns = True
        _run(
            "ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.lab_if
        )  # fmt: skip
        _run("ip", "link", "set", self.lab_if, "netns", self.netns)
        # Deleting the client's address must not take the control address with it.
        _run("sysctl", "-qw", f"net.ipv4.conf.{self.host_if}.promote_secondaries=1")
        _run("ip", "addr", "add", f"{self.client_ip}/29", "dev", self.host_if)
        _run("ip", "addr", "add", f"{self.control_ip}/29", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        self._ns("ip", "addr", "add", f"{self.server_ip}/29", "dev", self.lab_if)
        self._ns("ip", "link", "set", self.lab_if, "up")
        self._ns("ip", "link", "set", "lo", "up")
        self._nft(
            "add table inet ctui9\n"
            "add chain inet ctui9 input { type filter hook input priority 0; policy accept; }\n"
            "add chain inet ctui9 output { type filter hook output priority 0; policy accept; }\n"
        )
        self._start_server()

    def _start_server(self) -> None:
        argv = [
            "ip", "netns", "exec", self.netns, sys.executable, "-m", "tests.fault_server",
            "--host", self.server_ip, "--port", str(self.port),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self._server = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._server.stdout is not None
        ready, _, _ = select.select([self._server.stdout], [], [], 15)
        line = self._server.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            raise NetLabUnavailable(f"the fault server did not start in the namespace: {line!r}")
        self.port = int(line.strip().rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        """Remove everything the lab made; safe to call twice and after a failed start."""
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(5)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait(5)
            self._server = None
        if self._made_netns:
            # The namespace takes its end of the veth pair (and so the pair) with it.
            _run("ip", "netns", "del", self.netns, check=False)
            self._made_netns = False
        if Path(f"/sys/class/net/{self.host_if}").exists():
            _run("ip", "link", "del", self.host_if, check=False)

    def __enter__(self) -> NetLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------

    def _ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", self.netns, *argv, check=check)

    def _nft(self, script: str) -> None:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if proc.returncode != 0:
            raise NetLabUnavailable(f"nft refused {script!r}: {proc.stderr.strip()}")

    @property
    def base_url(self) -> str:
        return f"http://{self.server_ip}:{self.port}/v1"

    # -- breaking the link ----------------------------------------------------------------

    def drop(self) -> None:
        """Silently drop everything between the client's address and the server."""
        self._nft(
            f"add rule inet ctui9 input ip saddr {self.client_ip} drop\n"
            f"add rule inet ctui9 output ip daddr {self.client_ip} drop\n"
        )

    def reset(self) -> None:
        """Answer every packet from the client with a TCP reset (a middlebox killing it)."""
        self._nft(
            f"add rule inet ctui9 input ip saddr {self.client_ip} meta l4proto tcp "
            "reject with tcp reset\n"
            f"add rule inet ctui9 output ip daddr {self.client_ip} tcp flags & rst == 0 drop\n"
        )

    def kill_established(self) -> list[int]:
        """Silently drop the client's connections that exist now; new ones still work
        (a stale connection while the endpoint itself answers). Returns their ports."""
        out = self._ns("ss", "-Htn", "state", "established").stdout
        ports = sorted(
            {
                int(peer.rsplit(":", 1)[1])
                for line in out.splitlines()
                if len(fields := line.split()) >= 4
                and fields[-2].endswith(f":{self.port}")
                and (peer := fields[-1]).startswith(self.client_ip + ":")
            }
        )
        if ports:
            listed = ", ".join(map(str, ports))
            self._nft(
                f"add rule inet ctui9 input ip saddr {self.client_ip} tcp sport {{ {listed} }} "
                "drop\n"
                f"add rule inet ctui9 output ip daddr {self.client_ip} tcp dport {{ {listed} }} "
                "drop\n"
            )
        return ports

    def count_syns(self) -> None:
        """Count the client's connection attempts (SYNs) from now on (see ``syns``)."""
        self._nft(
            f"insert rule inet ctui9 input ip saddr {self.client_ip} "
            "tcp flags & (syn | ack) == syn counter\n"
        )

    def syns(self) -> int:
        out = self._ns("nft", "list", "chain", "inet", "ctui9", "input").stdout
        return sum(int(m) for m in re.findall(r"counter packets (\d+)", out))

    def heal(self) -> None:
        """Remove every rule: the link works again."""
        self._nft("flush chain inet ctui9 input\nflush chain inet ctui9 output\n")

    def move_client(self) -> None:
        """The client's address changes (.1 → .4): its open connections are dead,
        new ones leave from the new address and work."""
        _run("ip", "addr", "add", f"{self.spare_ip}/29", "dev", self.host_if)
        _run("ip", "addr", "del", f"{self.client_ip}/29", "dev", self.host_if)
        self.client_ip, self.spare_ip = self.spare_ip, self.client_ip

    # -- steering the server (from the control address, past the rules) -------------------

    def control(self, method: str, path: str, data: Any = None) -> Any:
        conn = http.client.HTTPConnection(
            self.server_ip, self.port, timeout=10, source_address=(self.control_ip, 0)
        )
        try:
            body = None if data is None else json.dumps(data)
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"control {path}: HTTP {response.status} {payload[:200]!r}")
        return json.loads(payload)

    def push(self, *faults: Fault) -> None:
        self.control("POST", "/_control/push", [asdict(f) for f in faults])

    def requests(self) -> list[dict]:
        return self.control("GET", "/_control/requests")

    def completed_keys(self) -> dict[str, int]:
        return self.control("GET", "/_control/keys")

    def wait_requests(self, n: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chats = [r for r in self.requests() if r["path"].endswith("/chat/completions")]
            if len(chats) >= n:
                return True
            time.sleep(0.05)
        return False


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte; returns the filler file (delete it to clear)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def hold_exclusive(db_path: Path, seconds: float) -> threading.Thread:
    """Another program holding ``BEGIN EXCLUSIVE`` on the database for ``seconds``."""
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            time.sleep(seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(10), "could not take the lock"
    return thread


class CountingListener:
    """A TCP port that accepts and at once closes: a broken proxy. Counts connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[Path]:
    """A small tmpfs of our own at ``where`` (NetLabUnavailable if mounting is
    refused); always unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "ctui9-tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise NetLabUnavailable(f"cannot mount a tmpfs: {proc.stderr.strip() or proc.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextlib.contextmanager
def lab_or_reason() -> Any:
    """Yield (lab, None) or (None, why it cannot be built here)."""
    lab = NetLab()
    try:
        lab.start()
    except NetLabUnavailable as exc:
        yield None, str(exc)
        return
    try:
        yield lab, None
    finally:
        lab.stop()
