"""The corporate-actions ledger in the warehouse: events, rejected records, factors.

Reads open their own connection; writes run on the caller's, inside the
caller's transaction (under the run lock), like every ``Warehouse`` write.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Iterable, Optional, Sequence

import pandas as pd
from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.engine import Connection

from CandleThrob.warehouse import bulk
from CandleThrob.warehouse.schema import (adjustment_factors, dividend_events, ledger_tickers, rejected_actions,
                                          split_events, ticker_data_raw)
from CandleThrob.warehouse.storage import Warehouse, _chunks, _date

SPLIT_COLUMNS = ["event_id", "ticker", "execution_date", "split_from", "split_to", "adjustment_type",
                 "vendor_factor"]
DIVIDEND_COLUMNS = ["event_id", "ticker", "ex_dividend_date", "cash_amount", "currency", "declaration_date",
                    "record_date", "pay_date", "frequency", "distribution_type", "split_adjusted_cash",
                    "vendor_factor"]
FACTOR_COLUMNS = ["ticker", "valid_from", "valid_to", "split_factor", "total_factor"]


class LedgerStore:
    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse

    # ---- events ------------------------------------------------------------------
    def record(self, conn: Connection, splits: Sequence[dict], dividends: Sequence[dict], run_id: str) -> None:
        """Upsert events by id: a vendor's correction of an event replaces it."""
        now = self.warehouse.now()
        for table, rows in ((split_events, splits), (dividend_events, dividends)):
            bulk.upsert_rows(conn, table, [{**r, "run_id": run_id, "recorded_at": now} for r in rows],
                             key=("event_id",))

    def reject(self, conn: Connection, rejected: Sequence[dict], run_id: str) -> None:
        now = self.warehouse.now()
        rows = [{"run_id": run_id, "kind": r["kind"], "event_id": _cut(r.get("event_id"), 80),
                 "ticker": _cut(r.get("ticker"), 64),
                 "record": _cut(json.dumps(r["record"], default=str, sort_keys=True), 2000),
                 "reasons": _cut(r["reasons"], 400), "rejected_at": now} for r in rejected]
        if rows:
            conn.execute(insert(rejected_actions), rows)

    def splits(self, tickers: Optional[Iterable[str]] = None) -> pd.DataFrame:
        return self._read(split_events, SPLIT_COLUMNS, tickers, dates=("execution_date",))

    def dividends(self, tickers: Optional[Iterable[str]] = None) -> pd.DataFrame:
        return self._read(dividend_events, DIVIDEND_COLUMNS, tickers,
                          dates=("ex_dividend_date", "declaration_date", "record_date", "pay_date"))

    def _read(self, table, columns: list[str], tickers: Optional[Iterable[str]],  # noqa: ANN001
              dates: Sequence[str]) -> pd.DataFrame:
        query = select(*(table.c[c] for c in columns)).order_by(table.c.ticker, table.c[dates[0]], table.c.event_id)
        frames = []
        with self.warehouse.engine.connect() as conn:
            for chunk in _chunks(sorted(set(tickers)), 500) if tickers is not None else [None]:
                q = query if chunk is None else query.where(table.c.ticker.in_(list(chunk)))
                frames.append(pd.DataFrame(conn.execute(q).all(), columns=columns))
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        for column in dates:
            frame[column] = frame[column].map(_date)
        return frame

    def previous_closes(self, tickers: Iterable[str]) -> dict[tuple[str, dt.date], float]:
        """(ticker, ex-date) -> the raw close of the last stored session before it, per dividend."""
        d = dividend_events.c
        earlier, bar = ticker_data_raw.alias("earlier").c, ticker_data_raw.alias("bar").c
        # Two levels down, the dividend row must still be the outer one: correlate it explicitly.
        last = (select(func.max(earlier.trade_date))
                .where(and_(earlier.ticker == d.ticker, earlier.trade_date < d.ex_dividend_date))
                .correlate(dividend_events).scalar_subquery())
        close = (select(bar.close_price).where(and_(bar.ticker == d.ticker, bar.trade_date == last))
                 .scalar_subquery())
        out: dict[tuple[str, dt.date], float] = {}
        with self.warehouse.engine.connect() as conn:
            for chunk in _chunks(sorted(set(tickers)), 500):
                query = select(d.ticker, d.ex_dividend_date, close).where(d.ticker.in_(list(chunk)))
                for ticker, day, value in conn.execute(query):
                    if value is not None:
                        out[(ticker, _date(day))] = float(value)
        return out

    # ---- which tickers' histories are known -----------------------------------------
    def known_from(self) -> dict[str, dt.date]:
        with self.warehouse.engine.connect() as conn:
            return {t: _date(d) for t, d in conn.execute(select(ledger_tickers.c.ticker, ledger_tickers.c.ledger_from))}

    def set_known_from(self, conn: Connection, known: dict[str, dt.date]) -> None:
        bulk.upsert_rows(conn, ledger_tickers, [{"ticker": t, "ledger_from": d} for t, d in sorted(known.items())],
                         key=("ticker",))

    # ---- factors --------------------------------------------------------------------
    def replace_factors(self, conn: Connection, tickers: Sequence[str], spans: pd.DataFrame, run_id: str) -> None:
        """The factor spans of ``tickers`` become ``spans`` (some tickers may have none)."""
        if self.warehouse.backend == "postgresql":  # two shards refreshing one ticker take turns
            conn.exec_driver_sql("LOCK TABLE adjustment_factors IN SHARE ROW EXCLUSIVE MODE")
        elif self.warehouse.backend == "oracle":
            conn.exec_driver_sql("LOCK TABLE adjustment_factors IN EXCLUSIVE MODE")
        for chunk in _chunks(sorted(set(tickers)), 500):
            conn.execute(delete(adjustment_factors).where(adjustment_factors.c.ticker.in_(list(chunk))))
        rows = [{"ticker": t, "valid_from": a, "valid_to": b, "split_factor": float(s), "total_factor": float(x),
                 "run_id": run_id}
                for t, a, b, s, x in spans[FACTOR_COLUMNS].itertuples(index=False)]
        if rows:
            conn.execute(insert(adjustment_factors), rows)

    def factors(self, tickers: Optional[Iterable[str]] = None) -> pd.DataFrame:
        f = adjustment_factors.c
        query = select(f.ticker, f.valid_from, f.valid_to, f.split_factor, f.total_factor).order_by(f.ticker,
                                                                                                   f.valid_from)
        if tickers is not None:
            query = query.where(f.ticker.in_(sorted(set(tickers))))
        with self.warehouse.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query).all(), columns=FACTOR_COLUMNS)
        for column in ("valid_from", "valid_to"):
            frame[column] = frame[column].map(_date)
        return frame


def _cut(value: object, width: int) -> Optional[str]:
    return None if value is None else str(value)[:width]
