#!/usr/bin/env python3
"""Soak test: many messages, real sender processes killed at random, a flaky endpoint.

chat-tui promises never to lose a message on a bad network. This script tries
hard to make it break that promise, with nothing mocked:

* a real loopback OpenAI-compatible server (``tests.fault_server``) run as a
  subprocess, answering a share of requests with random faults (500, 503,
  429 + Retry-After, a 3 s hang, a reset, a cut stream, a stream without
  finish_reason, a malformed chunk, an HTML portal page), and stopped
  (SIGTERM) and restarted on the same port a few times;
* several ``chat-tui sync --watch`` processes and one headless TUI sharing one
  database, SIGKILLed at random moments spread over the run and restarted;
* messages typed (enqueued through ``chat_tui.store.Store``) in batches over
  many conversations while all of that goes on;
* two endpoints: every third conversation belongs to a second named endpoint
  (``[endpoints.flap]``, its own fault server) that flaps: stopped and started
  again every second or two, while the other endpoint's conversations go on.

When every message is delivered (or the duration limit is hit) everything is
stopped and a checker reads the database (read-only) and the server's JSON
log and counts violations of the delivery contract: lost, doubled, out of
order, incomplete replies, leftover leases. Any violation means exit status 1.

    python scripts/soak.py --messages 500 --conversations 20 --kills 20

Run it from the repository root (the fault server is ``python -m
tests.fault_server``). The work directory is deleted on PASS unless
``--keep``; on FAIL it is kept and its path printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chat_tui.store import Store  # noqa: E402  (after the sys.path fix above)

PY = sys.executable
MODEL = "test-model"
REPLY_PREFIX = "echo: "  # tests.fault_server.default_reply

# What makes the soak fast. max_attempts is huge on purpose: with a 30 %
# fault rate a message can be unlucky many times in a row, and the soak is
# about losing/doubling/reordering, not about the give-up bound.
FAST_CONFIG: dict[str, Any] = {
    "model": MODEL,
    "probe_cap": 1.0,
    "connect_timeout": 1.0,
    "read_timeout": 4.0,
    "backoff_base": 0.05,
    "backoff_cap": 0.5,
    "lease_seconds": 3.0,
    "max_attempts": 1000,
    "max_age": 0,
    "dedup_window": 0,
    "handoff_on_exit": False,
}

SENDER_TAG = "soak-sender "  # system prompt prefix naming the sender incarnation

TUI_CODE = (
    "from chat_tui.config import load_settings\n"
    "from chat_tui.tui.app import ChatApp\n"
    "ChatApp(load_settings()).run(headless=True)\n"
)

VIOLATIONS = (
    "lost",  # a typed message missing, or not `delivered` at the end, or without a reply
    "doubled_in_db",  # two user rows for one typed message, two replies to one
    "doubled_at_server",  # a key completed twice by the server, not explained by a kill
    "out_of_order",  # seq order != typed order, or a request without every earlier turn
    "incomplete",  # a stored reply that is not the server's full reply
    "leftover",  # outbox rows, leases or `sending` states left at the end
    "lease_overlap",  # two requests for one message in flight at once (live senders)
    "key_mismatch",  # a request whose Idempotency-Key is not its message's key
    "sender_crashes",  # a sender that exited by itself or not cleanly on SIGTERM
    "wrong_endpoint",  # a request sent to the endpoint its conversation does not belong to
)
FLAP_ENDPOINT = "flap"  # the second endpoint's name
FLAP_LOG = "server-flap.jsonl"


class SoakError(Exception):
    """The soak itself could not run (not a finding about chat-tui)."""


# -- child processes ---------------------------------------------------------------------------


@dataclass
class Child:
    kind: str  # "sync" | "tui" | "server"
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes] | None
    started: float = field(default_factory=time.time)
    label: str = ""  # sender incarnation, e.g. "sync-1#3"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the child's whole process group (each child leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _reap(child: Child, timeout: float) -> bool:
    try:
        child.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    if child.log is not None:
        with contextlib.suppress(OSError):
            child.log.close()
    return True


class Children:
    """Every process the soak starts, so a finally: can always end them all."""

    def __init__(self) -> None:
        self.all: list[Child] = []

    def spawn(
        self,
        kind: str,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        stdout_pipe: bool = False,
    ) -> Child:
        log = open(log_path, "ab")  # noqa: SIM115 (closed when the child is reaped)
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,  # own process group: killpg reaches its children too
        )
        child = Child(kind, name, proc, log)
        self.all.append(child)
        return child

    def kill(self, child: Child) -> None:
        _signal_group(child.proc, signal.SIGKILL)
        _reap(child, 10)

    def terminate(self, child: Child, grace: float, *, signalled: bool = False) -> bool:
        """SIGTERM (unless ``signalled`` already), wait ``grace`` s, then SIGKILL.

        True if it ended on SIGTERM.
        """
        if not child.alive:
            _reap(child, 1)
            return True
        if not signalled:
            _signal_group(child.proc, signal.SIGTERM)
        if _reap(child, grace):
            return True
        self.kill(child)
        return False

    def kill_all(self) -> None:
        for child in self.all:
            if child.alive:
                _signal_group(child.proc, signal.SIGKILL)
        for child in self.all:
            _reap(child, 5)


class ServerCtl:
    """The fault server subprocess: start, stop (SIGTERM), restart on the same port."""

    def __init__(
        self,
        children: Children,
        env: dict[str, str],
        workdir: Path,
        fault_rate: float,
        seed: int,
        reply_delay: float = 0.0,
        name: str = "server",
    ) -> None:
        self.children = children
        self.env = env
        self.workdir = workdir
        self.fault_rate = fault_rate
        self.seed = seed
        self.reply_delay = reply_delay
        self.name = name
        self.log_path = workdir / ("server.jsonl" if name == "server" else FLAP_LOG)
        self.port = 0
        self.starts = 0
        self.child: Child | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        last = ""
        for _ in range(40):  # the old socket may linger for a moment after a stop
            child = self._spawn_once()
            line = _read_line(child.proc, timeout=15)
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/v1", line)
            if match:
                self.port = int(match.group(1))
                self.child = child
                self.starts += 1
                return
            self.children.kill(child)
            last = line or f"exit status {child.proc.returncode}"
            time.sleep(0.25)
        raise SoakError(f"the fault server did not start on port {self.port}: {last}")

    def _spawn_once(self) -> Child:
        argv = [
            PY,
            "-m",
            "tests.fault_server",
            "--port",
            str(self.port),
            "--fault-rate",
            str(self.fault_rate),
            # A new seed per start: a restart must not replay the same faults.
            "--seed",
            str(self.seed * 1000 + self.starts),
            "--log",
            str(self.log_path),
            "--reply-delay",
            str(self.reply_delay),
        ]
        return self.children.spawn(
            "server",
            f"{self.name}-{self.starts}",
            argv,
            self.env,
            self.workdir / f"{self.name}.stderr",
            stdout_pipe=True,
        )

    def stop(self) -> None:
        if self.child is not None:
            self.children.terminate(self.child, grace=10)
            self.child = None

    @property
    def running(self) -> bool:
        return self.child is not None


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    fd = proc.stdout.fileno()
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return data.decode("utf-8", "replace").strip()


# -- the run -------------------------------------------------------------------------------------


@dataclass
class KillEvent:
    at: float  # wall clock, comparable with the server log
    kind: str  # sync | tui | server
    name: str
    spawned: float = 0.0  # wall clock when the killed process was started
    pid: int = 0
    label: str = ""  # the killed sender incarnation


@dataclass
class Sender:
    kind: str  # sync | tui
    name: str
    argv: list[str]
    child: Child | None = None
    restart_at: float | None = None  # monotonic


@dataclass
class RunResult:
    typed: dict[int, list[str]]  # conversation index -> texts in typed order
    conversation_ids: dict[int, int]  # conversation index -> database id
    kills: list[KillEvent]
    crashes: list[str]
    started: float
    finished: float
    timed_out: bool  # the duration limit (or the stall limit) ended the run
    senders: list[Sender]
    spawned: dict[str, float] = field(default_factory=dict)  # incarnation -> start time
    final_exits: list[str] = field(default_factory=list)  # "sync-0#4: 0" after the final SIGTERM
    stalled: bool = False  # nothing was delivered for --stall-limit seconds
    on_flap: list[int] = field(default_factory=list)  # conversation indexes on the flap endpoint


def write_config(
    path: Path, base_url: str, system_prompt: str | None = None, flap_url: str | None = None
) -> None:
    lines = [f"base_url = {json.dumps(base_url)}"]
    if system_prompt:
        lines.append(f"system_prompt = {json.dumps(system_prompt)}")
    for key, value in FAST_CONFIG.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value!r}")
    if flap_url:
        lines += [
            f"[endpoints.{FLAP_ENDPOINT}]",
            f"base_url = {json.dumps(flap_url)}",
            f"model = {json.dumps(MODEL)}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def child_env(data_dir: Path, config_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHAT_TUI_"))}
    env["CHAT_TUI_DATA_DIR"] = str(data_dir)
    env["CHAT_TUI_CONFIG"] = str(config_path)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def spread(rng: random.Random, count: int, low: float, high: float) -> list[float]:
    """``count`` points in [low, high], one in each of ``count`` equal slices (jittered)."""
    width = (high - low) / max(count, 1)
    return [low + width * (i + rng.uniform(0.1, 0.9)) for i in range(count)]


def run(
    args: argparse.Namespace,
    workdir: Path,
    children: Children,
    server: ServerCtl,
    flapper: ServerCtl | None = None,
) -> RunResult:
    rng = random.Random(args.seed)
    data_dir = workdir / "data"
    config_path = workdir / "config.toml"
    logs = workdir / "logs"
    logs.mkdir()
    configs = workdir / "configs"
    configs.mkdir()
    spawned: dict[str, float] = {}

    server.start()
    flap_url: str | None = None
    if flapper is not None:
        flapper.start()
        flap_url = flapper.base_url
    write_config(config_path, server.base_url, flap_url=flap_url)
    env = child_env(data_dir, config_path)
    # Every third conversation belongs to the flapping endpoint.
    on_flap = [c for c in range(args.conversations) if flapper is not None and c % 3 == 2]

    # Who types what, in which order: every conversation gets a share.
    n, m = args.messages, args.conversations
    plan = [i % m for i in range(n)]
    rng.shuffle(plan)
    typed: dict[int, list[str]] = {c: [] for c in range(m)}
    conversation_ids: dict[int, int] = {}
    # The last few messages wait until every planned kill and restart has
    # happened, so the run cannot finish before its faults are spread over it.
    hold_back = max(1, n // 20)

    senders = [
        Sender("sync", f"sync-{i}", [PY, "-m", "chat_tui", "sync", "--watch"])
        for i in range(args.senders)
    ]
    if args.tui:
        senders.append(Sender("tui", "tui", [PY, "-c", TUI_CODE]))
    kill_at = sorted(spread(rng, args.kills, 0.02, 0.85))  # fractions of messages delivered
    restart_at = sorted(spread(rng, args.server_restarts, 0.08, 0.8))
    kills: list[KillEvent] = []
    crashes: list[str] = []
    starts = collections.Counter()

    runner = asyncio.Runner()
    store = runner.run(Store.open(data_dir / "chat.db"))
    reader: sqlite3.Connection | None = None
    try:

        def enqueue(count: int) -> None:
            for _ in range(count):
                if not plan:
                    return
                c = plan.pop(0)
                text = f"c{c:02d}-m{len(typed[c]):04d}"
                endpoint = FLAP_ENDPOINT if c in on_flap else None
                message, duplicate = runner.run(
                    store.enqueue(conversation_ids.get(c), text, endpoint=endpoint)
                )
                if duplicate:
                    raise SoakError(f"enqueue of {text} was taken for a duplicate")
                conversation_ids.setdefault(c, message.conversation_id)
                typed[c].append(text)

        def start_sender(sender: Sender) -> None:
            # Each incarnation gets its own system prompt, which every request
            # it sends carries: the server log then says who sent what.
            starts[sender.name] += 1
            label = f"{sender.name}#{starts[sender.name]}"
            config = configs / f"{label}.toml"
            write_config(config, server.base_url, f"{SENDER_TAG}{label}", flap_url)
            sender.child = children.spawn(
                sender.kind,
                sender.name,
                sender.argv,
                {**env, "CHAT_TUI_CONFIG": str(config)},
                logs / f"{sender.name}.log",
            )
            sender.child.label = label
            spawned[label] = sender.child.started
            sender.restart_at = None

        enqueue(max(m, n // 10))  # a backlog before anyone is running
        for sender in senders:
            start_sender(sender)
        reader = sqlite3.connect(data_dir / "chat.db", timeout=30)

        started = time.time()
        deadline = time.monotonic() + args.duration_limit
        next_enqueue = time.monotonic()
        next_kill_ok = time.monotonic()
        server_back_at: float | None = None
        restarts_done = 0
        flaps = 0
        flap_at = time.monotonic() + rng.uniform(0.5, 2.0)  # the next stop (or start)
        timed_out = stalled = False
        last_delivered, last_progress = -1, time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                timed_out = True
                break
            delivered = reader.execute(
                "SELECT COUNT(*) FROM messages WHERE role = 'user' AND state = 'delivered'"
            ).fetchone()[0]
            if delivered != last_delivered:
                last_delivered, last_progress = delivered, now
            elif now - last_progress > args.stall_limit:
                stalled = True  # e.g. a message went `failed`: waiting longer changes nothing
                timed_out = True
                break
            progress = delivered / n
            # The typist: small bursts at random moments.
            faults_done = not kill_at and restarts_done >= args.server_restarts
            if plan and now >= next_enqueue and (len(plan) > hold_back or faults_done):
                enqueue(rng.randint(1, max(2, n // 15)))
                next_enqueue = now + rng.uniform(0.05, 0.5)
            # Senders that died on their own are a finding; restart them anyway.
            for sender in senders:
                child = sender.child
                if child is not None and not child.alive:
                    crashes.append(
                        f"{child.label} exited by itself with status "
                        f"{child.proc.returncode} (see {child.log and child.log.name})"
                    )
                    sender.child = None
                    sender.restart_at = now + 0.2
                due = sender.restart_at is not None and now >= sender.restart_at
                if sender.child is None and due:
                    start_sender(sender)
            # SIGKILL a sender once progress passes the next threshold.
            if kill_at and progress >= kill_at[0] and now >= next_kill_ok:
                alive = [s for s in senders if s.child is not None and s.child.alive]
                if alive:
                    tui_killed = any(k.kind == "tui" for k in kills)
                    tui = [s for s in alive if s.kind == "tui"]
                    victim = (
                        tui[0]
                        if tui and not tui_killed and len(kill_at) <= 2
                        else (rng.choice(alive))
                    )
                    assert victim.child is not None
                    children.kill(victim.child)
                    kills.append(
                        KillEvent(
                            time.time(),
                            victim.kind,
                            victim.name,
                            victim.child.started,
                            victim.child.proc.pid,
                            victim.child.label,
                        )
                    )
                    victim.child = None
                    victim.restart_at = now + rng.uniform(0.05, 1.5)
                    kill_at.pop(0)
                    next_kill_ok = now + 0.3
            # Stop the endpoint now and then; bring it back after a while.
            if server.running and restart_at and progress >= restart_at[0]:
                kills.append(KillEvent(time.time(), "server", f"server-{server.starts}"))
                server.stop()
                restart_at.pop(0)
                server_back_at = now + rng.uniform(0.5, 3.0)
            if not server.running and server_back_at is not None and now >= server_back_at:
                server.start()
                server_back_at = None
                restarts_done += 1
            # The second endpoint flaps: down for a moment, up for a second or two,
            # a bounded number of times (then it stays up so the run can finish).
            if flapper is not None and now >= flap_at:
                if flapper.running and flaps < args.flaps:
                    kills.append(KillEvent(time.time(), "flap", f"{flapper.name}-{flapper.starts}"))
                    flapper.stop()
                    flaps += 1
                    flap_at = now + rng.uniform(0.3, 1.5)
                elif not flapper.running:
                    flapper.start()
                    flap_at = now + rng.uniform(0.5, 2.0)
            if not plan and delivered == n:
                break
            time.sleep(0.05)
        finished = time.time()
    finally:
        if reader is not None:
            reader.close()
        with contextlib.suppress(Exception):
            runner.run(store.close())
        runner.close()
    return RunResult(
        typed,
        conversation_ids,
        kills,
        crashes,
        started,
        finished,
        timed_out,
        senders,
        spawned,
        stalled=stalled,
        on_flap=on_flap,
    )


def stop_everything(
    children: Children,
    senders: list[Sender],
    server: ServerCtl,
    exits: list[str],
    flapper: ServerCtl | None = None,
) -> list[str]:
    """The clean way out: senders get SIGTERM (leases released), then the server stops.

    SIGTERM must end a sender cleanly (docs/architecture.md, "Process model"); returns
    what did not.
    """
    problems: list[str] = []
    running = [s.child for s in senders if s.child is not None and s.child.alive]
    for child in running:
        _signal_group(child.proc, signal.SIGTERM)
    for child in running:
        ended = children.terminate(child, grace=15, signalled=True)
        exits.append(f"{child.label}: {child.proc.returncode}")
        if not ended:
            problems.append(f"{child.label} did not exit within 15 s of SIGTERM")
        elif child.proc.returncode not in (0, -signal.SIGTERM):
            # -SIGTERM: the signal came before the handlers were installed (a
            # sender still starting up) or after they were removed (exiting);
            # either way nothing was leased, which the leftover check confirms.
            problems.append(
                f"{child.label} exited with status {child.proc.returncode} "
                f"on SIGTERM (see {child.log and child.log.name})"
            )
    server.stop()
    if flapper is not None:
        flapper.stop()
    return problems


# -- the checker ---------------------------------------------------------------------------------


@dataclass
class Report:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VIOLATIONS, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    resent_after_kill: int = 0
    resent_examples: list[str] = field(default_factory=list)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    chat_requests: int = 0
    probes: int = 0
    max_requests_per_message: int = 0
    store_lags: list[float] = field(default_factory=list)  # server done -> client stores
    user_rows: int = 0
    reply_rows: int = 0

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < 8:
            self.examples[kind].append(example)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())


def read_server_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []
    bad = 0
    if not path.exists():
        return records, bad
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            bad += 1
    return records, bad


def open_readonly(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def outcome_label(rec: dict[str, Any]) -> str:
    outcome = str(rec.get("outcome"))
    if outcome.startswith("fault:"):
        kind = outcome.removeprefix("fault:")
        return f"status{rec.get('status')}" if kind == "status" else kind
    return outcome


def check(db_path: Path, log_path: Path, result: RunResult) -> Report:
    report = Report()
    typed_index: dict[str, tuple[int, int]] = {}
    for c, texts in result.typed.items():
        for k, text in enumerate(texts):
            typed_index[text] = (c, k)

    conn = open_readonly(db_path)
    try:
        users = conn.execute(
            "SELECT id, conversation_id, seq, content, state, key, error FROM messages "
            "WHERE role = 'user' ORDER BY conversation_id, seq"
        ).fetchall()
        replies = conn.execute(
            "SELECT id, conversation_id, seq, content, reply_to, created_at FROM messages "
            "WHERE role = 'assistant'"
        ).fetchall()
        outbox = conn.execute("SELECT * FROM outbox").fetchall()
        sending = conn.execute(
            "SELECT id, content FROM messages WHERE state = 'sending'"
        ).fetchall()
    finally:
        conn.close()
    report.user_rows, report.reply_rows = len(users), len(replies)

    # -- the database: every typed message once, delivered, one whole reply, in order --
    by_text: dict[str, list[sqlite3.Row]] = collections.defaultdict(list)
    for u in users:
        by_text[u["content"]].append(u)
    replies_of: dict[int, list[sqlite3.Row]] = collections.defaultdict(list)
    for r in replies:
        replies_of[r["reply_to"]].append(r)
    user_by_id = {u["id"]: u for u in users}
    key_to_user = {u["key"]: u for u in users}

    for text, (c, _k) in typed_index.items():
        rows = by_text.get(text, [])
        if not rows:
            report.add("lost", f"{text}: not in the database")
            continue
        if len(rows) > 1:
            report.add("doubled_in_db", f"{text}: stored {len(rows)} times as a user message")
        u = rows[0]
        if u["conversation_id"] != result.conversation_ids.get(c):
            report.add(
                "out_of_order",
                f"{text}: in conversation {u['conversation_id']}, "
                f"typed into {result.conversation_ids.get(c)}",
            )
        if u["state"] != "delivered":
            report.add("lost", f"{text}: state {u['state']} ({u['error']})")
            continue
        mine = replies_of.get(u["id"], [])
        if not mine:
            report.add("lost", f"{text}: delivered but has no reply")
            continue
        if len(mine) > 1:
            report.add("doubled_in_db", f"{text}: {len(mine)} assistant replies in the database")
        reply = mine[0]
        if reply["content"] != REPLY_PREFIX + text:
            report.add("incomplete", f"{text}: stored reply {reply['content'][:60]!r}")
        if reply["seq"] != u["seq"] + 5 or reply["conversation_id"] != u["conversation_id"]:
            report.add(
                "out_of_order", f"{text}: reply at seq {reply['seq']}, question at {u['seq']}"
            )
    for u in users:
        if u["content"] not in typed_index:
            report.add(
                "doubled_in_db", f"user message {u['id']} {u['content'][:40]!r} was never typed"
            )
    for r in replies:
        if r["reply_to"] not in user_by_id:
            report.add(
                "doubled_in_db", f"reply {r['id']} answers no user message ({r['reply_to']})"
            )

    # Seq order in each conversation must be the typed order.
    for c, texts in result.typed.items():
        cid = result.conversation_ids.get(c)
        stored = [u["content"] for u in users if u["conversation_id"] == cid]
        if stored != texts:
            first = next(
                (i for i, (a, b) in enumerate(zip(stored, texts, strict=False)) if a != b),
                min(len(stored), len(texts)),
            )
            report.add(
                "out_of_order",
                f"conversation c{c:02d}: position {first}: stored "
                f"{stored[first : first + 3]}, typed {texts[first : first + 3]}",
            )

    for row in outbox:
        report.add(
            "leftover",
            f"outbox row for message {row['message_id']} "
            f"(lease_owner={row['lease_owner']}, attempts={row['attempts']})",
        )
    for row in sending:
        report.add("leftover", f"message {row['id']} {row['content']!r} still 'sending'")

    # -- the server log: context of every request, completions per key --
    records, bad_lines = read_server_log(log_path)
    flap_records, flap_bad = read_server_log(log_path.with_name(FLAP_LOG))
    for rec in records:
        rec["endpoint"] = "default"
    for rec in flap_records:
        rec["endpoint"] = FLAP_ENDPOINT
    records += flap_records
    bad_lines += flap_bad
    if bad_lines:
        report.outcomes["unparseable_log_line"] += bad_lines
    completed: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    sent: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    per_key: collections.Counter[str] = collections.Counter()
    for rec in records:
        if rec.get("path") == "/v1/models":
            report.probes += 1
            continue
        if rec.get("path") != "/v1/chat/completions":
            continue
        report.chat_requests += 1
        report.outcomes[outcome_label(rec)] += 1
        key = rec.get("idempotency_key")
        messages = rec.get("messages")
        if messages is None and rec.get("outcome") != "completed":
            # The body never arrived whole (a sender SIGKILLed while uploading
            # it): the server could not act on it. Nothing to check.
            report.outcomes["body_cut"] += 1
            continue
        messages = messages or []
        turns = [msg for msg in messages if msg.get("role") != "system"]
        if not turns or turns[-1].get("role") != "user":
            report.add("out_of_order", f"request with key {key} does not end with a user turn")
            continue
        last = str(turns[-1].get("content"))
        if last not in typed_index:
            report.add("out_of_order", f"request for {last[:40]!r}, which was never typed")
            continue
        c, k = typed_index[last]
        belongs = FLAP_ENDPOINT if c in result.on_flap else "default"
        if rec["endpoint"] != belongs:
            report.add(
                "wrong_endpoint",
                f"{last}: sent to {rec['endpoint']}, its conversation is {belongs}",
            )
        expected: list[dict[str, str]] = []
        for earlier in result.typed[c][:k]:
            expected.append({"role": "user", "content": earlier})
            expected.append({"role": "assistant", "content": REPLY_PREFIX + earlier})
        expected.append({"role": "user", "content": last})
        got = [{"role": msg.get("role"), "content": msg.get("content")} for msg in turns]
        if got != expected:
            have = [t["content"] for t in got if t["role"] == "user"][:-1]
            report.add(
                "out_of_order",
                f"request for {last} ({rec.get('outcome')}) had "
                f"{len(got) // 2} earlier turns, expected {k}: users {have[-3:]}",
            )
        owner = key_to_user.get(key)
        if owner is None or owner["content"] != last:
            report.add(
                "key_mismatch",
                f"request for {last} carried Idempotency-Key {key}, "
                f"which belongs to {owner['content'] if owner else 'no message'}",
            )
            continue
        per_key[key] += 1
        rec["sender"] = next(
            (
                str(msg.get("content")).removeprefix(SENDER_TAG)
                for msg in messages
                if msg.get("role") == "system" and str(msg.get("content")).startswith(SENDER_TAG)
            ),
            None,
        )
        sent[key].append(rec)
        if rec.get("outcome") == "completed":
            completed[key].append(rec)
    report.max_requests_per_message = max(per_key.values(), default=0)
    kill_of = {k.label: k for k in result.kills if k.kind in ("sync", "tui") and k.label}

    # Only the lease holder sends: two requests for one message must never be
    # in flight at once, unless the first sender was already dead.
    for key, recs in sent.items():
        recs.sort(key=lambda r: r["started"])
        for i, later in enumerate(recs):
            for earlier in recs[:i]:
                if later["started"] >= earlier["finished"] - OVERLAP_SLACK:
                    continue
                kill = kill_of.get(earlier.get("sender") or "")
                if kill is not None and kill.at <= later["started"]:
                    continue  # the earlier sender was dead; the server just hadn't noticed
                owner = key_to_user[key]
                report.add(
                    "lease_overlap",
                    f"{owner['content']}: {later.get('sender')} sent at "
                    f"{later['started']:.2f} while {earlier.get('sender')}'s request "
                    f"({earlier['started']:.2f}-{earlier['finished']:.2f}) was in flight",
                )

    not_recorded = commit_failures(db_path.parent)
    server_stops = [k for k in result.kills if k.kind in ("server", "flap")]
    for u in users:
        if u["state"] != "delivered" or u["content"] not in typed_index:
            continue
        done = sorted(completed.get(u["key"], []), key=lambda r: r["started"])
        if not done:
            report.add(
                "incomplete",
                f"{u['content']}: delivered, but the server never "
                "completed a request for it (a partial reply was accepted?)",
            )
            continue
        reply = replies_of.get(u["id"], [None])[0]
        if reply is not None:
            before = [r["finished"] for r in done if r["finished"] <= reply["created_at"] + 0.05]
            if before:
                report.store_lags.append(reply["created_at"] - before[-1])
        for first, second in itertools.pairwise(done):
            # A second full reply for the same key. Legitimate only when the
            # sender of the first one (named by its system prompt) was
            # SIGKILLed between sending it and committing the reply, which takes
            # milliseconds after the server finished: its lease expired and
            # another sender re-sent with the same Idempotency-Key.
            why = explain_resend(u, first, kill_of, not_recorded, server_stops)
            if why is not None:
                report.resent_after_kill += 1
                if len(report.resent_examples) < 8:
                    report.resent_examples.append(
                        f"{u['content']}: completed at {first['finished']:.2f} and "
                        f"{second['finished']:.2f}; {why}"
                    )
            else:
                logged = not_recorded.get(u["id"])
                kill = kill_of.get(first.get("sender") or "")
                cause = (
                    f"a sender logged: {logged}"
                    if logged
                    else f"its sender {first.get('sender')} was not killed"
                    if kill is None
                    else f"its sender {kill.label} was killed only "
                    f"{kill.at - first['finished']:.2f} s after the reply ended"
                )
                report.add(
                    "doubled_at_server",
                    f"{u['content']}: the server completed key {u['key']} twice "
                    f"(at {first['finished']:.2f} and {second['finished']:.2f}); {cause}",
                )

    report.counts["sender_crashes"] = 0
    for crash in result.crashes:
        report.add("sender_crashes", crash)
    return report


COMMIT_GRACE = 2.0  # s from the server's last byte to the sender's commit, even on a busy box
OVERLAP_SLACK = 0.25  # s between the client seeing a request end and the server logging it


def explain_resend(
    user: sqlite3.Row,
    first: dict[str, Any],
    kill_of: dict[str, KillEvent],
    not_recorded: dict[int, str],
    server_stops: list[KillEvent] = (),  # type: ignore[assignment]
) -> str | None:
    """Why a key was completed a second time, if a SIGKILL explains it; else None."""
    if user["id"] in not_recorded:
        return None  # a live sender got the reply and failed to store it: a bug, not a kill
    kill = kill_of.get(first.get("sender") or "")
    stopped_kind = "flap" if first.get("endpoint") == FLAP_ENDPOINT else "server"
    stop = next(
        (
            k
            for k in server_stops
            if k.kind == stopped_kind
            and first["finished"] - 0.05 <= k.at <= first["finished"] + COMMIT_GRACE
        ),
        None,
    )
    if stop is not None and kill is None:
        # The endpoint was stopped as the reply ended: its last bytes were lost
        # with the connection, and the resend under the same key is what a
        # real server dedupes.
        return (
            f"its endpoint was stopped {stop.at - first['finished']:+.2f} s after the reply ended"
        )
    if kill is None:
        return None
    if first["started"] - 0.05 <= kill.at <= first["finished"] + COMMIT_GRACE:
        return (
            f"its sender {kill.label} (pid {kill.pid}) was SIGKILLed "
            f"{kill.at - first['finished']:+.2f} s after the reply ended"
        )
    return None


def commit_failures(data_dir: Path) -> dict[int, str]:
    """Messages whose reply a live sender received but did not store (from chat-tui.log)."""
    found: dict[int, str] = {}
    pattern = re.compile(
        r"(\w+\[\d+\]) chat_tui\.sender: (?:delivery of message (\d+) not "
        r"recorded: (.*)|message (\d+) was taken over by another sender.*)$"
    )
    for path in sorted(data_dir.glob("chat-tui.log*")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            m = pattern.search(line)
            if m:
                mid = int(m.group(2) or m.group(4))
                found.setdefault(
                    mid,
                    f"{m.group(1)}: "
                    + (
                        f"delivery not recorded: {m.group(3)[-70:]}"
                        if m.group(2)
                        else "taken over by another sender; reply dropped"
                    ),
                )
    return found


def scan_logs(workdir: Path) -> tuple[list[str], collections.Counter[str]]:
    """Tracebacks in the senders' output; WARNING/ERROR lines of chat-tui.log by message."""
    tracebacks: list[str] = []
    for path in sorted((workdir / "logs").glob("*.log")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"Traceback \(most recent call last\):.*?(?=\n\S|\Z)", text, re.S):
            tail = text[match.end() : match.end() + 300].splitlines()
            tracebacks.append(f"{path.name}: {tail[0] if tail else ''}")
    levels: collections.Counter[str] = collections.Counter()
    for path in sorted((workdir / "data").glob("chat-tui.log*")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.search(r" (WARNING|ERROR|CRITICAL) \S+ ([\w.]+): (.*)$", line)
            if m:
                msg = re.sub(r"\d+", "N", m.group(3))[:90]
                levels[f"{m.group(1)} {msg}"] += 1
    return tracebacks, levels


# -- a run's record, so a kept work directory can be checked again ------------------------------


def save_run(workdir: Path, args: argparse.Namespace, result: RunResult) -> None:
    record = {
        "args": {k: getattr(args, k) for k in ("senders", "tui", "fault_rate", "seed")},
        "typed": {str(c): texts for c, texts in result.typed.items()},
        "conversation_ids": {str(c): cid for c, cid in result.conversation_ids.items()},
        "kills": [vars(k) for k in result.kills],
        "on_flap": result.on_flap,
        "crashes": result.crashes,
        "started": result.started,
        "finished": result.finished,
        "timed_out": result.timed_out,
        "stalled": result.stalled,
        "spawned": result.spawned,
        "final_exits": result.final_exits,
    }
    (workdir / "run.json").write_text(json.dumps(record, indent=1), encoding="utf-8")


def load_run(workdir: Path) -> tuple[argparse.Namespace, RunResult]:
    record = json.loads((workdir / "run.json").read_text(encoding="utf-8"))
    result = RunResult(
        typed={int(c): texts for c, texts in record["typed"].items()},
        conversation_ids={int(c): cid for c, cid in record["conversation_ids"].items()},
        kills=[KillEvent(**k) for k in record["kills"]],
        crashes=record["crashes"],
        started=record["started"],
        finished=record["finished"],
        timed_out=record["timed_out"],
        senders=[],
        spawned=record.get("spawned", {}),
        final_exits=record.get("final_exits", []),
        stalled=record.get("stalled", False),
        on_flap=record.get("on_flap", []),
    )
    return argparse.Namespace(keep=True, **record["args"]), result


def check_and_print(args: argparse.Namespace, workdir: Path, result: RunResult) -> bool:
    report = check(workdir / "data" / "chat.db", workdir / "server.jsonl", result)
    tracebacks, levels = scan_logs(workdir)
    print_summary(args, result, report, tracebacks, levels, workdir)
    return report.ok and not tracebacks and not result.timed_out


# -- output --------------------------------------------------------------------------------------


def print_summary(
    args: argparse.Namespace,
    result: RunResult,
    report: Report,
    tracebacks: list[str],
    levels: collections.Counter[str],
    workdir: Path,
) -> None:
    out = print
    kinds = collections.Counter(k.kind for k in result.kills)
    duration = result.finished - result.started
    out("=" * 72)
    out("chat-tui soak summary")
    out("=" * 72)
    out(
        f"messages:        {sum(len(t) for t in result.typed.values())} typed "
        f"({report.user_rows} user rows, {report.reply_rows} replies in the database)"
    )
    out(f"conversations:   {len(result.typed)}")
    out(
        f"senders:         {args.senders} x `chat-tui sync --watch`"
        + (" + 1 headless TUI" if args.tui else "")
        + ", restarted after each kill"
    )
    out(
        f"kills:           {kinds['sync'] + kinds['tui']} SIGKILL (sync {kinds['sync']}, "
        f"tui {kinds['tui']}); server {kinds['server']} (SIGTERM, restarted on the same port)"
    )
    out(
        f"endpoints:       {len(result.on_flap)} of {len(result.typed)} conversations on "
        f"'{FLAP_ENDPOINT}', stopped and started {kinds['flap']} times"
    )
    out(f"final SIGTERM:   exit status {', '.join(result.final_exits) or '-'}")
    out(f"fault rate:      {args.fault_rate:.2f} (seed {args.seed})")
    out(
        f"requests:        {report.chat_requests} chat requests, {report.probes} /models probes, "
        f"at most {report.max_requests_per_message} requests for one message"
    )
    faults = ", ".join(
        f"{k} {v}" for k, v in sorted(report.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    out(f"outcomes:        {faults or 'none'}")
    lags = sorted(report.store_lags)
    if lags:

        def pct(q: float) -> float:
            return lags[min(len(lags) - 1, int(q * len(lags)))] * 1000

        out(
            f"store lag:       server finished -> client stores the reply: p50 {pct(0.5):.0f} ms, "
            f"p99 {pct(0.99):.0f} ms, max {lags[-1] * 1000:.0f} ms"
        )
    limit = (
        "  (STALLED: nothing delivered for the stall limit)"
        if result.stalled
        else "  (DURATION LIMIT HIT)"
        if result.timed_out
        else ""
    )
    out(f"duration:        {duration:.1f} s{limit}")
    out(
        "settings:        max_attempts = 1000, so transient faults never fail a message in this "
        "soak;"
    )
    out(
        "                 lease 3 s, backoff 0.05-0.5 s, connect 1 s, read 4 s, probe cap 1 s, "
        "max_age/dedup off"
    )
    out("-" * 72)
    out("violations:")
    for kind in VIOLATIONS:
        out(f"  {kind}: {report.counts[kind]}")
        for example in report.examples.get(kind, []):
            out(f"      - {example}")
    out("allowed:")
    out(f"  resent_after_kill: {report.resent_after_kill}")
    out("      (the server completed a request, the sender was SIGKILLed before it committed the")
    out("       reply, and after its lease expired another sender re-sent with the SAME")
    out("       Idempotency-Key, which a real server dedupes; the database holds one reply)")
    for example in report.resent_examples:
        out(f"      - {example}")
    if tracebacks:
        out(f"tracebacks in sender output: {len(tracebacks)}")
        for tb in tracebacks[:5]:
            out(f"      - {tb}")
    if levels:
        out("chat-tui.log warnings/errors (informational):")
        for line, count in levels.most_common(8):
            out(f"  {count:5d}  {line}")
    out("-" * 72)
    verdict = report.ok and not tracebacks and not result.timed_out
    out(
        "PASS"
        if verdict
        else "FAIL"
        + ("" if report.ok else ": see violations above")
        + (": duration limit hit" if result.timed_out else "")
        + (": tracebacks in sender output" if tracebacks else "")
    )
    if not verdict or args.keep:
        out(f"work directory kept: {workdir}")


# -- entry point ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--conversations", type=int, default=20)
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs of senders (at least)")
    p.add_argument(
        "--server-restarts",
        type=int,
        default=None,
        help="endpoint stops/restarts (default: max(1, kills // 6))",
    )
    p.add_argument(
        "--flaps",
        type=int,
        default=30,
        help="times the second endpoint is stopped and started again (0: one endpoint only)",
    )
    p.add_argument("--fault-rate", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--reply-delay",
        type=float,
        default=0.02,
        metavar="S",
        help="server pause before each chunk of a normal reply, so kills and "
        "endpoint stops can land mid-stream (default 0.02)",
    )
    p.add_argument("--duration-limit", type=float, default=600.0, metavar="S")
    p.add_argument(
        "--stall-limit",
        type=float,
        default=120.0,
        metavar="S",
        help="give up when nothing was delivered for S seconds (default 120)",
    )
    p.add_argument("--senders", type=int, default=3, help="`chat-tui sync --watch` processes")
    p.add_argument(
        "--no-tui", dest="tui", action="store_false", help="no headless TUI among the senders"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--workdir", type=Path, default=None, help="(default: a new temp dir)")
    p.add_argument(
        "--recheck",
        type=Path,
        default=None,
        metavar="DIR",
        help="only run the checker again on a kept work directory",
    )
    args = p.parse_args(argv)
    if args.server_restarts is None:
        args.server_restarts = max(1, args.kills // 6)
    if args.messages < 1 or args.conversations < 1 or args.senders + int(args.tui) < 1:
        p.error("need at least one message, one conversation and one sender")
    if args.conversations > args.messages:
        p.error("--conversations must not exceed --messages")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.recheck is not None:
        saved_args, saved = load_run(args.recheck)
        return 0 if check_and_print(saved_args, args.recheck, saved) else 1
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="soak-", dir=args.workdir))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="chat-tui-soak-"))
    print(
        f"chat-tui soak: {args.messages} messages, {args.conversations} conversations, "
        f">= {args.kills} kills, fault rate {args.fault_rate}, seed {args.seed}; "
        f"work dir {workdir}",
        flush=True,
    )

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)
    # Ctrl+C even when started in the background (where SIGINT is inherited ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    children = Children()
    server = ServerCtl(
        children,
        child_env(workdir / "data", workdir / "config.toml"),
        workdir,
        args.fault_rate,
        args.seed,
        args.reply_delay,
    )
    flapper = (
        ServerCtl(
            children,
            child_env(workdir / "data", workdir / "config.toml"),
            workdir,
            args.fault_rate,
            args.seed + 7919,
            args.reply_delay,
            name=FLAP_ENDPOINT,
        )
        if args.flaps > 0
        else None
    )
    result: RunResult | None = None
    try:
        try:
            result = run(args, workdir, children, server, flapper)
            result.crashes += stop_everything(
                children, result.senders, server, result.final_exits, flapper
            )
        finally:
            children.kill_all()
    except KeyboardInterrupt:
        print(f"interrupted; every child process was stopped; work dir {workdir}", file=sys.stderr)
        return 130
    except SoakError as exc:
        print(f"soak could not run: {exc}; work dir {workdir}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    save_run(workdir, args, result)
    ok = check_and_print(args, workdir, result)
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
