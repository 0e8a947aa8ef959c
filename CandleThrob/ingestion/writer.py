"""The store stage: the one write path of a run.

Every kind of write (a batch of grouped days or ranges, a restatement) goes
through ``BatchWriter.commit``: bars, rejected bars, coverage (the checkpoint),
audit rows and the run's totals in one transaction, after proving that this
run still holds the lock. A killed run therefore leaves all of a write or none
of it, and a run that lost its lock writes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import pandas as pd
from sqlalchemy.engine import Connection

from CandleThrob.ingestion.state import RunState
from CandleThrob.planning.coverage import Interval, merge_intervals
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.quality.validator import QualityResult
from CandleThrob.warehouse.lock import RunLock
from CandleThrob.warehouse.storage import Warehouse


@dataclass
class Write:
    """What one transaction stores besides the validated bars."""

    coverage: dict[str, list[Interval]] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)  # tickers whose audit row changed
    # (ticker, first, last): the stored bars in this span are replaced (a restatement)
    replace: Optional[tuple[str, object, object]] = None
    also: Sequence[Callable[[Connection], None]] = ()  # more writes that belong to the same transaction
    replaced: int = 0  # set by the commit: the stored bars ``replace`` deleted


class BatchWriter:
    def __init__(self, warehouse: Warehouse, lock: RunLock, calendar: TradingCalendar, *, audit: bool,
                 run_totals: Callable[[], dict]):
        self.warehouse = warehouse
        self.lock = lock
        self.calendar = calendar
        self.audit = audit
        self.run_totals = run_totals

    def merge(self, intervals: Sequence[Interval]) -> list[Interval]:
        """Union of coverage intervals; two that only a weekend or holiday separates join."""
        return merge_intervals(intervals, self.calendar.session_days)

    def commit(self, state: RunState, check: QualityResult, write: Write) -> int:
        """Store ``check.accepted`` and ``check.rejected`` with ``write`` in one transaction;
        returns the bars written."""
        wh = self.warehouse
        with wh.transaction() as conn:
            self.lock.assert_held(conn)
            if write.replace is not None:
                ticker, first, last = write.replace
                write.replaced = wh.delete_bars(conn, ticker, first, last)
            # The checkpoint first: if anything after it fails, the transaction takes it back too.
            wh.add_coverage(conn, write.coverage, state.run_id, self.merge)
            written = wh.write_bars(conn, check.accepted, state.run_id)
            wh.write_rejected(conn, check.rejected, state.run_id)
            for extra in write.also:
                extra(conn)
            if self.audit and write.touched:
                wh.write_audit(conn, [state.outcome(t).row(state.run_id) for t in sorted(write.touched)])
            wh.update_run(state.run_id, self.run_totals(), conn=conn)
        return written


def with_source(bars: pd.DataFrame) -> pd.DataFrame:
    """A bars frame with the lineage column every write needs, even when empty."""
    return bars if "source" in bars else bars.assign(source=pd.Series(dtype=object))
