"""The planning stage: coverage -> missing cells -> the fewest calls (a shard's share of them).

Missing cells are, per ticker of the run:

* sessions of its window that the source was never asked for (coverage);
* pending cells whose retry is due (``warehouse/gaps.py``);
* the settle window: a session fetched on its own evening is asked once more on
  a later run, because the vendor's values can still change after the close.

Cells older than the key's history window (the free tier serves two years)
are dropped and counted, not asked: every such call would answer 403.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import pandas as pd

from CandleThrob.planning.coverage import clip, missing_cells
from CandleThrob.planning.planner import Plan, plan_calls
from CandleThrob.planning.shards import share_of, shard_of
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.planning.window import default_start
from CandleThrob.universe.market import MARKET
from CandleThrob.warehouse.gaps import GapStore
from CandleThrob.warehouse.storage import Warehouse

YOUNG_SESSIONS = "young_sessions"  # sessions fetched on their own evening, not yet settled


@dataclass(frozen=True)
class PlannedRun:
    plan: Plan
    missing: dict[str, pd.DatetimeIndex]  # ticker -> sessions to fetch
    tickers: list[str]  # the tickers this run (or shard) is responsible for
    settle: frozenset = frozenset()  # sessions asked again to settle them
    retries: int = 0  # pending cells asked again
    retried: frozenset = frozenset()  # those cells, as (ticker, session) pairs
    floor: Optional[dt.date] = None  # the key's history window starts here
    unreachable: int = 0  # cells before the floor, not asked
    starts: dict = field(default_factory=dict)  # ticker -> the first date its bars cover after this run


class CallPlanner:
    def __init__(self, warehouse: Warehouse, calendar: TradingCalendar, gaps: GapStore,
                 history_start: Optional[dt.date], settle_sessions: int):
        self.warehouse = warehouse
        self.calendar = calendar
        self.gaps = gaps
        self.history_start = history_start
        self.settle_sessions = settle_sessions

    def plan(self, universe: Sequence[str], end: pd.Timestamp, *, start: Optional[dt.date] = None,
             full_refresh: bool = False, shard: Optional[tuple[int, int]] = None,
             floor: Optional[dt.date] = None, spans: Optional[dict] = None) -> PlannedRun:
        """Every shard plans the whole universe from the same coverage, then takes its share.
        ``spans``: ticker -> the days its bars are wanted (``universe.pit.wanted_spans``)."""
        tickers = [t for t in universe if shard is None or shard_of(t, shard[1]) == shard[0]]
        planned_for = universe if shard else tickers
        coverage = self.warehouse.coverage()
        first = default_start(end, self.history_start)
        explicit = pd.Timestamp(start) if start else None
        earliest = min([first] + ([explicit] if explicit is not None else [])
                       + [pd.Timestamp(a) for spans in coverage.values() for a, _ in spans])
        sessions = self.calendar.sessions_in_range(earliest, end)
        missing = missing_cells(planned_for, coverage, sessions, first, explicit, full_refresh)
        # Tickers with the same cells share one index (missing_cells): each step below is worked
        # out once per distinct (cells, argument), not 523 times. ``held`` keeps every index of
        # the run alive, so that an id() in a key is never reused by another.
        held, done = list(missing.values()), {}

        def shared(ticker: str, step: Callable[[pd.DatetimeIndex, tuple], pd.DatetimeIndex],
                   argument: tuple) -> pd.DatetimeIndex:
            key = (step, id(missing[ticker]), argument)
            if key not in done:
                done[key] = step(missing[ticker], argument)
                held.append(done[key])
            return done[key]

        for ticker, wanted in (spans or {}).items():
            if ticker in missing:  # a point-in-time member: only the days its symbol was this company's
                missing[ticker] = shared(ticker, _clipped, tuple(wanted))
        retries = self.gaps.pending(end, planned_for)
        settle = self.due_to_settle(end)
        for ticker in planned_for:
            extra = list(retries.get(ticker, ()))
            covered = coverage.get(ticker, ())
            extra += [d for d in settle if any(a <= d <= b for a, b in covered)]
            if extra:
                missing[ticker] = shared(ticker, _with_days, tuple(extra))
        unreachable = 0
        if floor is not None:
            for ticker, days in missing.items():
                reachable = days[days >= pd.Timestamp(floor)]
                unreachable += len(days) - len(reachable)
                missing[ticker] = reachable
        plan = plan_calls(missing, sessions, grouped_only=(MARKET,))
        if shard:
            plan = share_of(plan, shard, set(tickers))
        starts = {}
        for ticker in tickers:
            stored = [a for a, _ in coverage.get(ticker, ())]
            days = missing.get(ticker)
            asked = [days[0].date()] if days is not None and len(days) else []
            if stored or asked:
                starts[ticker] = min(stored + asked)
        # MARKET is no ticker of the run: only the sessions its coverage lacks are.
        return PlannedRun(plan, missing, [t for t in tickers if t != MARKET], settle=frozenset(settle),
                          retries=sum(len(v) for v in retries.values()),
                          retried=frozenset((t, pd.Timestamp(d)) for t, days in retries.items() for d in days),
                          floor=floor, unreachable=unreachable,
                          starts=starts)

    def due_to_settle(self, end: pd.Timestamp) -> list[dt.date]:
        """Young sessions that are old enough now: ``settle_sessions`` later sessions are final."""
        if not self.settle_sessions:
            return []
        recent = self.calendar.sessions_in_range(end - pd.Timedelta(days=60), end)
        cutoff = recent[-self.settle_sessions - 1] if len(recent) > self.settle_sessions else None
        return [d for d in self.young() if cutoff is not None and pd.Timestamp(d) <= cutoff]

    def young(self) -> list[dt.date]:
        text = self.warehouse.get_state(YOUNG_SESSIONS) or ""
        return sorted(dt.date.fromisoformat(d) for d in text.split(",") if d)

    def young_after(self, end: pd.Timestamp, fetched: set[dt.date], settled: set[dt.date]) -> str:
        """The young sessions once this run is stored: those still unsettled, plus the
        sessions it fetched that are within the settle window of ``end``."""
        if not self.settle_sessions:
            return ""
        recent = self.calendar.sessions_in_range(end - pd.Timedelta(days=60), end)
        window = {d.date() for d in recent[-self.settle_sessions:]}
        young = sorted((set(self.young()) - settled) | (fetched & window))[-20:]  # the state column's width
        return ",".join(d.isoformat() for d in young)


def _clipped(days: pd.DatetimeIndex, spans: tuple) -> pd.DatetimeIndex:
    return clip(days, list(spans))


def _with_days(days: pd.DatetimeIndex, extra: tuple) -> pd.DatetimeIndex:
    return days.union(pd.DatetimeIndex(extra)).sort_values()
