"""The fetch stage: the plan's calls in batches, under the budgets, each batch validated and stored.

A batch is at most ``BATCH_SIZE`` calls of one kind (grouped days and ranges
never share one: their answers are scored differently). Its calls run
concurrently under the one rate limiter, and the next batch is fetched while
this one is validated and written, so the source and the database work at
the same time. Calls already paid for are kept even when a batch is cut short.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Callable, Optional, Union

import pandas as pd

from CandleThrob.bars import concat_bars
from CandleThrob.clock import Clock
from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.errors import FatalError, InterruptedRun, OutOfTimeError, RetriableError, SkippableError
from CandleThrob.ingestion.answers import gaps_and_fills, read_answers, revisions
from CandleThrob.ingestion.state import CallResult, RunState
from CandleThrob.ingestion.writer import BatchWriter, Write, with_source
from CandleThrob.planning.planner import GroupedCall, Plan, RangeCall
from CandleThrob.planning.stage import PlannedRun
from CandleThrob.quality.validator import DataQualityValidator, QualityResult
from CandleThrob.reporting.monitor import MemoryBudget
from CandleThrob.reporting.progress import Progress
from CandleThrob.source.polygon import PolygonSource
from CandleThrob.universe.market import MARKET
from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.pipeline")

# A grouped day holding fewer than this share of a normal day's tickers is a
# vendor glitch to retry, not a day on which most of the market did not trade.
GROUPED_MIN_SHARE = 0.5
GROUPED_TYPICAL = "grouped_typical_tickers"

Batch = list  # of GroupedCall or of RangeCall


class BatchExecutor:
    def __init__(self, config: AdvancedBatchConfig, source: Callable[[], PolygonSource], warehouse: Warehouse,
                 writer: BatchWriter, validator: DataQualityValidator, clock: Clock,
                 stop_event: threading.Event, check_stop: Callable[[], None], memory_budget: MemoryBudget):
        self.config = config
        self.source = source  # built on first use: a run with nothing to fetch needs no key check
        self.warehouse = warehouse
        self.writer = writer
        self.validator = validator
        self.clock = clock
        self.stop_event = stop_event
        self.check_stop = check_stop
        self.memory_budget = memory_budget

    def run(self, state: RunState, planned: PlannedRun, splits: dict[str, set], progress: Progress) -> None:
        """Fetch and store every call of the plan."""
        plan = planned.plan
        total = plan.calls
        size = self.config.batch_size
        batches = [plan.grouped[i:i + size] for i in range(0, len(plan.grouped), size)] \
            + [plan.ranges[i:i + size] for i in range(0, len(plan.ranges), size)]
        wanted_on = _wanted_on(plan, planned.missing)
        typical = int(self.warehouse.get_state(GROUPED_TYPICAL) or 0)
        previous = self.warehouse.latest_closes()
        done = 0
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-ahead")
        pending: Optional[Future] = None
        try:
            for index, batch in enumerate(batches):
                if pending is None:
                    if self.out_of_budget(state, total - done):
                        return
                    pending = ahead.submit(self.fetch, batch, typical, progress, wanted_on)
                results, failure = pending.result()
                pending = None
                # A normal session's size follows the market (listings come and go), so
                # it is the latest batch's median, not a record that only ever rises.
                sizes = sorted(r.bars.attrs.get("answered", len(r.bars)) for r in results
                               if isinstance(r.call, GroupedCall) and r.bars is not None)
                typical = sizes[len(sizes) // 2] if sizes else typical
                if failure is None and index + 1 < len(batches) and not self.stop_event.is_set() \
                        and not self.out_of_budget(state, total - done - len(results)):
                    pending = ahead.submit(self.fetch, batches[index + 1], typical, progress, wanted_on)
                self.store(state, planned, results, wanted_on, previous, splits, typical,
                           grouped=isinstance(batch[0], GroupedCall))
                done += len(results)
                progress.stored(state.totals()["rows_written"])
                if isinstance(failure, OutOfTimeError):
                    self._stop_for_time(state, total - done)
                    return
                if failure is not None:
                    raise failure
                if state.stopped:
                    return
                self.check_stop()
        except InterruptedRun:
            state.remaining_calls = total - done
            raise
        finally:
            if pending is not None:  # leaving on an error: cut the fetch ahead short
                self.stop_event.set()
            ahead.shutdown(wait=True)

    def _stop_for_time(self, state: RunState, remaining: int) -> None:
        state.stopped, state.remaining_calls = "max_processing_time", remaining
        log.warning("MAX_PROCESSING_TIME (%.0f s) reached: %d calls left for the next run",
                    self.config.max_processing_time, remaining)

    def out_of_budget(self, state: RunState, remaining: int) -> bool:
        """MAX_PROCESSING_TIME or MAX_MEMORY_USAGE reached: record it and say stop."""
        if self.clock.monotonic() - state.started >= self.config.max_processing_time:
            self._stop_for_time(state, remaining)
            return True
        if self.memory_budget.exceeded():
            state.stopped = "max_memory_usage"
            log.warning("memory at %.0f MB, near MAX_MEMORY_USAGE (%.0f MB): stopping with %d calls left",
                        self.memory_budget.rss_mb(), self.config.max_memory_usage, remaining)
        else:
            return False
        state.remaining_calls = remaining
        return True

    def fetch(self, batch: Batch, typical: int, progress: Progress, wanted_on: Optional[dict] = None
              ) -> tuple[list[CallResult], Optional[BaseException]]:
        """Make a batch's calls, concurrently when allowed. Returns the completed
        calls and what cut the batch short, if anything: a fatal error in one
        worker, or a stop request, ends the others before their next request.
        A grouped answer keeps the bars of the cells its day must fill (``wanted_on``)."""
        min_tickers = max(1, int(typical * GROUPED_MIN_SHARE))
        fatal: list[FatalError] = []
        source = self.source()

        def one(call: Union[GroupedCall, RangeCall]) -> CallResult:
            began = self.clock.monotonic()
            try:
                self.check_stop()
                if isinstance(call, GroupedCall):
                    keep = wanted_on.get(call.session) if wanted_on is not None else None
                    keep = None if keep is not None and MARKET in keep else keep  # the whole answer
                    bars = source.fetch_grouped(call.session.date(), min_tickers=min_tickers, tickers=keep)
                else:
                    bars = source.fetch_range(call.ticker, call.start.date(), call.end.date())
                progress.called(source.stats().total)
                return CallResult(call, bars=bars, seconds=self.clock.monotonic() - began)
            except (SkippableError, RetriableError) as exc:
                progress.called(source.stats().total)
                return CallResult(call, error=exc, seconds=self.clock.monotonic() - began)
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
                except (FatalError, InterruptedRun, OutOfTimeError) as exc:
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

    def store(self, state: RunState, planned: PlannedRun, results: list[CallResult], wanted_on: dict,
              previous: dict, splits: dict, typical: int, grouped: bool) -> None:
        """Validate and write one batch."""
        answers = read_answers(state, results, wanted_on, planned.missing, previous)
        bars = with_source(concat_bars(answers.frames))
        check = self.validator.check(bars, end=state.end, splits=splits, previous_close=previous, gaps=not grouped,
                                   retried=planned.retried)
        quarantined = check.quarantine_low_scores()
        for ticker in quarantined:
            answers.coverage.pop(ticker, None)  # asked again next run: the vendor may have fixed it
        gaps, filled = gaps_and_fills(answers, check.accepted, check.rejected, quarantined)
        write = Write(coverage=answers.coverage, touched=answers.touched, gaps=gaps, filled=filled)
        write.touched |= state.record_check(check, quarantined, bars, self.config.min_data_quality_score)
        write.touched |= self._revisions(state, planned.settle, check.accepted)
        self._flag_split_like(state, check, previous)
        if typical:
            write.also = [lambda conn: self.warehouse.set_state(conn, GROUPED_TYPICAL, str(typical))]
        written = self.writer.commit(state, check, write)
        # Sessions stored on their own evening: the planner's settle window asks them again later.
        recent = check.accepted["trade_date"][check.accepted["trade_date"] >= state.end - pd.Timedelta(days=31)]
        state.fetched_sessions |= set(recent.dt.date.unique())
        if written:
            last = check.accepted.sort_values("trade_date").groupby("ticker").tail(1)
            for ticker, day, close in zip(last["ticker"], last["trade_date"], last["close"]):
                if ticker not in previous or previous[ticker][0] < day:
                    previous[ticker] = (day, float(close))

    def _revisions(self, state: RunState, settle: frozenset, accepted: pd.DataFrame) -> set[str]:
        """Bars of sessions asked again to settle them, compared with what was stored."""
        days = sorted(settle & set(accepted["trade_date"].dt.date))
        touched: set[str] = set()
        for day in days:
            fresh = accepted[accepted["trade_date"].dt.date == day]
            stored = self.warehouse.bars(sorted(set(fresh["ticker"])), day, day, adjust="none")
            for item in revisions(stored, fresh):
                state.outcome(item["ticker"]).flag("revised", [item])
                state.revised += 1
                touched.add(item["ticker"])
            state.settled.add(day)
        if touched:
            log.info("%d bars revised by the vendor since they were stored (settle window); applied",
                     sum(len(state.outcomes[t].flags.get("revised", [])) for t in touched))
        return touched

    @staticmethod
    def _flag_split_like(state: RunState, check: QualityResult, previous: dict) -> None:
        """A first new bar at a split-like ratio to the stored close, with no split in the
        ledger: the ledger may have missed a split. Raw bars are as traded, so it is flagged
        for a person to look at, not restated."""
        for ticker, quality in check.tickers.items():
            if ticker in previous and quality.split_like_moves and quality.split_like_moves[0][0] == quality.first_date:
                state.outcome(ticker).flag("split_like_move_without_split", [str(quality.first_date.date())])
                log.warning("%s: a split-like move on %s and no split in the ledger", ticker,
                            quality.first_date.date())


def _wanted_on(plan: Plan, missing: dict[str, pd.DatetimeIndex]) -> dict[pd.Timestamp, set[str]]:
    """Cells each grouped day must fill: the tickers missing that session."""
    days = pd.DatetimeIndex([call.session for call in plan.grouped])
    wanted: dict[pd.Timestamp, set[str]] = {day: set() for day in days}
    if len(days):
        for ticker, sessions in missing.items():
            for day in sessions[sessions.isin(days)]:
                wanted[day].add(ticker)
    return wanted
