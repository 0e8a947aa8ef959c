"""The shapes shared by the universe modules: membership intervals and the days they cover.

An interval is one ticker's stay in the index. ``first_day`` is the date of the change
that added it, NaT when it was a member before the sources begin; ``last_day`` is the
day before the change that removed it, NaT while it is still a member. Days are
calendar days, so a question about a Saturday gets the Friday's members, and a change
"effective January 3" makes January 2 the old member's last day.
"""

from __future__ import annotations

import pandas as pd

from CandleThrob.planning.trading_calendar import DateLike

INTERVAL_COLUMNS = ["ticker", "cik", "name", "sector", "first_day", "last_day"]
MEMBER_COLUMNS = ["ticker", "cik", "name", "sector"]
ONE_DAY = pd.Timedelta(days=1)


def day_of(value: DateLike) -> pd.Timestamp:
    """A date as a naive midnight Timestamp."""
    return pd.Timestamp(value).normalize()


def on_day(intervals: pd.DataFrame, day: pd.Timestamp) -> pd.Series:
    """Which intervals cover ``day`` (an open end covers everything on its side)."""
    return ((intervals["first_day"].isna() | (intervals["first_day"] <= day))
            & (intervals["last_day"].isna() | (intervals["last_day"] >= day)))


def covers(first_day: pd.Timestamp, last_day: pd.Timestamp, day: pd.Timestamp) -> bool:
    """``on_day`` for one interval."""
    return (pd.isna(first_day) or first_day <= day) and (pd.isna(last_day) or day <= last_day)


def interval_frame(rows: list[dict]) -> pd.DataFrame:
    """Intervals in their canonical form: INTERVAL_COLUMNS, CIK None when unknown, sorted by ticker and start."""
    frame = pd.DataFrame(rows, columns=INTERVAL_COLUMNS)
    frame["cik"] = frame["cik"].astype(object).where(frame["cik"].notna(), None)
    frame = frame.astype({"first_day": "datetime64[us]", "last_day": "datetime64[us]"})
    return frame.sort_values(["ticker", "first_day"], na_position="first", kind="stable").reset_index(drop=True)
