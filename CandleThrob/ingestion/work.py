"""What a run is asked to do (``RunOptions``) and what it plans before it takes the lock (``Work``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import pandas as pd

from CandleThrob.actions import upgrade
from CandleThrob.actions.stage import LedgerPlan, LedgerStage
from CandleThrob.macro.stage import MacroPlan
from CandleThrob.planning.planner import Plan
from CandleThrob.planning.stage import CallPlanner, PlannedRun
from CandleThrob.planning.window import default_start, history_floor
from CandleThrob.universe.market import MARKET
from CandleThrob.universe.pit import wanted_spans
from CandleThrob.universe.stage import Universe

if TYPE_CHECKING:
    from CandleThrob.ingestion.runtime import Runtime


@dataclass
class RunOptions:
    end: Optional[dt.date] = None
    start: Optional[dt.date] = None
    tickers: Optional[list[str]] = None
    plan_only: bool = False
    full_refresh: bool = False
    shard: Optional[tuple[int, int]] = None  # (k, n), 1-based
    verify_adjustments: bool = False
    progress: bool = False
    run_id: Optional[str] = None  # the CLI makes one first, so that its first log line carries it
    macro_only: bool = False  # only the macro series stage (no universe, no bars, no Polygon key)


@dataclass(frozen=True)
class Work:
    """Everything planned before the lock: the calls, the ledger's and the macro series'."""

    planned: PlannedRun
    ledger: LedgerPlan
    legacy: dict  # ticker -> first date, of a first-release warehouse still to upgrade
    universe_refused: Optional[str]
    verify: tuple = ()  # --verify-adjustments: the tickers with stored bars, one range call each
    tickers: list = field(default_factory=list)  # everything planned: current members, then former ones
    spans: dict = field(default_factory=dict)  # ticker -> the days its bars are wanted (point in time)
    former: list = field(default_factory=list)  # former members and earlier symbols inside the window
    former_calls: int = 0  # what they add to the plan (none when grouped days carry them)
    renames: tuple = ()  # universe.events.Rename: one ticker-events call each, before the bars
    macro: MacroPlan = MacroPlan()
    bars: bool = True  # False: a --macro-only run


def macro_only_work(macro: MacroPlan) -> Work:
    return Work(PlannedRun(Plan([], [], 0), {}, []), LedgerPlan(), {}, None, macro=macro, bars=False)


def plan_work(rt: "Runtime", universe: Universe, end: pd.Timestamp, options: RunOptions) -> Work:
    floor = history_floor(rt.config.history_years, rt.warehouse, rt.clock)
    planner = CallPlanner(rt.warehouse, rt.calendar, rt.gaps(), rt.config.history_start,
                          rt.config.settle_sessions)
    tickers, spans = list(universe.tickers), {}
    if universe.membership is not None:
        window_start = pd.Timestamp(options.start) if options.start else \
            default_start(end, rt.config.history_start)
        spans = wanted_spans(universe.membership, set(tickers), window_start, end, rt.config.former_members)
        tickers += sorted(set(spans) - set(tickers))
    former = tickers[len(universe.tickers):]
    market = [MARKET] if rt.config.universe == "all" else []  # every common stock of the grouped days
    tickers += market
    planned = planner.plan(tickers, end, start=options.start, full_refresh=options.full_refresh,
                           shard=options.shard, floor=floor, spans=spans)
    if options.verify_adjustments:
        # Verification is all such a run does: one range call per ticker with stored bars,
        # no data call, no ledger call (the next ordinary run makes those).
        stored = rt.warehouse.latest_closes()
        verify = tuple(t for t in planned.tickers if t in stored)
        empty = Plan([], [], 0, planned.plan.sessions)
        planned = dataclasses.replace(planned, plan=empty, missing={}, settle=frozenset(), retries=0,
                                      retried=frozenset(), unreachable=0)
        return Work(planned, LedgerPlan(), {}, universe.refused, verify, tickers=tickers, spans=spans)
    former_calls = 0
    if former:  # what the former members cost: the same plan without them
        former_calls = planned.plan.calls - planner.plan(
            list(universe.tickers) + market, end, start=options.start, full_refresh=options.full_refresh,
            shard=options.shard, floor=floor, spans=spans).plan.calls
    legacy = upgrade.legacy_starts(rt.warehouse)
    ledger_plan = LedgerPlan()
    if options.shard is None or options.shard[0] == 1:
        starts = {**planned.starts, **{t: min(d, planned.starts.get(t, d)) for t, d in legacy.items()}}
        ledger_plan = LedgerStage(lambda: rt.source, rt.warehouse, None).plan(
            starts, end, has_work=bool(planned.plan.calls or legacy), unfiltered=rt.config.universe == "all")
    return Work(planned, ledger_plan, legacy, universe.refused, tickers=tickers, spans=spans, former=former,
                former_calls=former_calls, renames=universe.renames, macro=macro_plan(rt, options))


def macro_plan(rt: "Runtime", options: RunOptions) -> MacroPlan:
    """Every MACRO_SERIES, in a nightly run (or shard 1 of one) when FRED_API_KEY is set."""
    if options.verify_adjustments or (options.shard is not None and options.shard[0] != 1):
        return MacroPlan()
    if not rt.config.fred_api_key:
        return MacroPlan(skipped="FRED_API_KEY is not set")
    return rt.macro_stage(None).plan(rt.config.macro_series)
