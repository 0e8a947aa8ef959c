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

import itertools
import operator
from typing import Collection, Iterable, Mapping, Optional, Union

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


def session_dates(ms: Union[np.ndarray, list]) -> np.ndarray:
    """``epoch_ms_to_session_date`` as an array. A grouped answer has one stamp, a range answer
    one per session: converting each distinct stamp once spares a time-zone conversion per result."""
    distinct, position = np.unique(_numeric(ms) if isinstance(ms, list) else ms, return_inverse=True)
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


_TICKER = operator.itemgetter("T")


def _bar_numbers(bar: Mapping) -> tuple:
    # BAR_COLUMNS' numbers, then the stamp; Polygon may leave out vw and n, never the others
    return bar["o"], bar["h"], bar["l"], bar["c"], bar["v"], bar.get("vw"), bar.get("n"), bar["t"]


def _well_formed(results: list[Mapping], grouped: bool) -> Optional[tuple[Optional[list], np.ndarray]]:
    """(tickers of a grouped answer, one row of ``_bar_numbers`` per result as float64), or
    None when some result lacks a key it must have or holds junk: the general path then
    decides per column."""
    try:
        tickers = list(map(_TICKER, results)) if grouped else None
        # One pass, each number converted right after it is read, while it is still in
        # the cache (a parsed answer is ~5 MB of objects: every extra pass over it costs
        # more than the conversion). The conversion is _numeric's: None -> NaN, a
        # numeric string -> its number, anything else raises.
        numbers = np.fromiter(itertools.chain.from_iterable(map(_bar_numbers, results)), "float64",
                              8 * len(results))
    except (KeyError, TypeError, ValueError):
        return None
    return tickers, numbers.reshape(len(results), 8)


def bars_from_polygon(results: Optional[list[Mapping]], ticker: Optional[str] = None,
                      tickers: Optional[Collection[str]] = None) -> pd.DataFrame:
    """Polygon aggregate results (range: ``ticker`` given; grouped: each has ``T``).

    ``tickers``: keep only the bars of these (a grouped answer lists the whole
    market, ~11,000 symbols: filtering first spares converting the rest)."""
    if results and tickers is not None:
        # a symbol that is not a string (a hostile answer's list, say) is no ticker of ours
        results = [r for r in results if isinstance(r.get("T"), str) and r["T"] in tickers] if ticker is None else \
            (results if ticker in tickers else [])
    if not results:
        return empty_bars()
    grouped = ticker is None
    parsed = _well_formed(results, grouped)
    if parsed is None:
        columns = {key: _numeric([r.get(short) for r in results]) for key, short in _POLYGON_KEYS.items()}
        stamps = _numeric([r.get("t") for r in results])  # junk -> NaN -> no date: rejected, not a crash
        names = [r.get("T") for r in results] if grouped else [ticker] * len(results)
    else:
        names, numbers = parsed
        columns = dict(zip(_POLYGON_KEYS, numbers[:, :7].T))
        stamps = numbers[:, 7]
        names = names if grouped else [ticker] * len(results)
    return pd.DataFrame({"ticker": pd.Series(names, dtype=object).to_numpy(),
                         "trade_date": session_dates(stamps), **columns}, columns=list(BAR_COLUMNS))


def concat_bars(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_bars()
    return pd.concat(frames, ignore_index=True)
