"""Offline-answer lookup over a large history: build time, lookup latency, memory.

Why these figures: the offline answer is shown "at once" when a question is
submitted without a connection, so ``AnswerIndex.best`` runs on the UI's
critical path (p95 ≤ 20 ms at 100,000 past questions), and the index is
built when the app starts (≤ 2 s). Memory has no target; it is reported so a
regression is visible. Both memory figures cover what the index itself
allocates: the ``PastQuestion`` records exist before the build (the store
returns them) and are only referenced.

The history is synthetic but shaped like the hard case: templates × topics ×
entities, so many questions share most of their words with many others
("reverse a list in Python" / "... in Rust" / "reverse a string in Python"),
plus politeness, case and typo variants and exact repeats. Lookups mix
paraphrased hits with near-miss questions that must not match.

Run: ``python -m benchmarks.answers_lookup`` (100,000 questions) or
``--n 10000`` / ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from benchmarks._common import Result, percentile, print_table
from chat_tui.answers import AnswerIndex
from chat_tui.store import PastQuestion

BENCHMARK = "answers_lookup"
FULL_N = 100_000
QUICK_N = 10_000
LOOKUPS = 400
BUILDS = 3
SEED = 20261120

TARGET_BUILD_S = 2.0
TARGET_P95_MS = 20.0

_LANGS = (
    "Python",
    "Rust",
    "Go",
    "Java",
    "JavaScript",
    "TypeScript",
    "C",
    "C++",
    "C#",
    "Ruby",
    "Kotlin",
    "Swift",
    "Haskell",
    "Elixir",
    "PHP",
    "Perl",
    "Scala",
    "Lua",
    "Julia",
    "Dart",
    "R",
    "Zig",
    "OCaml",
    "Clojure",
)
_ACTIONS = (
    "reverse",
    "sort",
    "shuffle",
    "copy",
    "flatten",
    "filter",
    "merge",
    "split",
    "serialize",
    "deserialize",
    "iterate over",
    "sum",
    "print",
    "compare",
    "hash",
    "deduplicate",
    "slice",
    "concatenate",
    "parse",
    "validate",
    "compress",
    "encrypt",
    "index",
    "search",
    "zip",
    "transpose",
    "chunk",
    "rotate",
    "cache",
    "benchmark",
)
_OBJECTS = (
    "list",
    "string",
    "dictionary",
    "set",
    "array",
    "tuple",
    "linked list",
    "tree",
    "graph",
    "queue",
    "stack",
    "matrix",
    "JSON file",
    "CSV file",
    "byte buffer",
    "date",
    "timestamp",
    "URL",
    "regex match",
    "heap",
    "binary file",
    "stream",
    "iterator",
    "map",
    "vector",
    "enum",
    "struct",
    "class instance",
    "XML document",
    "HTTP response",
)
_COUNTRIES = (
    "France",
    "Spain",
    "Italy",
    "Germany",
    "Portugal",
    "Austria",
    "Australia",
    "Iran",
    "Iraq",
    "Japan",
    "China",
    "India",
    "Brazil",
    "Argentina",
    "Chile",
    "Peru",
    "Canada",
    "Mexico",
    "Egypt",
    "Kenya",
    "Nigeria",
    "Norway",
    "Sweden",
    "Finland",
    "Poland",
    "Greece",
    "Turkey",
    "Vietnam",
    "Thailand",
    "Indonesia",
)
_FACTS = (
    "capital",
    "population",
    "currency",
    "official language",
    "largest city",
    "national dish",
    "highest mountain",
    "longest river",
    "time zone",
    "area",
    "president",
    "flag",
    "climate",
    "GDP",
    "national anthem",
)
_UNITS = (
    "celsius",
    "fahrenheit",
    "kelvin",
    "miles",
    "kilometers",
    "pounds",
    "kilograms",
    "inches",
    "centimeters",
    "feet",
    "meters",
    "gallons",
    "liters",
    "ounces",
    "grams",
)
_TOOLS = (
    "git",
    "docker",
    "kubernetes",
    "vim",
    "emacs",
    "tmux",
    "npm",
    "pip",
    "cargo",
    "maven",
    "gradle",
    "nginx",
    "postgres",
    "mysql",
    "redis",
    "ssh",
    "bash",
    "zsh",
)
_TOOL_TASKS = (
    "undo the last commit in",
    "configure a proxy for",
    "update",
    "uninstall",
    "speed up",
    "debug a crash in",
    "log errors from",
    "back up the data of",
    "restore a backup of",
    "set environment variables for",
    "upgrade",
    "secure",
    "monitor",
    "containerize",
    "profile memory in",
    "reset the password of",
)
_DISHES = (
    "pancakes",
    "lasagna",
    "sourdough bread",
    "risotto",
    "ramen",
    "paella",
    "curry",
    "falafel",
    "tiramisu",
    "brownies",
    "guacamole",
    "hummus",
    "pad thai",
    "gnocchi",
    "cheesecake",
    "dumplings",
    "chili",
    "pesto",
    "omelette",
    "bagels",
)
_DIET = (
    "",
    "without eggs",
    "without gluten",
    "without dairy",
    "in an air fryer",
    "for twelve people",
    "in under 30 minutes",
    "without an oven",
    "for a child",
)
_POLITE_PRE = (
    "",
    "",
    "",
    "Please, ",
    "Can you tell me ",
    "Hi! ",
    "Quick question: ",
    "I'd like to know ",
    "Could you explain ",
)
_POLITE_POST = ("", "", "", " please", " Thanks!", " thank you")


def _templates(rng: random.Random) -> str:
    """One question from one of several families, each a product of slots."""
    family = rng.randrange(7)
    if family <= 1:
        return f"How do I {rng.choice(_ACTIONS)} a {rng.choice(_OBJECTS)} in {rng.choice(_LANGS)}?"
    if family == 2:
        return f"What is the {rng.choice(_FACTS)} of {rng.choice(_COUNTRIES)}?"
    if family == 3:
        a, b = rng.sample(_UNITS, 2)
        return f"How do I convert {a} to {b}? I have {rng.randint(1, 500)} {a}."
    if family == 4:
        return f"How do I {rng.choice(_TOOL_TASKS)} {rng.choice(_TOOLS)}?"
    if family == 5:
        return f"How do I make {rng.choice(_DISHES)} {rng.choice(_DIET)}".rstrip() + "?"
    return f"What is {rng.randint(0, 999)} {rng.choice('+-*/')} {rng.randint(0, 999)}?"


def _typo(rng: random.Random, text: str) -> str:
    """Swap two neighbouring letters inside one longer word, as fast typing does."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 7 and w.isalpha()]
    if not long:
        return text
    i = rng.choice(long)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def _variant(rng: random.Random, text: str) -> str:
    """Politeness, case and typo variations of a question."""
    pre, post = rng.choice(_POLITE_PRE), rng.choice(_POLITE_POST)
    body = text[0].lower() + text[1:] if pre else text
    out = pre + body + post
    if rng.random() < 0.2:
        out = out.lower()
    if rng.random() < 0.1:
        out = _typo(rng, out)
    return out


def make_history(n: int, seed: int = SEED) -> list[PastQuestion]:
    """``n`` past questions, oldest first, with repeats and near-duplicates."""
    rng = random.Random(seed)
    start = time.time() - 400 * 86_400
    history: list[PastQuestion] = []
    for i in range(n):
        if history and rng.random() < 0.05:
            text = history[rng.randrange(len(history))].question  # asked again
        else:
            text = _variant(rng, _templates(rng))
        conv = i // 20
        history.append(
            PastQuestion(
                message_id=i + 1,
                conversation_id=conv + 1,
                conversation_title=f"Chat {conv}",
                question=text,
                answer=f"answer {i}",
                asked_at=start + i * 300.0,
            )
        )
    return history


def make_lookups(history: list[PastQuestion], count: int, seed: int = SEED) -> list[str]:
    """Half paraphrases of indexed questions (hits), half unseen look-alikes (misses)."""
    rng = random.Random(seed + 1)
    queries: list[str] = []
    for k in range(count):
        if k % 2 == 0:
            queries.append(_variant(rng, rng.choice(history).question))
        else:
            # Same families, but entities the history never uses: must not match.
            queries.append(
                rng.choice(
                    (
                        f"How do I {rng.choice(_ACTIONS)} a {rng.choice(_OBJECTS)} in Fortran?",
                        f"What is the {rng.choice(_FACTS)} of Iceland?",
                        f"How do I convert {rng.choice(_UNITS)} to furlongs?",
                        f"How do I make {rng.choice(_DISHES)} with bacon?",
                        f"What is {rng.randint(1000, 9999)} + {rng.randint(0, 999)}?",
                        f"How do I {rng.choice(_TOOL_TASKS)} podman?",
                        "Why do cats purr when they are happy?",
                    )
                )
            )
    return queries


def _rss_mb() -> float:
    """Current resident set size, from /proc where available (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource  # peak, not current, but the best portable figure

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_n(n: int, lookups: int = LOOKUPS) -> list[Result]:
    """Build over ``n`` questions, time ``lookups`` lookups, measure memory."""
    history = make_history(n)
    queries = make_lookups(history, lookups)

    # The first build is also the one whose RSS growth is measured; the reported
    # build time is the median of BUILDS, since one run on a busy machine is noisy.
    gc.collect()
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    index = AnswerIndex.build(history)
    build_times = [time.perf_counter() - t0]
    rss_delta = _rss_mb() - rss_before
    for _ in range(BUILDS - 1):
        t0 = time.perf_counter()
        AnswerIndex.build(history)
        build_times.append(time.perf_counter() - t0)
    build_s = statistics.median(build_times)

    for q in queries[:10]:  # warm caches the way a running app would have
        index.best(q)
    times: list[float] = []
    hits = 0
    for q in queries:
        t = time.perf_counter()
        found = index.best(q)
        times.append((time.perf_counter() - t) * 1000.0)
        hits += found is not None
    hit_queries = [q for k, q in enumerate(queries) if k % 2 == 0]
    miss_queries = [q for k, q in enumerate(queries) if k % 2 == 1]
    false_hits = sum(index.best(q) is not None for q in miss_queries)
    true_hits = sum(index.best(q) is not None for q in hit_queries)

    # Memory of a fresh build, traced separately so tracing does not slow the timed build.
    del index
    gc.collect()
    tracemalloc.start()
    index = AnswerIndex.build(history)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    p50, p95, p99 = (percentile(times, p) for p in (50, 95, 99))
    return [
        Result("questions indexed (distinct)", float(len(index)), "", f"of {n}", None),
        Result(
            f"build() median of {BUILDS}",
            build_s,
            "s",
            f"≤ {TARGET_BUILD_S:.0f} s",
            build_s <= TARGET_BUILD_S,
        ),
        Result("build() slowest", max(build_times), "s", "-", None),
        Result("best() p50", p50, "ms", "-", None),
        Result("best() p95", p95, "ms", f"≤ {TARGET_P95_MS:.0f} ms", p95 <= TARGET_P95_MS),
        Result("best() p99", p99, "ms", "-", None),
        Result("lookups timed", float(len(times)), "", "≥ 200", len(times) >= 200),
        Result("paraphrased hits found", float(true_hits), "", f"of {len(hit_queries)}", None),
        Result("look-alike misses matched", float(false_hits), "", "0", false_hits == 0),
        Result("tracemalloc peak (build)", peak / 2**20, "MB", "report", None),
        Result("RSS delta (build)", rss_delta, "MB", "report", None),
    ]


def run(quick: bool) -> list[Result]:
    """The shared benchmark entry point (``python -m benchmarks`` style)."""
    return run_n(QUICK_N if quick else FULL_N)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{BENCHMARK}")
    parser.add_argument("--n", type=int, default=FULL_N, help="past questions to index")
    parser.add_argument("--lookups", type=int, default=LOOKUPS, help="lookups to time")
    parser.add_argument("--quick", action="store_true", help=f"same as --n {QUICK_N}")
    args = parser.parse_args(argv)
    n = QUICK_N if args.quick else args.n
    started = time.perf_counter()
    results = run_n(n, args.lookups)
    for r in results:
        r.benchmark = BENCHMARK
    print(
        f"{BENCHMARK}: {n} past questions, {args.lookups} lookups, "
        f"{time.perf_counter() - started:.1f} s in all\n"
    )
    print_table(results)
    sys.exit(0)


if __name__ == "__main__":
    main()
