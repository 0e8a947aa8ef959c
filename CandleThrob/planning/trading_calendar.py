"""The NYSE trading calendar, injected wherever sessions are needed.

exchange_calendars knows weekends, holidays, one-off closures (national days of
mourning, Hurricane Sandy) and early closes. Its default window starts 20 years
back; we open it at 1990 so that long backfills work.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Optional, Union

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from CandleThrob.clock import Clock

CALENDAR_START = "1990-01-02"
# Polygon finalises daily bars some time after the 16:00 close (late prints,
# corrections); a session counts as complete from this New York time.
BARS_FINAL_AFTER = dt.time(20, 0)

DateLike = Union[str, dt.date, pd.Timestamp]


def _ts(value: DateLike) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize(None) if stamp.tzinfo else stamp).normalize()


class TradingCalendar:
    """Sessions of one exchange (NYSE by default), as naive midnight Timestamps."""

    def __init__(self, name: str = "XNYS", start: DateLike = CALENDAR_START,
                 end: Optional[DateLike] = None, clock: Optional[Clock] = None):
        # A year past today: far enough for any --end a run accepts.
        end = end or (pd.Timestamp((clock or Clock()).today_in_new_york()) + pd.DateOffset(years=1))
        self._cal = _calendar(name, str(_ts(start).date()), str(_ts(end).date()))
        self.name = name

    @property
    def sessions(self) -> pd.DatetimeIndex:
        return self._cal.sessions

    @functools.cached_property
    def session_days(self) -> np.ndarray:
        """Every session as datetime64[D], converted once for hot loops."""
        return self._cal.sessions.values.astype("datetime64[D]")

    @property
    def first_session(self) -> pd.Timestamp:
        return self._cal.first_session

    @property
    def last_session(self) -> pd.Timestamp:
        return self._cal.last_session

    def is_session(self, day: DateLike) -> bool:
        day = _ts(day)
        if day < self.first_session or day > self.last_session:
            return False
        return bool(self._cal.is_session(day))

    def sessions_in_range(self, start: DateLike, end: DateLike) -> pd.DatetimeIndex:
        start, end = max(_ts(start), self.first_session), min(_ts(end), self.last_session)
        if start > end:
            return pd.DatetimeIndex([])
        return self._cal.sessions_in_range(start, end)

    def session_on_or_before(self, day: DateLike) -> pd.Timestamp:
        return self._cal.date_to_session(_ts(day), direction="previous")

    def last_final_session(self, now: dt.datetime) -> pd.Timestamp:
        """The last session whose daily bars are final at ``now`` (any tz-aware time)."""
        ny = pd.Timestamp(now).tz_convert("America/New_York")
        today = ny.normalize().tz_localize(None)
        if self.is_session(today) and ny.time() >= BARS_FINAL_AFTER:
            return today
        return self.session_on_or_before(today - pd.Timedelta(days=1))


@functools.lru_cache(maxsize=8)
def _calendar(name: str, start: str, end: str):
    return xcals.get_calendar(name, start=start, end=end)
