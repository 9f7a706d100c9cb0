"""A short run of the soak (scripts/soak.py) for CI: real processes, real faults.

60 messages over 6 conversations (two of them on a second endpoint that flaps), 3
`chat-tui sync --watch` processes and a
headless TUI SIGKILLed at least 4 times, the endpoint stopped and restarted,
30 % of requests faulted. The script's checker reads the database and the
server log; every violation count it prints must be 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "soak.py"
VIOLATIONS = (
    "lost",
    "doubled_in_db",
    "doubled_at_server",
    "out_of_order",
    "incomplete",
    "leftover",
    "lease_overlap",
    "key_mismatch",
    "sender_crashes",
    "wrong_endpoint",
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(75)]  # the slow tier: pytest -m slow


def test_short_soak_loses_nothing_doubles_nothing_keeps_order(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        str(SCRIPT),
        "--messages",
        "60",
        "--conversations",
        "6",
        "--kills",
        "4",
        "--fault-rate",
        "0.3",
        "--seed",
        "7",
        "--duration-limit",
        "40",
        "--workdir",
        str(tmp_path),
    ]
    try:
        proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the soak did not finish in 60 s\n{exc.stdout}\n{exc.stderr}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output

    counts = {name: int(n) for name, n in re.findall(r"^  (\w+): (\d+)$", proc.stdout, re.M)}
    for name in VIOLATIONS:
        assert counts.get(name) == 0, f"{name}: {counts.get(name)}\n{output}"
    assert re.search(r"^PASS$", proc.stdout, re.M), output

    kills = re.search(r"^kills:\s+(\d+) SIGKILL .*server (\d+)", proc.stdout, re.M)
    assert kills is not None, output
    assert int(kills.group(1)) >= 4 and int(kills.group(2)) >= 1, output
    # Two endpoints: two of the six conversations on one that flaps.
    flaps = re.search(
        r"^endpoints:\s+(\d+) of 6 conversations on 'flap', stopped and started (\d+)",
        proc.stdout,
        re.M,
    )
    assert flaps is not None and int(flaps.group(1)) == 2 and int(flaps.group(2)) >= 2, output
    typed = re.search(
        r"^messages:\s+(\d+) typed \((\d+) user rows, (\d+) replies", proc.stdout, re.M
    )
    assert typed is not None and typed.groups() == ("60", "60", "60"), output
    completed = re.search(r"^outcomes:.*\bcompleted (\d+)", proc.stdout, re.M)
    assert completed is not None and int(completed.group(1)) >= 60, output
