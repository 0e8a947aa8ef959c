"""The planning stage: coverage -> missing cells -> the fewest calls (a shard's share of them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional, Sequence

import pandas as pd

from CandleThrob.planning.coverage import missing_cells
from CandleThrob.planning.planner import Plan, plan_calls
from CandleThrob.planning.shards import share_of, shard_of
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.planning.window import default_start
from CandleThrob.warehouse.storage import Warehouse


@dataclass(frozen=True)
class PlannedRun:
    plan: Plan
    missing: dict[str, pd.DatetimeIndex]  # ticker -> sessions to fetch
    tickers: list[str]  # the tickers this run (or shard) is responsible for


class CallPlanner:
    def __init__(self, warehouse: Warehouse, calendar: TradingCalendar, history_start: Optional[dt.date]):
        self.warehouse = warehouse
        self.calendar = calendar
        self.history_start = history_start

    def plan(self, universe: Sequence[str], end: pd.Timestamp, *, start: Optional[dt.date] = None,
             full_refresh: bool = False, shard: Optional[tuple[int, int]] = None) -> PlannedRun:
        """Every shard plans the whole universe from the same coverage, then takes its share."""
        tickers = [t for t in universe if shard is None or shard_of(t, shard[1]) == shard[0]]
        coverage = self.warehouse.coverage()
        first = default_start(end, self.history_start)
        explicit = pd.Timestamp(start) if start else None
        earliest = min([first] + ([explicit] if explicit is not None else [])
                       + [pd.Timestamp(a) for spans in coverage.values() for a, _ in spans])
        sessions = self.calendar.sessions_in_range(earliest, end)
        missing = missing_cells(universe if shard else tickers, coverage, sessions, first, explicit, full_refresh)
        plan = plan_calls(missing, sessions)
        if shard:
            plan = share_of(plan, shard, set(tickers))
        return PlannedRun(plan, missing, tickers)
