"""Reading the point-in-time universe back: the members on a date, and a company's bars across renames.

``members(as_of)`` answers from the stored membership; on a database where nothing is
stored yet it reads the constituents page (``SP500_URL``) itself, so the question can be
asked before the first ingest. ``continuous_bars`` follows one security through its
symbols (FB until 2022-06-08, then META) using only the days each symbol was that
security's: the other fund that traded as META before is never part of Meta's series.
Adjusted prices stay continuous across a rename: an earlier symbol's bars also take the
splits and dividends recorded under the later symbols.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pandas as pd
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from CandleThrob.config import AdvancedBatchConfig, read_environment
from CandleThrob.errors import DatabaseUnavailableError, UniverseError, UniverseUnavailableError
from CandleThrob.planning.trading_calendar import DateLike
from CandleThrob.universe.frames import day_of
from CandleThrob.universe.membership import members_as_of
from CandleThrob.universe.pages import fetch_constituents_page
from CandleThrob.universe.pit import Membership, build_membership
from CandleThrob.universe.securities import symbol_pieces
from CandleThrob.warehouse.engine import create_db_engine, database_label, database_url
from CandleThrob.warehouse.ledger import LedgerStore
from CandleThrob.warehouse.membership import MembershipStore
from CandleThrob.warehouse.storage import Warehouse

MEMBER_OUTPUT = ["ticker", "cik", "name", "sector"]
_FACTOR = {"split": "split_factor", "total": "total_factor"}


def members(as_of: DateLike, database_url_: Optional[str] = None,
            config: Optional[AdvancedBatchConfig] = None) -> pd.DataFrame:
    """The index members on ``as_of``: ``ticker`` (as of that date), ``cik``, ``name``, ``sector``."""
    config = config or AdvancedBatchConfig.from_env(read_environment(Path(".env"), os.environ),
                                                    **({"database_url": database_url_} if database_url_ else {}))
    membership = stored_membership(config)
    if membership is None:
        try:
            page = fetch_constituents_page(config.sp500_url, timeout=config.request_timeout,
                                           min_symbols=config.min_sp500_symbols)
        except UniverseError as exc:
            raise UniverseUnavailableError(f"no membership is stored yet and the constituents page cannot be "
                                           f"used: {exc}") from None
        empty = pd.DataFrame(columns=["ticker", "cik", "first_seen", "last_seen"])
        membership = build_membership(page.members, page.changes, pd.Timestamp.now().normalize(), empty)
    frame = members_as_of(membership.intervals, day_of(as_of))[MEMBER_OUTPUT]
    frame["cik"] = frame["cik"].astype(object).where(frame["cik"].notna(), None)
    return frame


def stored_membership(config: AdvancedBatchConfig) -> Optional[Membership]:
    """The membership stored in the configured database; None when there is none (no file, no tables,
    nothing built yet). Never creates a database."""
    url = database_url(config)
    if url.get_backend_name() == "sqlite" and not _exists(url.database):
        return None
    warehouse = Warehouse(create_db_engine(config, url), label=database_label(config, url))
    try:
        if "index_members" not in inspect(warehouse.engine).get_table_names():
            return None
        return MembershipStore(warehouse).load()
    except (DBAPIError, OSError) as exc:
        raise DatabaseUnavailableError(f"cannot read the database ({warehouse.describe()}): "
                                       f"{getattr(exc, 'orig', exc)}") from None
    finally:
        warehouse.dispose()


def continuous_bars(warehouse: Warehouse, ticker: str, start: Optional[DateLike] = None,
                    end: Optional[DateLike] = None, adjust: str = "split") -> pd.DataFrame:
    """One security's bars across its symbols, under its latest symbol, with ``traded_as`` naming the
    symbol each bar was traded under. A symbol with no known history reads as itself."""
    membership = MembershipStore(warehouse).load()
    history = membership.history if membership is not None else pd.DataFrame(
        columns=["security_id", "ticker", "valid_from", "valid_to"])
    rows = history[history["ticker"] == ticker]
    if rows.empty:
        return warehouse.bars([ticker], _date(start), _date(end), adjust=adjust).assign(traded_as=ticker)
    security = rows.sort_values("valid_from", na_position="first")["security_id"].iloc[-1]
    chain = history[history["security_id"] == security].sort_values("valid_from", na_position="first")
    latest = chain["ticker"].iloc[-1]
    lo = day_of(start) if start is not None else pd.Timestamp("1900-01-01")
    hi = day_of(end) if end is not None else pd.Timestamp("2999-12-31")
    pieces = symbol_pieces(history, security, lo, hi)
    factors = LedgerStore(warehouse).factors(sorted({symbol for symbol, _, _ in pieces}))
    frames = []
    for number, (symbol, first, last) in enumerate(pieces):
        frame = warehouse.bars([symbol], first.date(), last.date(), adjust=adjust).assign(traded_as=symbol)
        if adjust in _FACTOR:
            later = {later_symbol for later_symbol, _, _ in pieces[number + 1:]} - {symbol}
            frame = _with_later_factors(frame, factors[factors["ticker"].isin(later)], _FACTOR[adjust])
        frames.append(frame)
    if not frames:
        return warehouse.bars([latest], _date(start), _date(end), adjust=adjust).assign(traded_as=latest).iloc[:0]
    return pd.concat(frames, ignore_index=True).assign(ticker=latest)


def _with_later_factors(frame: pd.DataFrame, spans: pd.DataFrame, factor: str) -> pd.DataFrame:
    """``frame``'s prices times the factors of later symbols' events (all dated after these bars)."""
    if frame.empty or spans.empty:
        return frame
    price, split = pd.Series(1.0, index=frame.index), pd.Series(1.0, index=frame.index)
    days = frame["trade_date"].dt.date
    for span in spans.itertuples(index=False):
        inside = (days >= span.valid_from) & (days <= span.valid_to)
        price[inside] *= getattr(span, factor)
        split[inside] *= span.split_factor
    frame = frame.copy()
    for column in ("open", "high", "low", "close", "vwap"):
        frame[column] = frame[column] * price
    frame["volume"] = frame["volume"] / split
    return frame


def _date(value: Optional[DateLike]):  # noqa: ANN202 - a date or None
    return None if value is None else day_of(value).date()


def _exists(path: Optional[str]) -> bool:
    return bool(path) and Path(path).exists()
