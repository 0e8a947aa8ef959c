"""The adjusted views over raw bars: ``ticker_data`` (split-adjusted) and ``ticker_data_total``.

A bar is multiplied by the factors of the span its date falls in; after a
ticker's last corporate action it has no span and its factors are 1. Volume
is divided by the split factor in both views (a 4-for-1 split makes every
earlier share four). Built with SQLAlchemy so one definition compiles for
SQLite, PostgreSQL and Oracle.
"""

from __future__ import annotations

from sqlalchemy import Table, and_, func, literal, select
from sqlalchemy.engine import Dialect

from CandleThrob.warehouse.schema import adjustment_factors, ticker_data, ticker_data_raw, ticker_data_total

PRICES = ("open_price", "high_price", "low_price", "close_price", "vwap")


def view_query(price_factor: str):  # noqa: ANN201 - a SQLAlchemy Select
    raw, f = ticker_data_raw.c, adjustment_factors.c
    prices = func.coalesce(getattr(f, price_factor), literal(1.0))
    split = func.coalesce(f.split_factor, literal(1.0))
    columns = []
    for column in ticker_data_raw.columns:
        if column.name in PRICES:
            columns.append((column * prices).label(column.name))
        elif column.name == "volume":
            columns.append((column / split).label(column.name))
        else:
            columns.append(column)
    joined = ticker_data_raw.outerjoin(adjustment_factors, and_(
        f.ticker == raw.ticker, raw.trade_date >= f.valid_from, raw.trade_date <= f.valid_to))
    return select(*columns).select_from(joined)


def create_view_statements(dialect: Dialect) -> list[str]:
    """``CREATE VIEW`` for both views, compiled for ``dialect``."""
    statements = []
    for view, factor in ((ticker_data, "split_factor"), (ticker_data_total, "total_factor")):
        query = view_query(factor).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        statements.append(f"CREATE VIEW {view.name} AS {query}")
    return statements


def drop_view_statements() -> list[str]:
    return [f"DROP VIEW {view.name}" for view in (ticker_data_total, ticker_data)]


ALL_VIEWS: tuple[Table, ...] = (ticker_data, ticker_data_total)
