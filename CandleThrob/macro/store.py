"""Keeping FRED vintages point in time, and deciding what to ask FRED next.

Everything runs on the caller's connection, inside the caller's transaction. One
series, one night::

    info = client.series_info(series_id)                      # always: 1 request
    with engine.begin() as conn:
        ask = next_request(conn, info)
    if ask is not None:                                       # only when last_updated moved
        batch = client.observations(ask.series_id, ask.realtime_start,
                                    observation_start=ask.observation_start)
    with engine.begin() as conn:                              # vintages and checkpoint together
        if ask is not None:
            store_vintages(conn, batch, run_id=run_id, ingested_at=now)
        upsert_series_info(conn, info, run_id=run_id, checked_at=now)

How fetched vintages are kept (``store_vintages``):

* every vintage is kept; a value is never overwritten: a revision is a new row
  keyed by the date it became FRED's value (its ``realtime_start``);
* FRED clips a vintage's ``realtime_start`` to the request's window, so a fetched
  row whose value is the stored vintage's in effect on that date *is* that
  vintage: nothing new;
* a stored vintage still open (9999-12-31) is closed the day before a later
  vintage of the same observation starts, or at the end FRED now states for it;
  an end that is only the request window's end leaves it open;
* a vintage first seen clipped is stored from the window's start: later than its
  release, never earlier, so nothing is known before FRED knew it;
* a fetched row keyed like a stored one but with another value means FRED changed
  a vintage in place: the stored value stays and the row is reported as a conflict.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from CandleThrob.macro.fred import EARLIEST_REALTIME, OPEN_END, SeriesInfo, Vintage, VintageBatch
from CandleThrob.warehouse.bulk import upsert_rows
from CandleThrob.warehouse.schema import macro_audit, macro_observations, macro_series

_KEY = ("series_id", "observation_date", "realtime_start")
_DAY = dt.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class StoreResult:
    inserted: int = 0   # new vintages: first releases and revisions
    closed: int = 0     # stored vintages given an end
    unchanged: int = 0  # fetched vintages already stored (clipped or not)
    observations: int = 0  # observation dates stored for the first time
    conflicts: tuple[Vintage, ...] = ()


@dataclasses.dataclass
class _Known:
    """A vintage of one observation, stored or about to be."""

    start: dt.date
    end: dt.date
    value: float | None
    pending: dict | None = None  # its insert row, when it is new in this batch


def store_vintages(conn: Connection, batch: VintageBatch, *, run_id: str, ingested_at: dt.datetime) -> StoreResult:
    """Keep every vintage of ``batch`` (see the module's rules); idempotent."""
    fetched = sorted(batch.vintages, key=lambda v: (v.observation_date, v.realtime_start))
    if not fetched:
        return StoreResult()
    known = _stored(conn, batch.series_id, fetched[0].observation_date, fetched[-1].observation_date)
    inserts: list[dict] = []
    ends: dict[tuple[dt.date, dt.date], dt.date] = {}
    unchanged, conflicts = 0, []

    def close(date: dt.date, vintage: _Known, end: dt.date) -> None:
        vintage.end = end
        if vintage.pending is not None:
            vintage.pending["realtime_end"] = end
        else:
            ends[(date, vintage.start)] = end

    new_dates = {v.observation_date for v in fetched} - set(known)
    for v in fetched:
        vintages = known.setdefault(v.observation_date, [])
        # Ends before 9999-12-31 are FRED's own, unless they are just where the window stops.
        end_known = v.realtime_end < batch.realtime_end or batch.realtime_end == OPEN_END
        current = next((k for k in vintages if k.start <= v.realtime_start <= k.end), None)
        if current is not None and current.value == v.value:
            unchanged += 1
            if end_known and v.realtime_end < current.end:
                close(v.observation_date, current, v.realtime_end)
            continue
        if current is not None and current.start == v.realtime_start:
            conflicts.append(v)
            continue
        if current is not None:
            close(v.observation_date, current, v.realtime_start - _DAY)
        end = v.realtime_end if end_known else OPEN_END
        later = [k.start for k in vintages if k.start > v.realtime_start]
        if later:  # an older vintage found after a newer one: it ends where that one starts
            end = min(end, min(later) - _DAY)
        row = {"series_id": batch.series_id, "observation_date": v.observation_date,
               "realtime_start": v.realtime_start, "realtime_end": end, "value": v.value,
               "value_note": v.note, "run_id": run_id, "ingested_at": ingested_at}
        inserts.append(row)
        vintages.append(_Known(v.realtime_start, end, v.value, row))
        vintages.sort(key=lambda k: k.start)

    # Another writer may have stored the same vintage meanwhile: keep its row, not ours.
    upsert_rows(conn, macro_observations, inserts, _KEY, update_existing=False)
    if ends:
        t = macro_observations
        conn.execute(update(t).where(t.c.series_id == bindparam("b_series"),
                                     t.c.observation_date == bindparam("b_date"),
                                     t.c.realtime_start == bindparam("b_start"))
                     .values(realtime_end=bindparam("b_end")),
                     [{"b_series": batch.series_id, "b_date": date, "b_start": start, "b_end": end}
                      for (date, start), end in sorted(ends.items())])
    return StoreResult(len(inserts), len(ends), unchanged, len(new_dates), tuple(conflicts))


def _stored(conn: Connection, series_id: str, first: dt.date, last: dt.date) -> dict[dt.date, list[_Known]]:
    t = macro_observations
    query = (select(t.c.observation_date, t.c.realtime_start, t.c.realtime_end, t.c.value)
             .where(t.c.series_id == series_id, t.c.observation_date.between(first, last))
             .order_by(t.c.observation_date, t.c.realtime_start))
    known: dict[dt.date, list[_Known]] = {}
    for date, start, end, value in conn.execute(query):
        known.setdefault(date, []).append(_Known(start, end, None if value is None else float(value)))
    return known


# -- the checkpoint ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ObservationRequest:
    series_id: str
    realtime_start: dt.date
    observation_start: dt.date | None = None


def next_request(conn: Connection, info: SeriesInfo, *, history_start: dt.date = EARLIEST_REALTIME,
                 observation_start: dt.date | None = None) -> ObservationRequest | None:
    """The observations call to make after ``info`` (a fresh ``series_info``), or None.

    None when FRED's ``last_updated`` is the one stored at the last completed check:
    nothing changed. Otherwise every vintage from the last check's date on (that
    day included: a release later that day was not seen), or from ``history_start``
    for a series never fetched (default: all of ALFRED's history)."""
    t = macro_series
    row = conn.execute(select(t.c.last_updated, t.c.last_checked).where(t.c.series_id == info.series_id)).first()
    if row is None:
        return ObservationRequest(info.series_id, history_start, observation_start)
    if row.last_updated == naive_utc(info.last_updated):
        return None
    return ObservationRequest(info.series_id, row.last_checked, observation_start)


def upsert_series_info(conn: Connection, info: SeriesInfo, *, run_id: str, checked_at: dt.datetime) -> None:
    """Record ``info`` as the state the stored vintages are complete for: the checkpoint.

    Commit it in the same transaction as the vintages of the observations call that
    followed ``info`` (or alone when ``next_request`` said there was none to make)."""
    upsert_rows(conn, macro_series, [{
        "series_id": info.series_id, "title": info.title, "units": info.units,
        "frequency": info.frequency, "frequency_short": info.frequency_short,
        "seasonal_adjustment": info.seasonal_adjustment, "observation_start": info.observation_start,
        "observation_end": info.observation_end, "last_updated": naive_utc(info.last_updated),
        "last_checked": info.realtime_start, "run_id": run_id, "checked_at": checked_at}], ("series_id",))


def known_series(conn: Connection) -> set[str]:
    """The series fetched at least once (a checkpoint exists)."""
    return set(conn.execute(select(macro_series.c.series_id)).scalars())


def write_audit(conn: Connection, row: dict, updated_at: dt.datetime) -> None:
    """One series' ``macro_audit`` row for this run (a rerun of the same write replaces it)."""
    upsert_rows(conn, macro_audit, [{**row, "flags": json.dumps(row.get("flags") or {}, default=str,
                                                               sort_keys=True), "updated_at": updated_at}],
                ("run_id", "series_id"))


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """Naive UTC, as the warehouse's DateTime columns hold time."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None)
