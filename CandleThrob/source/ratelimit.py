"""One rate limiter per process, shared by every worker thread.

Polygon's free tier allows 5 calls a minute per key. The limiter is a token
bucket kept as a single "theoretical arrival time" (GCRA): each ``acquire``
reserves the next free slot under the lock and sleeps *after* releasing it, so
threads queue in reservation order and nobody waits behind a sleeper to read a
counter or report a 429.

It adapts: a 429 pauses every caller until the server's Retry-After (or one
full window) has passed, empties the bucket and doubles the spacing; each
success then gives back part of the extra spacing until the configured rate is
reached again. A 429 usually means someone else shares the key, so the limiter
keeps a margin for a while rather than bouncing straight back into the wall.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

#: Extra spacing below this share of the base interval is dropped on recovery,
#: so the geometric decay ends instead of creeping towards the base forever.
_RECOVERED = 0.01


class RateLimiter:
    """Spaces requests ``interval`` seconds apart, allowing bursts of ``burst``.

    ``RateLimiter(5)`` is the free tier; ``RateLimiter.from_seconds(12)`` is the
    same from ``POLYGON_RATE_LIMIT``. ``calls_per_minute`` None/0 or
    ``seconds_between_calls=0`` is unlimited: ``acquire`` never spaces calls,
    but a 429 still pauses everyone until the server's Retry-After (or the
    window) has passed, because retrying into a 429 only earns another one.
    """

    def __init__(self, calls_per_minute: Optional[float] = 5, *,
                 seconds_between_calls: Optional[float] = None,
                 burst: int = 1,
                 window: float = 60.0,
                 backoff: float = 2.0,
                 max_interval: float = 60.0,
                 recovery: float = 0.75,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if seconds_between_calls is not None:
            if seconds_between_calls < 0:
                raise ValueError(f"seconds_between_calls must be >= 0, got {seconds_between_calls!r}")
            base = float(seconds_between_calls)
        elif not calls_per_minute:
            base = 0.0
        elif calls_per_minute < 0:
            raise ValueError(f"calls_per_minute must be > 0 or None, got {calls_per_minute!r}")
        else:
            base = window / calls_per_minute
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if window <= 0 or backoff < 1 or not 0 <= recovery < 1:
            raise ValueError("need window > 0, backoff >= 1 and 0 <= recovery < 1")

        self.base_interval = base
        self.burst = burst
        self.window = window
        self.backoff = backoff
        # Never cap below the configured rate: that would speed us up on a 429.
        self.max_interval = max(max_interval, base)
        self.recovery = recovery
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._interval = base
        self._tat = float("-inf")       # theoretical arrival time of the next call
        self._resume_at = float("-inf")  # no call before this (set by a 429)
        self._calls = 0
        self._waited = 0.0
        self._rate_limited = 0

    @staticmethod
    def per_minute_burst(seconds_between_calls: float) -> int:
        """The vendor counts calls per minute: after a pause, a minute's allowance may go at once."""
        # a hair over the quotient, so that 60 / 0.2 counts as the 300 it is, not 299.999...
        return max(1, int(60 / seconds_between_calls + 1e-9)) if seconds_between_calls > 0 else 1

    @classmethod
    def from_seconds(cls, seconds_between_calls: float, **options) -> "RateLimiter":
        """From ``POLYGON_RATE_LIMIT`` semantics: 12 -> 5/min, 0 -> unlimited."""
        return cls(None, seconds_between_calls=seconds_between_calls, **options)

    # -- reading (cheap, safe while others sleep in acquire) -----------------

    @property
    def unlimited(self) -> bool:
        return self.base_interval == 0

    @property
    def interval(self) -> float:
        """Current seconds between calls (base, or more after a 429)."""
        with self._lock:
            return self._interval

    @property
    def calls(self) -> int:
        """Calls granted by ``acquire`` so far."""
        with self._lock:
            return self._calls

    @property
    def waited_seconds(self) -> float:
        """Total seconds callers slept in ``acquire``."""
        with self._lock:
            return self._waited

    @property
    def rate_limited_count(self) -> int:
        """429s reported through ``on_rate_limited``."""
        with self._lock:
            return self._rate_limited

    # -- the gate -------------------------------------------------------------

    def acquire(self) -> float:
        """Block until the caller may send one request; return seconds slept."""
        waited = 0.0
        slot = None
        while True:
            with self._lock:
                # A 429 reported while we slept moves the gate past our slot:
                # sending now would break the server's Retry-After, so queue again.
                if slot is not None and self._resume_at <= slot:
                    self._calls += 1
                    self._waited += waited
                    return waited
                now = self._clock()
                slot = self._reserve(now)
            delay = slot - now
            if delay > 0:
                self._sleep(delay)  # outside the lock, on purpose
                waited += delay

    def _reserve(self, now: float) -> float:
        # GCRA: a call may go once the bucket holds a token, i.e. no earlier
        # than TAT - (burst - 1) * interval; taking it pushes TAT one interval on.
        tolerance = (self.burst - 1) * self._interval
        self._tat = max(self._tat, now)
        slot = max(now, self._tat - tolerance)
        self._tat += self._interval
        return slot

    # -- feedback -------------------------------------------------------------

    def on_rate_limited(self, retry_after: Optional[float] = None) -> None:
        """The server answered 429: pause everyone, then go slower.

        No request goes before now + ``retry_after`` (or now + ``window`` when
        the server gave none: the free tier counts calls per minute, so a full
        window is the wait that surely clears it).
        """
        with self._lock:
            now = self._clock()
            pause = self.window if retry_after is None else max(0.0, retry_after)
            self._resume_at = max(self._resume_at, now + pause)
            self._interval = min(self._interval * self.backoff, self.max_interval)
            # Empty the bucket: after the pause, calls go one interval apart,
            # not as a burst straight back into the limit.
            tolerance = (self.burst - 1) * self._interval
            self._tat = max(self._tat, self._resume_at + tolerance)
            self._rate_limited += 1

    def on_success(self) -> None:
        """A request went through: give back part of the extra spacing."""
        with self._lock:
            extra = (self._interval - self.base_interval) * self.recovery
            if extra < _RECOVERED * self.base_interval:
                extra = 0.0
            self._interval = self.base_interval + extra

    def __repr__(self) -> str:
        return (f"RateLimiter(interval={self.interval:g}s, burst={self.burst}, "
                f"calls={self.calls}, rate_limited={self.rate_limited_count})")
