"""The orchestrator: universe -> coverage -> plan -> corporate actions -> fetch -> validate -> store -> macro
series -> report.

``CompleteDataIngestion`` only wires the stages, top to bottom, and tags a
failure with the stage it came from. Clock, calendar, source, warehouse and
universe fetcher are injected (defaults are built from the config), so each
stage can be tested alone and the whole against a local Polygon-compatible
server. ``docs/architecture.md`` draws the flow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import pandas as pd
from sqlalchemy.exc import DBAPIError

from CandleThrob import __version__
from CandleThrob.actions import upgrade
from CandleThrob.actions.stage import LedgerPlan, LedgerStage
from CandleThrob.clock import Clock, as_clock
from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.errors import (CandleThrobError, ConfigError, DatabaseUnavailableError, FatalError,
                                InterruptedRun, OutOfTimeError)
from CandleThrob.ingestion.executor import BatchExecutor
from CandleThrob.ingestion.state import RunState
from CandleThrob.ingestion.verify import verify_adjustments
from CandleThrob.ingestion.writer import BatchWriter
from CandleThrob.logs import set_run_context
from CandleThrob.macro.stage import MacroPlan, MacroStage
from CandleThrob.planning.planner import GroupedCall, Plan, RangeCall
from CandleThrob.planning.stage import YOUNG_SESSIONS, CallPlanner, PlannedRun
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.planning.window import (
    FREE_TIER_YEARS, default_start, history_floor, learn_history_window, resolve_end, validate_start,
)
from CandleThrob.quality.validator import DataQualityValidator
from CandleThrob.reporting.monitor import MemoryBudget, PerformanceMonitor
from CandleThrob.reporting.progress import Progress
from CandleThrob.reporting.report import plan_result, run_result
from CandleThrob.source.fred import FredSource
from CandleThrob.source.polygon import PolygonSource, SourceStats
from CandleThrob.universe.pages import ConstituentsPage, fetch_constituents_page
from CandleThrob.universe.events import TickerEventsStage
from CandleThrob.universe.market import MARKET
from CandleThrob.universe.pit import wanted_spans
from CandleThrob.universe.stage import Universe, UniverseStage
from CandleThrob.warehouse.engine import create_db_engine, database_label
from CandleThrob.warehouse.gaps import GapStore
from CandleThrob.warehouse.lock import RunLock
from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.pipeline")


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


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag a failure with the stage it came from (dlt's ``PipelineStepFailed(step=...)``)."""
    try:
        yield
    except CandleThrobError as exc:
        exc.stage = exc.stage or name
        raise
    except (DBAPIError, OSError) as exc:
        detail = exc.orig if isinstance(exc, DBAPIError) else exc
        failure = DatabaseUnavailableError(f"the database failed during the run: {detail}")
        failure.stage = name
        raise failure from None


class CompleteDataIngestion:
    """Brings the warehouse up to the last completed NYSE session."""

    def __init__(self, config: Optional[AdvancedBatchConfig] = None, *,
                 warehouse: Optional[Warehouse] = None, source: Optional[PolygonSource] = None,
                 calendar: Optional[TradingCalendar] = None,
                 clock: Union[Clock, Callable[[], dt.datetime], None] = None,
                 universe_fetcher: Optional[Callable[[], ConstituentsPage]] = None,
                 stop_event: Optional[threading.Event] = None, heartbeat_seconds: float = 60.0,
                 memory_budget: Optional[MemoryBudget] = None, fred_source: Optional[FredSource] = None):
        self.config = config or AdvancedBatchConfig()
        self.clock = as_clock(clock)
        self.calendar = calendar or TradingCalendar(clock=self.clock)
        self.stop_event = stop_event or threading.Event()
        self.stop_signal: Optional[int] = None
        self.performance_monitor = PerformanceMonitor(enabled=self.config.enable_performance_monitoring)
        self.validator = DataQualityValidator(self.calendar, min_score=self.config.min_data_quality_score)
        self._warehouse = warehouse
        self._source = source
        self._fred_source = fred_source
        self._macro_skip_told = False
        self._build_lock = threading.Lock()
        self._started = self.clock.monotonic()
        self.heartbeat_seconds = heartbeat_seconds
        self.memory_budget = memory_budget or MemoryBudget(self.config.max_memory_usage)
        self.universe_fetcher = universe_fetcher or (lambda: fetch_constituents_page(
            self.config.sp500_url, timeout=self.config.request_timeout, min_symbols=self.config.min_sp500_symbols))

    # ---- injected collaborators, built on first use --------------------------------
    @property
    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            warehouse = Warehouse(create_db_engine(self.config), clock=self.clock,
                                  label=database_label(self.config))
            warehouse.create_schema()
            self._warehouse = warehouse
        return self._warehouse

    @property
    def source(self) -> PolygonSource:
        # Worker threads ask for it too: build exactly one (one limiter per process).
        with self._build_lock:
            if self._source is None:
                self._source = PolygonSource.from_config(self.config, sleep=self._sleep, on_abort=self._interrupted,
                                                         check_budget=self._check_time)
            return self._source

    @property
    def fred_source(self) -> FredSource:
        """FRED's source, with its own limiter; no key is a usage error, raised before any write."""
        with self._build_lock:
            if self._fred_source is None:
                self._fred_source = FredSource.from_config(self.config, sleep=self._sleep,
                                                           on_abort=self._interrupted)
            return self._fred_source

    def _sleep(self, seconds: float) -> None:
        """Waits that a stop request cuts short (a rate-limit pause can be a minute)."""
        if self.stop_event.wait(seconds):
            raise self._interrupted()

    def _interrupted(self) -> InterruptedRun:
        return InterruptedRun(self.stop_signal or 15)

    def request_stop(self, signum: int) -> None:
        """From a signal handler: stop waiting, and cut every request in flight."""
        self.stop_signal = signum
        self.stop_event.set()
        for source in (self._source, self._fred_source):
            if source is not None:
                source.http.abort_all()

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise self._interrupted()

    def _check_memory_budget(self) -> None:
        """A budget the process exceeds before it fetches anything could only ever stop the run."""
        if self.memory_budget.exceeded():
            raise ConfigError(
                f"MAX_MEMORY_USAGE={self.config.max_memory_usage:g} is not allowed: expected more than "
                f"{self.memory_budget.rss_mb() / self.memory_budget.threshold:.0f} MB; the process already uses "
                f"{self.memory_budget.rss_mb():.0f} MB before fetching anything, and stops at "
                f"{self.memory_budget.threshold:.0%} of the budget.")

    def _check_time(self) -> None:
        if self.clock.monotonic() - self._started >= self.config.max_processing_time:
            raise OutOfTimeError(f"MAX_PROCESSING_TIME ({self.config.max_processing_time:.0f} s) reached")

    # ---- the seed's public API -------------------------------------------------------
    def update_ticker_data(self, ticker: str) -> bool:
        """Bring one ticker up to date; True when it ended complete and valid."""
        return self.run(RunOptions(tickers=[ticker]))["exit_code"] == 0

    def process_batch(self, tickers: Sequence[str]) -> dict:
        """Bring the given tickers up to date; the run summary."""
        return self.run(RunOptions(tickers=list(tickers)))

    def process_all_tickers(self) -> dict:
        """Bring the whole universe (S&P 500 + ETFs) up to date; the run summary."""
        return self.run(RunOptions())

    # ---- a run ----------------------------------------------------------------------
    def run(self, options: Optional[RunOptions] = None) -> dict:
        options = options or RunOptions()
        self.stop_event.clear()
        self.stop_signal = None
        for source in (self._source, self._fred_source):
            if source is not None:
                source.http.resume()
        self._started = self.clock.monotonic()
        with stage("window"):
            self._check_memory_budget()
            end = resolve_end(options.end, self.calendar, self.clock)
            validate_start(options.start, self.config.history_start, end)
            if options.macro_only:
                self.fred_source  # noqa: B018 - no FRED key is a usage error, before any write
        universe: Optional[Universe] = None
        if options.macro_only:
            with stage("plan"):
                work = macro_only_work(self._macro_plan(options))
        else:
            with stage("universe"):
                universe = self._universe_stage().resolve(options.tickers, record=not options.plan_only)
            with stage("plan"):
                work = self._plan(universe, end, options)
        if options.plan_only:
            unknown = work.planned.floor is None and _oldest_call(work.planned.plan, self._probe_cutoff(end))
            return plan_result(work, end, self.config.rate_limit_seconds, len(work.verify),
                               window_unknown_before=self._probe_cutoff(end) if unknown else None)

        state = RunState(run_id=options.run_id or str(uuid.uuid4()), end=end, tickers=work.planned.tickers,
                         started=self._started, universe_refused=work.universe_refused,
                         verify_calls=len(work.verify))
        state.macro.skipped = work.macro.skipped
        set_run_context(state.run_id, self.config.secrets())
        lock = RunLock(self.warehouse, state.run_id,
                       name=f"shard-{options.shard[0]}-of-{options.shard[1]}" if options.shard else "main")
        with stage("lock"):
            lock.acquire()
        lock.start_heartbeat(self.heartbeat_seconds)
        try:
            self._record_start(state, options)
            self._log_start(state, work)
            work = self._settle_renames(state, work, universe, end, options)
            self._run_stages(state, work, options, lock)
        finally:
            lock.release()
        return self._finish(state, work)

    def _universe_stage(self) -> UniverseStage:
        return UniverseStage(self.warehouse, self.universe_fetcher, self.clock, calendar=self.calendar,
                             max_symbols=self.config.max_sp500_symbols, max_changes=self.config.max_universe_changes)

    def _settle_renames(self, state: RunState, work: Work, universe: Optional[Universe], end: pd.Timestamp,
                        options: RunOptions) -> Work:
        """Ask the vendor's ticker events for renames inside a gap; when one gets its day, the membership
        is rebuilt and the bars planned again with it (under the lock, before any bar is fetched)."""
        if universe is None or not work.renames:
            return work
        try:
            with stage("ticker events"):
                settled = TickerEventsStage(lambda: self.source, self.warehouse).run(list(work.renames), state.run_id)
            if not settled:
                return work
            with stage("plan"):
                replanned = self._plan(self._universe_stage().rebuild(universe), end, options)
        except InterruptedRun:
            raise
        except CandleThrobError as exc:
            if isinstance(exc, FatalError):
                raise
            log.warning("ticker events not settled this run: %s", exc)
            return work
        return replace(replanned, renames=work.renames)

    def _plan(self, universe: Universe, end: pd.Timestamp, options: RunOptions) -> Work:
        floor = history_floor(self.config.history_years, self.warehouse, self.clock)
        planner = CallPlanner(self.warehouse, self.calendar, self._gaps(), self.config.history_start,
                              self.config.settle_sessions)
        tickers, spans = list(universe.tickers), {}
        if universe.membership is not None:
            window_start = pd.Timestamp(options.start) if options.start else \
                default_start(end, self.config.history_start)
            spans = wanted_spans(universe.membership, set(tickers), window_start, end, self.config.former_members)
            tickers += sorted(set(spans) - set(tickers))
        former = tickers[len(universe.tickers):]
        market = [MARKET] if self.config.universe == "all" else []  # every common stock of the grouped days
        tickers += market
        planned = planner.plan(tickers, end, start=options.start, full_refresh=options.full_refresh,
                               shard=options.shard, floor=floor, spans=spans)
        if options.verify_adjustments:
            # Verification is all such a run does: one range call per ticker with stored bars,
            # no data call, no ledger call (the next ordinary run makes those).
            stored = self.warehouse.latest_closes()
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
        legacy = upgrade.legacy_starts(self.warehouse)
        ledger_plan = LedgerPlan()
        if options.shard is None or options.shard[0] == 1:
            starts = {**planned.starts, **{t: min(d, planned.starts.get(t, d)) for t, d in legacy.items()}}
            ledger_plan = LedgerStage(lambda: self.source, self.warehouse, None).plan(
                starts, end, has_work=bool(planned.plan.calls or legacy), unfiltered=self.config.universe == "all")
        return Work(planned, ledger_plan, legacy, universe.refused, tickers=tickers, spans=spans, former=former,
                    former_calls=former_calls, renames=universe.renames, macro=self._macro_plan(options))

    def _macro_plan(self, options: RunOptions) -> MacroPlan:
        """Every MACRO_SERIES, in a nightly run (or shard 1 of one) when FRED_API_KEY is set."""
        if options.verify_adjustments or (options.shard is not None and options.shard[0] != 1):
            return MacroPlan()
        if not self.config.fred_api_key:
            return MacroPlan(skipped="FRED_API_KEY is not set")
        return self._macro_stage(None).plan(self.config.macro_series)

    def _macro_stage(self, lock: Optional[RunLock]) -> MacroStage:
        return MacroStage(lambda: self.fred_source, self.warehouse, lock, audit=self.config.enable_audit_trail,
                          check_stop=self._check_stop, check_time=self._check_time)

    def _log_start(self, state: RunState, work: Work) -> None:
        if work.bars:
            log.info("run started: %d tickers through %s; %d calls planned (%d grouped, %d range, %d corporate "
                     "actions) for %d missing cells", len(state.tickers), state.end.date(),
                     work.planned.plan.calls, len(work.planned.plan.grouped), len(work.planned.plan.ranges),
                     len(work.ledger.calls), work.planned.plan.missing_cells)
        if work.macro.series:
            log.info("macro series: %d, %s FRED calls (%d never fetched)", len(work.macro.series),
                     work.macro.calls_text(), len(work.macro.never_fetched))
        elif work.macro.skipped and not self._macro_skip_told:
            self._macro_skip_told = True  # said once, not on every run of a long-lived process
            log.info("macro series skipped: %s", work.macro.skipped)

    def _gaps(self) -> GapStore:
        return GapStore(self.warehouse, self.calendar, self.config.max_cell_retries)

    def _record_start(self, state: RunState, options: RunOptions) -> None:
        self.warehouse.start_run({
            "run_id": state.run_id, "status": "running", "started_at": self.warehouse.now(),
            "host": self.clock.host, "pid": self.clock.pid,
            "shard": f"{options.shard[0]}/{options.shard[1]}" if options.shard else None,
            "end_date": state.end.date(), "tickers_total": len(state.tickers),
            "parameters": json.dumps({"options": _jsonable(options.__dict__), "config": self.config.redacted()},
                                     default=str),
            "version": __version__})

    def _run_stages(self, state: RunState, work: Work, options: RunOptions,
                    lock: RunLock) -> None:
        writer = BatchWriter(self.warehouse, lock, self.calendar, self._gaps(), audit=self.config.enable_audit_trail,
                             run_totals=lambda: {**state.totals(), "api_calls": self._stats().total})
        ledger = LedgerStage(lambda: self.source, self.warehouse, lock)
        try:
            with self.performance_monitor.monitor_operation("complete_ingestion"):
                if options.verify_adjustments:
                    with stage("verify"):
                        verify_adjustments(state, work.verify, lambda: self.source, self.warehouse,
                                           self._check_stop)
                elif work.bars:
                    self._bar_stages(state, work, options, lock, writer, ledger)
                if work.macro.series:
                    with stage("macro"):
                        self._macro_stage(lock).run(state, work.macro)
                self._check_stop()  # a signal during a run with nothing to fetch still counts
        except InterruptedRun as exc:
            state.fail("interrupted", str(exc), exc.exit_code, exc.stage)
        except CandleThrobError as exc:
            if isinstance(exc, FatalError):
                log.error("%s failed: %s", exc.stage or "run", exc)
            state.fail("failed", str(exc), exc.exit_code, exc.stage)
        except Exception as exc:  # an unforeseen bug: record it, then let it surface
            state.fail("failed", f"{exc.__class__.__name__}: {exc}", 1, None)
            self._finish(state, work)
            raise

    def _bar_stages(self, state: RunState, work: Work, options: RunOptions, lock: RunLock, writer: BatchWriter,
                    ledger: LedgerStage) -> None:
        with stage("corporate actions"):
            changed = ledger.run(state, work.ledger)
        if work.legacy and not state.actions_feed_error:
            with stage("upgrade"):
                upgrade.convert(self.warehouse, lock, sorted(work.legacy))
                changed |= set(work.legacy)
        with stage("fetch"):
            self._fetch(state, work, options, writer, ledger)
        with stage("corporate actions"):
            ledger.refresh_factors(state, changed | ledger.touched_by_bars(state))

    def _fetch(self, state: RunState, work: Work, options: RunOptions, writer: BatchWriter,
               ledger: LedgerStage) -> None:
        """Fetch the plan. While the key's history window is unknown, the call reaching
        furthest back beyond the free tier's window goes first, alone: if the key may not
        read that far (HTTP 403), that one refusal teaches the window and the rest is
        planned within it, instead of every old call being refused in turn."""
        executor = BatchExecutor(self.config, lambda: self.source, self.warehouse, writer, self.validator,
                                 self.clock, self.stop_event, self._check_stop, self.memory_budget)
        planned = work.planned
        progress = Progress(total=planned.plan.calls, enabled=options.progress,
                            seconds_per_call=self.config.rate_limit_seconds)

        def replan_within_the_window() -> PlannedRun:
            floor = learn_history_window(self.warehouse, self.clock)
            clamped = CallPlanner(self.warehouse, self.calendar, self._gaps(), self.config.history_start,
                                  self.config.settle_sessions).plan(
                work.tickers, state.end, start=options.start, full_refresh=options.full_refresh,
                shard=options.shard, floor=floor, spans=work.spans)
            state.unreachable, state.history_floor = clamped.unreachable, floor
            return clamped

        try:
            probe = None if planned.floor is not None else _oldest_call(planned.plan, self._probe_cutoff(state.end))
            if probe is not None:
                executor.run(state, _with_calls(planned, [probe]), ledger.split_dates(), progress)
                if state.stopped:
                    state.remaining_calls += planned.plan.calls - 1
                    return
                planned = replan_within_the_window() if state.window_refusals \
                    else _with_calls(planned, [c for c in planned.plan.grouped + planned.plan.ranges if c != probe])
            executor.run(state, planned, ledger.split_dates(), progress)
            if state.window_refusals and planned.floor is None and not state.stopped:
                planned = replan_within_the_window()
                executor.run(state, planned, ledger.split_dates(), progress)
        finally:
            progress.close()
        young = CallPlanner(self.warehouse, self.calendar, self._gaps(), None, self.config.settle_sessions) \
            .young_after(state.end, state.fetched_sessions, state.settled)
        with self.warehouse.transaction() as conn:
            self.warehouse.set_state(conn, YOUNG_SESSIONS, young)

    def _probe_cutoff(self, end: pd.Timestamp) -> dt.date:
        """Calls starting before this may be refused by a free key: beyond the free tier's two
        years, and beyond the tool's own default window (so a cold start with the defaults
        never needs the probe)."""
        return min(default_start(end, None).date(), history_floor(FREE_TIER_YEARS, self.warehouse, self.clock))

    def _stats(self) -> SourceStats:
        return self._source.stats() if self._source is not None else SourceStats()

    def _finish(self, state: RunState, work: Work) -> dict:
        state.settle()
        stats = self._stats()
        try:
            state.gaps = self._gaps().counts()
            self.warehouse.update_run(state.run_id, {
                **state.totals(), "api_calls": stats.total, "status": state.status, "exit_code": state.exit_code,
                "failed_stage": state.failed_stage, **state.gaps, "finished_at": self.warehouse.now(),
                "error": (state.error or "; ".join(state.problems()))[:2000] or None})
        except Exception as exc:  # the database itself may be what failed
            log.error("could not record the run's end: %s", exc)
        result = run_result(state, work, stats, seconds=self.clock.monotonic() - state.started,
                            peak_rss_mb=self.performance_monitor.peak_rss_mb(),
                            database=self.warehouse.describe(), metrics=self.performance_monitor.snapshot())
        log.log(logging.INFO if state.exit_code == 0 else logging.WARNING,
                "run finished: %s (exit %d), %d bars written, %d rejected, %d API calls, %.1f s",
                state.status, state.exit_code, result["rows_written"], result["rows_rejected"], stats.total,
                result["seconds"])
        return result


def _oldest_call(plan: Plan, cutoff: dt.date) -> Optional[Union[GroupedCall, RangeCall]]:
    """The call of ``plan`` that reaches furthest back, if it starts before ``cutoff``."""
    calls = plan.grouped + plan.ranges
    if not calls:
        return None
    oldest = min(calls, key=lambda c: c.session if isinstance(c, GroupedCall) else c.start)
    start = oldest.session if isinstance(oldest, GroupedCall) else oldest.start
    return oldest if start.date() < cutoff else None


def _with_calls(planned: PlannedRun, calls: list) -> PlannedRun:
    """``planned`` making only ``calls`` (a part of its own calls)."""
    plan = Plan([c for c in calls if isinstance(c, GroupedCall)], [c for c in calls if isinstance(c, RangeCall)],
                planned.plan.missing_cells, planned.plan.sessions)
    return dataclasses.replace(planned, plan=plan)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, pd.Timestamp)):
        return str(value)
    return value

