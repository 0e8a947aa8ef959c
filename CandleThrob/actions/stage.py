"""The corporate-actions stage: keep the ledger current, and the factors computed from it.

Calls, each one asked of the splits and of the dividends endpoint:

* the first time: every event of the run's tickers from their history's start
  (``ticker.any_of``, a few hundred tickers per call);
* each later run with something to fetch: what happened since the last check,
  for every ticker (one call each, however many tickers);
* a ticker whose history starts before the ledger knows it (a new member, an
  earlier ``--start``, a warehouse of the first release): its events from then
  to the last check.

Raw bars never change because of an event; factors do, and only for the
tickers an event or a new bar touched.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import pandas as pd

from CandleThrob.actions import factors as factor_math
from CandleThrob.actions.records import parse_dividends, parse_splits
from CandleThrob.errors import RetriableError, SkippableError
from CandleThrob.ingestion.state import RunState
from CandleThrob.source.polygon import PolygonSource
from CandleThrob.warehouse.ledger import LedgerStore
from CandleThrob.warehouse.lock import RunLock
from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.actions")
LEDGER_THROUGH = "ledger_through"
ANY_OF_CHUNK = 600  # tickers per ``ticker.any_of`` request: the index in one URL of about 3 KB


@dataclass(frozen=True)
class LedgerCall:
    endpoint: str  # "splits" or "dividends"
    since: Optional[dt.date]  # exclusive; None: from ``first``
    until: dt.date
    tickers: Optional[tuple[str, ...]] = None  # None: every ticker
    first: Optional[dt.date] = None  # inclusive lower bound, for history calls


@dataclass
class LedgerPlan:
    calls: list[LedgerCall] = field(default_factory=list)
    known_from: dict[str, dt.date] = field(default_factory=dict)  # what the ledger knows after these calls
    through: Optional[dt.date] = None

    def describe(self) -> list[str]:
        if not self.calls:
            return []
        history = sum(1 for c in self.calls if c.tickers) // 2
        lines = [f"corporate actions: {len(self.calls)} calls (splits and dividends"
                 + (f"; {history} history request(s) for tickers the ledger does not know yet" if history else "")
                 + "), one more per extra page of 5,000 events"]
        return lines


class LedgerStage:
    def __init__(self, source: Callable[[], PolygonSource], warehouse: Warehouse, lock: Optional[RunLock]):
        self.source = source
        self.warehouse = warehouse
        self.store = LedgerStore(warehouse)
        self.lock = lock

    # ---- what to ask --------------------------------------------------------------
    def plan(self, starts: dict[str, dt.date], end: pd.Timestamp, has_work: bool,
             unfiltered: bool = False) -> LedgerPlan:
        """``starts``: per ticker of the run, the first date its bars will cover."""
        end_day = end.date()
        through_text = self.warehouse.get_state(LEDGER_THROUGH)
        through = dt.date.fromisoformat(through_text) if through_text else None
        known = self.store.known_from()
        need = {t: s for t, s in starts.items() if s < known.get(t, dt.date.max) and (through is None or s <= through)}
        plan = LedgerPlan(known_from=dict(known), through=through)
        if through is None:
            if not starts or not has_work:
                return plan
            tickers = None if unfiltered else sorted(starts)
            plan.calls = _calls(None, end_day, tickers, min(starts.values()))
            plan.known_from.update(starts)
            plan.through = end_day
            return plan
        if need:
            plan.calls += _calls(None, through, sorted(need), min(need.values()))
            plan.known_from.update({t: min(s, known.get(t, s)) for t, s in need.items()})
        if has_work and through < end_day:
            plan.calls += _calls(through, end_day, None, None)
            plan.through = end_day
        for ticker, start in starts.items():  # new since the last check: the incremental call covers them
            plan.known_from.setdefault(ticker, start)
        return plan

    # ---- asking -----------------------------------------------------------------------
    def run(self, state: RunState, plan: LedgerPlan) -> set[str]:
        """Make the plan's calls and store what they bring; returns the tickers with new or
        changed events. A failed call leaves the ledger as it was: the next run asks again."""
        if not plan.calls:
            return set()
        records: dict[str, list] = {"splits": [], "dividends": []}
        try:
            for call in plan.calls:
                fetch = self.source().fetch_splits if call.endpoint == "splits" else self.source().fetch_dividends
                since = call.since if call.first is None else call.first - dt.timedelta(days=1)
                records[call.endpoint] += fetch(since, call.until, call.tickers)
        except (RetriableError, SkippableError) as exc:
            log.error("corporate actions feed failed; the ledger waits for the next run: %s", exc)
            state.actions_feed_error = str(exc)
            return set()
        splits, rejected_splits = parse_splits(records["splits"])
        dividends, rejected_dividends = parse_dividends(records["dividends"])
        rejected = rejected_splits + rejected_dividends
        for rejection in rejected:
            log.warning("corporate action record rejected (%s): %s", rejection["reasons"],
                        str(rejection["record"])[:200])
        with self.warehouse.transaction() as conn:
            if self.lock is not None:
                self.lock.assert_held(conn)
            self.store.record(conn, splits, dividends, state.run_id)
            self.store.reject(conn, rejected, state.run_id)
            self.store.set_known_from(conn, plan.known_from)
            if plan.through is not None:
                self.warehouse.set_state(conn, LEDGER_THROUGH, plan.through.isoformat())
        state.actions = {"splits": len(splits), "dividends": len(dividends), "rejected": len(rejected)}
        state.new_event_ids = {r["event_id"] for r in splits + dividends}
        return {r["ticker"] for r in splits + dividends}

    def split_dates(self, tickers: Optional[Sequence[str]] = None) -> dict[str, set]:
        """ticker -> the dates of its splits on record (their price moves are expected)."""
        frame = self.store.splits(tickers)
        out: dict[str, set] = {}
        for ticker, day in frame[["ticker", "execution_date"]].itertuples(index=False):
            out.setdefault(ticker, set()).add(pd.Timestamp(day))
        return out

    # ---- factors ---------------------------------------------------------------------
    def touched_by_bars(self, state: RunState) -> set[str]:
        """Tickers with a dividend whose previous close this run may have written: an ex-date
        after a ticker's first new bar and at most a couple of weeks after its last."""
        written = {t: o for t, o in state.outcomes.items() if o.bars_written and o.first_date and o.last_date}
        if not written:
            return set()
        dividends = self.store.dividends(written)
        out = set()
        for ticker, day in dividends[["ticker", "ex_dividend_date"]].itertuples(index=False):
            outcome = written[ticker]
            if outcome.first_date < day <= outcome.last_date + dt.timedelta(days=14):
                out.add(ticker)
        return out

    def refresh_factors(self, state: RunState, tickers: set[str]) -> None:
        """Recompute the factor spans of ``tickers`` from the ledger and the raw closes, and
        compare ours with the vendor's for the events of this run."""
        if not tickers:
            return
        splits, dividends = self.store.splits(tickers), self.store.dividends(tickers)
        first_bar = {t: span[0] for t in tickers if (span := self.warehouse.stored_span(t)) is not None}
        result = factor_math.compute(splits, dividends, self.store.previous_closes(tickers), first_bar)
        fresh = [frame[frame["event_id"].isin(state.new_event_ids)] for frame in (splits, dividends)]
        differences = factor_math.vendor_differences(result, *fresh)
        for item in result.unapplied:
            state.outcome(item["ticker"]).flag("dividends_not_applied", [item])
        for item in differences:
            state.outcome(item["ticker"]).flag("vendor_factor_differs", [item])
            log.warning("%s: our %s factor at %s is %.9f, the vendor's %.9f", item["ticker"], item["kind"],
                        item["date"], item["ours"], item["vendor"])
        with self.warehouse.transaction() as conn:
            if self.lock is not None:
                self.lock.assert_held(conn)
            self.store.replace_factors(conn, sorted(tickers), result.spans, state.run_id)
        state.factors_refreshed |= set(tickers)


def _calls(since: Optional[dt.date], until: dt.date, tickers: Optional[list[str]],
           first: Optional[dt.date]) -> list[LedgerCall]:
    chunks = [None] if tickers is None else [tuple(tickers[i:i + ANY_OF_CHUNK])
                                             for i in range(0, len(tickers), ANY_OF_CHUNK)]
    return [LedgerCall(endpoint, since, until, chunk, first) for endpoint in ("splits", "dividends")
            for chunk in chunks]
