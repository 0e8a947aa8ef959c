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

from typing import Iterable, Mapping, Optional

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


def bars_from_polygon(results: Optional[list[Mapping]], ticker: Optional[str] = None) -> pd.DataFrame:
    """Polygon aggregate results (range: ``ticker`` given; grouped: each has ``T``)."""
    if not results:
        return empty_bars()
    columns = {key: [r.get(short) for r in results] for key, short in _POLYGON_KEYS.items()}
    frame = pd.DataFrame({k: _numeric(v) for k, v in columns.items()})
    frame.insert(0, "trade_date", epoch_ms_to_session_date([r.get("t") for r in results]).to_numpy())
    tickers = [ticker] * len(results) if ticker is not None else [r.get("T") for r in results]
    frame.insert(0, "ticker", pd.Series(tickers, dtype=object).to_numpy())
    return frame[list(BAR_COLUMNS)]


def concat_bars(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_bars()
    return pd.concat(frames, ignore_index=True)
