"""The one clock of a run: wall time, monotonic time, and who is running.

Stages never read ``datetime.now()``, ``time.monotonic()``, the host name or
the pid themselves: they ask the ``Clock`` they were given. Tests and the
benchmarks inject a fixed wall time (or a fake monotonic clock) and get the
same run every time, as zipline injects its clock into bundle ingestion.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Union

NEW_YORK = "America/New_York"


def _system_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class Clock:
    """``now()`` is timezone-aware; ``monotonic()`` measures durations."""

    now: Callable[[], dt.datetime] = _system_now
    monotonic: Callable[[], float] = time.monotonic
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def utcnow(self) -> dt.datetime:
        """Naive UTC with microseconds, the form every timestamp column stores."""
        return self.now().astimezone(dt.timezone.utc).replace(tzinfo=None)

    def today_in_new_york(self) -> dt.date:
        import zoneinfo

        return self.now().astimezone(zoneinfo.ZoneInfo(NEW_YORK)).date()

    @classmethod
    def fixed(cls, now: dt.datetime) -> "Clock":
        """A clock whose wall time stands still (monotonic time still moves)."""
        if now.tzinfo is None:
            raise ValueError("a fixed clock needs a timezone-aware datetime")
        return cls(now=lambda: now)


def as_clock(value: Union[Clock, Callable[[], dt.datetime], None]) -> Clock:
    """A ``Clock`` from a Clock, a wall-time callable (the seed's ``clock=``), or None."""
    if value is None:
        return Clock()
    if isinstance(value, Clock):
        return value
    return Clock(now=value)
