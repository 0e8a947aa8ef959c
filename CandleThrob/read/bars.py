"""``read_bars``: stored daily bars for some tickers and dates, as one typed frame.

The frame has one row per (ticker, session), sorted by ticker then date:

=================  ==========  ===============================================
ticker             str         Polygon's form (``BRK.B``)
trade_date         datetime64  midnight, naive: the New York session date
open high low      float64     as traded, split-adjusted or total return
close vwap                     (``adjust``); vwap NaN where the vendor sent none
volume             float64     split-adjusted unless ``adjust="none"`` (a 3-for-2
                               split makes earlier volumes fractional)
transactions       Int64       the vendor's trade count; <NA> where it sent none
=================  ==========  ===============================================

Reads go through the primary key: ``ticker IN (...)`` and a date range on the
raw table, which the adjusted views leave to the database to push down.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from operator import itemgetter
from typing import Iterable, Iterator, NamedTuple, Optional, Union

import pandas as pd
from sqlalchemy import String, select, type_coerce

from CandleThrob.errors import ReadRequestError
from CandleThrob.read import ADJUSTMENTS
from CandleThrob.universe.tickers import clean_ticker, parse_ticker_list
from CandleThrob.warehouse.storage import ADJUSTMENTS as VIEWS
from CandleThrob.warehouse.storage import Warehouse

DateLike = Union[str, dt.date, pd.Timestamp, None]
TickersLike = Union[str, Iterable[str]]

COLUMNS = ("ticker", "trade_date", "open", "high", "low", "close", "volume", "vwap", "transactions")
DTYPES = {"ticker": "str", "trade_date": "datetime64[ns]", "open": "float64", "high": "float64", "low": "float64",
          "close": "float64", "volume": "float64", "vwap": "float64", "transactions": "Int64"}
_DB_COLUMNS = ("ticker", "trade_date", "open_price", "high_price", "low_price", "close_price", "volume", "vwap",
               "num_transactions")
# Oracle allows 1,000 expressions in an IN list; stay well below it everywhere.
TICKERS_PER_QUERY = 500


@dataclass(frozen=True)
class BarsRequest:
    """What a read asks for, checked: cleaned tickers, dates, and the adjustment."""

    tickers: tuple[str, ...]
    start: Optional[dt.date] = None
    end: Optional[dt.date] = None
    adjust: str = "split"
    continuous: bool = False  # each ticker's company across its renames, under its latest symbol

    @classmethod
    def of(cls, tickers: TickersLike, start: DateLike = None, end: DateLike = None,
           adjust: str = "split", continuous: bool = False) -> "BarsRequest":
        request = cls(_tickers(tickers), _day(start, "start"), _day(end, "end"), check_adjust(adjust), continuous)
        if request.start and request.end and request.end < request.start:
            raise ReadRequestError(f"end {request.end} is before start {request.start}; expected an end on or "
                                   "after the start")
        return request


class SymbolRead(NamedTuple):
    """One stored symbol, read over one span."""

    symbol: str
    start: Optional[dt.date]
    end: Optional[dt.date]


def symbol_reads(request: BarsRequest) -> list[SymbolRead]:
    """Which stored symbols to read over which dates. Today each ticker is its own symbol over
    the whole window. A continuous series across renames (``continuous=True``, to come) maps
    one ticker to its former symbols' spans here and labels their rows with the ticker asked for."""
    return [SymbolRead(t, request.start, request.end) for t in sorted(request.tickers)]


def bars_frame(warehouse: Warehouse, request: BarsRequest) -> pd.DataFrame:
    """The bars ``request`` asks for, from an open warehouse."""
    if request.continuous:
        return _continuous(warehouse, request)
    frames = [_frame(rows) for rows in _fetch(warehouse, request.adjust, symbol_reads(request))]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_frame()


def read_bars(tickers: TickersLike, start: DateLike = None, end: DateLike = None, adjust: str = "split",
              database_url: Optional[str] = None, continuous: bool = False) -> pd.DataFrame:
    """Stored daily bars of ``tickers`` (a list, or ``"AAPL,MSFT"``) from ``start`` to ``end``
    (inclusive; None: unbounded), ``adjust`` = ``"split"`` (what ``ticker_data`` holds),
    ``"total"`` (splits and dividends) or ``"none"`` (as traded). The database is
    ``database_url``, else ``DATABASE_URL`` from the environment or ``.env``.

    ``continuous=True``: each ticker's company across its renames (``FB`` then ``META``), under
    its latest symbol, on the days each symbol was that company's, with a ``traded_as`` column;
    adjusted prices also take the splits and dividends recorded under the later symbols."""
    from CandleThrob.read.connect import load_config, open_warehouse

    request = BarsRequest.of(tickers, start, end, adjust, continuous)
    warehouse = open_warehouse(load_config(database_url))
    try:
        return bars_frame(warehouse, request)
    finally:
        warehouse.dispose()


def _continuous(warehouse: Warehouse, request: BarsRequest) -> pd.DataFrame:
    from CandleThrob.universe.read import continuous_bars

    frames = [continuous_bars(warehouse, ticker, request.start, request.end, request.adjust)
              for ticker in sorted(request.tickers)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame().assign(traded_as=pd.Series(dtype="str"))
    frame = pd.concat(frames, ignore_index=True)
    typed = frame[list(COLUMNS)].astype({c: t for c, t in DTYPES.items() if c != "transactions"})
    typed["transactions"] = pd.array(frame["transactions"].round(), dtype="Int64")
    return typed.assign(traded_as=frame["traded_as"].astype("str"))


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})


def _fetch(warehouse: Warehouse, adjust: str, reads: list[SymbolRead]) -> Iterator[list]:
    view = VIEWS[adjust].c
    # The date as the driver sends it: SQLAlchemy's per-row parsing of SQLite's text is slower than pandas'.
    columns = [type_coerce(view[c], String) if c == "trade_date" else view[c] for c in _DB_COLUMNS]
    with warehouse.engine.connect() as conn:
        for span, group in _by_span(reads):
            for i in range(0, len(group), TICKERS_PER_QUERY):
                query = select(*columns).where(view.ticker.in_(group[i:i + TICKERS_PER_QUERY]))
                if span[0] is not None:
                    query = query.where(view.trade_date >= span[0])
                if span[1] is not None:
                    query = query.where(view.trade_date <= span[1])
                yield conn.execute(query.order_by(view.ticker, view.trade_date)).all()


def _by_span(reads: list[SymbolRead]) -> list[tuple[tuple, list[str]]]:
    """Symbols read over the same dates share queries (today: all of them)."""
    groups: dict[tuple, list[str]] = {}
    for read in reads:
        groups.setdefault((read.start, read.end), []).append(read.symbol)
    return list(groups.items())


def _frame(rows: list) -> pd.DataFrame:
    if not rows:
        return empty_frame()
    # Column lists first (itemgetter: zip(*rows) is eight times slower on 100,000 rows); pandas probing
    # each SQLAlchemy Row for attributes would cost more than the read itself.
    columns = {name: list(map(itemgetter(i), rows)) for i, name in enumerate(COLUMNS)}
    frame = pd.DataFrame({name: pd.Series(values, dtype=object if name in ("ticker", "trade_date") else "float64")
                          for name, values in columns.items()})
    # SQLite hands back ISO text (parsed here in one vectorised call), PostgreSQL dates, Oracle datetimes.
    frame["trade_date"] = pd.to_datetime(frame["trade_date"]).dt.normalize()
    return frame.astype(DTYPES)


def _tickers(tickers: TickersLike) -> tuple[str, ...]:
    if isinstance(tickers, str):
        return tuple(parse_ticker_list(tickers))
    try:
        cleaned = tuple(dict.fromkeys(clean_ticker(t) for t in tickers))
    except TypeError:
        raise ReadRequestError(f"tickers {tickers!r} is neither a list of symbols nor a string such as "
                               "'AAPL,MSFT'") from None
    if not cleaned:
        raise ReadRequestError("no tickers given; expected at least one symbol, e.g. 'AAPL,MSFT'")
    return cleaned


def _day(value: DateLike, name: str) -> Optional[dt.date]:
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ReadRequestError(f"{name} {value!r} is not a date; expected YYYY-MM-DD") from None


def check_adjust(value: str) -> str:
    if value not in ADJUSTMENTS:
        raise ReadRequestError(f"adjust {value!r} is not one of {', '.join(ADJUSTMENTS)}: split (split-adjusted, "
                               "as ticker_data), total (splits and dividends) or none (as traded)")
    return value
