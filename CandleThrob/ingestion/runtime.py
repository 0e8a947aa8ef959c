"""What a run works with: the collaborators it is given or builds on first use, and its budgets.

Clock, calendar, source, warehouse and universe fetcher are injected (defaults are
built from the config), so each stage can be tested alone and the whole against a
local Polygon-compatible server. The orchestrator (``pipeline.py``) is a ``Runtime``
that wires the stages; nothing here knows their order.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Callable, Optional, Union

from CandleThrob.clock import Clock, as_clock
from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.errors import ConfigError, InterruptedRun, OutOfTimeError
from CandleThrob.macro.stage import MacroStage
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.quality.validator import DataQualityValidator
from CandleThrob.reporting.monitor import MemoryBudget, PerformanceMonitor
from CandleThrob.source.fred import FredSource
from CandleThrob.source.polygon import PolygonSource, SourceStats
from CandleThrob.universe.pages import ConstituentsPage, fetch_constituents_page
from CandleThrob.universe.stage import UniverseStage
from CandleThrob.warehouse.engine import create_db_engine, database_label
from CandleThrob.warehouse.gaps import GapStore
from CandleThrob.warehouse.lock import RunLock
from CandleThrob.warehouse.storage import Warehouse


class Runtime:
    """The collaborators of a run, the stop request, and the time and memory budgets."""

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
                                                         check_budget=self.check_time)
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

    def check_stop(self) -> None:
        if self.stop_event.is_set():
            raise self._interrupted()

    def check_memory_budget(self) -> None:
        """A budget the process exceeds before it fetches anything could only ever stop the run."""
        if self.memory_budget.exceeded():
            raise ConfigError(
                f"MAX_MEMORY_USAGE={self.config.max_memory_usage:g} is not allowed: expected more than "
                f"{self.memory_budget.rss_mb() / self.memory_budget.threshold:.0f} MB; the process already uses "
                f"{self.memory_budget.rss_mb():.0f} MB before fetching anything, and stops at "
                f"{self.memory_budget.threshold:.0%} of the budget.")

    def check_time(self) -> None:
        if self.clock.monotonic() - self._started >= self.config.max_processing_time:
            raise OutOfTimeError(f"MAX_PROCESSING_TIME ({self.config.max_processing_time:.0f} s) reached")

    # ---- stages' collaborators ------------------------------------------------------
    def gaps(self) -> GapStore:
        return GapStore(self.warehouse, self.calendar, self.config.max_cell_retries)

    def stats(self) -> SourceStats:
        return self._source.stats() if self._source is not None else SourceStats()

    def universe_stage(self) -> UniverseStage:
        return UniverseStage(self.warehouse, self.universe_fetcher, self.clock, calendar=self.calendar,
                             max_symbols=self.config.max_sp500_symbols, max_changes=self.config.max_universe_changes)

    def macro_stage(self, lock: Optional[RunLock]) -> MacroStage:
        return MacroStage(lambda: self.fred_source, self.warehouse, lock, audit=self.config.enable_audit_trail,
                          check_stop=self.check_stop, check_time=self.check_time)
