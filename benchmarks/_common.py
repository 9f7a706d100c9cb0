"""What every benchmark shares: the Result row, the table, temp dirs, settings, data.

Benchmarks never touch the user's config or data: settings come from an
explicit environment (``CHAT_TUI_DATA_DIR`` in a temp dir, ``CHAT_TUI_CONFIG``
pointing at a file that does not exist), and every endpoint is on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Environment variables that would leak the user's own setup into a run.
_USER_VARS = (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "CHAT_TUI_MODEL",
    "CHAT_TUI_CONFIG",
    "CHAT_TUI_DATA_DIR",
)


@dataclass
class Result:
    """One figure of one benchmark. ``passed`` is None for figures shown for diagnosis."""

    name: str
    value: float
    unit: str
    target: str
    passed: bool | None
    benchmark: str = ""

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "info"}[self.passed]

    def shown(self) -> str:
        if self.unit == "ms":
            return f"{self.value:.1f} ms"
        if self.unit == "s":
            return f"{self.value:.2f} s"
        if self.unit == "x":
            return f"{self.value:.2f}×"
        if self.unit in ("msg/s", "/s"):
            return f"{self.value:.0f} {self.unit}"
        if float(self.value).is_integer():
            return f"{int(self.value)} {self.unit}".rstrip()
        return f"{self.value:.2f} {self.unit}".rstrip()


def print_table(results: Sequence[Result], *, file=None, title: str | None = None) -> None:
    """One plain-text table: benchmark | figure | value | target | verdict."""
    out = file or sys.stdout
    rows = [("benchmark", "figure", "value", "target", "result")]
    rows += [(r.benchmark, r.name, r.shown(), r.target or "-", r.verdict) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    line = "-+-".join("-" * w for w in widths)
    if title:
        print(title, file=out)
    for n, row in enumerate(rows):
        print(
            " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )
        if n == 0:
            print(line, file=out)
    failed = sum(r.passed is False for r in results)
    passed = sum(r.passed is True for r in results)
    print(f"\n{passed} PASS, {failed} FAIL, {len(results) - passed - failed} info", file=out)
    out.flush()


def main(
    benchmark: str, run: Callable[[bool], list[Result]], argv: list[str] | None = None
) -> None:
    """Entry point of ``python -m benchmarks.<name>``: always exits 0 (it is a report)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{benchmark}")
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    parser.add_argument("--json-out", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warning = busy_warning()
    if warning:
        log(warning)
    results = run(args.quick)
    for r in results:
        r.benchmark = r.benchmark or benchmark
    print()
    print_table(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([asdict(r) for r in results]))
    sys.exit(0)


def busy_warning() -> str | None:
    """A note when other programs keep the CPUs busy: wall-clock figures are inflated then."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cpus = os.cpu_count() or 1
    if load > 0.5 * cpus:
        return (
            f"note: load average {load:.2f} on {cpus} CPUs: other programs are busy, "
            "wall-clock figures are inflated (CPU-time figures much less)"
        )
    return None


def log(text: str) -> None:
    """Progress and detail lines; the table comes at the end."""
    print(text, flush=True)


# -- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty sample."""
    data = sorted(values)
    if not data:
        return math.nan
    k = (len(data) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# -- isolation: temp dirs, settings, ports, environment -------------------------------------


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory on the real temp filesystem, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"chat-tui-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bench_environ(tmp: Path, base_url: str) -> dict[str, str]:
    """The variables that point chat-tui at ``tmp`` and ``base_url`` and nothing else."""
    return {
        "CHAT_TUI_DATA_DIR": str(tmp / "data"),
        "CHAT_TUI_CONFIG": str(tmp / "no-such-config.toml"),  # does not exist: defaults
        "OPENAI_BASE_URL": base_url,
    }


def subprocess_env(tmp: Path, base_url: str) -> dict[str, str]:
    """``os.environ`` without the user's chat-tui settings, plus ``bench_environ``."""
    env = {k: v for k, v in os.environ.items() if k not in _USER_VARS}
    env.update(bench_environ(tmp, base_url))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def make_settings(tmp: Path, base_url: str, **overrides: object):
    """Settings exactly as the program builds them, from an explicit environment."""
    from chat_tui.config import load_settings

    settings = load_settings(environ=bench_environ(tmp, base_url))
    return settings.replace(**overrides) if overrides else settings


def dead_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_url() -> str:
    return f"http://127.0.0.1:{dead_port()}/v1"


@contextlib.contextmanager
def server_process(*extra: str) -> Iterator[str]:
    """``python -m tests.fault_server --port 0`` in its own process; yields its base URL.

    A separate process, as a real endpoint is: an in-process server's threads
    would compete with the client for the GIL and the benchmark would measure that.
    """
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.fault_server", "--port", "0", *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"fault server did not start: {line!r}")
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- realistic content ------------------------------------------------------------------------

# Ordered roughly by how common each word is in chat about code; sampled with
# Zipf weights, so "the" is everywhere and the tail is rare.
_VOCABULARY = """
the to a and of is in it you that for this with be on can use if as are or your not
an by from function code file error when will data value which should but have python
list return one set get all more new type time so we do like string test run how
example need make then name using would could method class call first there also
other line first config key path server request response async await loop task
database query table index column row json api client model token stream message
queue retry network offline online timeout connection socket thread process memory
cache buffer parse format output input user system prompt reply chat terminal
widget render layout screen scroll mount event handler callback signal worker lock
transaction commit rollback schema migration cursor sqlite postgres redis docker
kubernetes deploy build release version branch merge rebase commit diff patch
review lint typing generic protocol dataclass decorator iterator generator context
manager exception traceback logging metric latency throughput benchmark profile
optimize refactor module package import dependency virtualenv poetry pip wheel
compile runtime interpreter bytecode garbage collector reference pointer struct
enum union optional literal variance covariant contravariant invariant closure
lambda partial reduce filter map sort search binary tree graph hash heap stack
vector matrix tensor gradient embedding transformer attention tokenizer inference
"""
_WORDS = _VOCABULARY.split()

_RARE = [
    "quokka",
    "zephyr",
    "obsidian",
    "marzipan",
    "tessellate",
    "bifurcate",
    "sonorous",
    "quixotic",
    "palimpsest",
    "lugubrious",
    "ephemeral",
    "petrichor",
    "serendipity",
    "halcyon",
    "labyrinthine",
    "mellifluous",
    "penumbra",
    "zeitgeist",
    "kerfuffle",
    "flibbertigibbet",
]

_WEIGHTS = [1.0 / (rank + 1) ** 1.05 for rank in range(len(_WORDS))]


def _sentence(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_WORDS, weights=_WEIGHTS, k=n_words)
    if rng.random() < 0.02:  # the long tail: a few rare words across the corpus
        words[rng.randrange(n_words)] = rng.choice(_RARE)
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".?.!.")


def user_text(rng: random.Random, n: int) -> str:
    """A question of one to three sentences (~60-250 chars)."""
    return " ".join(_sentence(rng, rng.randint(8, 16)) for _ in range(rng.randint(1, 3))) + (
        f" (#{n})"
    )


def assistant_text(rng: random.Random) -> str:
    """A markdown reply of a few hundred chars: heading, paragraph, list, code."""
    parts = []
    if rng.random() < 0.4:
        parts.append("## " + _sentence(rng, 4).rstrip(".?!"))
    parts.append(" ".join(_sentence(rng, rng.randint(10, 18)) for _ in range(rng.randint(1, 3))))
    if rng.random() < 0.6:
        parts.append(
            "\n".join(
                f"- **{rng.choice(_WORDS)}**: {_sentence(rng, rng.randint(5, 9))}"
                for _ in range(rng.randint(2, 4))
            )
        )
    if rng.random() < 0.35:
        name = rng.choice(_WORDS)
        parts.append(f"```python\ndef {name}(x):\n    return x.{rng.choice(_WORDS)}()\n```")
    if rng.random() < 0.5:
        parts.append(f"Use `{rng.choice(_WORDS)}()` and " + _sentence(rng, 6))
    return "\n\n".join(parts)


# -- building databases fast ----------------------------------------------------------------


def create_schema(db_path: Path) -> None:
    """Create the database through the real Store (schema, pragmas, migrations)."""
    import asyncio

    from chat_tui.store import Store

    async def make() -> None:
        store = await Store.open(db_path)
        await store.close()

    asyncio.run(make())


@contextlib.contextmanager
def bulk_writer(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection in one transaction, for building fixtures fast.

    Same schema, triggers (FTS) and constraints as the app; only the
    per-commit fsync of the app is skipped, because building fixtures is not
    what is being measured.
    """
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def add_conversation(
    db: sqlite3.Connection,
    rng: random.Random,
    *,
    delivered_pairs: int,
    queued: int = 0,
    title: str | None = None,
    start: float | None = None,
) -> int:
    """A conversation of ``delivered_pairs`` user/assistant turns, then ``queued`` questions.

    Follows the store's seq scheme: user at 10, 20, 30…, its reply at +5.
    Queued questions get outbox entries that are due now.
    """
    now = time.time()
    start = now - 86_400 if start is None else start
    cur = db.execute(
        "INSERT INTO conversations (title, model, system_prompt, created_at, updated_at, next_seq)"
        " VALUES (?, NULL, NULL, ?, ?, ?)",
        (title or "bench conversation", start, now, 10 * (delivered_pairs + queued + 1)),
    )
    cid = cur.lastrowid
    assert cid is not None
    step = 86_400 / max(1, delivered_pairs + queued)
    meta = json.dumps({"model": "test-model", "finish_reason": "stop"})
    rows_user = []
    rows_assistant = []
    for i in range(delivered_pairs):
        seq = 10 * (i + 1)
        t = start + i * step
        rows_user.append((cid, seq, user_text(rng, i), t, t, str(uuid.uuid4())))
        rows_assistant.append((cid, seq + 5, assistant_text(rng), t + 1, t + 1, seq, meta))
    db.executemany(
        "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
        "updated_at, key) VALUES (?, ?, 'user', ?, 'delivered', ?, ?, ?)",
        rows_user,
    )
    # reply_to holds the question's id; look the ids up by seq afterwards.
    db.executemany(
        "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
        "updated_at, reply_to, meta) VALUES (?, ?, 'assistant', ?, 'complete', ?, ?, "
        "(SELECT id FROM messages WHERE conversation_id = ?1 AND seq = ?6), ?7)",
        rows_assistant,
    )
    for j in range(queued):
        seq = 10 * (delivered_pairs + j + 1)
        t = now - (queued - j) * 0.001
        cur = db.execute(
            "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
            "updated_at, key) VALUES (?, ?, 'user', ?, 'queued', ?, ?, ?)",
            (cid, seq, user_text(rng, delivered_pairs + j), t, t, str(uuid.uuid4())),
        )
        db.execute(
            "INSERT INTO outbox (message_id, conversation_id, next_attempt_at, enqueued_at) "
            "VALUES (?, ?, ?, ?)",
            (cur.lastrowid, cid, t, t),
        )
    return cid
