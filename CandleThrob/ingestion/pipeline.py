"""The orchestrator: universe -> coverage -> plan -> corporate actions -> fetch -> validate -> store -> macro
series -> report.

``CompleteDataIngestion`` only wires the stages, top to bottom, and tags a
failure with the stage it came from. What it wires them with (clock, calendar,
source, warehouse, universe fetcher, budgets) is its ``Runtime``; what a run
plans is ``work.py``, how it fetches is ``fetch.py``. ``docs/architecture.md``
draws the flow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import uuid
from dataclasses import replace
from typing import Any, Iterator, Optional, Sequence

import pandas as pd
from sqlalchemy.exc import DBAPIError

from CandleThrob import __version__
from CandleThrob.actions import upgrade
from CandleThrob.actions.stage import LedgerStage
from CandleThrob.errors import CandleThrobError, DatabaseUnavailableError, FatalError, InterruptedRun
from CandleThrob.ingestion.fetch import fetch_bars, oldest_call, probe_cutoff
from CandleThrob.ingestion.runtime import Runtime
from CandleThrob.ingestion.state import RunState
from CandleThrob.ingestion.verify import verify_adjustments
from CandleThrob.ingestion.work import RunOptions, Work, macro_only_work, macro_plan, plan_work
from CandleThrob.ingestion.writer import BatchWriter
from CandleThrob.logs import set_run_context
from CandleThrob.planning.window import resolve_end, validate_start
from CandleThrob.reporting.report import plan_result, run_result
from CandleThrob.universe.events import TickerEventsStage
from CandleThrob.universe.stage import Universe
from CandleThrob.warehouse.lock import RunLock

__all__ = ["CompleteDataIngestion", "RunOptions", "Work", "stage"]

log = logging.getLogger("CandleThrob.pipeline")


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


class CompleteDataIngestion(Runtime):
    """Brings the warehouse up to the last completed NYSE session."""

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
            self.check_memory_budget()
            end = resolve_end(options.end, self.calendar, self.clock)
            validate_start(options.start, self.config.history_start, end)
            if options.macro_only:
                self.fred_source  # noqa: B018 - no FRED key is a usage error, before any write
        universe: Optional[Universe] = None
        if options.macro_only:
            with stage("plan"):
                work = macro_only_work(macro_plan(self, options))
        else:
            with stage("universe"):
                universe = self.universe_stage().resolve(options.tickers, record=not options.plan_only)
            with stage("plan"):
                work = plan_work(self, universe, end, options)
        if options.plan_only:
            unknown = work.planned.floor is None and oldest_call(work.planned.plan, probe_cutoff(self, end))
            return plan_result(work, end, self.config.rate_limit_seconds, len(work.verify),
                               window_unknown_before=probe_cutoff(self, end) if unknown else None)

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
                replanned = plan_work(self, self.universe_stage().rebuild(universe), end, options)
        except InterruptedRun:
            raise
        except CandleThrobError as exc:
            if isinstance(exc, FatalError):
                raise
            log.warning("ticker events not settled this run: %s", exc)
            return work
        return replace(replanned, renames=work.renames)

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
        writer = BatchWriter(self.warehouse, lock, self.calendar, self.gaps(), audit=self.config.enable_audit_trail,
                             run_totals=lambda: {**state.totals(), "api_calls": self.stats().total})
        ledger = LedgerStage(lambda: self.source, self.warehouse, lock)
        try:
            with self.performance_monitor.monitor_operation("complete_ingestion"):
                if options.verify_adjustments:
                    with stage("verify"):
                        verify_adjustments(state, work.verify, lambda: self.source, self.warehouse,
                                           self.check_stop)
                elif work.bars:
                    self._bar_stages(state, work, options, lock, writer, ledger)
                if work.macro.series:
                    with stage("macro"):
                        self.macro_stage(lock).run(state, work.macro)
                self.check_stop()  # a signal during a run with nothing to fetch still counts
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
            fetch_bars(self, state, work, options, writer, ledger)
        with stage("corporate actions"):
            ledger.refresh_factors(state, changed | ledger.touched_by_bars(state))

    def _finish(self, state: RunState, work: Work) -> dict:
        state.settle()
        stats = self.stats()
        try:
            state.gaps = self.gaps().counts()
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.date, pd.Timestamp)):
        return str(value)
    return value
