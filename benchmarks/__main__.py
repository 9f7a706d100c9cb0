"""Run every benchmark and print one table: ``python -m benchmarks [--quick] [NAME...]``.

Each benchmark runs in its own process (see ``_collect.py``) and prints its
details as it goes; the summary table comes last. Always exits 0: this is a
report, and a FAIL row is a finding, not a crash. A benchmark that crashes
gets a FAIL row saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import PYTHON, REPO_ROOT, Result, busy_warning, print_table

# Startup first: it is the most sensitive to a machine still busy with the others.
BENCHMARKS = (
    "startup",
    "open_conversation",
    "long_reply",
    "enqueue",
    "flush",
    "reconnect",
    "search",
    "netfaults",
    "context_fit",
    "real_ttft",
    "fallback",
)
OPTIONAL = ("answers_lookup",)  # written by someone else; run when present
NO_RUN = 3  # _collect's exit status for a module without run()


def _available() -> list[str]:
    here = Path(__file__).resolve().parent
    return [*BENCHMARKS, *(name for name in OPTIONAL if (here / f"{name}.py").exists())]


def _run_one(name: str, quick: bool) -> list[Result]:
    flag = ["--quick"] if quick else []
    with tempfile.TemporaryDirectory(prefix="chat-tui-bench-results-") as tmp:
        out = Path(tmp) / "results.json"
        proc = subprocess.run(
            [PYTHON, "-m", "benchmarks._collect", name, *flag, "--json-out", str(out)],
            cwd=REPO_ROOT,
        )
        if proc.returncode == 0 and out.exists():
            return [Result(**r) for r in json.loads(out.read_text())]
    if proc.returncode == NO_RUN:
        # No run() to call: run it as a script and report how it ended.
        proc = subprocess.run([PYTHON, "-m", f"benchmarks.{name}", *flag], cwd=REPO_ROOT)
        return [
            Result(
                "ran as a script (no run()); see its output above",
                proc.returncode,
                "exit",
                "exit 0",
                proc.returncode == 0,
                name,
            )
        ]
    return [
        Result("crashed; see the traceback above", proc.returncode, "exit", "exit 0", False, name)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small, fast runs")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(_available())})",
    )
    args = parser.parse_args()
    names = args.names or _available()
    unknown = [n for n in names if not (Path(__file__).parent / f"{n}.py").exists()]
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)}")

    started = time.perf_counter()
    load = os.getloadavg()
    print(f"chat-tui benchmarks{' (quick)' if args.quick else ''}: {', '.join(names)}")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} at start",
        flush=True,
    )
    warning = busy_warning()
    if warning:
        print(warning, flush=True)
    results: list[Result] = []
    for name in names:
        print(f"\n=== {name} " + "=" * max(0, 60 - len(name)), flush=True)
        t = time.perf_counter()
        results += _run_one(name, args.quick)
        print(f"(took {time.perf_counter() - t:.0f} s)", flush=True)
    print(
        f"\n=== summary ({time.perf_counter() - started:.0f} s in all, load average "
        f"{os.getloadavg()[0]:.2f} at the end) " + "=" * 20
    )
    print_table(results)
    warning = busy_warning()
    if warning:
        print(warning)
    sys.exit(0)


if __name__ == "__main__":
    main()
