"""Reading macro series point in time: values as known on a date, daily frames for features,
and macro columns beside bars.

The rule: a value exists from its release date (its vintage's ``realtime_start``) on,
never from its observation date; a revision replaces it from the revision's release
date on, never earlier. Reads go by key (series, observation date) and real-time
ranges in SQL, never whole tables.

``database_url`` is a SQLAlchemy URL, an Engine to reuse, or None: the configured
warehouse (``DATABASE_URL`` from the environment or ``.env``, as the ingest reads it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from CandleThrob.config import AdvancedBatchConfig, read_environment
from CandleThrob.macro.fred import OPEN_END
from CandleThrob.warehouse.engine import create_db_engine
from CandleThrob.warehouse.schema import macro_observations

MACRO_COLUMNS = ["series_id", "observation_date", "value", "value_note", "realtime_start", "realtime_end"]
DAILY_COLUMNS = ["date", "series_id", "observation_date", "value", "realtime_start"]
_DATES = ("date", "observation_date", "realtime_start", "realtime_end")
Database = Engine | str | None


def read_macro(series: str | Iterable[str], start: dt.date | None = None, end: dt.date | None = None,
               as_of: dt.date | None = None, database_url: Database = None) -> pd.DataFrame:
    """One row per (series_id, observation_date) in [start, end]: the value as known on
    ``as_of`` (default: the latest), with the real-time period of that vintage.
    ``value`` is NaN where FRED wrote "." (``value_note`` says so)."""
    t = macro_observations
    query = select(*(t.c[name] for name in MACRO_COLUMNS)).where(t.c.series_id.in_(_ids(series)))
    if start is not None:
        query = query.where(t.c.observation_date >= start)
    if end is not None:
        query = query.where(t.c.observation_date <= end)
    if as_of is None:
        query = query.where(t.c.realtime_end == OPEN_END)
    else:
        query = query.where(t.c.realtime_start <= as_of, t.c.realtime_end >= as_of)
    with _connect(database_url) as conn:
        rows = conn.execute(query.order_by(t.c.series_id, t.c.observation_date)).all()
    return _frame(rows, MACRO_COLUMNS)


def read_macro_daily(series: str | Iterable[str], start: dt.date, end: dt.date, as_of: dt.date | None = None,
                     database_url: Database = None, *, dates: Sequence[dt.date] | None = None) -> pd.DataFrame:
    """One row per series and day in [start, end] (every calendar day, or each of
    ``dates``, e.g. sessions): the latest observation whose value was known that day,
    with the value as known that day.

    A value is carried forward from its release (``realtime_start``, in the output),
    never from its observation date: nothing shows before FRED published it, and a
    later revision shows from the day it was published, not before. With ``as_of``,
    days after it show what was known on ``as_of``. FRED's "." is no value: the day
    keeps the latest observation that has one. Before any release: NaN/NaT.
    """
    days = sorted({d for d in (dates if dates is not None else _calendar(start, end)) if start <= d <= end})
    if not days:
        return _frame([], DAILY_COLUMNS)
    knowledge = [min(d, as_of) if as_of is not None else d for d in days]
    out = []
    with _connect(database_url) as conn:
        for series_id in _ids(series):
            shown = _shown(conn, series_id, knowledge)
            out.extend((day, series_id, *row) for day, row in zip(days, shown, strict=True))
    return _frame(out, DAILY_COLUMNS)


def join_macro(bars: pd.DataFrame, series: str | Iterable[str], as_of: dt.date | None = None,
               database_url: Database = None, *, date_column: str = "trade_date") -> pd.DataFrame:
    """``bars`` with one column per series (named by its id): on each row, the value
    ``read_macro_daily`` shows on its ``date_column`` (its session), so a bar sees a
    macro value only from the day FRED released it. Rows keep their order."""
    ids = _ids(series)
    days = pd.to_datetime(bars[date_column]).dt.normalize()
    if bars.empty:
        return bars.assign(**{s: pd.Series(dtype="float64") for s in ids})
    wanted = sorted({d.date() for d in days})
    daily = read_macro_daily(ids, wanted[0], wanted[-1], as_of, database_url, dates=wanted)
    wide = daily.pivot(index="date", columns="series_id", values="value").reindex(columns=ids)
    wide.index = wide.index.astype("datetime64[ns]")
    values = wide.reindex(days.astype("datetime64[ns]").to_numpy())
    return bars.assign(**{s: values[s].to_numpy(dtype="float64") for s in ids})


def _shown(conn: Connection, series_id: str, knowledge: list[dt.date]) -> list[tuple]:
    """(observation_date, value, realtime_start) shown for each knowledge date (ascending)."""
    t = macro_observations
    first, last = knowledge[0], knowledge[-1]
    known = (t.c.series_id == series_id, t.c.value.is_not(None))
    # The observation shown on the first day bounds the older ones from below: later days
    # show it or a newer one, unless it was revised to "." or withdrawn (checked below).
    lower = conn.execute(select(func.max(t.c.observation_date)).where(
        *known, t.c.realtime_start <= first, t.c.realtime_end >= first)).scalar()
    query = (select(t.c.observation_date, t.c.realtime_start, t.c.realtime_end, t.c.value)
             .where(*known, t.c.realtime_start <= last, t.c.realtime_end >= first)
             .order_by(t.c.realtime_start))
    shown = _sweep(conn.execute(query if lower is None else query.where(t.c.observation_date >= lower)).all(),
                   knowledge)
    if lower is not None and any(row[0] is None for row in shown):
        shown = _sweep(conn.execute(query).all(), knowledge)
    return shown


def _sweep(vintages: list[tuple], knowledge: list[dt.date]) -> list[tuple]:
    """For each knowledge date, the vintage valid then with the latest observation date.
    ``vintages`` come by realtime_start; knowledge dates never go back, so a vintage
    that expired stays expired and a max-heap with lazy removal is enough."""
    heap: list[tuple] = []
    shown, i = [], 0
    for day in knowledge:
        while i < len(vintages) and vintages[i][1] <= day:
            observed, start, end, value = vintages[i]
            heapq.heappush(heap, (-observed.toordinal(), observed, start, end, value))
            i += 1
        while heap and heap[0][3] < day:
            heapq.heappop(heap)
        shown.append((heap[0][1], float(heap[0][4]), heap[0][2]) if heap else (None, None, None))
    return shown


def _calendar(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    for offset in range((end - start).days + 1):
        yield start + dt.timedelta(days=offset)


def _ids(series: str | Iterable[str]) -> list[str]:
    return [series] if isinstance(series, str) else list(dict.fromkeys(series))


def _frame(rows: list, columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for name in columns:
        if name in _DATES:
            # Seconds, not pandas' usual nanoseconds: those end in 2262, before 9999-12-31.
            frame[name] = frame[name].to_numpy(dtype=object).astype("datetime64[D]").astype("datetime64[s]")
    frame["value"] = frame["value"].astype("float64")
    return frame


@contextlib.contextmanager
def _connect(database_url: Database) -> Iterator[Connection]:
    if isinstance(database_url, Engine):
        with database_url.connect() as conn:
            yield conn
        return
    environ = read_environment(Path.cwd() / ".env", os.environ)
    config = AdvancedBatchConfig.from_env(environ, **({"database_url": database_url} if database_url else {}))
    engine = create_db_engine(config)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()
