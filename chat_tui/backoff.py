"""Retry and reconnect timing: jittered exponential backoff and Retry-After.

Why jitter: when an endpoint fails, every client that saw the failure retries.
Plain exponential backoff keeps those clients in lock-step, so they keep
arriving together; randomising each delay spreads them out (see "Exponential
Backoff And Jitter", AWS Architecture Blog, 2015).  Why honour Retry-After: a
server that says how long to wait (429/503) knows better than our guess, and
retrying earlier only earns another rejection.

The randomised helpers take an optional :class:`random.Random` so tests can
seed them.
"""

from __future__ import annotations

import math
import random
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "ProbeSchedule",
    "full_jitter",
    "parse_retry_after",
    "retry_delay",
]

# Module-level generator so callers need not pass one; seeded from the OS.
_RNG = random.Random()

# ASCII digits only: str.isdigit() would also accept e.g. Arabic-Indic digits.
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


def _capped_exponential(base: float, attempt: int, cap: float) -> float:
    """Return ``min(cap, base * 2**attempt)`` without overflowing.

    ``base * 2**attempt`` raises OverflowError once ``2**attempt`` no longer
    fits in a float (attempt >= 1024), which a long-lived retry loop can reach.
    """
    try:
        return min(cap, math.ldexp(base, attempt))
    except OverflowError:
        return cap


def full_jitter(
    attempt: int,
    base: float = 1.0,
    cap: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Return a "full jitter" backoff delay in seconds for retry *attempt*.

    The delay is ``uniform(0, min(cap, base * 2**attempt))``; attempt 0 is the
    first retry.  In the AWS comparison full jitter spread competing clients
    well for the least total work; the price is that a delay can be near
    zero, which is fine for request retries (the server asks for more via
    Retry-After if it needs it).
    """
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    # A negative attempt is treated as the first retry rather than raising:
    # this runs in background retry loops where a crash is worse than a
    # slightly short delay.
    ceiling = _capped_exponential(base, max(attempt, 0), cap)
    return (rng or _RNG).uniform(0.0, ceiling)


def parse_retry_after(
    value: str | None,
    now: float | None = None,
    max_wait: float = 3600.0,
) -> float | None:
    """Parse an HTTP ``Retry-After`` header into seconds to wait.

    Accepts delta-seconds (``"120"``; decimals such as ``"1.5"`` too, since
    some servers send them) or an HTTP-date, which is measured against *now*
    (a Unix timestamp, default ``time.time()``); a date in the past means
    "retry now" and gives 0.  Returns ``None`` when the header is absent or
    unparseable (including negative numbers) so the caller falls back to its
    own backoff.  The result is clamped to *max_wait* so a hostile or buggy
    server cannot stall the client for days.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), max_wait)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # "-0000" parses as a naive datetime; HTTP-dates are always GMT.
        when = when.replace(tzinfo=UTC)
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), max_wait)


def retry_delay(
    attempt: int,
    retry_after: float | None,
    base: float = 1.0,
    cap: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Return the delay before retry *attempt*, respecting the server's wish.

    This is the full-jitter delay, unless the server's Retry-After (seconds,
    as from :func:`parse_retry_after`) asks for longer: retrying before the
    server said it is ready would just be rejected again.  An earlier
    Retry-After is ignored so that jitter still spreads clients out.
    """
    delay = full_jitter(attempt, base, cap, rng)
    if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
        return retry_after
    return delay


class ProbeSchedule:
    """Delays between reachability probes while the endpoint is offline.

    Uses "equal jitter": call *n* (0-based) returns
    ``uniform(c / 2, c)`` with ``c = min(cap, first * 2**n)``.  Chosen over
    full jitter because a probe delay must never be near zero (that would
    hammer an endpoint that is already down), and over decorrelated jitter
    because its first delay would be 1-3 s rather than about 1 s and its
    growth is harder to reason about.  With the defaults the delays are about
    0.5-1 s, 1-2 s, 2-4 s, 4-8 s, then 7.5-15 s for as long as the outage
    lasts: quick to notice a blip, gentle during a long outage, never above
    *cap*.  Call :meth:`reset` once a probe succeeds.
    """

    __slots__ = ("_attempt", "_rng", "cap", "first")

    def __init__(
        self,
        first: float = 1.0,
        cap: float = 15.0,
        rng: random.Random | None = None,
    ) -> None:
        """Create a schedule whose first delay is at most *first* seconds."""
        if not (math.isfinite(first) and first > 0):
            raise ValueError(f"first must be a positive number, got {first}")
        if not (math.isfinite(cap) and cap >= first):
            raise ValueError(f"cap must be >= first, got {cap}")
        self.first = first
        self.cap = cap
        self._rng = rng or _RNG
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Number of delays handed out since creation or the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        """Return the delay before the next probe, and advance the schedule."""
        ceiling = _capped_exponential(self.first, self._attempt, self.cap)
        self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from the first delay, e.g. after a successful probe."""
        self._attempt = 0
