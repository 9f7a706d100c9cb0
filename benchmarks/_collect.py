"""Run one benchmark module's ``run(quick)`` and write its results as JSON.

``python -m benchmarks._collect NAME [--quick] --json-out FILE`` is how the
runner (``python -m benchmarks``) calls each benchmark: in its own process,
so one benchmark's imports, threads and memory never colour another's
figures. Exit status 3 means the module has no ``run()`` to call.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

from ._common import Result, busy_warning, print_table

NO_RUN = 3


def _as_result(item: object, benchmark: str) -> Result:
    if is_dataclass(item) and not isinstance(item, type):  # Result, or a look-alike
        data = asdict(item)
    elif isinstance(item, dict):
        data = dict(item)
    else:
        data = {k: getattr(item, k) for k in ("name", "value", "unit", "target", "passed")}
    data.setdefault("benchmark", "")
    data["benchmark"] = data["benchmark"] or benchmark
    fields = ("name", "value", "unit", "target", "passed", "benchmark")
    return Result(**{k: data.get(k) for k in fields})  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._collect")
    parser.add_argument("name")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json-out", required=True)
    args = parser.parse_args()
    module = importlib.import_module(f"benchmarks.{args.name}")
    run = getattr(module, "run", None)
    if run is None:
        sys.exit(NO_RUN)
    warning = busy_warning()
    if warning:
        print(warning, flush=True)
    results = [_as_result(r, args.name) for r in run(args.quick)]
    print()
    print_table(results)
    Path(args.json_out).write_text(json.dumps([asdict(r) for r in results]))


if __name__ == "__main__":
    main()
