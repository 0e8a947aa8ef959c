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
from CandleThrob.errors import FatalError, InterruptedRun, RetriableError, SkippableError
from CandleThrob.ingestion.state import CallResult, RunState
from CandleThrob.ingestion.writer import BatchWriter, Write, with_source
from CandleThrob.planning.planner import GroupedCall, Plan, RangeCall
from CandleThrob.quality.validator import DataQualityValidator
from CandleThrob.reporting.monitor import MemoryBudget
from CandleThrob.reporting.progress import Progress
from CandleThrob.source.polygon import PolygonSource
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
                 stop_event: threading.Event, check_stop: Callable[[], None]):
        self.config = config
        self.source = source  # built on first use: a run with nothing to fetch needs no key check
        self.warehouse = warehouse
        self.writer = writer
        self.validator = validator
        self.clock = clock
        self.stop_event = stop_event
        self.check_stop = check_stop
        self.memory_budget = MemoryBudget(config.max_memory_usage)

    def run(self, state: RunState, plan: Plan, missing: dict[str, pd.DatetimeIndex],
            splits: dict[str, set], progress: bool) -> set[str]:
        """Fetch and store every call of ``plan``; returns the split suspects (see ``store``)."""
        total = plan.calls
        size = self.config.batch_size
        batches = [plan.grouped[i:i + size] for i in range(0, len(plan.grouped), size)] \
            + [plan.ranges[i:i + size] for i in range(0, len(plan.ranges), size)]
        wanted_on = _wanted_on(plan, missing)
        typical = int(self.warehouse.get_state(GROUPED_TYPICAL) or 0)
        previous = self.warehouse.latest_closes()
        bar = Progress(total=total, enabled=progress)
        suspects: set[str] = set()
        done = 0
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-ahead")
        pending: Optional[Future] = None
        try:
            for index, batch in enumerate(batches):
                if pending is None:
                    if self.out_of_budget(state, total - done):
                        return suspects
                    pending = ahead.submit(self.fetch, batch, typical)
                results, failure = pending.result()
                pending = None
                # A normal session's size follows the market (listings come and go), so
                # it is the latest batch's median, not a record that only ever rises.
                sizes = sorted(len(r.bars) for r in results if isinstance(r.call, GroupedCall) and r.bars is not None)
                typical = sizes[len(sizes) // 2] if sizes else typical
                if failure is None and index + 1 < len(batches) and not self.stop_event.is_set() \
                        and not self.out_of_budget(state, total - done - len(results)):
                    pending = ahead.submit(self.fetch, batches[index + 1], typical)
                suspects |= self.store(state, results, wanted_on, previous, splits, typical,
                                       grouped=isinstance(batch[0], GroupedCall))
                done += len(results)
                bar.update(len(results), bars=sum(len(r.bars) for r in results if r.bars is not None),
                           api_calls=self.source().stats().total)
                if failure is not None:
                    raise failure
                if state.stopped:
                    return suspects
                self.check_stop()
        except InterruptedRun:
            state.remaining_calls = total - done
            raise
        finally:
            if pending is not None:  # leaving on an error: cut the fetch ahead short
                self.stop_event.set()
            ahead.shutdown(wait=True)
            bar.close()
        return suspects

    def out_of_budget(self, state: RunState, remaining: int) -> bool:
        """MAX_PROCESSING_TIME or MAX_MEMORY_USAGE reached: record it and say stop."""
        if self.clock.monotonic() - state.started >= self.config.max_processing_time:
            state.stopped = "max_processing_time"
            log.warning("MAX_PROCESSING_TIME (%.0f s) reached: %d calls left for the next run",
                        self.config.max_processing_time, remaining)
        elif self.memory_budget.exceeded():
            state.stopped = "max_memory_usage"
            log.warning("memory at %.0f MB, near MAX_MEMORY_USAGE (%.0f MB): stopping with %d calls left",
                        self.memory_budget.rss_mb(), self.config.max_memory_usage, remaining)
        else:
            return False
        state.remaining_calls = remaining
        return True

    def fetch(self, batch: Batch, typical: int) -> tuple[list[CallResult], Optional[BaseException]]:
        """Make a batch's calls, concurrently when allowed. Returns the completed
        calls and what cut the batch short, if anything: a fatal error in one
        worker, or a stop request, ends the others before their next request."""
        min_tickers = max(1, int(typical * GROUPED_MIN_SHARE))
        fatal: list[FatalError] = []
        source = self.source()

        def one(call: Union[GroupedCall, RangeCall]) -> CallResult:
            began = self.clock.monotonic()
            try:
                self.check_stop()
                if isinstance(call, GroupedCall):
                    bars = source.fetch_grouped(call.session.date(), min_tickers=min_tickers)
                else:
                    bars = source.fetch_range(call.ticker, call.start.date(), call.end.date())
                return CallResult(call, bars=bars, seconds=self.clock.monotonic() - began)
            except (SkippableError, RetriableError) as exc:
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

    def store(self, state: RunState, results: list[CallResult], wanted_on: dict, previous: dict,
              splits: dict, typical: int, grouped: bool) -> set[str]:
        """Validate and write one batch; returns the tickers whose first new bar sits at
        a split-like ratio to their stored close."""
        frames, write = [], Write()
        for result in results:
            if isinstance(result.call, GroupedCall):
                frames += self._grouped_answer(state, result, wanted_on.get(result.call.session, set()), write)
            else:
                frames += self._range_answer(state, result, write)
        bars = with_source(concat_bars(frames))
        check = self.validator.check(bars, end=state.end, splits=splits, previous_close=previous, gaps=not grouped)
        quarantined = check.quarantine_low_scores()
        for ticker in quarantined:
            write.coverage.pop(ticker, None)  # asked again next run: the vendor may have fixed it
        write.touched |= state.record_check(check, quarantined, bars, self.config.min_data_quality_score)
        if typical:
            write.also = [lambda conn: self.warehouse.set_state(conn, GROUPED_TYPICAL, str(typical))]
        written = self.writer.commit(state, check, write)
        # Only a jump from the *stored* basis says the stored history may be stale.
        suspects = {t for t, q in check.tickers.items() if t in previous and q.split_like_moves
                    and q.split_like_moves[0][0] == q.first_date}
        if written:
            last = check.accepted.sort_values("trade_date").groupby("ticker").tail(1)
            for ticker, day, close in zip(last["ticker"], last["trade_date"], last["close"]):
                if ticker not in previous or previous[ticker][0] < day:
                    previous[ticker] = (day, float(close))
        return suspects

    @staticmethod
    def _grouped_answer(state: RunState, result: CallResult, wanted: set[str], write: Write) -> list[pd.DataFrame]:
        day = result.call.session.date()
        if result.error is not None:
            for ticker in wanted & state.outcomes.keys():
                state.outcomes[ticker].flag("grouped_days_failed", [str(day)])
                write.touched.add(ticker)
            state.failed_days.append(str(day))
            log.error("grouped day %s failed: %s", day, result.error)
            return []
        bars = result.bars[result.bars["ticker"].isin(wanted)]
        for ticker in sorted(wanted - set(bars["ticker"])):
            if ticker in state.outcomes:
                state.outcomes[ticker].flag("absent_from_grouped_day", [str(day)])
                write.touched.add(ticker)
        for ticker in wanted:
            write.coverage.setdefault(ticker, []).append((day, day))
        return [bars.assign(source="grouped")]

    @staticmethod
    def _range_answer(state: RunState, result: CallResult, write: Write) -> list[pd.DataFrame]:
        call = result.call
        outcome = state.outcome(call.ticker)
        outcome.api_calls += 1
        outcome.duration_s += result.seconds
        write.touched.add(call.ticker)
        if result.error is not None:
            outcome.status = "failed"
            outcome.error = str(result.error)
            log.error("%s: %s", call.ticker, result.error)
            return []
        if result.bars.empty:
            outcome.flags["no_data"] = f"{call.start.date()}..{call.end.date()}"
            log.warning("%s: the source has no bars from %s to %s (not listed then, or an unknown "
                        "symbol)", call.ticker, call.start.date(), call.end.date())
        write.coverage.setdefault(call.ticker, []).append((call.start.date(), call.end.date()))
        return [result.bars.assign(source="range")]


def _wanted_on(plan: Plan, missing: dict[str, pd.DatetimeIndex]) -> dict[pd.Timestamp, set[str]]:
    """Cells each grouped day must fill: the tickers missing that session."""
    days = pd.DatetimeIndex([call.session for call in plan.grouped])
    wanted: dict[pd.Timestamp, set[str]] = {day: set() for day in days}
    if len(days):
        for ticker, sessions in missing.items():
            for day in sessions[sessions.isin(days)]:
                wanted[day].add(ticker)
    return wanted
