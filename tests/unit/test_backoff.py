"""Tests for chat_tui.backoff: jittered retry delays and Retry-After parsing."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from chat_tui.backoff import ProbeSchedule, full_jitter, parse_retry_after, retry_delay

NOW = 1_700_000_000.0  # a fixed "current time" for HTTP-date tests


# --- full_jitter -------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 5, 6, 10])
def test_full_jitter_within_bounds_and_spread(attempt: int) -> None:
    rng = random.Random(1234)
    ceiling = min(60.0, 2.0**attempt)
    samples = [full_jitter(attempt, rng=rng) for _ in range(2000)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Actually jittered: spread over the whole range, not a constant.
    assert len(set(samples)) > 1900
    assert min(samples) < 0.1 * ceiling
    assert max(samples) > 0.9 * ceiling
    assert statistics.mean(samples) == pytest.approx(ceiling / 2, rel=0.1)


def test_full_jitter_respects_base_and_cap() -> None:
    rng = random.Random(7)
    assert all(0.0 <= full_jitter(3, base=0.5, cap=100.0, rng=rng) <= 4.0 for _ in range(500))
    assert all(0.0 <= full_jitter(4, base=1.0, cap=5.0, rng=rng) <= 5.0 for _ in range(500))


@pytest.mark.parametrize("attempt", [63, 64, 1000, 1024, 1025, 10**6, 10**100])
def test_full_jitter_cap_at_huge_attempts(attempt: int) -> None:
    rng = random.Random(99)
    samples = [full_jitter(attempt, cap=60.0, rng=rng) for _ in range(500)]
    assert all(0.0 <= s <= 60.0 for s in samples)
    assert max(samples) > 50.0  # the ceiling really is the cap, not something tiny


def test_full_jitter_negative_attempt_treated_as_first_retry() -> None:
    rng = random.Random(3)
    assert all(0.0 <= full_jitter(-5, rng=rng) <= 1.0 for _ in range(200))


def test_full_jitter_rejects_negative_base() -> None:
    with pytest.raises(ValueError):
        full_jitter(1, base=-1.0)


def test_full_jitter_seeded_is_reproducible() -> None:
    a = [full_jitter(i, rng=random.Random(5)) for i in range(10)]
    b = [full_jitter(i, rng=random.Random(5)) for i in range(10)]
    assert a == b


def test_full_jitter_without_rng() -> None:
    assert 0.0 <= full_jitter(2) <= 4.0


# --- parse_retry_after -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("5", 5.0),
        ("120", 120.0),
        ("  30  ", 30.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
    ],
)
def test_retry_after_seconds(header: str, expected: float) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_retry_after_clamped() -> None:
    assert parse_retry_after("999999999") == 3600.0
    assert parse_retry_after("9" * 400) == 3600.0  # would be inf as a float
    assert parse_retry_after("100", max_wait=10.0) == 10.0


def test_retry_after_http_date_in_future() -> None:
    header = format_datetime(datetime.fromtimestamp(NOW + 90, tz=UTC), usegmt=True)
    assert header.endswith("GMT")
    assert parse_retry_after(header, now=NOW) == pytest.approx(90.0)


def test_retry_after_http_date_literal() -> None:
    # RFC 9110's example date, against a clock 45 s earlier.
    when = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC).timestamp()
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=when - 45) == 45.0
    # Obsolete-but-allowed "-0000" zone parses as naive; still treated as UTC.
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 -0000", now=when - 45) == 45.0


def test_retry_after_http_date_in_past_is_zero() -> None:
    header = format_datetime(datetime.fromtimestamp(NOW - 600, tz=UTC), usegmt=True)
    assert parse_retry_after(header, now=NOW) == 0.0


def test_retry_after_http_date_far_future_clamped() -> None:
    header = format_datetime(datetime.fromtimestamp(NOW + 10 * 86400, tz=UTC), usegmt=True)
    assert parse_retry_after(header, now=NOW) == 3600.0
    assert parse_retry_after(header, now=NOW, max_wait=60.0) == 60.0


def test_retry_after_http_date_uses_current_time_by_default() -> None:
    header = format_datetime(datetime.now(tz=UTC).replace(year=2000), usegmt=True)
    assert parse_retry_after(header) == 0.0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "-5",
        "-0.5",
        "soon",
        "1e3",
        "inf",
        "nan",
        "0x10",
        "1.",
        "5 seconds",
        "\u0665",  # ARABIC-INDIC DIGIT FIVE: isdigit() but not a valid header value
        "Sun, 99 Foo 1994 99:99:99 GMT",
        "Sun, 06 Nov",
    ],
)
def test_retry_after_invalid(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW) is None


# --- retry_delay -------------------------------------------------------------------


def test_retry_delay_without_retry_after_is_full_jitter() -> None:
    assert retry_delay(3, None, rng=random.Random(11)) == full_jitter(3, rng=random.Random(11))


def test_retry_delay_honours_later_retry_after() -> None:
    rng = random.Random(2)
    # attempt 2 -> jitter at most 4 s; the server asks for 30 s.
    assert all(retry_delay(2, 30.0, rng=rng) == 30.0 for _ in range(200))
    # Retry-After beyond the backoff cap still wins: the server knows best.
    assert retry_delay(20, 120.0, cap=60.0, rng=rng) == 120.0


def test_retry_delay_ignores_earlier_retry_after() -> None:
    for seed in range(200):
        expected = full_jitter(6, rng=random.Random(seed))  # in [0, 60]
        got = retry_delay(6, 0.0, rng=random.Random(seed))
        assert got == expected


def test_retry_delay_mixed_is_max_of_both() -> None:
    for seed in range(200):
        jitter = full_jitter(4, rng=random.Random(seed))  # in [0, 16]
        got = retry_delay(4, 8.0, rng=random.Random(seed))
        assert got == max(jitter, 8.0)


def test_retry_delay_ignores_non_finite_retry_after() -> None:
    assert retry_delay(1, float("nan"), rng=random.Random(1)) <= 2.0
    assert retry_delay(1, float("inf"), rng=random.Random(1)) <= 2.0


# --- ProbeSchedule -----------------------------------------------------------------


def test_probe_first_delay_about_one_second() -> None:
    for seed in range(200):
        delay = ProbeSchedule(rng=random.Random(seed)).next_delay()
        assert 0.5 <= delay <= 1.0


def test_probe_never_zero_never_above_cap() -> None:
    schedule = ProbeSchedule(first=1.0, cap=15.0, rng=random.Random(42))
    delays = [schedule.next_delay() for _ in range(5000)]  # 2**4999 would overflow
    assert min(delays) >= 0.5
    assert max(delays) <= 15.0
    # Long outage: probes settle between cap/2 and cap, and stay jittered.
    tail = delays[10:]
    assert min(tail) >= 7.5
    assert len(set(tail)) > len(tail) * 0.99


def test_probe_grows() -> None:
    for seed in range(100):
        schedule = ProbeSchedule(rng=random.Random(seed))
        delays = [schedule.next_delay() for _ in range(5)]
        # Each step's range is [c/2, c] with c doubling, so they never shrink
        # before reaching the cap band.
        assert delays[0] <= delays[1] <= delays[2] <= delays[3]
        assert delays[3] > delays[0] * 2
        assert 4.0 <= delays[3] <= 8.0
        assert 7.5 <= delays[4] <= 15.0
    # On average, each of the first steps roughly doubles.
    rng = random.Random(0)
    means = []
    for step in range(4):
        samples = []
        for _ in range(500):
            schedule = ProbeSchedule(rng=rng)
            samples.append([schedule.next_delay() for _ in range(step + 1)][-1])
        means.append(statistics.mean(samples))
    assert means == sorted(means)
    assert means[3] == pytest.approx(0.75 * 8, rel=0.1)


def test_probe_reset() -> None:
    schedule = ProbeSchedule(rng=random.Random(8))
    for _ in range(20):
        schedule.next_delay()
    assert schedule.attempt == 20
    assert schedule.next_delay() >= 7.5
    schedule.reset()
    assert schedule.attempt == 0
    assert 0.5 <= schedule.next_delay() <= 1.0


def test_probe_custom_first_and_cap() -> None:
    schedule = ProbeSchedule(first=0.2, cap=1.0, rng=random.Random(4))
    delays = [schedule.next_delay() for _ in range(50)]
    assert 0.1 <= delays[0] <= 0.2
    assert all(0.1 <= d <= 1.0 for d in delays)


@pytest.mark.parametrize(("first", "cap"), [(0.0, 15.0), (-1.0, 15.0), (2.0, 1.0)])
def test_probe_rejects_bad_parameters(first: float, cap: float) -> None:
    with pytest.raises(ValueError):
        ProbeSchedule(first=first, cap=cap)
