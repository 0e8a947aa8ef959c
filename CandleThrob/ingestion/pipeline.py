"""The orchestrator: universe -> coverage -> plan -> fetch -> validate -> store -> report.

``CompleteDataIngestion`` only wires the stages, top to bottom, and tags a
failure with the stage it came from. Clock, calendar, source, warehouse and
universe fetcher are injected (defaults are built from the config), so each
stage can be tested alone and the whole against a local Polygon-compatible
server. ``docs/architecture.md`` draws the flow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import pandas as pd
from sqlalchemy.exc import InterfaceError, OperationalError

from CandleThrob import __version__
from CandleThrob.clock import Clock, as_clock
from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.errors import CandleThrobError, DatabaseUnavailableError, FatalError, InterruptedRun
from CandleThrob.ingestion.executor import BatchExecutor
from CandleThrob.ingestion.splits import SplitPolicy
from CandleThrob.ingestion.state import RunState
from CandleThrob.ingestion.writer import BatchWriter
from CandleThrob.logs import set_run_context
from CandleThrob.planning.stage import CallPlanner, PlannedRun
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.planning.window import resolve_end
from CandleThrob.quality.validator import DataQualityValidator
from CandleThrob.reporting.monitor import PerformanceMonitor
from CandleThrob.reporting.report import plan_result, run_result
from CandleThrob.source.polygon import PolygonSource, SourceStats
from CandleThrob.universe.constituents import fetch_constituents
from CandleThrob.universe.stage import UniverseStage
from CandleThrob.warehouse.engine import create_db_engine
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


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag a failure with the stage it came from (dlt's ``PipelineStepFailed(step=...)``)."""
    try:
        yield
    except CandleThrobError as exc:
        exc.stage = exc.stage or name
        raise
    except (OperationalError, InterfaceError) as exc:
        failure = DatabaseUnavailableError(f"the database failed during the run: {exc.orig}")
        failure.stage = name
        raise failure from None


class CompleteDataIngestion:
    """Brings the warehouse up to the last completed NYSE session."""

    def __init__(self, config: Optional[AdvancedBatchConfig] = None, *,
                 warehouse: Optional[Warehouse] = None, source: Optional[PolygonSource] = None,
                 calendar: Optional[TradingCalendar] = None,
                 clock: Union[Clock, Callable[[], dt.datetime], None] = None,
                 universe_fetcher: Optional[Callable[[], pd.DataFrame]] = None,
                 stop_event: Optional[threading.Event] = None):
        self.config = config or AdvancedBatchConfig()
        self.clock = as_clock(clock)
        self.calendar = calendar or TradingCalendar(clock=self.clock)
        self.stop_event = stop_event or threading.Event()
        self.stop_signal: Optional[int] = None
        self.performance_monitor = PerformanceMonitor(enabled=self.config.enable_performance_monitoring)
        self.validator = DataQualityValidator(self.calendar, min_score=self.config.min_data_quality_score)
        self._warehouse = warehouse
        self._source = source
        self._build_lock = threading.Lock()
        self.universe_fetcher = universe_fetcher or (
            lambda: fetch_constituents(self.config.sp500_url, min_symbols=self.config.min_sp500_symbols))

    # ---- injected collaborators, built on first use --------------------------------
    @property
    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            warehouse = Warehouse(create_db_engine(self.config), clock=self.clock)
            warehouse.create_schema()
            self._warehouse = warehouse
        return self._warehouse

    @property
    def source(self) -> PolygonSource:
        # Worker threads ask for it too: build exactly one (one limiter per process).
        with self._build_lock:
            if self._source is None:
                self._source = PolygonSource.from_config(self.config, sleep=self._sleep)
            return self._source

    def _sleep(self, seconds: float) -> None:
        """Waits that a stop request cuts short (a rate-limit pause can be a minute)."""
        if self.stop_event.wait(seconds):
            raise InterruptedRun(self.stop_signal or 15)

    def request_stop(self, signum: int) -> None:
        self.stop_signal = signum
        self.stop_event.set()

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise InterruptedRun(self.stop_signal or 15)

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
        started = self.clock.monotonic()
        with stage("window"):
            end = resolve_end(options.end, self.calendar, self.clock)
        with stage("universe"):
            universe = UniverseStage(self.warehouse, self.universe_fetcher, self.clock).resolve(
                options.tickers, record=not options.plan_only)
        with stage("plan"):
            planned = self._plan(universe, end, options)
        if options.plan_only:
            return plan_result(planned.plan, end, len(planned.tickers), self.config.rate_limit_seconds)

        state = RunState(run_id=str(uuid.uuid4()), end=end, tickers=planned.tickers, started=started)
        set_run_context(state.run_id, self.config.secrets())
        lock = RunLock(self.warehouse, state.run_id,
                       name=f"shard-{options.shard[0]}-of-{options.shard[1]}" if options.shard else "main")
        with stage("lock"):
            lock.acquire()
        lock.start_heartbeat()
        try:
            self._record_start(state, options)
            log.info("run started: %d tickers through %s; %d calls planned (%d grouped, %d range) for %d "
                     "missing cells", len(state.tickers), end.date(), planned.plan.calls, len(planned.plan.grouped),
                     len(planned.plan.ranges), planned.plan.missing_cells)
            self._run_stages(state, planned, universe, options, lock)
        finally:
            lock.release()
        return self._finish(state, planned)

    def _plan(self, universe: Sequence[str], end: pd.Timestamp, options: RunOptions) -> PlannedRun:
        return CallPlanner(self.warehouse, self.calendar, self.config.history_start).plan(
            universe, end, start=options.start, full_refresh=options.full_refresh, shard=options.shard)

    def _record_start(self, state: RunState, options: RunOptions) -> None:
        self.warehouse.start_run({
            "run_id": state.run_id, "status": "running", "started_at": self.warehouse.now(),
            "host": self.clock.host, "pid": self.clock.pid,
            "shard": f"{options.shard[0]}/{options.shard[1]}" if options.shard else None,
            "end_date": state.end.date(), "tickers_total": len(state.tickers),
            "parameters": json.dumps({"options": _jsonable(options.__dict__), "config": self.config.redacted()},
                                     default=str),
            "version": __version__})

    def _run_stages(self, state: RunState, planned: PlannedRun, universe: Sequence[str], options: RunOptions,
                    lock: RunLock) -> None:
        writer = BatchWriter(self.warehouse, lock, self.calendar, audit=self.config.enable_audit_trail,
                             run_totals=lambda: {**state.totals(), "api_calls": self._stats().total})
        splits = SplitPolicy(lambda: self.source, self.warehouse, writer, self.validator, self.clock, self._check_stop)
        executor = BatchExecutor(self.config, lambda: self.source, self.warehouse, writer, self.validator,
                                 self.clock, self.stop_event, self._check_stop)
        try:
            with self.performance_monitor.monitor_operation("complete_ingestion"):
                if options.verify_adjustments:
                    with stage("verify"):
                        splits.verify(state, planned.tickers)
                else:
                    if planned.plan.calls and (options.shard is None or options.shard[0] == 1):
                        with stage("splits"):
                            splits.apply_new(state, universe)
                        if state.restated:  # refetched through ``end``: replan without them
                            with stage("plan"):
                                planned = self._plan(universe, state.end, options)
                    with stage("fetch"):
                        suspects = executor.run(state, planned.plan, planned.missing, splits.split_dates(),
                                                options.progress)
                    if not state.stopped:
                        with stage("splits"):
                            splits.recheck(state, suspects)
                self._check_stop()  # a signal during a run with nothing to fetch still counts
        except InterruptedRun as exc:
            state.fail("interrupted", str(exc), exc.exit_code, exc.stage)
        except CandleThrobError as exc:
            if isinstance(exc, FatalError):
                log.error("%s failed: %s", exc.stage or "run", exc)
            state.fail("failed", str(exc), exc.exit_code, exc.stage)
        except Exception as exc:  # an unforeseen bug: record it, then let it surface
            state.fail("failed", f"{exc.__class__.__name__}: {exc}", 1, None)
            self._finish(state, planned)
            raise

    def _stats(self) -> SourceStats:
        return self._source.stats() if self._source is not None else SourceStats()

    def _finish(self, state: RunState, planned: PlannedRun) -> dict:
        state.settle()
        stats = self._stats()
        try:
            self.warehouse.update_run(state.run_id, {
                **state.totals(), "api_calls": stats.total, "status": state.status,
                "finished_at": self.warehouse.now(), "error": (state.error or None) and state.error[:2000]})
        except Exception as exc:  # the database itself may be what failed
            log.error("could not record the run's end: %s", exc)
        result = run_result(state, planned.plan, stats, seconds=self.clock.monotonic() - state.started,
                            peak_rss_mb=self.performance_monitor.peak_rss_mb(),
                            database=self.warehouse.describe(), metrics=self.performance_monitor.snapshot())
        log.log(logging.INFO if state.exit_code == 0 else logging.WARNING,
                "run finished: %s (exit %d), %d bars written, %d rejected, %d API calls, %.1f s",
                state.status, state.exit_code, result["rows_written"], result["rows_rejected"], stats.total,
                result["seconds"])
        return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, pd.Timestamp)):
        return str(value)
    return value
