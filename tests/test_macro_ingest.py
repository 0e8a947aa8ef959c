"""The macro stage in the run: local Polygon and FRED servers -> CandleThrob -> SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math

import pandas as pd
import pytest
from macro_helpers import CPI_VINTAGES, KEY, OPEN, TODAY, revised_data
from sqlalchemy import create_engine

from CandleThrob import join_macro, read_macro
from CandleThrob.errors import ConfigError, OutOfTimeError
from CandleThrob.ingestion.ingest_data import build_parser, parse_options
from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.ingestion.state import RunState
from CandleThrob.macro.stage import MacroStage
from CandleThrob.reporting.report import summary
from CandleThrob.source.fred import FredSource
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.fred_server import FredServer
from CandleThrob.testing.polygon_server import PolygonServer
from CandleThrob.warehouse.storage import Warehouse

from ingest_helpers import API_KEY, cli, ingest, make_config, query

END = "2024-05-17"  # a Friday; FRED's today is the Monday after (TODAY)
D = dt.date
SERIES = ("CPITEST", "DAILYTEST")
MACRO_LINE = "  macro: 2 of 2 series updated, 7 observations stored, 12 vintages added, 4 FRED calls"
COLD = [("/fred/series", "CPITEST", None), ("/fred/series/observations", "CPITEST", "1776-07-04"),
        ("/fred/series", "DAILYTEST", None), ("/fred/series/observations", "DAILYTEST", "1776-07-04")]


@pytest.fixture(scope="module")
def market():
    return generate_market(3, "2024-01-02", END, seed=23)


@pytest.fixture
def polygon(market):
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        yield server


@pytest.fixture
def fred_log(tmp_path):
    return tmp_path / "fred.log"


@pytest.fixture
def fred(fred_log):
    with FredServer(revised_data(), api_key=KEY, today=TODAY, request_log=fred_log) as server:
        yield server


def fred_settings(server, series=SERIES, **overrides) -> dict:
    return {"fred_api_key": KEY, "fred_base_url": server.url, "macro_series": series, **overrides}


def logged(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def fred_requests(path) -> list[tuple]:
    """(path, series, realtime_start) of every request in a FRED server's request log file."""
    out = []
    for entry in logged(path):
        params = dict(p.split("=", 1) for p in entry["query"].split("&"))
        out.append((entry["path"], params["series_id"], params.get("realtime_start")))
    return out


def stored(url, series_id):
    rows = query(url, "SELECT observation_date, realtime_start, realtime_end, value, value_note, run_id "
                      f"FROM macro_observations WHERE series_id = '{series_id}' "
                      "ORDER BY observation_date, realtime_start")
    return [(_day(a), _day(b), _day(c), None if v is None else float(v), note, run) for a, b, c, v, note, run in rows]


def _day(value):
    return value.date() if isinstance(value, dt.datetime) else dt.date.fromisoformat(str(value)[:10])


def macro_totals(result) -> dict:
    return {k: v for k, v in result["macro"].items() if k != "outcomes"}


def _tap(server, order: list) -> None:
    """Every request either server answers, in the order they were answered."""
    record = server.record

    def tapped(path, *rest):
        order.append(path)
        record(path, *rest)

    server.record = tapped


# -- the nightly run ------------------------------------------------------------------------

def test_the_nightly_run_updates_macro_series_after_the_bars_in_the_same_run(database_url, polygon, fred, fred_log):
    order: list[str] = []
    _tap(polygon, order)
    _tap(fred, order)
    result = ingest(database_url, polygon, END, **fred_settings(fred))
    assert (result["status"], result["exit_code"], result["error"]) == ("success", 0, None)
    assert result["rows_written"] > 0 and result["api_calls"] == result["planned_calls"]
    assert [p for p in order if p.startswith("/fred/")] == order[-4:]  # after every bars call
    assert fred_requests(fred_log) == COLD
    assert macro_totals(result) == {
        "ran": True, "skipped": None, "series": 2, "series_updated": 2, "observations_stored": 4 + 3,
        "vintages_added": 9 + 3, "vintages_closed": 0, "rows_rejected": 0, "calls": 4,
        "calls_by_endpoint": {"/fred/series": 2, "/fred/series/observations": 2}, "retries_by_category": {},
        "failed_series": [], "stopped": None}
    assert MACRO_LINE in summary(result).splitlines()
    run = result["run_id"]
    assert query(database_url, "SELECT run_id, status FROM ingestion_runs") == [(run, "success")]
    assert query(database_url, "SELECT run_id, series_id, status, api_calls, rows_fetched, observations_added, "
                               "vintages_added, vintages_closed, rows_rejected, error FROM macro_audit "
                               "ORDER BY series_id") == [(run, "CPITEST", "ok", 2, 9, 4, 9, 0, 0, None),
                                                         (run, "DAILYTEST", "ok", 2, 3, 3, 3, 0, 0, None)]
    assert stored(database_url, "CPITEST") == [(*v, None, run) for v in CPI_VINTAGES]
    # FRED's "." is NULL with its reason
    assert stored(database_url, "DAILYTEST") == [(D(2024, 5, 13), D(2024, 5, 14), OPEN, 4.5, None, run),
                                                 (D(2024, 5, 14), D(2024, 5, 15), OPEN, None, "missing_value", run),
                                                 (D(2024, 5, 15), D(2024, 5, 16), OPEN, 4.52, None, run)]


def test_a_rerun_asks_only_what_changed_and_a_revision_shows_after_the_next_run(database_url, polygon, fred,
                                                                               fred_log):
    first = ingest(database_url, polygon, END, **fred_settings(fred))
    assert fred_requests(fred_log) == COLD

    again = ingest(database_url, polygon, END, **fred_settings(fred))
    assert fred_requests(fred_log)[4:] == [("/fred/series", "CPITEST", None), ("/fred/series", "DAILYTEST", None)]
    assert (again["api_calls"], again["macro"]["calls"], again["macro"]["series_updated"]) == (0, 2, 0)
    assert "  already up to date: nothing new to fetch, nothing written" in summary(again).splitlines()

    fred.data.publish("CPITEST", "2024-04-01", "313.600", "2024-05-21")  # April revised on Tuesday
    fred.today = "2024-05-21"
    later = ingest(database_url, polygon, END, **fred_settings(fred))
    assert fred_requests(fred_log)[6:] == [("/fred/series", "CPITEST", None),
                                       ("/fred/series/observations", "CPITEST", "2024-05-20"),
                                       ("/fred/series", "DAILYTEST", None)]
    assert {k: later["macro"][k] for k in ("series_updated", "observations_stored", "vintages_added",
                                           "vintages_closed", "calls")} == {
        "series_updated": 1, "observations_stored": 0, "vintages_added": 1, "vintages_closed": 1, "calls": 3}
    # a new row; the first release keeps the days on which it was the value
    assert stored(database_url, "CPITEST")[-2:] == [
        (D(2024, 4, 1), D(2024, 5, 15), D(2024, 5, 20), 313.548, None, first["run_id"]),
        (D(2024, 4, 1), D(2024, 5, 21), OPEN, 313.6, None, later["run_id"])]
    assert read_macro("CPITEST", start=D(2024, 4, 1), database_url=database_url)["value"].tolist() == [313.6]
    assert read_macro("CPITEST", start=D(2024, 4, 1), as_of=D(2024, 5, 20),
                      database_url=database_url)["value"].tolist() == [313.548]


def test_each_vintage_is_read_in_its_window_and_bars_see_a_value_only_from_its_release(database_url, polygon, fred):
    ingest(database_url, polygon, END, **fred_settings(fred))
    for observed, start, end, value in CPI_VINTAGES:
        for day in (start, min(end, TODAY)):
            frame = read_macro("CPITEST", start=observed, end=observed, as_of=day, database_url=database_url)
            assert frame["value"].tolist() == [value]
        before = read_macro("CPITEST", start=observed, end=observed, as_of=start - dt.timedelta(days=1),
                            database_url=database_url)
        assert value not in before["value"].tolist()

    warehouse = Warehouse(create_engine(database_url))
    bars = warehouse.bars(["SPY"])
    warehouse.dispose()
    joined = join_macro(bars, SERIES, database_url=database_url)
    assert list(joined.columns) == list(bars.columns) + ["CPITEST", "DAILYTEST"]
    pd.testing.assert_frame_equal(joined[bars.columns], bars)
    sessions = [d.date() for d in joined["trade_date"]]
    assert sessions[0] == D(2024, 1, 2) and sessions[-1] == D(2024, 5, 17)
    # by brute force: the latest observation whose vintage holds on the session, else nothing
    expected = [max(((o, v) for o, s, e, v in CPI_VINTAGES if s <= day <= e), default=(None, math.nan))[1]
                for day in sessions]
    assert _same(joined["CPITEST"].tolist(), expected)
    cpi = dict(zip(sessions, joined["CPITEST"]))
    assert math.isnan(cpi[D(2024, 2, 12)])  # January is observed, not yet released
    assert [cpi[d] for d in (D(2024, 2, 13), D(2024, 3, 11), D(2024, 3, 12), D(2024, 5, 14), D(2024, 5, 15))] == \
        [308.417, 308.417, 310.326, 312.332, 313.548]
    daily = dict(zip(sessions, joined["DAILYTEST"]))
    assert math.isnan(daily[D(2024, 5, 13)])  # the 13th's yield is released on the 14th
    assert [daily[d] for d in (D(2024, 5, 14), D(2024, 5, 15), D(2024, 5, 16), D(2024, 5, 17))] == \
        [4.5, 4.5, 4.52, 4.52]  # "." keeps the last value


def _same(got, want) -> bool:
    return len(got) == len(want) and all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, want))


# -- what goes wrong ------------------------------------------------------------------------------

def test_fred_faults_are_retried_and_the_run_succeeds(database_url, polygon, tmp_path):
    with FredServer(revised_data(), api_key=KEY, today=TODAY, fault_rate=0.5,
                    fault_kinds=["5xx", "reset", "truncated"], seed=26, request_log=tmp_path / "faults.log") as fred:
        result = ingest(database_url, polygon, END, **fred_settings(fred, max_retries=8, retry_delay=0))
        entries = logged(tmp_path / "faults.log")
    assert (result["status"], result["exit_code"]) == ("success", 0)
    # the seed's draws: each request is asked again until it is answered
    assert [(e["path"], e["fault"]) for e in entries] == [
        ("/fred/series", None), ("/fred/series/observations", "5xx"), ("/fred/series/observations", None),
        ("/fred/series", "reset"), ("/fred/series", "truncated"), ("/fred/series", None),
        ("/fred/series/observations", "reset"), ("/fred/series/observations", None)]
    assert result["macro"]["calls"] == len(entries) == 8
    assert sum(result["macro"]["retries_by_category"].values()) == 4
    assert [row[:4] for row in stored(database_url, "CPITEST")] == [v for v in CPI_VINTAGES]


def test_a_series_that_fails_makes_the_run_partial_and_the_others_are_stored(database_url, polygon, fred):
    result = ingest(database_url, polygon, END, **fred_settings(fred, ("CPITEST", "NOSUCH", "DAILYTEST")))
    why = "1 macro series failed, e.g. NOSUCH: /fred/series: HTTP 400: Bad Request.  The series does not exist."
    assert (result["status"], result["exit_code"], result["failed_stage"]) == ("partial", 1, None)
    assert result["macro"]["failed_series"] == ["NOSUCH"] and result["problems"] == [why]
    assert f"  {why}" in summary(result).splitlines()
    assert query(database_url, "SELECT status, error FROM ingestion_runs") == [("partial", why)]
    assert query(database_url, "SELECT series_id, status, api_calls, error FROM macro_audit ORDER BY series_id") == [
        ("CPITEST", "ok", 2, None), ("DAILYTEST", "ok", 2, None),
        ("NOSUCH", "failed", 1, "/fred/series: HTTP 400: Bad Request.  The series does not exist.")]
    assert len(stored(database_url, "CPITEST")) == 9 and len(stored(database_url, "DAILYTEST")) == 3


def test_a_refused_key_after_the_bars_stops_the_run_with_exit_3(sqlite_url, polygon, fred):
    result = ingest(sqlite_url, polygon, END, **fred_settings(fred, fred_api_key="f" * 32))
    assert (result["status"], result["exit_code"], result["failed_stage"]) == ("failed", 3, "macro")
    assert result["error"] == ("FRED refused the key (HTTP 400: Bad Request.  The value for variable api_key is not "
                               "registered.  Read https://fred.stlouisfed.org/docs/api/api_key.html for more "
                               "information.); check FRED_API_KEY")
    assert result["rows_written"] > 0  # the bars stage had committed
    assert len(fred.requests) == 1  # a refused key is not retried, and no other series is asked


def _cli_env(url, fred, key=KEY) -> dict:
    return {"FRED_API_KEY": key, "FRED_BASE_URL": fred.url, "MACRO_SERIES": ",".join(SERIES), "DATABASE_URL": url,
            "RETRY_DELAY": "0"}


def test_a_refused_key_exits_3_and_no_key_reaches_any_output(database_url, fred, tmp_path):
    wrong = "0badbad0" * 4
    report = tmp_path / "report.json"
    run = cli("--macro-only", "--report", str(report), env=_cli_env(database_url, fred, wrong), cwd=tmp_path)
    assert run.returncode == 3, run.stderr
    assert "  error (in macro): FRED refused the key (HTTP 400: Bad Request.  The value for variable api_key is " \
           "not registered." in run.stdout
    written = json.loads(report.read_text(encoding="utf-8"))
    assert (written["exit_code"], written["failed_stage"]) == (3, "macro")
    stored_rows = "\n".join(str(query(database_url, f"SELECT * FROM {table}"))
                            for table in ("ingestion_runs", "macro_audit", "macro_series"))
    assert "FRED refused the key" in stored_rows
    for output in (run.stdout, run.stderr, report.read_text(encoding="utf-8"), stored_rows):
        assert wrong not in output


def test_macro_only_needs_no_polygon_key(database_url, fred, fred_log, tmp_path):
    run = cli("--macro-only", "--no-progress", env=_cli_env(database_url, fred), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].endswith(": success (exit 0)") and lines[1] == MACRO_LINE
    assert not any("through session" in line or "API calls" in line for line in lines)
    assert KEY not in run.stdout + run.stderr
    assert query(database_url, "SELECT status, tickers_total FROM ingestion_runs") == [("success", 0)]
    assert query(database_url, "SELECT COUNT(*) FROM ticker_universe") == [(0,)]
    assert query(database_url, "SELECT COUNT(*) FROM ticker_data_raw") == [(0,)]
    assert query(database_url, "SELECT COUNT(*) FROM macro_observations") == [(12,)]
    assert fred_requests(fred_log) == COLD


def test_macro_only_without_a_fred_key_exits_2_and_writes_nothing(tmp_path):
    db = tmp_path / "never.db"
    run = cli("--macro-only", env={"DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith("candlethrob: FRED_API_KEY is not set.")
    assert not db.exists()


def test_macro_only_refuses_the_options_about_bars():
    args = build_parser().parse_args(["--macro-only", "--tickers", "AAPL", "--full-refresh"])
    with pytest.raises(ConfigError, match="^--macro-only cannot be combined with --tickers, --full-refresh: "):
        parse_options(args)


def test_without_a_fred_key_the_macro_series_are_skipped_and_it_is_said_once(sqlite_url, polygon):
    heard: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: heard.append(record.getMessage())
    logger = logging.getLogger("CandleThrob.pipeline")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    now = dt.datetime(2024, 5, 18, 12, tzinfo=dt.timezone.utc)
    ingestion = CompleteDataIngestion(make_config(sqlite_url, polygon), clock=lambda: now)
    try:
        first = ingestion.run(RunOptions(end=D(2024, 5, 17)))
        second = ingestion.run(RunOptions(end=D(2024, 5, 17)))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        ingestion.warehouse.dispose()
    assert [m for m in heard if "macro" in m] == ["macro series skipped: FRED_API_KEY is not set"]
    for result in (first, second):
        assert result["exit_code"] == 0
        assert macro_totals(result) == {
            "ran": False, "skipped": "FRED_API_KEY is not set", "series": 0, "series_updated": 0,
            "observations_stored": 0, "vintages_added": 0, "vintages_closed": 0, "rows_rejected": 0, "calls": 0,
            "calls_by_endpoint": {}, "retries_by_category": {}, "failed_series": [], "stopped": None}
        assert "macro" not in summary(result)


# -- planning and budgets -------------------------------------------------------------------------

def _plan(url, polygon, fred, **options) -> dict:
    now = dt.datetime(2024, 5, 18, 12, tzinfo=dt.timezone.utc)
    ingestion = CompleteDataIngestion(make_config(url, polygon, **fred_settings(fred)), clock=lambda: now)
    try:
        return ingestion.run(RunOptions(end=D(2024, 5, 17), plan_only=True, **options))
    finally:
        ingestion.warehouse.dispose()


def test_plan_counts_the_fred_calls_and_makes_none(sqlite_url, polygon, fred, fred_log):
    cold = _plan(sqlite_url, polygon, fred)
    assert (cold["macro_series"], cold["macro_calls_min"], cold["macro_calls_max"]) == (2, 4, 4)
    lines = cold["plan_text"].splitlines()
    assert lines[-2:] == [
        "macro series: 4 FRED calls for 2 series: 2 fred/series checks, then fred/series/observations for the 2 "
        "never fetched and for each whose last_updated moved (one more per extra page of 100,000 rows)",
        "4 FRED calls at most, 0 s at FRED's 120 calls a minute"]
    assert lines[0].startswith(f"{cold['calls']} calls: ")  # Polygon's, as before
    assert fred.requests == [] and query(sqlite_url, "SELECT COUNT(*) FROM macro_series") == [(0,)]
    # like the corporate actions, the macro series are shard 1's
    assert [_plan(sqlite_url, polygon, fred, shard=(k, 2))["macro_series"] for k in (1, 2)] == [2, 0]

    ingest(sqlite_url, polygon, END, **fred_settings(fred))
    nightly = _plan(sqlite_url, polygon, fred, macro_only=True)
    assert (nightly["macro_calls_min"], nightly["macro_calls_max"]) == (2, 4)
    assert nightly["plan_text"].splitlines() == [
        "macro series: 2-4 FRED calls for 2 series: 2 fred/series checks, then fred/series/observations for the 0 "
        "never fetched and for each whose last_updated moved (one more per extra page of 100,000 rows)",
        "4 FRED calls at most, 0 s at FRED's 120 calls a minute"]


def test_out_of_time_leaves_the_remaining_series_for_the_next_run(sqlite_url, fred, fred_log):
    warehouse = Warehouse(create_engine(sqlite_url))
    warehouse.create_schema()
    state = RunState(run_id="run-1", end=pd.Timestamp(END), tickers=[], started=0.0)

    def check_time():
        if "CPITEST" in state.macro.outcomes and state.macro.outcomes["CPITEST"].api_calls:
            raise OutOfTimeError("MAX_PROCESSING_TIME (1 s) reached")

    source = FredSource(KEY, fred.url)
    stage = MacroStage(lambda: source, warehouse, None, check_time=check_time)
    stage.run(state, stage.plan(SERIES))
    source.close()
    warehouse.dispose()
    assert state.macro.stopped == "max_processing_time"
    assert {s: o.status for s, o in state.macro.outcomes.items()} == {"CPITEST": "ok", "DAILYTEST": "not_run"}
    state.settle()
    assert (state.status, state.exit_code) == ("partial", 1)
    assert state.problems() == ["macro series stopped early by max_processing_time: DAILYTEST not checked"]
    assert [p for p, _, _ in fred_requests(fred_log)] == ["/fred/series", "/fred/series/observations"]
