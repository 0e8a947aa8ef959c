"""The orchestrator: universe -> coverage -> plan -> fetch -> validate -> store -> report.

``CompleteDataIngestion`` only wires the stages. Clock, calendar, source,
warehouse and universe fetcher are injected (defaults are built from the
config), so each stage can be tested alone and the whole against a local
Polygon-compatible server.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import pandas as pd
from sqlalchemy.exc import InterfaceError, OperationalError

from CandleThrob import __version__

from .bars import concat_bars
from .trading_calendar import TradingCalendar
from .config import AdvancedBatchConfig
from .coverage import merge_intervals, missing_cells
from .engine import create_db_engine
from .errors import (CandleThrobError, ConfigError, DatabaseUnavailableError, FatalError, InterruptedRun,
                     RetriableError, SkippableError, UniverseUnavailableError)
from .lock import RunLock
from .logs import get_ingestion_logger, set_run_context
from .monitor import MemoryBudget, PerformanceMonitor
from .outcomes import CallResult, TickerOutcome
from .planner import GroupedCall, Plan, plan_calls
from .progress import Progress
from .quality import DataQualityValidator
from .ratelimit import RateLimiter
from .retry import RetryPolicy
from .shards import session_shard, shard_of
from .source import PolygonSource
from .storage import Warehouse, utcnow
from .universe import ETF_TICKERS, UniverseError, fetch_constituents

log = get_ingestion_logger("pipeline")

# A grouped day holding fewer than this share of a normal day's tickers is a
# vendor glitch to retry, not a day on which most of the market did not trade.
GROUPED_MIN_SHARE = 0.5
LAST_SPLIT_CHECK = "last_split_check"
GROUPED_TYPICAL = "grouped_typical_tickers"


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


class CompleteDataIngestion:
    """Brings the warehouse up to the last completed NYSE session."""

    def __init__(self, config: Optional[AdvancedBatchConfig] = None, *,
                 warehouse: Optional[Warehouse] = None, source: Optional[PolygonSource] = None,
                 calendar: Optional[TradingCalendar] = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
                 universe_fetcher: Optional[Callable[[], pd.DataFrame]] = None,
                 stop_event: Optional[threading.Event] = None):
        self.config = config or AdvancedBatchConfig()
        self.calendar = calendar or TradingCalendar()
        self.clock = clock
        self.stop_event = stop_event or threading.Event()
        self.stop_signal: Optional[int] = None
        self.performance_monitor = PerformanceMonitor(enabled=self.config.enable_performance_monitoring)
        self.validator = DataQualityValidator(self.calendar, min_score=self.config.min_data_quality_score)
        self._warehouse = warehouse
        self._source = source
        self._build_lock = threading.Lock()
        self.universe_fetcher = universe_fetcher or (
            lambda: fetch_constituents(self.config.sp500_url, min_symbols=self.config.min_sp500_symbols))
        self.memory_budget = MemoryBudget(self.config.max_memory_usage)
        self.run_id: Optional[str] = None
        self.outcomes: dict[str, TickerOutcome] = {}

    # ---- injected collaborators, built on first use --------------------------------
    @property
    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            warehouse = Warehouse(create_db_engine(self.config))
            warehouse.create_schema()
            self._warehouse = warehouse
        return self._warehouse

    @property
    def source(self) -> PolygonSource:
        # Worker threads ask for it too: build exactly one (one limiter per process).
        with self._build_lock:
            return self._build_source()

    def _build_source(self) -> PolygonSource:
        if self._source is None:
            if not self.config.polygon_api_key:
                raise ConfigError("POLYGON_API_KEY is not set. Put your Polygon/Massive key in the "
                                  "environment or in .env (POLYGON_API_KEY=...), or try the built-in "
                                  "demo: python -m CandleThrob.ingestion.ingest_data --demo")
            interruptible_sleep = self._sleep
            limiter = RateLimiter.from_seconds(self.config.rate_limit_seconds, sleep=interruptible_sleep)
            policy = RetryPolicy(max_retries=self.config.max_retries, base_delay=self.config.retry_delay,
                                 sleep=interruptible_sleep)
            self._source = PolygonSource(self.config.polygon_api_key, self.config.polygon_base_url,
                                         rate_limiter=limiter, retry_policy=policy,
                                         timeout=self.config.request_timeout,
                                         pool_size=max(4, self.config.workers))
        return self._source

    def _sleep(self, seconds: float) -> None:
        """Waits that a stop request cuts short (a rate-limit pause can be a minute)."""
        if self.stop_event.wait(seconds):
            raise InterruptedRun(self.stop_signal or 15)

    def request_stop(self, signum: int) -> None:
        self.stop_signal = signum
        self.stop_event.set()

    # ---- the seed's public API -------------------------------------------------------
    def update_ticker_data(self, ticker: str) -> bool:
        """Bring one ticker up to date; True when it ended complete and valid."""
        result = self.run(RunOptions(tickers=[ticker]))
        return result["exit_code"] == 0

    def process_batch(self, tickers: Sequence[str]) -> dict:
        """Bring the given tickers up to date; the run summary."""
        return self.run(RunOptions(tickers=list(tickers)))

    def process_all_tickers(self) -> dict:
        """Bring the whole universe (S&P 500 + ETFs) up to date; the run summary."""
        return self.run(RunOptions())

    # ---- a run ----------------------------------------------------------------------
    def resolve_end(self, end: Optional[dt.date]) -> pd.Timestamp:
        final = self.calendar.last_final_session(self.clock())
        if end is None:
            return final
        if pd.Timestamp(end) < self.calendar.first_session:
            raise ConfigError(f"--end {end} is before {self.calendar.first_session.date()}, the first "
                              "session of the trading calendar")
        # An --end on a weekend or holiday means the session before it.
        session = self.calendar.session_on_or_before(min(pd.Timestamp(end), self.calendar.last_session))
        if session > final:
            log.warning("--end %s is after the last session with final bars (%s): using %s", end,
                        final.date(), final.date())
            return final
        return session

    def default_start(self, end: pd.Timestamp) -> pd.Timestamp:
        if self.config.history_start:
            return pd.Timestamp(self.config.history_start)
        return end - pd.DateOffset(years=2) + pd.Timedelta(days=1)

    def resolve_universe(self, options: RunOptions) -> list[str]:
        if options.tickers:
            return list(options.tickers)
        try:
            constituents = self.universe_fetcher()
        except UniverseError as exc:
            stored = self.warehouse.universe(active_only=True)
            if stored.empty:
                raise UniverseUnavailableError(
                    f"cannot build the ticker universe: {exc}; and no universe is stored yet. "
                    "Pass --tickers A,B,... to choose tickers yourself.") from None
            log.warning("constituents page unavailable (%s); using the %d stored members", exc, len(stored))
            return list(stored["ticker"])
        members = pd.concat([
            constituents.assign(kind="sp500")[["ticker", "name", "sector", "kind"]],
            pd.DataFrame({"ticker": list(ETF_TICKERS), "name": None, "sector": "ETF", "kind": "etf"}),
        ], ignore_index=True).drop_duplicates("ticker")
        if not options.plan_only:
            changes = self.warehouse.sync_universe(members, self.clock().date(), kinds=("sp500", "etf"))
            if changes["added"] or changes["removed"]:
                log.info("universe: %d added %s, %d removed %s", len(changes["added"]),
                         changes["added"][:10], len(changes["removed"]), changes["removed"][:10])
            return list(self.warehouse.universe(active_only=True)["ticker"])
        return list(members["ticker"])

    def make_plan(self, universe: Sequence[str], options: RunOptions, end: pd.Timestamp
                  ) -> tuple[Plan, dict[str, pd.DatetimeIndex]]:
        coverage = self.warehouse.coverage()
        default_start = self.default_start(end)
        explicit = pd.Timestamp(options.start) if options.start else None
        earliest = min([default_start] + ([explicit] if explicit is not None else []) +
                       [pd.Timestamp(a) for spans in coverage.values() for a, _ in spans])
        sessions = self.calendar.sessions_in_range(earliest, end)
        missing = missing_cells(universe, coverage, sessions, default_start, explicit, options.full_refresh)
        return plan_calls(missing, sessions), missing

    def run(self, options: Optional[RunOptions] = None) -> dict:
        options = options or RunOptions()
        started = time.monotonic()
        self.outcomes = {}
        self.failed_days: list[str] = []
        self.stop_event.clear()
        self.stop_signal = None
        end = self.resolve_end(options.end)
        universe = self.resolve_universe(options)
        selected = [t for t in universe if options.shard is None or shard_of(t, options.shard[1]) == options.shard[0]]
        plan, missing = self.make_plan(universe if options.shard else selected, options, end)
        plan = self._share_of(plan, options.shard, set(selected)) if options.shard else plan
        if options.plan_only:
            return self._plan_result(plan, end, selected)

        self.run_id = str(uuid.uuid4())
        set_run_context(self.run_id, self.config.secrets())
        lock = RunLock(self.warehouse, self.run_id,
                       name=f"shard-{options.shard[0]}-of-{options.shard[1]}" if options.shard else "main")
        lock.acquire()
        lock.start_heartbeat()
        try:
            return self._locked_run(options, lock, end, universe, selected, plan, missing, started)
        finally:
            lock.release()

    def _share_of(self, plan: Plan, shard: tuple[int, int], mine: set[str]) -> Plan:
        """A shard's part of the global plan: its tickers' range calls and the
        grouped days it owns, so N shards together make the calls of one run.
        A day's owner depends on the date alone (consecutive sessions go round
        the shards), never on the plan: shards that start a little apart and so
        see slightly different coverage still agree on who fetches which day."""
        k, n = shard
        grouped = [call for call in plan.grouped if session_shard(call.session, n) == k]
        ranges = [call for call in plan.ranges if call.ticker in mine]
        return Plan(grouped=grouped, ranges=ranges, missing_cells=plan.missing_cells, sessions=plan.sessions)

    def _plan_result(self, plan: Plan, end: pd.Timestamp, selected: Sequence[str]) -> dict:
        text = plan.describe(self.config.rate_limit_seconds)
        return {"status": "plan", "exit_code": 0, "end": end.date().isoformat(), "tickers": len(selected),
                "calls": plan.calls, "grouped_calls": len(plan.grouped), "range_calls": len(plan.ranges),
                "missing_cells": plan.missing_cells, "plan_text": text}

    def _locked_run(self, options, lock, end, universe, selected, plan, missing, started) -> dict:
        wh = self.warehouse
        host = socket.gethostname()
        wh.start_run({"run_id": self.run_id, "status": "running", "started_at": utcnow(), "host": host,
                      "pid": os.getpid(),
                      "shard": f"{options.shard[0]}/{options.shard[1]}" if options.shard else None,
                      "end_date": end.date(), "tickers_total": len(selected),
                      "parameters": json.dumps({"options": _jsonable(options.__dict__),
                                                "config": self.config.redacted()}, default=str),
                      "version": __version__})
        for ticker in selected:
            self.outcomes[ticker] = TickerOutcome(ticker)
        log.info("run started: %d tickers through %s; %d calls planned (%d grouped, %d range) for %d missing cells",
                 len(selected), end.date(), plan.calls, len(plan.grouped), len(plan.ranges), plan.missing_cells)
        state = {"status": "running", "error": None, "stopped": None, "remaining_calls": 0,
                 "restated": {}, "exit_code": 0, "splits_failed": None}
        try:
            with self.performance_monitor.monitor_operation("complete_ingestion"):
                if options.verify_adjustments:
                    self._verify_adjustments(lock, selected, end, state)
                elif plan.calls and (options.shard is None or options.shard[0] == 1):
                    self._apply_new_splits(lock, universe, end, state)
                    # Restated tickers were refetched through ``end``: replan without them.
                    if state["restated"]:
                        plan, missing = self.make_plan(universe if options.shard else selected, options, end)
                        if options.shard:
                            plan = self._share_of(plan, options.shard, set(selected))
                if not options.verify_adjustments:
                    self._execute(plan, missing, end, lock, options, state, started)
                self._check_stop()  # a signal during a run with nothing to fetch still counts
        except InterruptedRun as exc:
            state.update(status="interrupted", error=str(exc), exit_code=exc.exit_code)
        except FatalError as exc:
            log.error("%s", exc)
            state.update(status="failed", error=str(exc), exit_code=exc.exit_code)
        except CandleThrobError as exc:
            state.update(status="failed", error=str(exc), exit_code=exc.exit_code)
        except (OperationalError, InterfaceError) as exc:
            message = f"the database failed during the run ({wh.describe()}): {exc.orig}"
            log.error("%s", message)
            state.update(status="failed", error=message, exit_code=DatabaseUnavailableError.exit_code)
        except Exception as exc:  # an unforeseen bug: record it, then let it surface
            state.update(status="failed", error=f"{exc.__class__.__name__}: {exc}", exit_code=1)
            self._finish(state, started, end, plan, selected)
            raise
        return self._finish(state, started, end, plan, selected)

    # ---- splits -----------------------------------------------------------------------
    def _apply_new_splits(self, lock: RunLock, universe: Sequence[str], end: pd.Timestamp, state: dict) -> None:
        """Ask the splits feed once for what executed since the last check (every
        ticker's splits are recorded, whoever this run is for), then restate each
        ticker of this run that has a split not yet applied."""
        wh = self.warehouse
        since_text = wh.get_state(LAST_SPLIT_CHECK)
        since = dt.date.fromisoformat(since_text) if since_text else None
        if since is None or since < end.date():
            if not wh.has_coverage():
                splits = []  # nothing stored yet: every bar will come already adjusted
            else:
                try:
                    splits = self.source.fetch_splits(since, end.date())
                except (RetriableError, SkippableError) as exc:
                    # The bars can still be fetched; the next run asks again from the same date.
                    log.error("splits feed failed, split restatements wait for the next run: %s", exc)
                    state["splits_failed"] = str(exc)
                    splits = None
            if splits is not None:
                with wh.transaction() as conn:
                    lock.assert_held(conn)
                    wh.record_splits(conn, splits)
                    wh.set_state(conn, LAST_SPLIT_CHECK, end.date().isoformat())
        members = set(universe)
        pending: dict[str, list[dt.date]] = {}
        for split in wh.unapplied_splits():
            if split["ticker"] in members:
                pending.setdefault(split["ticker"], []).append(split["execution_date"])
        for ticker, days in sorted(pending.items()):
            self._check_stop()
            span = wh.stored_span(ticker)
            if span is None or span[0] >= max(days):
                # Nothing stored before the split: nothing is on the old basis.
                with wh.transaction() as conn:
                    lock.assert_held(conn)
                    wh.mark_split_applied(conn, ticker, self.run_id)
                continue
            self._restate(lock, ticker, span[0], end, state, reason=f"split on {', '.join(map(str, sorted(days)))}")

    def _restate(self, lock: RunLock, ticker: str, start: dt.date, end: pd.Timestamp, state: dict,
                 reason: str, compare: bool = False) -> int:
        """Refetch a ticker's history with one range call and replace it in one
        transaction. With ``compare``, only when the fresh history differs."""
        wh = self.warehouse
        outcome = self.outcomes.setdefault(ticker, TickerOutcome(ticker))
        began = time.monotonic()
        try:
            fresh = self.source.fetch_range(ticker, start, end.date())
        except (SkippableError, RetriableError) as exc:
            outcome.status, outcome.error = "failed", f"restatement failed: {exc}"
            return 0
        finally:
            outcome.api_calls += 1
        fresh = fresh.assign(source="range")
        result = self.validator.check(fresh, end=end, splits=self._split_dates())
        low = [q for q in result.tickers.values() if not q.ok]
        if low:
            outcome.status = "failed"
            outcome.error = (f"restatement refused: the fresh history scores {low[0].score:.4f}, below "
                             f"MIN_DATA_QUALITY_SCORE {self.config.min_data_quality_score}")
            log.error("%s: %s", ticker, outcome.error)
            return 0
        changed = len(fresh)
        if compare:
            changed = _count_changed(wh.bars([ticker], start, end.date()), result.accepted)
            if changed == 0:
                outcome.flags["verified_unchanged"] = True
                outcome.duration_s += time.monotonic() - began
                return 0
        with wh.transaction() as conn:
            lock.assert_held(conn)
            deleted, written = wh.replace_history(conn, ticker, start, end.date(), result.accepted, self.run_id)
            wh.write_rejected(conn, result.rejected, self.run_id)
            wh.add_coverage(conn, {ticker: [(start, end.date())]}, self.run_id, self._merge)
            wh.mark_split_applied(conn, ticker, self.run_id)
            outcome.bars_fetched += len(fresh)
            outcome.bars_written += written
            outcome.bars_rejected += len(result.rejected)
            outcome.flags.setdefault("restated", []).append(
                {"reason": reason, "from": str(start), "to": str(end.date()),
                 "bars_replaced": int(deleted), "bars_changed": int(changed)})
            outcome.duration_s += time.monotonic() - began
            wh.write_audit(conn, [outcome.row(self.run_id)])
        state["restated"][ticker] = changed
        log.info("restated %s from %s to %s (%s): %d bars changed", ticker, start, end.date(), reason, changed)
        return changed

    def _verify_adjustments(self, lock: RunLock, tickers: Sequence[str], end: pd.Timestamp, state: dict) -> None:
        for ticker in tickers:
            self._check_stop()
            span = self.warehouse.stored_span(ticker)
            if span is not None:
                self._restate(lock, ticker, span[0], min(end, pd.Timestamp(span[1])), state,
                              reason="verify-adjustments", compare=True)

    def _split_dates(self) -> dict[str, set]:
        return {t: {pd.Timestamp(d) for d in days} for t, days in self.warehouse.known_splits().items()}

    # ---- fetch, validate, store --------------------------------------------------------
    def _merge(self, intervals):
        """Union of coverage intervals; two that only a weekend or holiday separates join."""
        return merge_intervals(intervals, self.calendar.session_days)

    def _execute(self, plan: Plan, missing: dict[str, pd.DatetimeIndex], end: pd.Timestamp, lock: RunLock,
                 options: RunOptions, state: dict, started: float) -> None:
        total = plan.calls
        batch_size = self.config.batch_size
        # Grouped days and ranges never share a batch: their answers are scored differently.
        batches = [plan.grouped[i:i + batch_size] for i in range(0, len(plan.grouped), batch_size)] \
            + [plan.ranges[i:i + batch_size] for i in range(0, len(plan.ranges), batch_size)]
        # Cells each grouped day must fill: the tickers missing that session.
        grouped_days = pd.DatetimeIndex([call.session for call in plan.grouped])
        wanted_on: dict[pd.Timestamp, set[str]] = {day: set() for day in grouped_days}
        if len(grouped_days):
            for ticker, days in missing.items():
                for day in days[days.isin(grouped_days)]:
                    wanted_on[day].add(ticker)
        typical = int(self.warehouse.get_state(GROUPED_TYPICAL) or 0)
        previous = self.warehouse.latest_closes()
        splits = self._split_dates()
        progress = Progress(total=total, enabled=options.progress)
        suspects: set[str] = set()
        done = 0
        # The next batch is fetched while this one is validated and written, so the
        # source and the database work at the same time.
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-ahead")
        pending = None
        try:
            for index, batch in enumerate(batches):
                if pending is None:
                    if self._out_of_budget(state, started, total - done):
                        return
                    pending = ahead.submit(self._fetch, batch, typical)
                results, failure = pending.result()
                pending = None
                # A normal session's size follows the market (listings come and go), so
                # it is the latest batch's median, not a record that only ever rises.
                sizes = sorted(len(r.bars) for r in results if isinstance(r.call, GroupedCall) and r.bars is not None)
                typical = sizes[len(sizes) // 2] if sizes else typical
                if failure is None and index + 1 < len(batches) and not self.stop_event.is_set() \
                        and not self._out_of_budget(state, started, total - done - len(results)):
                    pending = ahead.submit(self._fetch, batches[index + 1], typical)
                # Calls already paid for are kept, even when the batch was cut short.
                suspects |= self._store(results, wanted_on, end, lock, previous, splits, typical,
                                        grouped=isinstance(batch[0], GroupedCall))
                done += len(results)
                progress.update(len(results), bars=sum(len(r.bars) for r in results if r.bars is not None),
                                api_calls=self.source.total_calls)
                if failure is not None:
                    raise failure
                if state["stopped"]:
                    return
                self._check_stop()
        except InterruptedRun:
            state["remaining_calls"] = total - done
            raise
        finally:
            if pending is not None:  # leaving on an error: cut the fetch ahead short
                self.stop_event.set()
            ahead.shutdown(wait=True)
            progress.close()
        self._recheck_split_suspects(suspects, lock, end, state)

    def _out_of_budget(self, state: dict, started: float, remaining: int) -> bool:
        """MAX_PROCESSING_TIME or MAX_MEMORY_USAGE reached: record it and say stop."""
        if time.monotonic() - started >= self.config.max_processing_time:
            state["stopped"] = "max_processing_time"
            log.warning("MAX_PROCESSING_TIME (%.0f s) reached: %d calls left for the next run",
                        self.config.max_processing_time, remaining)
        elif self.memory_budget.exceeded():
            state["stopped"] = "max_memory_usage"
            log.warning("memory at %.0f MB, near MAX_MEMORY_USAGE (%.0f MB): stopping with %d calls left",
                        self.memory_budget.rss_mb(), self.config.max_memory_usage, remaining)
        else:
            return False
        state["remaining_calls"] = remaining
        return True

    def _recheck_split_suspects(self, suspects: set[str], lock: RunLock, end: pd.Timestamp, state: dict) -> None:
        """A new bar at a split-like ratio to the stored close, with no split on
        record: the vendor's feed may have missed the split while its adjusted
        history did not. One range call per suspect decides; history that
        differs from the fresh one is restated."""
        for ticker in sorted(suspects - set(state["restated"])):
            self._check_stop()
            span = self.warehouse.stored_span(ticker)
            if span is not None:
                self._restate(lock, ticker, span[0], pd.Timestamp(span[1]), state,
                              reason="split-like move with no split on record", compare=True)

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise InterruptedRun(self.stop_signal or 15)

    def _fetch(self, batch: list, typical: int) -> tuple[list[CallResult], Optional[BaseException]]:
        """Make a batch's calls, concurrently when allowed. Returns the completed
        calls and what cut the batch short, if anything: a fatal error in one
        worker, or a stop request, ends the others before their next request."""
        min_tickers = max(1, int(typical * GROUPED_MIN_SHARE))
        fatal: list[FatalError] = []

        def one(call) -> CallResult:
            began = time.monotonic()
            try:
                self._check_stop()
                if isinstance(call, GroupedCall):
                    bars = self.source.fetch_grouped(call.session.date(), min_tickers=min_tickers)
                else:
                    bars = self.source.fetch_range(call.ticker, call.start.date(), call.end.date())
                return CallResult(call, bars=bars, seconds=time.monotonic() - began)
            except (SkippableError, RetriableError) as exc:
                return CallResult(call, error=exc, seconds=time.monotonic() - began)
            except FatalError as exc:
                fatal.append(exc)
                self.stop_event.set()  # wakes and stops the other workers
                raise

        workers = min(self.config.workers, len(batch))
        if workers <= 1:
            results = []
            for call in batch:
                try:
                    results.append(one(call))
                except (FatalError, InterruptedRun) as exc:
                    return results, exc
            return results, None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
            futures = [pool.submit(one, call) for call in batch]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            finally:
                if any(f.done() and f.exception() for f in futures):
                    self.stop_event.set()
                for f in futures:
                    f.cancel()
        completed = [f for f in futures if not f.cancelled()]
        failures = [f.exception() for f in completed if f.exception() is not None]
        results = [f.result() for f in completed if f.exception() is None]
        return results, (fatal[0] if fatal else failures[0] if failures else None)

    def _store(self, results: list[CallResult], wanted_on: dict, end: pd.Timestamp,
               lock: RunLock, previous: dict, splits: dict, typical: int, grouped: bool) -> set[str]:
        """Validate and write one batch in one transaction; returns the tickers whose
        first new bar sits at a split-like ratio to their stored close."""
        frames, coverage, flagged = [], {}, set()
        for result in results:
            call = result.call
            if isinstance(call, GroupedCall):
                wanted = wanted_on.get(call.session, set())
                if result.error is not None:
                    for ticker in wanted & self.outcomes.keys():
                        self.outcomes[ticker].flag("grouped_days_failed", [str(call.session.date())])
                        flagged.add(ticker)
                    self.failed_days.append(str(call.session.date()))
                    log.error("grouped day %s failed: %s", call.session.date(), result.error)
                    continue
                bars = result.bars[result.bars["ticker"].isin(wanted)]
                absent = sorted(wanted - set(bars["ticker"]))
                for ticker in absent:
                    if ticker in self.outcomes:
                        self.outcomes[ticker].flag("absent_from_grouped_day", [str(call.session.date())])
                        flagged.add(ticker)
                frames.append(bars.assign(source="grouped"))
                day = call.session.date()
                for ticker in wanted:
                    coverage.setdefault(ticker, []).append((day, day))
            else:
                outcome = self.outcomes.setdefault(call.ticker, TickerOutcome(call.ticker))
                outcome.api_calls += 1
                outcome.duration_s += result.seconds
                flagged.add(call.ticker)
                if result.error is not None:
                    outcome.status = "failed"
                    outcome.error = str(result.error)
                    log.error("%s: %s", call.ticker, result.error)
                    continue
                if result.bars.empty:
                    outcome.flags["no_data"] = f"{call.start.date()}..{call.end.date()}"
                    log.warning("%s: the source has no bars from %s to %s (not listed then, or an unknown "
                                "symbol)", call.ticker, call.start.date(), call.end.date())
                frames.append(result.bars.assign(source="range"))
                coverage.setdefault(call.ticker, []).append((call.start.date(), call.end.date()))
        bars = concat_bars(frames)
        if "source" not in bars:
            bars = bars.assign(source=pd.Series(dtype=object))
        check = self.validator.check(bars, end=end, splits=splits, previous_close=previous, gaps=not grouped)
        quarantined = check.quarantine_low_scores()
        for ticker in quarantined:
            coverage.pop(ticker, None)  # asked again next run: the vendor may have fixed it
        with self.warehouse.transaction() as conn:
            lock.assert_held(conn)
            written = self.warehouse.write_bars(conn, check.accepted, self.run_id)
            self.warehouse.write_rejected(conn, check.rejected, self.run_id)
            self.warehouse.add_coverage(conn, coverage, self.run_id, self._merge)
            if typical:
                self.warehouse.set_state(conn, GROUPED_TYPICAL, str(typical))
            touched = self._account(check, quarantined, bars) | flagged
            if self.config.enable_audit_trail and touched:
                self.warehouse.write_audit(conn, [self.outcomes[t].row(self.run_id) for t in sorted(touched)])
            self.warehouse.update_run(self.run_id, self._totals(), conn=conn)
        # Only a jump from the *stored* basis says the stored history may be stale.
        suspects = {t for t, q in check.tickers.items() if t in previous and q.split_like_moves
                    and q.split_like_moves[0][0] == q.first_date}
        if written:
            last = check.accepted.sort_values("trade_date").groupby("ticker").tail(1)
            for ticker, day, close in zip(last["ticker"], last["trade_date"], last["close"]):
                if ticker not in previous or previous[ticker][0] < day:
                    previous[ticker] = (day, float(close))
        return suspects

    def _account(self, check, quarantined: list[str], bars: pd.DataFrame) -> set[str]:
        touched = set()
        fetched = bars["ticker"].value_counts().to_dict()
        accepted = check.accepted["ticker"].value_counts().to_dict()
        rejected = check.rejected["ticker"].value_counts().to_dict()
        for ticker, quality in check.tickers.items():
            outcome = self.outcomes.setdefault(ticker, TickerOutcome(ticker))
            touched.add(ticker)
            outcome.bars_fetched += int(fetched.get(ticker, 0))
            outcome.bars_written += int(accepted.get(ticker, 0))
            outcome.bars_rejected += int(rejected.get(ticker, 0))
            outcome.quality_score = quality.score if outcome.quality_score is None \
                else min(outcome.quality_score, quality.score)
            outcome.add_dates(quality.first_date, quality.last_date)
            if quality.missing_sessions:
                outcome.flag("missing_sessions", [str(d.date()) for d in quality.missing_sessions])
            if quality.big_moves:
                outcome.flag("big_moves", [{"date": str(d.date()), "ratio": round(r, 6)}
                                           for d, r in quality.big_moves])
                log.warning("%s: one-day move beyond 50%% with no split on record on %s", ticker,
                            ", ".join(str(d.date()) for d, _ in quality.big_moves))
            if quality.split_like_moves:
                outcome.flag("split_like_moves", [{"date": str(d.date()), "split_from": a, "split_to": b}
                                                  for d, a, b in quality.split_like_moves])
            if quality.reasons_count:
                reasons = collections.Counter(outcome.flags.get("rejected_reasons", {}))
                reasons.update(quality.reasons_count)
                outcome.flags["rejected_reasons"] = dict(sorted(reasons.items()))
        for ticker in quarantined:
            outcome = self.outcomes[ticker]
            outcome.status = "quarantined"
            outcome.error = (f"quality score {check.tickers[ticker].score:.4f} below "
                             f"MIN_DATA_QUALITY_SCORE {self.config.min_data_quality_score}")
            log.error("%s quarantined: %s", ticker, outcome.error)
        for ticker in check.rejected["ticker"].unique():
            touched.add(ticker)
        return touched

    def _totals(self) -> dict:
        outcomes = self.outcomes.values()
        return {"tickers_ok": sum(o.status == "ok" for o in outcomes),
                "tickers_failed": sum(o.status in ("failed", "quarantined") for o in outcomes),
                "rows_written": sum(o.bars_written for o in outcomes),
                "rows_rejected": sum(o.bars_rejected for o in outcomes),
                "api_calls": self.source.total_calls if self._source is not None else 0}

    # ---- the end of a run -------------------------------------------------------------
    def _finish(self, state: dict, started: float, end: pd.Timestamp, plan: Plan, selected) -> dict:
        failed = sorted(t for t, o in self.outcomes.items() if o.status in ("failed", "quarantined"))
        status = state["status"]
        exit_code = state["exit_code"]
        if status == "running":
            if failed or state["stopped"] or self.failed_days or state["splits_failed"]:
                status, exit_code = "partial", 1
            else:
                status, exit_code = "success", 0
        totals = self._totals()
        try:
            self.warehouse.update_run(self.run_id, {**totals, "status": status, "finished_at": utcnow(),
                                                    "error": (state["error"] or None) and state["error"][:2000]})
        except Exception as exc:  # the database itself may be what failed
            log.error("could not record the run's end: %s", exc)
        source = self._source
        result = {
            "run_id": self.run_id, "status": status, "exit_code": exit_code,
            "end": end.date().isoformat(), "tickers": len(selected),
            "failed_tickers": failed, "error": state["error"], "stopped": state["stopped"],
            "remaining_calls": state["remaining_calls"],
            "planned_calls": plan.calls, "grouped_calls": len(plan.grouped), "range_calls": len(plan.ranges),
            "missing_cells": plan.missing_cells, **totals,
            "api_calls_by_endpoint": dict(source.calls) if source else {},
            "failed_api_calls": dict(source.failed_calls) if source else {},
            "retries_by_category": {getattr(k, "value", str(k)): v
                                    for k, v in source.retry_policy.stats.items()} if source else {},
            "rate_limited": source.rate_limiter.rate_limited_count if source else 0,
            "restated": state["restated"], "failed_grouped_days": self.failed_days,
            "splits_feed_error": state["splits_failed"],
            "seconds": round(time.monotonic() - started, 3),
            "peak_rss_mb": round(self.performance_monitor.peak_rss_mb(), 1),
            "database": self.warehouse.describe(),
            "outcomes": {t: {k: v for k, v in o.row(self.run_id).items() if k != "run_id"}
                         for t, o in sorted(self.outcomes.items())},
            "metrics": self.performance_monitor.snapshot(),
        }
        log.log(logging.INFO if exit_code == 0 else logging.WARNING,
                "run finished: %s (exit %d), %d bars written, %d rejected, %d API calls, %.1f s",
                status, exit_code, totals["rows_written"], totals["rows_rejected"], totals["api_calls"],
                result["seconds"])
        return result


def _count_changed(stored: pd.DataFrame, fresh: pd.DataFrame, tolerance: float = 1e-9) -> int:
    """Bars that differ between stored and fresh history (values, or present in one only)."""
    cols = ["open", "high", "low", "close", "volume"]
    joined = stored[["trade_date", *cols]].merge(fresh[["trade_date", *cols]], on="trade_date", how="outer",
                                                suffixes=("_s", "_f"))
    differs = pd.Series(False, index=joined.index)
    for c in cols:
        a, b = joined[f"{c}_s"], joined[f"{c}_f"]
        differs |= a.isna() ^ b.isna()
        differs |= ((a - b).abs() > tolerance * b.abs().clip(lower=1)).fillna(False)
    return int(differs.sum())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, pd.Timestamp)):
        return str(value)
    return value
