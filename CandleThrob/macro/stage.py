"""The macro stage: bring every ``MACRO_SERIES`` up to date from FRED, one series at a time.

Per series and night (``store.py`` says why this is enough):

1. ``fred/series``: FRED's ``last_updated``;
2. only when it moved since the last completed check, or the series was never
   fetched: ``fred/series/observations`` for every vintage from that check's date on;
3. one transaction, after proving the run still holds the lock: the vintages, the
   checkpoint (``macro_series``) and the series' audit row.

So a night costs one call per series, plus one per series FRED changed. A series
whose calls fail (retries spent, or refused for that series) is recorded and left
for the next run, and the run ends partial; a refused key stops the run (exit 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from CandleThrob.errors import OutOfTimeError, RetriableError, SkippableError
from CandleThrob.macro.fred import SeriesInfo, VintageBatch
from CandleThrob.macro.outcome import FAILED, SeriesOutcome
from CandleThrob.macro.store import (StoreResult, known_series, naive_utc, next_request, store_vintages,
                                     upsert_series_info, write_audit)

if TYPE_CHECKING:
    from CandleThrob.ingestion.state import RunState
    from CandleThrob.source.fred import FredSource
    from CandleThrob.warehouse.lock import RunLock
    from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.macro")
_LISTED = 20  # rejected rows and in-place changes listed in an audit row (all are counted)


@dataclass(frozen=True)
class MacroPlan:
    """The series a run brings up to date; the calls are known only within bounds, because
    whether FRED changed a series is what the first call of each asks."""

    series: tuple[str, ...] = ()
    never_fetched: tuple[str, ...] = ()
    skipped: Optional[str] = None  # why the stage does not run

    @property
    def min_calls(self) -> int:
        return len(self.series) + len(self.never_fetched)

    @property
    def max_calls(self) -> int:
        return 2 * len(self.series)

    def calls_text(self) -> str:
        return f"{self.min_calls}" if self.min_calls == self.max_calls else f"{self.min_calls}-{self.max_calls}"

    def describe(self) -> list[str]:
        if self.skipped:
            return [f"macro series: skipped ({self.skipped})"]
        if not self.series:
            return []
        count = len(self.series)
        return [f"macro series: {self.calls_text()} FRED calls for {count} series: {count} fred/series checks, "
                f"then fred/series/observations for the {len(self.never_fetched)} never fetched and for each "
                "whose last_updated moved (one more per extra page of 100,000 rows)"]


class MacroStage:
    def __init__(self, source: Callable[[], "FredSource"], warehouse: "Warehouse", lock: Optional["RunLock"], *,
                 audit: bool = True, check_stop: Callable[[], None] = lambda: None,
                 check_time: Callable[[], None] = lambda: None):
        self.source = source
        self.warehouse = warehouse
        self.lock = lock
        self.audit = audit
        self.check_stop = check_stop
        self.check_time = check_time

    def plan(self, series_ids: Iterable[str]) -> MacroPlan:
        series = tuple(series_ids)
        with self.warehouse.engine.connect() as conn:
            known = known_series(conn)
        return MacroPlan(series, tuple(s for s in series if s not in known))

    def run(self, state: "RunState", plan: MacroPlan) -> None:
        macro = state.macro
        macro.ran = True
        for series_id in plan.series:
            macro.outcome(series_id)
        try:
            for index, series_id in enumerate(plan.series):
                self.check_stop()
                try:
                    self.check_time()
                except OutOfTimeError:
                    macro.stopped = "max_processing_time"
                    for later in plan.series[index:]:
                        macro.outcome(later).status = "not_run"
                    log.warning("MAX_PROCESSING_TIME reached: %d macro series left for the next run",
                                len(plan.series) - index)
                    return
                self._update(state, macro.outcome(series_id))
        finally:
            stats = self.source().stats()
            macro.calls, macro.retries = stats.calls, stats.retries_by_category

    def _update(self, state: "RunState", outcome: SeriesOutcome) -> None:
        source = self.source()
        before = source.stats().total
        try:
            info = source.client.series_info(outcome.series_id)
            with self.warehouse.engine.connect() as conn:
                ask = next_request(conn, info)
            batch = None if ask is None else source.client.observations(
                ask.series_id, ask.realtime_start, observation_start=ask.observation_start)
        except (RetriableError, SkippableError) as exc:
            outcome.status, outcome.error = FAILED, str(exc)
            outcome.api_calls = source.stats().total - before
            log.error("macro series %s failed; the next run asks again: %s", outcome.series_id, exc)
            self._commit(state, outcome)
            return
        outcome.api_calls = source.stats().total - before
        self._commit(state, outcome, info, batch)

    def _commit(self, state: "RunState", outcome: SeriesOutcome, info: Optional[SeriesInfo] = None,
                batch: Optional[VintageBatch] = None) -> None:
        """The vintages, the checkpoint and the audit row: all of them or none."""
        with self.warehouse.transaction() as conn:
            if self.lock is not None:
                self.lock.assert_held(conn)
            now = self.warehouse.now()
            if batch is not None:
                _record(outcome, batch, store_vintages(conn, batch, run_id=state.run_id, ingested_at=now))
            if info is not None:
                upsert_series_info(conn, info, run_id=state.run_id, checked_at=now)
                outcome.last_updated = naive_utc(info.last_updated)
            if self.audit:
                write_audit(conn, outcome.row(state.run_id), now)


def _record(outcome: SeriesOutcome, batch: VintageBatch, result: StoreResult) -> None:
    outcome.rows_fetched = len(batch.vintages) + len(batch.rejected)
    outcome.observations_added = result.observations
    outcome.vintages_added = result.inserted
    outcome.vintages_closed = result.closed
    outcome.rows_rejected = len(batch.rejected)
    if batch.rejected:
        outcome.flags["rejected_rows"] = [{"row": str(r.row)[:200], "reason": r.reason}
                                          for r in batch.rejected[:_LISTED]]
        log.warning("%s: %d rows FRED sent are not stored (e.g. %s: %s)", outcome.series_id, len(batch.rejected),
                    batch.rejected[0].reason, str(batch.rejected[0].row)[:200])
    if result.conflicts:
        # FRED rewrote a vintage it had published: the stored value stays (what was known then).
        outcome.flags["changed_in_place"] = [{"observation_date": v.observation_date,
                                              "realtime_start": v.realtime_start, "value": v.value}
                                             for v in result.conflicts[:_LISTED]]
        outcome.flags["changed_in_place_count"] = len(result.conflicts)
        log.warning("%s: FRED changed %d published vintages in place; the stored values are kept",
                    outcome.series_id, len(result.conflicts))
