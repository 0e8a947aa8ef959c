"""Coverage: which (ticker, session) cells the source was already asked for.

Stored as session intervals per ticker. A cell is *missing* when it lies in the
ticker's wanted window and no interval covers it, whether or not a bar exists:
a session on which the vendor has nothing for a ticker is asked once, not
every night.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

Interval = tuple[dt.date, dt.date]


def merge_intervals(intervals: Iterable[Interval], sessions: Union[pd.DatetimeIndex, np.ndarray]) -> list[Interval]:
    """Union of intervals, joining those that touch: no session lies between them.
    ``sessions``: a DatetimeIndex, or (faster, for repeated calls) a datetime64[D] array."""
    ordered = sorted((a, b) for a, b in intervals if a <= b)
    if len(ordered) < 2:
        return ordered
    starts = np.array([a for a, _ in ordered], dtype="datetime64[D]")
    ends = np.array([b for _, b in ordered], dtype="datetime64[D]")
    reach = np.maximum.accumulate(ends)[:-1]  # the end of the merged interval so far
    values = sessions if isinstance(sessions, np.ndarray) else sessions.values.astype("datetime64[D]")
    # Sessions strictly between what is merged so far and the next interval.
    between = np.searchsorted(values, starts[1:], "left") - np.searchsorted(values, reach, "right")
    first = np.flatnonzero(np.r_[True, (starts[1:] > reach) & (between > 0)])
    return list(zip(starts[first].tolist(), np.maximum.reduceat(ends, first).tolist()))


def missing_sessions(window: pd.DatetimeIndex, covered: Sequence[Interval]) -> pd.DatetimeIndex:
    """Sessions of ``window`` outside every covered interval."""
    if not len(covered) or not len(window):
        return window
    keep = np.ones(len(window), dtype=bool)
    values = window.values
    for a, b in covered:
        lo = np.searchsorted(values, np.datetime64(a, "ns"), side="left")
        hi = np.searchsorted(values, np.datetime64(b, "ns"), side="right")
        keep[lo:hi] = False
    return window[keep]


def missing_cells(tickers: Sequence[str], coverage: Mapping[str, Sequence[Interval]],
                  sessions: pd.DatetimeIndex, default_start: pd.Timestamp,
                  explicit_start: Optional[pd.Timestamp] = None,
                  full_refresh: bool = False) -> dict[str, pd.DatetimeIndex]:
    """Per ticker, the sessions to fetch.

    The window ends at the last of ``sessions``. It starts at ``explicit_start``
    when given (a deliberate backfill), else where the ticker's coverage starts,
    else at ``default_start`` for a ticker never asked before.
    """
    out: dict[str, pd.DatetimeIndex] = {}
    # Most tickers share their coverage (a night adds the same sessions to all): each distinct
    # (start, coverage) is worked out once, and those tickers share the (immutable) answer.
    seen: dict[tuple, pd.DatetimeIndex] = {}
    for ticker in tickers:
        covered = () if full_refresh else tuple(coverage.get(ticker, ()))
        if explicit_start is not None:
            start = explicit_start
        elif coverage.get(ticker):
            start = pd.Timestamp(min(a for a, _ in coverage[ticker]))
        else:
            start = default_start
        key = (start, covered)
        if key not in seen:
            seen[key] = missing_sessions(sessions[sessions >= start], covered)
        out[ticker] = seen[key]
    return out


def clip(days: pd.DatetimeIndex, spans: list) -> pd.DatetimeIndex:
    """The days inside any of ``spans``, each ``(first, last)`` with None for an open end."""
    keep = np.zeros(len(days), dtype=bool)
    for lo, hi in spans:
        keep |= ((days >= lo) if lo is not None else True) & ((days <= hi) if hi is not None else True)
    return days[keep]
