"""Macro storage and point-in-time reads, on SQLite and PostgreSQL, fed by the local FRED server."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from macro_helpers import CPI_RELEASES, CPI_VINTAGES, KEY, OPEN, TODAY, revised_data
from sqlalchemy import select

from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.macro.fred import EARLIEST_REALTIME, MISSING_VALUE, Vintage
from CandleThrob.macro.read import read_macro, read_macro_daily
from CandleThrob.macro.store import (
    ObservationRequest,
    StoreResult,
    next_request,
    store_vintages,
    upsert_series_info,
)
from CandleThrob.source.fred import FredSource
from CandleThrob.source.retry import RetryPolicy
from CandleThrob.testing.fred_server import FredServer, generate_demo
from CandleThrob.warehouse.engine import create_db_engine
from CandleThrob.warehouse.schema import macro_observations, macro_series
from CandleThrob.warehouse.storage import Warehouse

NOW = dt.datetime(2024, 5, 21, 3, 0, 0)
D = dt.date


@pytest.fixture
def engine(database_url):
    engine = create_db_engine(AdvancedBatchConfig(database_url=database_url))
    Warehouse(engine).create_schema()
    yield engine
    engine.dispose()


@pytest.fixture
def server():
    with FredServer(revised_data(), api_key=KEY, today=TODAY) as running:
        yield running


def fred(server):
    return FredSource(KEY, server.url, retry_policy=RetryPolicy(max_retries=0), timeout=5.0).client


def nightly(client, engine, series_ids, run_id="run-1"):
    """One night as the store module's docstring lays it out; what each series stored."""
    results = {}
    for series_id in series_ids:
        info = client.series_info(series_id)
        with engine.begin() as conn:
            ask = next_request(conn, info)
        batch = None if ask is None else client.observations(ask.series_id, ask.realtime_start,
                                                             observation_start=ask.observation_start)
        with engine.begin() as conn:
            results[series_id] = None if batch is None else store_vintages(conn, batch, run_id=run_id,
                                                                           ingested_at=NOW)
            upsert_series_info(conn, info, run_id=run_id, checked_at=NOW)
    return results


def stored(engine, series_id):
    t = macro_observations
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.observation_date, t.c.realtime_start, t.c.realtime_end, t.c.value,
                                   t.c.value_note).where(t.c.series_id == series_id)
                            .order_by(t.c.observation_date, t.c.realtime_start)).all()
    return [(d, start, end, None if value is None else float(value), note) for d, start, end, value, note in rows]


def store(engine, batch, run_id="run-1"):
    with engine.begin() as conn:
        return store_vintages(conn, batch, run_id=run_id, ingested_at=NOW)


CPI_ROWS = [(*vintage, None) for vintage in CPI_VINTAGES]


def requests_of(server, first):
    return [(r["path"], dict(p.split("=", 1) for p in r["query"].split("&")).get("realtime_start"))
            for r in server.requests[first:]]


# -- storing ---------------------------------------------------------------------------------

def test_a_series_revised_twice_keeps_every_vintage(server, engine):
    with engine.connect() as conn:
        info = fred(server).series_info("CPITEST")
        assert next_request(conn, info) == ObservationRequest("CPITEST", EARLIEST_REALTIME)
        assert next_request(conn, info, history_start=D(2020, 1, 1), observation_start=D(2019, 1, 1)) == \
            ObservationRequest("CPITEST", D(2020, 1, 1), D(2019, 1, 1))
    assert nightly(fred(server), engine, ["CPITEST"]) == {"CPITEST": StoreResult(inserted=9, observations=4)}
    assert stored(engine, "CPITEST") == CPI_ROWS
    with engine.connect() as conn:
        row = conn.execute(select(macro_series)).one()._asdict()
    assert row == {"series_id": "CPITEST", "title": "Test Consumer Prices", "units": "Index 1982-1984=100",
                   "frequency": "Monthly", "frequency_short": "M", "seasonal_adjustment": "Seasonally Adjusted",
                   "observation_start": D(2024, 1, 1), "observation_end": D(2024, 4, 1),
                   "last_updated": dt.datetime(2024, 5, 15, 12, 51, 4), "last_checked": TODAY, "run_id": "run-1",
                   "checked_at": NOW}


def test_a_rerun_without_change_asks_only_for_series_info(server, engine):
    nightly(fred(server), engine, ["CPITEST", "DAILYTEST"])
    before = {s: stored(engine, s) for s in ("CPITEST", "DAILYTEST")}
    first = len(server.requests)
    assert nightly(fred(server), engine, ["CPITEST", "DAILYTEST"], run_id="run-2") == \
        {"CPITEST": None, "DAILYTEST": None}
    assert requests_of(server, first) == [("/fred/series", None), ("/fred/series", None)]
    assert {s: stored(engine, s) for s in ("CPITEST", "DAILYTEST")} == before


def test_a_revision_published_later_is_a_new_row_and_closes_the_open_one(server, engine):
    nightly(fred(server), engine, ["CPITEST", "DAILYTEST"])
    server.data.publish("CPITEST", "2024-04-01", "313.600", "2024-05-21")
    server.today = "2024-05-21"
    first = len(server.requests)
    results = nightly(fred(server), engine, ["CPITEST", "DAILYTEST"], run_id="run-2")
    # The incremental call starts at the last check's date: Jan-Mar and April's first value come
    # back clipped to it (unchanged), April's first value now with an end, then the revision.
    assert results == {"CPITEST": StoreResult(inserted=1, closed=1, unchanged=4), "DAILYTEST": None}
    assert requests_of(server, first) == [("/fred/series", None), ("/fred/series/observations", "2024-05-20"),
                                          ("/fred/series", None)]
    assert stored(engine, "CPITEST") == CPI_ROWS[:-1] + [(D(2024, 4, 1), D(2024, 5, 15), D(2024, 5, 20), 313.548, None),
                                                         (D(2024, 4, 1), D(2024, 5, 21), OPEN, 313.6, None)]
    assert read_macro("CPITEST", start=D(2024, 4, 1), database_url=engine)["value"].tolist() == [313.6]
    known_before = read_macro("CPITEST", start=D(2024, 4, 1), as_of=D(2024, 5, 20), database_url=engine)
    assert known_before["value"].tolist() == [313.548]
    daily = read_macro_daily("CPITEST", D(2024, 5, 20), D(2024, 5, 22), database_url=engine)
    assert daily["value"].tolist() == [313.548, 313.6, 313.6]
    first = len(server.requests)
    assert nightly(fred(server), engine, ["CPITEST"], run_id="run-3") == {"CPITEST": None}
    assert requests_of(server, first) == [("/fred/series", None)]


def test_the_same_batch_twice_and_a_clipped_refetch_store_nothing_new(server, engine):
    client = fred(server)
    batch = client.observations("CPITEST", EARLIEST_REALTIME)
    assert store(engine, batch) == StoreResult(inserted=9, observations=4)
    assert store(engine, batch, run_id="run-2") == StoreResult(unchanged=9)
    # every vintage current on or after May 1st, realtime_start clipped to it
    clipped = client.observations("CPITEST", D(2024, 5, 1))
    assert [v.realtime_start for v in clipped.vintages].count(D(2024, 5, 1)) == 3  # Jan, Feb, Mar
    assert store(engine, clipped, run_id="run-3") == StoreResult(unchanged=6)
    assert stored(engine, "CPITEST") == CPI_ROWS
    t = macro_observations
    with engine.connect() as conn:
        assert set(conn.execute(select(t.c.run_id, t.c.ingested_at)).all()) == {("run-1", NOW)}


def test_an_end_that_is_only_the_windows_end_stays_open(server, engine):
    client = fred(server)
    early = client.observations("CPITEST", EARLIEST_REALTIME, D(2024, 4, 20))
    assert store(engine, early) == StoreResult(inserted=6, observations=3)
    assert stored(engine, "CPITEST") == [
        (D(2024, 1, 1), D(2024, 2, 13), D(2024, 3, 11), 308.417, None),
        (D(2024, 1, 1), D(2024, 3, 12), D(2024, 4, 9), 308.5, None),
        (D(2024, 1, 1), D(2024, 4, 10), OPEN, 308.611, None),
        (D(2024, 2, 1), D(2024, 3, 12), D(2024, 4, 9), 310.326, None),
        (D(2024, 2, 1), D(2024, 4, 10), OPEN, 310.1, None),
        (D(2024, 3, 1), D(2024, 4, 10), OPEN, 312.332, None)]
    # the full history closes the two that were revised since, and adds what came after
    assert store(engine, client.observations("CPITEST", EARLIEST_REALTIME)) == \
        StoreResult(inserted=3, closed=2, unchanged=6, observations=1)
    assert stored(engine, "CPITEST") == CPI_ROWS


def test_older_vintages_found_later_end_where_the_stored_ones_start(server, engine):
    client = fred(server)
    store(engine, client.observations("CPITEST", D(2024, 4, 15)))
    assert stored(engine, "CPITEST")[0] == (D(2024, 1, 1), D(2024, 4, 15), OPEN, 308.611, None)
    assert store(engine, client.observations("CPITEST", EARLIEST_REALTIME)) == StoreResult(inserted=6, unchanged=3)
    assert stored(engine, "CPITEST")[:4] == [(D(2024, 1, 1), D(2024, 2, 13), D(2024, 3, 11), 308.417, None),
                                             (D(2024, 1, 1), D(2024, 3, 12), D(2024, 4, 9), 308.5, None),
                                             (D(2024, 1, 1), D(2024, 4, 10), D(2024, 4, 14), 308.611, None),
                                             (D(2024, 1, 1), D(2024, 4, 15), OPEN, 308.611, None)]
    # no two vintages of an observation hold on the same day: as-of reads see FRED's values
    for day in (D(2024, 3, 11), D(2024, 4, 12), D(2024, 4, 15), D(2024, 5, 20)):
        assert values_as_of(engine, day) == expected_as_of(day)


def test_dots_are_stored_as_null_with_their_reason(server, engine):
    batch = fred(server).observations("DAILYTEST", EARLIEST_REALTIME)
    assert store(engine, batch) == StoreResult(inserted=3, observations=3)
    assert store(engine, batch) == StoreResult(unchanged=3)
    assert stored(engine, "DAILYTEST") == [(D(2024, 5, 13), D(2024, 5, 14), OPEN, 4.5, None),
                                           (D(2024, 5, 14), D(2024, 5, 15), OPEN, None, MISSING_VALUE),
                                           (D(2024, 5, 15), D(2024, 5, 16), OPEN, 4.52, None)]
    frame = read_macro("DAILYTEST", database_url=engine)
    assert [None if pd.isna(note) else note for note in frame["value_note"]] == [None, MISSING_VALUE, None]
    assert frame["value"].tolist()[0] == 4.5 and math.isnan(frame["value"].tolist()[1])


def test_a_vintage_changed_in_place_is_kept_and_reported(server, engine):
    store(engine, fred(server).observations("CPITEST", EARLIEST_REALTIME))
    rewritten = [(d, "313.999" if d == "2024-04-01" else value, released) for d, value, released in CPI_RELEASES]
    with FredServer(revised_data(rewritten), api_key=KEY, today=TODAY) as other:
        result = store(engine, fred(other).observations("CPITEST", EARLIEST_REALTIME))
    assert result == StoreResult(unchanged=8, conflicts=(
        Vintage("CPITEST", D(2024, 4, 1), D(2024, 5, 15), OPEN, 313.999),))
    assert stored(engine, "CPITEST") == CPI_ROWS


# -- reading ---------------------------------------------------------------------------------------

def values_as_of(engine, day):
    frame = read_macro(["CPITEST"], as_of=day, database_url=engine)
    return list(zip(frame["observation_date"].dt.date, frame["value"], strict=True))


def expected_as_of(day):
    return [(d, value) for d, start, end, value in CPI_VINTAGES if start <= day <= end]


def test_as_of_reads_return_each_vintage_exactly_inside_its_real_time_window(server, engine, database_url):
    nightly(fred(server), engine, ["CPITEST"])
    assert values_as_of(engine, D(2024, 2, 12)) == []
    assert values_as_of(engine, D(2024, 3, 11)) == [(D(2024, 1, 1), 308.417)]
    assert values_as_of(engine, D(2024, 3, 12)) == [(D(2024, 1, 1), 308.5), (D(2024, 2, 1), 310.326)]
    assert values_as_of(engine, D(2024, 4, 10)) == [(D(2024, 1, 1), 308.611), (D(2024, 2, 1), 310.1),
                                                    (D(2024, 3, 1), 312.332)]
    assert values_as_of(engine, None) == [(D(2024, 1, 1), 308.611), (D(2024, 2, 1), 310.222),
                                          (D(2024, 3, 1), 312.45), (D(2024, 4, 1), 313.548)]
    for d, start, end, value in CPI_VINTAGES:
        last = end if end != OPEN else TODAY
        for day in (start, last):
            frame = read_macro("CPITEST", start=d, end=d, as_of=day, database_url=database_url)  # by URL too
            assert frame[["value", "realtime_start", "realtime_end"]].to_records(index=False).tolist() == \
                [(value, pd.Timestamp(start).to_datetime64(), pd.Timestamp(end).to_datetime64())]
        before = expected_as_of(start - dt.timedelta(days=1))
        assert [v for o, v in values_as_of(engine, start - dt.timedelta(days=1)) if o == d] == \
            [v for o, v in before if o == d]
    frame = read_macro(["CPITEST"], start=D(2024, 2, 1), end=D(2024, 3, 1), database_url=engine)
    assert list(frame.columns) == ["series_id", "observation_date", "value", "value_note", "realtime_start",
                                   "realtime_end"]
    assert frame["observation_date"].dt.date.tolist() == [D(2024, 2, 1), D(2024, 3, 1)]


def test_daily_values_start_on_their_release_date_never_before(server, engine):
    nightly(fred(server), engine, ["CPITEST", "DAILYTEST"])
    daily = read_macro_daily(["CPITEST", "DAILYTEST"], D(2024, 2, 12), D(2024, 5, 20), database_url=engine)
    assert list(daily.columns) == ["date", "series_id", "observation_date", "value", "realtime_start"]
    assert len(daily) == 2 * 99
    cpi = daily[daily["series_id"] == "CPITEST"].set_index("date")

    def on(day):
        row = cpi.loc[pd.Timestamp(day)]
        return (None if pd.isna(row["observation_date"]) else row["observation_date"].date(),
                None if math.isnan(row["value"]) else row["value"],
                None if pd.isna(row["realtime_start"]) else row["realtime_start"].date())

    assert on(D(2024, 2, 12)) == (None, None, None)  # January is observed, but not yet released
    assert on(D(2024, 2, 13)) == (D(2024, 1, 1), 308.417, D(2024, 2, 13))
    assert on(D(2024, 3, 11)) == (D(2024, 1, 1), 308.417, D(2024, 2, 13))  # not the revision of the 12th
    assert on(D(2024, 3, 12)) == (D(2024, 2, 1), 310.326, D(2024, 3, 12))
    assert on(D(2024, 4, 9)) == (D(2024, 2, 1), 310.326, D(2024, 3, 12))
    assert on(D(2024, 4, 10)) == (D(2024, 3, 1), 312.332, D(2024, 4, 10))
    assert on(D(2024, 5, 14)) == (D(2024, 3, 1), 312.332, D(2024, 4, 10))
    assert on(D(2024, 5, 15)) == (D(2024, 4, 1), 313.548, D(2024, 5, 15))
    assert (daily["realtime_start"].isna() | (daily["realtime_start"] <= daily["date"])).all()
    dots = daily[daily["series_id"] == "DAILYTEST"].set_index("date")
    assert [(dots.loc[pd.Timestamp(d), "observation_date"].date(), dots.loc[pd.Timestamp(d), "value"])
            for d in (D(2024, 5, 14), D(2024, 5, 15), D(2024, 5, 16))] == \
        [(D(2024, 5, 13), 4.5), (D(2024, 5, 13), 4.5), (D(2024, 5, 15), 4.52)]  # "." keeps the last value
    assert dots.loc[pd.Timestamp(D(2024, 5, 13)), "value"] != dots.loc[pd.Timestamp(D(2024, 5, 13)), "value"]


def test_daily_frames_for_sessions_and_as_of(server, engine):
    nightly(fred(server), engine, ["CPITEST"])
    sessions = [D(2024, 3, 8), D(2024, 3, 11), D(2024, 3, 12), D(2024, 6, 3)]
    frame = read_macro_daily("CPITEST", D(2024, 3, 1), D(2024, 3, 31), dates=sessions, database_url=engine)
    assert frame["date"].dt.date.tolist() == sessions[:3]
    assert frame["value"].tolist() == [308.417, 308.417, 310.326]
    frame = read_macro_daily("CPITEST", D(2024, 4, 9), D(2024, 4, 11), as_of=D(2024, 4, 1), database_url=engine)
    assert frame["value"].tolist() == [310.326, 310.326, 310.326]  # April's releases were not known yet
    assert read_macro_daily("CPITEST", D(2024, 3, 1), D(2024, 3, 2), dates=[D(2024, 6, 3)], database_url=engine).empty


def test_daily_frames_fall_back_when_the_latest_observation_is_withdrawn(engine):
    data = revised_data()
    data.publish("CPITEST", "2024-04-01", ".", "2024-05-17")  # April's value withdrawn
    with FredServer(data, api_key=KEY, today=TODAY) as running:
        nightly(fred(running), engine, ["CPITEST"])
    frame = read_macro_daily("CPITEST", D(2024, 5, 16), D(2024, 5, 17), database_url=engine)
    assert list(zip(frame["observation_date"].dt.date, frame["value"], strict=True)) == \
        [(D(2024, 4, 1), 313.548), (D(2024, 3, 1), 312.45)]


# -- many nights ---------------------------------------------------------------------------------------

def test_incremental_nights_store_exactly_freds_history(engine):
    data = generate_demo("2024-01-01", "2024-04-30", seed=5)
    series_ids = data.series_ids
    with FredServer(data, api_key=KEY, today="2024-03-01") as server:
        client = fred(server)
        nightly(client, engine, series_ids)
        day = D(2024, 3, 1)
        while day < D(2024, 4, 30):
            previous, day = day, day + dt.timedelta(days=1)
            server.today = day
            first = len(server.requests)
            nightly(client, engine, series_ids, run_id=f"run-{day}")
            moved = [s for s in series_ids if data.view(s, day).last_updated != data.view(s, previous).last_updated]
            asked = [(p, start) for p, start in requests_of(server, first) if p == "/fred/series/observations"]
            assert [p for p, _ in requests_of(server, first)].count("/fred/series") == 3
            assert asked == [("/fred/series/observations", previous.isoformat())] * len(moved)
            if day.weekday() >= 5:  # nothing is released on weekends: those nights ask for nothing more
                assert moved == []
    for series_id in series_ids:
        truth = [(v.date, v.realtime_start, v.realtime_end, None if v.value == "." else float(v.value),
                  MISSING_VALUE if v.value == "." else None) for v in data.view(series_id, D(2024, 4, 30)).vintages]
        assert stored(engine, series_id) == truth
    assert [v[0] for v in stored(engine, "DGS10") if v[3] is None] == \
        [D(2024, 1, 1), D(2024, 1, 15), D(2024, 2, 19), D(2024, 3, 29)]  # NYSE holidays, Good Friday included

