"""End to end: the local Polygon-compatible server -> CandleThrob -> SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ROOT, api_calls, cli, data_calls, ingest, query, stored

HISTORY = ("2023-01-03", "2024-03-28")
END = "2024-03-15"


@pytest.fixture
def market():
    return generate_market(6, *HISTORY, seed=11)


@pytest.fixture
def server(market):
    with PolygonServer(market, api_key=API_KEY, today=END) as srv:
        yield srv


def expected(market, end, start=None, tickers=None) -> pd.DataFrame:
    frame = market.bars(start=start, end=end, adjusted=True, today=end)
    if tickers is not None:
        frame = frame[frame["ticker"].isin(tickers)]
    return frame.sort_values(["ticker", "trade_date"]).reset_index(drop=True)


def test_backfill_stores_exactly_the_served_bars(database_url, market, server):
    result = ingest(database_url, server, END)
    assert result["status"] == "success" and result["exit_code"] == 0
    # 26 tickers (6 + 20 ETFs) x 2 years of sessions: one range call per ticker is optimal.
    want = expected(market, END, start="2022-03-16")
    assert result["tickers"] == 26
    assert result["rows_written"] == len(want) == 26 * 0 + len(want)
    # plus the corporate-actions ledger: the splits and the dividends endpoints, once each
    assert result["api_calls"] == 26 + 2 and result["range_calls"] == 26 and result["grouped_calls"] == 0
    assert result["api_calls_by_endpoint"] == {"range": 26, "splits": 1, "dividends": 1}
    got = stored(database_url)
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)


def test_second_run_makes_no_calls_and_a_later_end_fetches_only_new_sessions(database_url, market, server):
    ingest(database_url, server, END)
    before = stored(database_url)
    mark = len(server.requests)
    again = ingest(database_url, server, END)
    assert api_calls(server, mark) == []
    assert again["rows_written"] == 0 and again["planned_calls"] == 0
    pd.testing.assert_frame_equal(stored(database_url), before)

    mark = len(server.requests)
    later = ingest(database_url, server, "2024-03-19")  # two new sessions: 03-18 and 03-19
    assert sorted(c["path"] for c in data_calls(server, mark)) == [
        "/v2/aggs/grouped/locale/us/market/stocks/2024-03-15",
        "/v2/aggs/grouped/locale/us/market/stocks/2024-03-18",
        "/v2/aggs/grouped/locale/us/market/stocks/2024-03-19"]
    # plus the corporate actions since the last run, and 03-15 once more: its evening values may have changed
    paths = [c["path"] for c in api_calls(server, mark)]
    assert paths.count("/stocks/v1/splits") == 1 and paths.count("/stocks/v1/dividends") == 1
    assert paths.count("/v2/aggs/grouped/locale/us/market/stocks/2024-03-15") == 1
    assert later["rows_written"] == 3 * 26 and later["settled_sessions"] == ["2024-03-15"]
    assert later["revised_bars"] == 0
    pd.testing.assert_frame_equal(stored(database_url), expected(market, "2024-03-19", start="2022-03-16"),
                                  check_dtype=False)


def test_brk_b_round_trips(database_url, server, market):
    market.add_constituent("BRK.B", "Berkshire Hathaway", "Financials")
    brk = generate_market(62, *HISTORY, seed=11).bars("BRK.B")
    market.add_bars(brk)
    result = ingest(database_url, server, END, tickers=["BRK.B"])
    assert result["exit_code"] == 0
    got = stored(database_url)
    assert got["ticker"].unique().tolist() == ["BRK.B"]
    pd.testing.assert_frame_equal(got, expected(market, END, start="2022-03-16", tickers=["BRK.B"]),
                                  check_dtype=False)
    assert any(r["path"].startswith("/v2/aggs/ticker/BRK.B/range/1/day/") for r in server.requests)


def test_lineage_and_run_rows(sqlite_url, server):
    result = ingest(sqlite_url, server, END)
    rows = query(sqlite_url, "SELECT DISTINCT run_id, source FROM ticker_data")
    assert rows == [(result["run_id"], "range")]
    runs = query(sqlite_url, "SELECT run_id, status, rows_written, api_calls, tickers_total FROM ingestion_runs")
    assert runs == [(result["run_id"], "success", result["rows_written"], 28, 26)]
    audit = query(sqlite_url, "SELECT COUNT(*), SUM(bars_written), SUM(api_calls) FROM ingestion_audit")
    assert audit == [(26, result["rows_written"], 26)]


def test_killed_run_resumes_to_the_same_table(tmp_path, market):
    """SIGKILL in the middle of a backfill, run again: the table equals an uninterrupted run's."""
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    killed = f"sqlite:///{tmp_path / 'killed.db'}"
    with PolygonServer(market, api_key=API_KEY, today=END) as srv:
        env = {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": srv.url, "BATCH_SIZE": "2",
               "POLYGON_RATE_LIMIT": "0", "PARALLEL_PROCESSING": "false",
               "SP500_URL": f"{srv.url}/wiki/List_of_S%26P_500_companies"}
        args = ["--end", END, "--tickers", ",".join(market.tickers), "--no-progress"]
        done = cli(*args, env={**env, "DATABASE_URL": reference})
        assert done.returncode == 0, done.stderr

        gate = srv.hold(after=4, prefix="/v2/aggs/")  # two batches answer; the run waits in the third
        proc = subprocess.Popen([sys.executable, "-m", "CandleThrob.ingestion.ingest_data", *args],
                                env={**os.environ, **env, "DATABASE_URL": killed, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert gate.arrived.wait(60)
        for _ in range(1200):  # the second batch's commit follows its answers by a moment
            if query(killed, "SELECT COUNT(DISTINCT ticker) FROM ingestion_coverage")[0][0] == 4:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gate.open()
        assert query(killed, "SELECT COUNT(DISTINCT ticker) FROM ticker_data_raw")[0][0] == 4  # died in the middle
        assert query(killed, "SELECT status FROM ingestion_runs") == [("running",)]

        resumed = cli(*args, env={**env, "DATABASE_URL": killed})
        assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(stored(killed), stored(reference))
    assert query(killed, "SELECT COUNT(*) FROM (SELECT ticker, trade_date FROM ticker_data_raw "
                         "GROUP BY ticker, trade_date HAVING COUNT(*) > 1) AS dup") == [(0,)]
    # the killed run's row says what happened to it
    assert sorted(s for (s,) in query(killed, "SELECT status FROM ingestion_runs")) == ["abandoned", "success"]


@pytest.mark.parametrize("variable,value,allowed", [
    ("BATCH_SIZE", "abc", "a whole number from 1 to 10000"),
    ("MAX_WORKERS", "-1", "a whole number from 1 to 64"),
    ("POLYGON_RATE_LIMIT", "fast", "a number from 0 to 3600"),
    ("MIN_DATA_QUALITY_SCORE", "1.5", "a number from 0 to 1"),
    ("PARALLEL_PROCESSING", "maybe", "true or false"),
    ("HISTORY_START", "2024-13-01", "a date as YYYY-MM-DD"),
    ("ORA_PYTHON_DRIVER_TYPE", "thicker", "thin or thick"),
])
def test_bad_configuration_exits_2_and_creates_nothing(tmp_path, variable, value, allowed):
    db = tmp_path / "sub" / "never.db"
    done = cli("--demo", env={variable: value, "DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path)
    assert done.returncode == 2
    assert f"{variable}='{value}' is not allowed: expected {allowed}" in done.stderr
    assert not db.exists() and not db.parent.exists()
    assert not (tmp_path / "data").exists()


def test_missing_key_exits_2_with_help(tmp_path):
    done = cli(env={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}, cwd=tmp_path)
    assert done.returncode == 2
    assert "POLYGON_API_KEY is not set" in done.stderr and "--demo" in done.stderr
    assert not (tmp_path / "x.db").exists()


def test_bad_tickers_option_exits_2(tmp_path):
    done = cli("--tickers", "AAPL,NYSE:LMT", env={"POLYGON_API_KEY": "k",
                                                 "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert done.returncode == 2
    assert "--tickers" in done.stderr and "NYSE:LMT" in done.stderr
    assert not (tmp_path / "x.db").exists()


def test_demo_runs_twice_from_the_readme(tmp_path):
    first = cli("--demo", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "success (exit 0)" in first.stdout and "60 tickers" in first.stdout
    assert (tmp_path / "data" / "candlethrob-demo.db").exists()
    second = cli("--demo", "--no-progress", cwd=tmp_path, by_path=True)
    assert second.returncode == 0, second.stderr
    assert "already up to date" in second.stdout and "API calls: 0;" in second.stdout
