"""The one in-memory shape of daily bars that every stage passes along.

A *bars frame* is a ``pandas.DataFrame`` with exactly ``BAR_COLUMNS``:

=================  ==========================================================
ticker             str, Polygon's form (``BRK.B``)
trade_date         datetime64[ns], midnight, naive: the New York session date
open high low      float64 (NaN where the source sent null or nothing)
close volume
vwap               float64, optional in the source (NaN when absent)
transactions       float64, optional in the source (NaN when absent)
=================  ==========================================================

Polygon stamps a daily bar with the epoch milliseconds of the session's start
in New York, so the date is read in that zone, never in the machine's.
"""

from __future__ import annotations

import operator
from typing import Collection, Iterable, Mapping, Optional

import numpy as np
import pandas as pd

NEW_YORK = "America/New_York"
PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = ("ticker", "trade_date", "open", "high", "low", "close", "volume",
               "vwap", "transactions")
# Polygon's short keys for each numeric column.
_POLYGON_KEYS = {"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v",
                 "vwap": "vw", "transactions": "n"}


def empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    frame["ticker"] = frame["ticker"].astype(object)
    frame["trade_date"] = frame["trade_date"].astype("datetime64[ns]")
    return frame


# Stamps outside these bounds are junk (pandas cannot even represent 1e20 ms): NaT.
_FIRST_MS, _LAST_MS = 0.0, 4_102_444_800_000.0  # 1970-01-01 .. 2100-01-01


def epoch_ms_to_session_date(ms: Iterable) -> pd.Series:
    """Epoch milliseconds -> naive midnight datetimes of the New York date (NaT for junk)."""
    values = _numeric(list(ms))
    values = np.where((values < _FIRST_MS) | (values > _LAST_MS), np.nan, values)
    stamps = pd.to_datetime(pd.Series(values, dtype="float64"), unit="ms", utc=True)
    return stamps.dt.tz_convert(NEW_YORK).dt.tz_localize(None).dt.normalize().astype("datetime64[ns]")


def _session_dates(ms: np.ndarray) -> np.ndarray:
    # A grouped answer has one stamp, a range answer one per session: converting
    # each distinct stamp once spares a time-zone conversion per result.
    distinct, position = np.unique(ms, return_inverse=True)
    return epoch_ms_to_session_date(distinct).to_numpy()[position]


def _numeric(values: list) -> np.ndarray:
    # The common case, numbers and None (-> NaN), in one C call; anything else
    # goes through pd.to_numeric, which turns strings and junk into NaN instead
    # of raising, so a malformed value reaches the quality gate, not a crash.
    try:
        array = np.array(values, dtype="float64")
        if array.ndim == 1:
            return array
    except (TypeError, ValueError):
        pass
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype="float64")


# The keys every bar of a well-formed answer has: a grouped one's ticker, then
# the numbers in BAR_COLUMNS order and the stamp (vw and n are optional).
_ALWAYS_SENT = {True: operator.itemgetter("T", "o", "h", "l", "c", "v", "t"),
                False: operator.itemgetter("o", "h", "l", "c", "v", "t")}


def _well_formed(results: list[Mapping], grouped: bool) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(the ``_ALWAYS_SENT`` values as an object array, their numbers as float64), or None
    when some result lacks one of those keys or holds junk there: the general path then
    decides per column."""
    try:
        # One C-level pass over the results and one conversion of all the numbers;
        # the conversion is _numeric's (None -> NaN, a numeric string -> its number).
        rows = np.array(list(map(_ALWAYS_SENT[grouped], results)), dtype=object)
        if rows.shape != (len(results), 6 + grouped):
            return None
        return rows, rows[:, grouped:].astype("float64")
    except (KeyError, TypeError, ValueError):
        return None


def bars_from_polygon(results: Optional[list[Mapping]], ticker: Optional[str] = None,
                      tickers: Optional[Collection[str]] = None) -> pd.DataFrame:
    """Polygon aggregate results (range: ``ticker`` given; grouped: each has ``T``).

    ``tickers``: keep only the bars of these (a grouped answer lists the whole
    market, ~11,000 symbols: filtering first spares converting the rest)."""
    if results and tickers is not None:
        results = [r for r in results if r.get("T") in tickers] if ticker is None else \
            (results if ticker in tickers else [])
    if not results:
        return empty_bars()
    grouped = ticker is None
    parsed = _well_formed(results, grouped)
    if parsed is None:
        columns = {key: _numeric([r.get(short) for r in results]) for key, short in _POLYGON_KEYS.items()}
        stamps = pd.Series([r.get("t") for r in results], dtype="float64").to_numpy()
        names = [r.get("T") for r in results] if grouped else [ticker] * len(results)
    else:
        rows, numbers = parsed
        columns = dict(zip(PRICE_COLUMNS + ("volume",), numbers[:, :5].T))
        columns.update(vwap=_numeric([r.get("vw") for r in results]),
                       transactions=_numeric([r.get("n") for r in results]))
        stamps = numbers[:, 5]
        names = rows[:, 0] if grouped else [ticker] * len(results)
    return pd.DataFrame({"ticker": pd.Series(names, dtype=object).to_numpy(),
                         "trade_date": _session_dates(stamps), **columns}, columns=list(BAR_COLUMNS))


def concat_bars(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_bars()
    return pd.concat(frames, ignore_index=True)
