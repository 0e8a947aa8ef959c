"""What each year of the warehouse holds, summed up cheaply enough to tell whether it changed.

A year's digest covers, per ticker with bars in it, the number of bars and the
latest ``ingested_at`` (every write of a bar, a vendor's revision included,
stamps it anew), and the factor spans of the chosen adjustment that overlap the
year (a new split or dividend changes every earlier adjusted price; a span that
multiplies by one changes nothing and is left out). It comes
from one grouped query over the raw table and a read of the small factor table,
never from the bars themselves.

Stamps are whole seconds, so a write in the same second as the last one seen
could leave a digest unchanged: a year written to within ``SETTLE_SECONDS`` of
the summary is marked unsettled, and exported again next time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Optional

from sqlalchemy import func, select

from CandleThrob.read.periods import year_of
from CandleThrob.warehouse.schema import adjustment_factors, ticker_data_raw
from CandleThrob.warehouse.storage import Warehouse, _date

SETTLE_SECONDS = 2
# The factors each adjusted view multiplies by: prices by one, volume by the split factor in both.
FACTOR_COLUMNS = {"split": ("split_factor",), "total": ("split_factor", "total_factor")}


@dataclass
class YearSummary:
    year: int
    tickers: list[str] = field(default_factory=list)
    rows: int = 0
    last_ingested: Optional[dt.datetime] = None
    parts: list[str] = field(default_factory=list, repr=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.parts).encode()).hexdigest()

    def settled(self, now: dt.datetime) -> bool:
        """No write in the last seconds, whose stamp a later write could repeat."""
        return self.last_ingested is None or self.last_ingested < now - dt.timedelta(seconds=SETTLE_SECONDS)


def year_summaries(warehouse: Warehouse, adjust: str) -> dict[int, YearSummary]:
    """Per year with bars: its tickers, rows, latest write and digest under ``adjust``."""
    raw = ticker_data_raw.c
    year = year_of(raw.trade_date, warehouse.backend)
    query = (select(year, raw.ticker, func.count(), func.max(raw.ingested_at))
             .group_by(raw.ticker, year).order_by(year, raw.ticker))
    years: dict[int, YearSummary] = {}
    with warehouse.engine.connect() as conn:
        for number, ticker, count, last in conn.execute(query):
            summary = years.setdefault(int(number), YearSummary(int(number)))
            summary.tickers.append(ticker)
            summary.rows += int(count)
            last = _naive(last)
            summary.last_ingested = last if summary.last_ingested is None else max(summary.last_ingested, last)
            summary.parts.append(f"bars|{ticker}|{count}|{last.isoformat()}")
    if adjust in FACTOR_COLUMNS and years:
        _add_factor_spans(warehouse, FACTOR_COLUMNS[adjust], years)
    return years


def _add_factor_spans(warehouse: Warehouse, columns: tuple[str, ...], years: dict[int, YearSummary]) -> None:
    f = adjustment_factors.c
    query = select(f.ticker, f.valid_from, f.valid_to, *(f[c] for c in columns)).order_by(f.ticker, f.valid_from)
    present = {(y, t) for y, summary in years.items() for t in summary.tickers}
    first, last = min(years), max(years)
    with warehouse.engine.connect() as conn:
        for ticker, start, end, *factors in conn.execute(query):
            factors = [float(x) for x in factors]
            if all(x == 1.0 for x in factors):  # multiplies by one: the same prices as no span at all
                continue
            start, end = _date(start), _date(end)
            for number in range(max(start.year, first), min(end.year, last) + 1):
                if (number, ticker) in present:
                    years[number].parts.append(f"factor|{ticker}|{start}|{end}|{factors!r}")


def _naive(value: object) -> dt.datetime:
    """A stamp as naive UTC (Oracle and SQLite give naive values; a driver might not)."""
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return stamp.astimezone(dt.timezone.utc).replace(tzinfo=None) if stamp.tzinfo else stamp
