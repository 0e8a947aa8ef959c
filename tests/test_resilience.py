"""A bad night: faults, rate limits, stalls, signals, concurrent runs, a wrong key."""

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

from ingest_helpers import API_KEY, ROOT, cli, data_calls, ingest, query, stored

HISTORY = ("2023-01-03", "2024-03-28")
END = "2024-03-15"


@pytest.fixture(scope="module")
def market40():
    return generate_market(20, *HISTORY, seed=5)  # 20 S&P-like + 20 ETFs = 40 tickers


def _env(server, database_url: str, **extra) -> dict:
    env = {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": database_url,
           "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "RETRY_DELAY": "0.01",
           "MIN_SP500_SYMBOLS": "1", "POLYGON_RATE_LIMIT": "0"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _popen(args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "CandleThrob.ingestion.ingest_data", *args],
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("POLYGON_")},
                                 **env, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _coverage_rows(url: str) -> int:
    try:
        return query(url, "SELECT COUNT(*) FROM ingestion_coverage")[0][0]
    except Exception:
        return 0


def test_twenty_percent_faults_end_with_the_same_table(database_url, tmp_path, market40):
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    with PolygonServer(market40, api_key=API_KEY, today=END) as clean:
        ingest(clean_url, clean, END)
    with PolygonServer(market40, api_key=API_KEY, today=END, fault_rate=0.2, seed=42,
                       stall_seconds=3) as faulty:
        result = ingest(database_url, faulty, END, max_retries=8, request_timeout=0.5)
    # Stalled answers are logged when they end, so count after the server stopped.
    faults = [r["fault"] for r in faulty.requests if r["fault"]]
    assert result["status"] == "success", result["outcomes"]
    assert len(faults) >= 5 and {"5xx", "reset", "truncated"} <= set(faults)
    # each failed attempt cost exactly one extra call, and each was retried
    assert result["api_calls"] - 40 == sum(result["retries_by_category"].values()) >= len(faults)
    pd.testing.assert_frame_equal(stored(database_url), stored(clean_url))


def test_server_rate_limit_costs_a_handful_of_429s(sqlite_url, market40):
    # 5 calls per 1 s window on the server; the client paces itself at the same rate.
    with PolygonServer(market40, api_key=API_KEY, today=END, calls_per_minute=5, window_seconds=1,
                       send_retry_after=True) as server:
        result = ingest(sqlite_url, server, END, rate_limit_seconds=0.2, max_retries=5)
        limited = [r for r in server.requests if r["status"] == 429]
    assert result["status"] == "success"
    assert len(limited) <= 3
    assert result["rows_written"] == len(market40.bars(start="2022-03-16", end=END))


def test_a_stalled_response_is_retried_within_the_timeout(sqlite_url, market40):
    with PolygonServer(market40, api_key=API_KEY, today=END, fault_rate=0.3, fault_kinds=["slow"],
                       seed=3, stall_seconds=20) as server:
        result = ingest(sqlite_url, server, END, request_timeout=0.3, max_retries=8, max_workers=8)
    stalls = sum(r["fault"] == "slow" for r in server.requests)
    assert stalls >= 5
    assert result["status"] == "success"
    # Every stall ended in a read timeout and a retry: had the client waited the
    # server's 20 s out, those answers would have been 200s, not network retries.
    assert result["retries_by_category"]["network"] == stalls


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_a_signal_marks_interrupted_and_the_next_run_completes(database_url, tmp_path, market40, signum, code):
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    url = database_url
    args = ["--end", END, "--no-progress"]
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        assert cli(*args, env=_env(server, reference)).returncode == 0
        proc = _popen(args, _env(server, url, BATCH_SIZE=2, POLYGON_RATE_LIMIT=0.1, PARALLEL_PROCESSING="false"))
        _wait_for(lambda: _coverage_rows(url) >= 2)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert "interrupted" in out
        runs = query(url, "SELECT status FROM ingestion_runs")
        assert runs == [("interrupted",)]
        # Consistent: every ticker with bars is covered, and its bars are all there.
        covered = {t for (t,) in query(url, "SELECT DISTINCT ticker FROM ingestion_coverage")}
        with_bars = {t for (t,) in query(url, "SELECT DISTINCT ticker FROM ticker_data")}
        assert with_bars == covered and 0 < len(covered) < 40
        assert query(url, "SELECT COUNT(*) FROM ingestion_lock") == [(0,)]
        resumed = cli(*args, env=_env(server, url))
        assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(stored(url), stored(reference))


def test_second_concurrent_run_exits_4_naming_the_holder(database_url, market40):
    url = database_url
    args = ["--end", END, "--no-progress"]
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        first = _popen(args, _env(server, url, BATCH_SIZE=2, POLYGON_RATE_LIMIT=0.05,
                                  PARALLEL_PROCESSING="false"))
        _wait_for(lambda: _coverage_rows(url) >= 1)
        second = cli(*args, env=_env(server, url))
        assert second.returncode == 4
        assert f"pid {first.pid}" in second.stderr and "another run holds the lock" in second.stderr
        assert first.wait(timeout=120) == 0
    assert query(url, "SELECT COUNT(*) FROM (SELECT ticker, trade_date FROM ticker_data "
                      "GROUP BY ticker, trade_date HAVING COUNT(*) > 1) AS dup") == [(0,)]
    assert query(url, "SELECT status, COUNT(*) FROM ingestion_runs GROUP BY status") == [("success", 1)]


def test_a_stale_lock_from_a_killed_run_does_not_block(database_url, market40):
    url = database_url
    args = ["--end", END, "--no-progress"]
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        victim = _popen(args, _env(server, url, BATCH_SIZE=2, POLYGON_RATE_LIMIT=0.05,
                                   PARALLEL_PROCESSING="false"))
        _wait_for(lambda: _coverage_rows(url) >= 1)
        victim.kill()
        victim.wait()
        assert query(url, "SELECT pid FROM ingestion_lock") == [(victim.pid,)]
        after = cli(*args, env=_env(server, url))
        assert after.returncode == 0, after.stderr
    assert query(url, "SELECT COUNT(*) FROM ingestion_lock") == [(0,)]


def test_wrong_key_exits_3_quickly_without_showing_the_key(tmp_path, market40):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    wrong = "wrong-key-9c2f7e"
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        env = _env(server, url, POLYGON_RATE_LIMIT=0)
        env["POLYGON_API_KEY"] = wrong
        done = cli("--end", END, "--log-format", "json", env=env)
        unauthorized = [r for r in server.requests if r["status"] == 401]
    assert done.returncode == 3
    assert "refused the key" in done.stderr
    assert 1 <= len(unauthorized) <= 4  # the workers in flight, not the remaining 40 calls
    assert wrong not in done.stdout + done.stderr
    assert query(url, "SELECT status FROM ingestion_runs") == [("failed",)]


def test_grouped_days_answered_empty_are_retried_not_recorded(database_url, tmp_path, market40):
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    # 40 tickers x 10 sessions: ten grouped calls beat forty range calls.
    with PolygonServer(market40, api_key=API_KEY, today=END) as clean:
        ingest(clean_url, clean, END, start="2024-03-04")
    with PolygonServer(market40, api_key=API_KEY, today=END, fault_rate=0.4, fault_kinds=["null_results"],
                       seed=8) as server:
        result = ingest(database_url, server, END, start="2024-03-04", max_retries=8)
        empty = sum(r["fault"] == "null_results" for r in server.requests)
    assert result["grouped_calls"] == 10 and empty >= 2
    assert result["api_calls"] == 10 + empty
    assert result["status"] == "success"
    pd.testing.assert_frame_equal(stored(database_url), stored(clean_url))


def test_time_budget_stops_at_a_batch_boundary_and_the_next_run_resumes(tmp_path, market40):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    args = ["--end", END, "--no-progress"]
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        assert cli(*args, env=_env(server, reference)).returncode == 0
        slow = _env(server, url, BATCH_SIZE=2, POLYGON_RATE_LIMIT=0.15, PARALLEL_PROCESSING="false",
                    MAX_PROCESSING_TIME=1)
        stopped = cli(*args, "--report", str(tmp_path / "r.json"), env=slow)
        assert stopped.returncode == 1, stopped.stderr
        assert "stopped early (max_processing_time)" in stopped.stdout
        report = __import__("json").loads((tmp_path / "r.json").read_text())
        assert report["status"] == "partial" and 0 < report["remaining_calls"] < 40
        assert report["api_calls"] + report["remaining_calls"] == 40
        resumed = cli(*args, env=_env(server, url))
        assert resumed.returncode == 0
    pd.testing.assert_frame_equal(stored(url), stored(reference))


def test_memory_budget_stops_cleanly_before_exceeding_it(tmp_path, market40):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        # Any Python process with pandas is past 90% of 64 MB: the run stops before its first batch.
        done = cli("--end", END, "--no-progress", env=_env(server, url, MAX_MEMORY_USAGE=64))
        assert data_calls(server) == []
    assert done.returncode == 1
    assert "stopped early (max_memory_usage): 40 calls left" in done.stdout
    assert query(url, "SELECT COUNT(*) FROM ticker_data") == [(0,)]
    assert query(url, "SELECT status FROM ingestion_runs") == [("partial",)]


def test_a_grouped_day_that_keeps_failing_is_partial_and_fetched_next_run(database_url, tmp_path, market40):
    """Nothing is quarantined for a day that was not answered, and the next run fills it."""
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    with PolygonServer(market40, api_key=API_KEY, today="2024-03-01") as server:
        ingest(reference, server, "2024-03-06", start="2024-02-01")
    with PolygonServer(market40, api_key=API_KEY, today="2024-03-01") as server:
        ingest(database_url, server, "2024-03-01", start="2024-02-01")
        server.fault_rate, server.fault_kinds = 1.0, ("5xx",)
        first = ingest(database_url, server, "2024-03-04", max_retries=1)  # the day fails twice
        assert first["exit_code"] == 1 and first["failed_grouped_days"] == ["2024-03-04"]
        server.fault_rate = 0.0
        mark = len(server.requests)
        second = ingest(database_url, server, "2024-03-06")
        assert sorted(c["path"][-10:] for c in data_calls(server, mark)) == ["2024-03-04", "2024-03-05",
                                                                            "2024-03-06"]
    assert second["exit_code"] == 0 and second["rows_rejected"] == 0
    pd.testing.assert_frame_equal(stored(database_url), stored(reference))


def test_a_grouped_day_with_far_fewer_tickers_than_usual_is_not_taken(sqlite_url, market40):
    """The vendor answers OK with a handful of tickers: retried, then the run is partial
    and the day stays missing, instead of 35 tickers being recorded as not trading."""
    bars = market40.bars()
    glitch = pd.Timestamp("2024-03-04")
    thin = bars[(bars["trade_date"] != glitch) | bars["ticker"].isin(market40.tickers[:5])]
    from CandleThrob.testing.datagen import MarketData
    thin_market = MarketData(thin, constituents=market40.constituents)
    with PolygonServer(thin_market, api_key=API_KEY, today="2024-03-01") as server:
        ingest(sqlite_url, server, "2024-03-01", start="2024-02-01")  # 21 grouped days of 40 tickers
        result = ingest(sqlite_url, server, "2024-03-04", max_retries=2)
        assert result["failed_grouped_days"] == ["2024-03-04"] and result["exit_code"] == 1
        assert [r["path"][-10:] for r in data_calls(server)].count("2024-03-04") == 3  # 1 + 2 retries
    assert query(sqlite_url, "SELECT COUNT(*) FROM ticker_data WHERE trade_date = '2024-03-04'") == [(0,)]
    assert query(sqlite_url, "SELECT MAX(covered_to) FROM ingestion_coverage") == [("2024-03-01",)]
