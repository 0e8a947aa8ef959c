"""Coverage as a grid of tickers × months: what each month of each ticker's history looks like.

A cell says the worst of what happened in that month, in this order:

* ``vendor hole``: a session the vendor never gave a valid bar for, after every retry;
* ``quarantined``: a bar refused by the quality gate and not stored since;
* ``pending``: a session waiting for its retry;
* ``missing``: fewer bars than NYSE sessions, with nothing on record about why
  (not loaded yet, or a session the vendor had no bar for);
* ``complete``: a bar for every session;
* ``not expected``: before the ticker's first bar, or after the last bar of a
  ticker that left the universe.

An active ticker is expected to have a bar on every session from its first
stored bar up to the last final session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from sqlalchemy import and_, func, select

from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.read import health
from CandleThrob.read.periods import month_of, year_of
from CandleThrob.warehouse.schema import cell_gaps, rejected_bars, ticker_data_raw
from CandleThrob.warehouse.storage import Warehouse, _date

STATES = ("not expected", "complete", "missing", "pending", "quarantined", "vendor hole")
NOT_EXPECTED, COMPLETE, MISSING, PENDING, QUARANTINED, HOLE = range(len(STATES))


@dataclass
class CoverageMap:
    tickers: list[str]
    months: pd.PeriodIndex
    states: np.ndarray  # uint8, (tickers, months), indexes into STATES

    def problems(self) -> list[tuple[str, str, int, str]]:
        """(ticker, state, months, which months) for every state worse than complete, the worst
        states first; runs of consecutive months read ``2024-03..2024-07``."""
        out = []
        for state in range(len(STATES) - 1, MISSING - 1, -1):
            rows, columns = np.nonzero(self.states == state)
            for r in np.unique(rows).tolist():
                months = columns[rows == r].tolist()
                out.append((self.tickers[r], STATES[state], len(months), _month_runs(self.months, months)))
        return out


def _month_runs(months: pd.PeriodIndex, positions: list[int]) -> str:
    runs: list[list[int]] = []
    for position in positions:
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    return ", ".join(str(months[r[0]]) if len(r) == 1 else f"{months[r[0]]}..{months[r[-1]]}" for r in runs)


def coverage_map(warehouse: Warehouse, calendar: TradingCalendar, final: dt.date,
                 spans: Optional[dict[str, health.Span]] = None) -> CoverageMap:
    spans = health.stored_spans(warehouse) if spans is None else spans
    if not spans:
        return CoverageMap([], pd.period_range(final, final, freq="M"), np.zeros((0, 1), np.uint8))
    tickers = sorted(spans)
    row = {t: i for i, t in enumerate(tickers)}
    first_day = min(first for first, _ in spans.values())
    months = pd.period_range(first_day, max(final, max(last for _, last in spans.values())), freq="M")
    expected = _expected(tickers, spans, set(health.expected_tickers(warehouse)) or set(tickers), months,
                         calendar, final)
    stored = np.zeros_like(expected)
    counts = _monthly_counts(warehouse)
    if counts:
        names, years, numbers, values = zip(*counts)
        stored[[row[t] for t in names], _month_index(months, np.array(years, int), np.array(numbers, int))] = values
    states = np.where(expected > 0, np.where(stored >= expected, COMPLETE, MISSING), NOT_EXPECTED).astype(np.uint8)
    states[(expected == 0) & (stored > 0)] = COMPLETE  # a bar where no session was expected: shown as stored
    for state, cells in ((PENDING, _gap_cells(warehouse, "pending")), (QUARANTINED, _refused_cells(warehouse)),
                         (HOLE, _gap_cells(warehouse, "hole"))):
        for ticker, day in cells:
            if ticker in row and months[0].start_time.date() <= day <= months[-1].end_time.date():
                r, c = row[ticker], _month_index(months, day.year, day.month)
                states[r, c] = max(states[r, c], state)
    return CoverageMap(tickers, months, states)


def _expected(tickers: list[str], spans: dict, active: set[str], months: pd.PeriodIndex,
              calendar: TradingCalendar, final: dt.date) -> np.ndarray:
    """Sessions expected per (ticker, month): those between the ticker's first bar and its end."""
    sessions = calendar.sessions_in_range(months[0].start_time, months[-1].end_time).to_numpy().astype("datetime64[D]")
    first = np.array([spans[t][0] for t in tickers], dtype="datetime64[D]")
    last = np.array([final if t in active else spans[t][1] for t in tickers], dtype="datetime64[D]")
    month_start = months.start_time.to_numpy().astype("datetime64[D]")
    month_end = months.end_time.to_numpy().astype("datetime64[D]")
    lo = np.maximum(first[:, None], month_start[None, :])
    hi = np.minimum(last[:, None], month_end[None, :])
    counts = np.searchsorted(sessions, hi, "right") - np.searchsorted(sessions, lo, "left")
    return np.clip(counts, 0, None)


def _monthly_counts(warehouse: Warehouse) -> list[tuple]:
    raw = ticker_data_raw.c
    year, month = year_of(raw.trade_date, warehouse.backend), month_of(raw.trade_date, warehouse.backend)
    query = select(raw.ticker, year, month, func.count()).group_by(raw.ticker, year, month)
    with warehouse.engine.connect() as conn:
        return conn.execute(query).all()


def _gap_cells(warehouse: Warehouse, status: str) -> list[tuple[str, dt.date]]:
    g = cell_gaps.c
    with warehouse.engine.connect() as conn:
        return [(t, _date(d)) for t, d in conn.execute(select(g.ticker, g.trade_date).where(g.status == status))]


def _refused_cells(warehouse: Warehouse) -> list[tuple[str, dt.date]]:
    """Sessions whose bar the quality gate refused and that have no bar stored since."""
    rb, raw = rejected_bars.c, ticker_data_raw.c
    joined = rejected_bars.outerjoin(ticker_data_raw, and_(raw.ticker == rb.ticker, raw.trade_date == rb.trade_date))
    query = (select(rb.ticker, rb.trade_date).distinct().select_from(joined)
             .where(raw.ticker.is_(None), rb.trade_date.is_not(None)))
    with warehouse.engine.connect() as conn:
        return [(t, _date(d)) for t, d in conn.execute(query)]


def _month_index(months: pd.PeriodIndex, year: "int | np.ndarray", month: "int | np.ndarray") -> "int | np.ndarray":
    first = months[0]
    return (year - first.year) * 12 + month - first.month
