"""The store stage: the one write path of a run.

Every batch goes through ``BatchWriter.commit``: coverage (the checkpoint),
bars, rejected bars, the cells to retry, audit rows and the run's totals in
one transaction, after proving that this run still holds the lock. A killed
run therefore leaves all of a write or none of it, and a run that lost its
lock writes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
from sqlalchemy.engine import Connection

from CandleThrob.ingestion.state import RunState
from CandleThrob.planning.coverage import Interval, merge_intervals
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.quality.validator import QualityResult
from CandleThrob.warehouse.gaps import Gap, GapStore
from CandleThrob.warehouse.lock import RunLock
from CandleThrob.warehouse.storage import Warehouse


@dataclass
class Write:
    """What one transaction stores besides the validated bars."""

    coverage: dict[str, list[Interval]] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)  # tickers whose audit row changed
    gaps: list[Gap] = field(default_factory=list)  # cells that yielded no valid bar
    filled: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["ticker", "trade_date"]))  # did
    also: Sequence[Callable[[Connection], None]] = ()  # more writes that belong to the same transaction


class BatchWriter:
    def __init__(self, warehouse: Warehouse, lock: RunLock, calendar: TradingCalendar, gaps: GapStore, *,
                 audit: bool, run_totals: Callable[[], dict]):
        self.warehouse = warehouse
        self.lock = lock
        self.gaps = gaps
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
            # The checkpoint first: if anything after it fails, the transaction takes it back too.
            wh.add_coverage(conn, write.coverage, state.run_id, self.merge)
            written = wh.write_bars(conn, check.accepted, state.run_id)
            wh.write_rejected(conn, check.rejected, state.run_id)
            for hole in self.gaps.record(conn, write.gaps, write.filled, state.end, state.run_id):
                state.outcome(hole.ticker).flag("vendor_holes", [str(hole.trade_date)])
                write.touched.add(hole.ticker)
            for extra in write.also:
                extra(conn)
            if self.audit and write.touched:
                wh.write_audit(conn, [state.outcome(t).row(state.run_id) for t in sorted(write.touched)])
            wh.update_run(state.run_id, self.run_totals(), conn=conn)
        return written


def with_source(bars: pd.DataFrame) -> pd.DataFrame:
    """A bars frame with the lineage column every write needs, even when empty."""
    return bars if "source" in bars else bars.assign(source=pd.Series(dtype=object))
