"""The split policy: keep stored (split-adjusted) history on one basis across splits.

Each run with something to fetch asks the splits feed once for the splits
executed since the last check, records them all, and restates every ticker of
the run with a split not yet applied: one range call over its stored span,
replaced in one transaction. A first new bar at a split-like ratio to the
stored close, with no split on record, is rechecked the same way; so is every
ticker under ``--verify-adjustments``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Callable, Optional, Sequence

import pandas as pd
from sqlalchemy.engine import Connection

from CandleThrob.clock import Clock
from CandleThrob.errors import RetriableError, SkippableError
from CandleThrob.ingestion.state import RunState
from CandleThrob.ingestion.writer import BatchWriter, Write
from CandleThrob.quality.validator import DataQualityValidator
from CandleThrob.source.polygon import PolygonSource
from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.pipeline")
LAST_SPLIT_CHECK = "last_split_check"


class SplitPolicy:
    def __init__(self, source: Callable[[], PolygonSource], warehouse: Warehouse, writer: BatchWriter,
                 validator: DataQualityValidator, clock: Clock, check_stop: Callable[[], None]):
        self.source = source
        self.warehouse = warehouse
        self.writer = writer
        self.validator = validator
        self.clock = clock
        self.check_stop = check_stop

    def split_dates(self) -> dict[str, set]:
        """ticker -> the dates of its splits on record (their moves are expected)."""
        return {t: {pd.Timestamp(d) for d in days} for t, days in self.warehouse.known_splits().items()}

    def apply_new(self, state: RunState, universe: Sequence[str]) -> None:
        """Ask the feed once for what executed since the last check (every ticker's
        splits are recorded, whoever this run is for), then restate each ticker of
        this run that has a split not yet applied."""
        wh, end = self.warehouse, state.end
        since_text = wh.get_state(LAST_SPLIT_CHECK)
        since = dt.date.fromisoformat(since_text) if since_text else None
        if since is None or since < end.date():
            self._record_feed(state, since)
        pending: dict[str, list[dt.date]] = {}
        members = set(universe)
        for split in wh.unapplied_splits():
            if split["ticker"] in members:
                pending.setdefault(split["ticker"], []).append(split["execution_date"])
        for ticker, days in sorted(pending.items()):
            self.check_stop()
            span = wh.stored_span(ticker)
            if span is None or span[0] >= max(days):
                # Nothing stored before the split: nothing is on the old basis.
                with wh.transaction() as conn:
                    self.writer.lock.assert_held(conn)
                    wh.mark_split_applied(conn, ticker, state.run_id)
                continue
            self.restate(state, ticker, span[0], end, reason=f"split on {', '.join(map(str, sorted(days)))}")

    def _record_feed(self, state: RunState, since: Optional[dt.date]) -> None:
        wh = self.warehouse
        if not wh.has_coverage():
            splits: list = []  # nothing stored yet: every bar will come already adjusted
        else:
            try:
                splits = self.source().fetch_splits(since, state.end.date())
            except (RetriableError, SkippableError) as exc:
                # The bars can still be fetched; the next run asks again from the same date.
                log.error("splits feed failed, split restatements wait for the next run: %s", exc)
                state.splits_feed_error = str(exc)
                return
        with wh.transaction() as conn:
            self.writer.lock.assert_held(conn)
            wh.record_splits(conn, splits)
            wh.set_state(conn, LAST_SPLIT_CHECK, state.end.date().isoformat())

    def restate(self, state: RunState, ticker: str, start: dt.date, end: pd.Timestamp, reason: str,
                compare: bool = False) -> int:
        """Refetch a ticker's history with one range call and replace it in one
        transaction. With ``compare``, only when the fresh history differs."""
        outcome = state.outcome(ticker)
        began = self.clock.monotonic()
        try:
            fresh = self.source().fetch_range(ticker, start, end.date())
        except (SkippableError, RetriableError) as exc:
            outcome.status, outcome.error = "failed", f"restatement failed: {exc}"
            return 0
        finally:
            outcome.api_calls += 1
        fresh = fresh.assign(source="range")
        check = self.validator.check(fresh, end=end, splits=self.split_dates())
        low = [q for q in check.tickers.values() if not q.ok]
        if low:
            outcome.status = "failed"
            outcome.error = (f"restatement refused: the fresh history scores {low[0].score:.4f}, below "
                             f"MIN_DATA_QUALITY_SCORE {self.validator.min_score}")
            log.error("%s: %s", ticker, outcome.error)
            return 0
        changed = len(fresh)
        if compare:
            changed = count_changed(self.warehouse.bars([ticker], start, end.date()), check.accepted)
            if changed == 0:
                outcome.flags["verified_unchanged"] = True
                outcome.duration_s += self.clock.monotonic() - began
                return 0
        outcome.bars_fetched += len(fresh)
        outcome.bars_written += len(check.accepted)
        outcome.bars_rejected += len(check.rejected)
        write = Write(coverage={ticker: [(start, end.date())]}, touched={ticker},
                      replace=(ticker, start, end.date()))

        def record(conn: Connection) -> None:
            self.warehouse.mark_split_applied(conn, ticker, state.run_id)
            outcome.flags.setdefault("restated", []).append(
                {"reason": reason, "from": str(start), "to": str(end.date()),
                 "bars_replaced": int(write.replaced), "bars_changed": int(changed)})
            outcome.duration_s += self.clock.monotonic() - began

        write.also = [record]
        self.writer.commit(state, check, write)
        state.restated[ticker] = changed
        log.info("restated %s from %s to %s (%s): %d bars changed", ticker, start, end.date(), reason, changed)
        return changed

    def verify(self, state: RunState, tickers: Sequence[str]) -> None:
        """``--verify-adjustments``: compare each ticker's stored history with a fresh range call."""
        for ticker in tickers:
            self.check_stop()
            span = self.warehouse.stored_span(ticker)
            if span is not None:
                self.restate(state, ticker, span[0], min(state.end, pd.Timestamp(span[1])),
                             reason="verify-adjustments", compare=True)

    def recheck(self, state: RunState, suspects: set[str]) -> None:
        """A new bar at a split-like ratio to the stored close, with no split on
        record: the vendor's feed may have missed the split while its adjusted
        history did not. One range call per suspect decides; history that
        differs from the fresh one is restated."""
        for ticker in sorted(suspects - set(state.restated)):
            self.check_stop()
            span = self.warehouse.stored_span(ticker)
            if span is not None:
                self.restate(state, ticker, span[0], state.end,
                             reason="split-like move with no split on record", compare=True)


def count_changed(stored: pd.DataFrame, fresh: pd.DataFrame, tolerance: float = 1e-9) -> int:
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
