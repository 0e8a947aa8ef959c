"""Cells that were asked for but yielded no valid bar: retried with backoff, then holes.

Kinds:

* ``rejected``: the vendor sent a bar that the quality gate refused;
* ``empty``: a range answer with no bar at all for a ticker expected to trade;
* ``absent``: a ticker missing from a grouped day, or a session missing inside
  a range answer.

A ``rejected`` or ``empty`` cell is pending at once. An ``absent`` one only once
it lies between the ticker's first and last stored bar: before a listing or
after a delisting the ticker did not trade, and nothing is missing. A pending
cell is asked again on the run whose ``--end`` reaches ``next_try``: the next
run, then 1, 3, 7, ... sessions later. After ``max_retries`` such retries it is
a vendor hole: recorded, reported, never asked again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Mapping

import pandas as pd
from sqlalchemy import and_, delete, func, or_, select, tuple_
from sqlalchemy.engine import Connection

from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.warehouse import bulk
from CandleThrob.warehouse.schema import cell_gaps, ticker_data_raw
from CandleThrob.warehouse.storage import Warehouse, _chunks, _date

PENDING, HOLE = "pending", "hole"
ALWAYS_PENDING = ("rejected", "empty")


@dataclass(frozen=True)
class Gap:
    ticker: str
    trade_date: dt.date
    kind: str
    reason: str


class GapStore:
    def __init__(self, warehouse: Warehouse, calendar: TradingCalendar, max_retries: int):
        self.warehouse = warehouse
        self.calendar = calendar
        self.max_retries = max_retries

    def pending(self, end: pd.Timestamp, tickers: Iterable[str]) -> dict[str, list[dt.date]]:
        """Per ticker, the pending cells due on a run through ``end``."""
        g, r = cell_gaps.c, ticker_data_raw.c
        spans = select(r.ticker.label("ticker"), func.min(r.trade_date).label("first"),
                       func.max(r.trade_date).label("last")).group_by(r.ticker).subquery()
        inside = and_(g.trade_date > spans.c.first, g.trade_date < spans.c.last)
        query = (select(g.ticker, g.trade_date).select_from(cell_gaps.outerjoin(spans, spans.c.ticker == g.ticker))
                 .where(g.status == PENDING, g.next_try <= end.date(),
                        or_(g.kind.in_(ALWAYS_PENDING), inside)))
        wanted = set(tickers)
        out: dict[str, list[dt.date]] = {}
        with self.warehouse.engine.connect() as conn:
            for ticker, day in conn.execute(query):
                if ticker in wanted:
                    out.setdefault(ticker, []).append(_date(day))
        return out

    def counts(self) -> dict[str, int]:
        """Pending cells (whenever due) and holes, for the run report."""
        g, r = cell_gaps.c, ticker_data_raw.c
        spans = select(r.ticker.label("ticker"), func.min(r.trade_date).label("first"),
                       func.max(r.trade_date).label("last")).group_by(r.ticker).subquery()
        inside = and_(g.trade_date > spans.c.first, g.trade_date < spans.c.last)
        pending = (select(func.count()).select_from(cell_gaps.outerjoin(spans, spans.c.ticker == g.ticker))
                   .where(g.status == PENDING, or_(g.kind.in_(ALWAYS_PENDING), inside)))
        with self.warehouse.engine.connect() as conn:
            holes = conn.execute(select(func.count()).select_from(cell_gaps).where(g.status == HOLE)).scalar_one()
            return {"pending_cells": conn.execute(pending).scalar_one(), "vendor_holes": holes}

    def record(self, conn: Connection, gaps: Iterable[Gap], filled: pd.DataFrame, end: pd.Timestamp,
               run_id: str) -> list[Gap]:
        """Within a batch's transaction: cells that yielded a valid bar (``filled``: ticker,
        trade_date) are no gaps any more; new gaps wait for the next session; gaps that
        failed again back off, or become holes. Returns the gaps that became holes."""
        g = cell_gaps.c
        gaps = {(gap.ticker, gap.trade_date): gap for gap in gaps}
        tickers = sorted(set(filled["ticker"]) | {t for t, _ in gaps})
        known: dict[tuple[str, dt.date], Mapping] = {}
        for chunk in _chunks(tickers, 500):  # the table is small: a few rows per ticker at most
            for row in conn.execute(select(cell_gaps).where(g.ticker.in_(list(chunk)))).mappings():
                known[(row["ticker"], _date(row["trade_date"]))] = row
        if not known and not gaps:
            return []
        keys = set(zip(filled["ticker"], pd.to_datetime(filled["trade_date"]).dt.date))
        resolved = sorted(k for k in known if k in keys)
        for chunk in _chunks(resolved, 500):
            conn.execute(delete(cell_gaps).where(tuple_(g.ticker, g.trade_date).in_(list(chunk))))
        now, rows, holes = self.warehouse.now(), [], []
        for key, gap in sorted(gaps.items()):
            before = known.get(key)
            if before is not None and before["status"] == HOLE:
                continue
            tries = 0 if before is None else int(before["tries"]) + 1
            status = HOLE if tries > self.max_retries else PENDING
            if status == HOLE:
                holes.append(gap)
            rows.append({"ticker": gap.ticker, "trade_date": gap.trade_date, "kind": gap.kind,
                         "reason": gap.reason[:400], "tries": tries, "next_try": self._next_try(end, tries),
                         "status": status, "first_run_id": before["first_run_id"] if before else run_id,
                         "last_run_id": run_id, "updated_at": now})
        bulk.upsert_rows(conn, cell_gaps, rows, key=("ticker", "trade_date"))
        return holes

    def _next_try(self, end: pd.Timestamp, tries: int) -> dt.date:
        """``2**tries - 1`` sessions after ``end``: any later run first, then 1, 3, 7, ... sessions on."""
        step = 2 ** min(tries, 6) - 1  # at most 63 sessions, about three months
        if step == 0:
            return end.date()
        sessions = self.calendar.sessions_in_range(end + pd.Timedelta(days=1), end + pd.Timedelta(days=3 * step + 10))
        return (sessions[step - 1] if len(sessions) >= step else end + pd.Timedelta(days=2 * step)).date()
