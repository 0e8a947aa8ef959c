"""A bad night: faults, rate limits, stalls, signals, concurrent runs, a wrong key, budgets.

No test here waits for a race to turn out right: a run that must be caught in
the middle is held at a known request by the server's gate (``PolygonServer.hold``)
until the test has done what it came to do.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading

import pandas as pd
import pytest
from sqlalchemy import create_engine, update
from sqlalchemy.exc import OperationalError

from CandleThrob.clock import Clock
from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.reporting.report import summary
from CandleThrob.reporting.monitor import MemoryBudget
from CandleThrob.testing.datagen import MarketData, generate_market
from CandleThrob.testing.polygon_server import PolygonServer
from CandleThrob.warehouse.schema import ingestion_lock
from CandleThrob.warehouse.storage import Warehouse

from ingest_helpers import API_KEY, ROOT, cli, data_calls, ingest, make_config, query, stored

HISTORY = ("2023-01-03", "2024-03-28")
END = "2024-03-15"
AGGS = "/v2/aggs/"


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


def _covered(url: str) -> int:
    try:
        return query(url, "SELECT COUNT(DISTINCT ticker) FROM ingestion_coverage")[0][0]
    except Exception:  # the file or its tables do not exist yet
        return 0


def _until(predicate, what: str) -> None:
    """Wait for a state the run reaches by itself (a commit), bounded; no outcome depends on when."""
    done = threading.Event()
    for _ in range(1200):
        if predicate():
            return
        done.wait(0.05)
    raise AssertionError(f"never reached: {what}")


def _ingestion(url: str, server, **overrides) -> CompleteDataIngestion:
    now = dt.datetime(2024, 3, 16, 12, tzinfo=dt.timezone.utc)
    return CompleteDataIngestion(make_config(url, server, **overrides), clock=lambda: now)


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
    assert result["api_calls"] - result["planned_calls"] == sum(result["retries_by_category"].values()) >= len(faults)
    pd.testing.assert_frame_equal(stored(database_url), stored(clean_url))


def test_server_rate_limit_costs_a_handful_of_429s(sqlite_url, market40):
    # 5 calls per 1 s window on the server; the client paces itself at the same rate, one at a time.
    with PolygonServer(market40, api_key=API_KEY, today=END, calls_per_minute=5, window_seconds=1,
                       send_retry_after=True) as server:
        result = ingest(sqlite_url, server, END, rate_limit_seconds=0.2, rate_burst=1, max_retries=5)
        limited = [r for r in server.requests if r["status"] == 429]
    assert result["status"] == "success"
    assert len(limited) <= 3
    assert result["rows_written"] == len(market40.bars(start="2022-03-16", end=END))


def test_a_stalled_response_is_cut_at_the_deadline_and_retried(sqlite_url, market40):
    # A stall lasts until the server stops: only the client's deadline can end it.
    with PolygonServer(market40, api_key=API_KEY, today=END, fault_rate=0.3, fault_kinds=["slow"],
                       seed=3, stall_seconds=3600) as server:
        result = ingest(sqlite_url, server, END, request_timeout=0.5, max_retries=8, max_workers=8)
    stalls = sum(r["fault"] == "slow" for r in server.requests)
    assert stalls >= 5
    assert result["status"] == "success"
    # Every stall ended in the client's deadline and a retry (a retry can itself meet a stall).
    assert result["retries_by_category"]["api"] + result["retries_by_category"]["network"] >= stalls


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_a_signal_marks_interrupted_and_the_next_run_completes(database_url, tmp_path, market40, signum, code):
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    url = database_url
    args = ["--end", END, "--no-progress"]
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        assert cli(*args, env=_env(server, reference)).returncode == 0
        gate = server.hold(after=4, prefix=AGGS)  # two batches of two answer, the fifth call waits
        proc = _popen(args, _env(server, url, BATCH_SIZE=2, PARALLEL_PROCESSING="false"))
        assert gate.arrived.wait(60)
        _until(lambda: _covered(url) == 4, "the second batch committed")
        proc.send_signal(signum)  # the run is inside the held request: the signal cuts it
        out, err = proc.communicate(timeout=60)
        gate.open()
        assert proc.returncode == code, err
        assert "interrupted" in out and "Traceback" not in err
        assert query(url, "SELECT status FROM ingestion_runs") == [("interrupted",)]
        # Consistent: exactly the two committed batches, every ticker with bars covered.
        covered = {t for (t,) in query(url, "SELECT DISTINCT ticker FROM ingestion_coverage")}
        with_bars = {t for (t,) in query(url, "SELECT DISTINCT ticker FROM ticker_data_raw")}
        assert with_bars == covered and len(covered) == 4
        assert query(url, "SELECT COUNT(*) FROM ingestion_lock") == [(0,)]
        resumed = cli(*args, env=_env(server, url))
        assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(stored(url), stored(reference))


def test_second_concurrent_run_exits_4_naming_the_holder(database_url, market40):
    url = database_url
    args = ["--end", END, "--no-progress"]
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        gate = server.hold(after=0, prefix=AGGS)  # the first run holds its lock, waiting at its first call
        first = _popen(args, _env(server, url))
        assert gate.arrived.wait(60)
        second = cli(*args, env=_env(server, url))
        assert second.returncode == 4
        assert f"pid {first.pid}" in second.stderr and "another run holds the lock" in second.stderr
        gate.open()
        assert first.wait(timeout=120) == 0
    assert query(url, "SELECT COUNT(*) FROM (SELECT ticker, trade_date FROM ticker_data_raw "
                      "GROUP BY ticker, trade_date HAVING COUNT(*) > 1) AS dup") == [(0,)]
    assert query(url, "SELECT status, COUNT(*) FROM ingestion_runs GROUP BY status") == [("success", 1)]


def test_a_stale_lock_from_a_killed_run_is_taken_over_and_the_run_marked_abandoned(database_url, market40):
    url = database_url
    args = ["--end", END, "--no-progress"]
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        gate = server.hold(after=2, prefix=AGGS)
        victim = _popen(args, _env(server, url, BATCH_SIZE=2, PARALLEL_PROCESSING="false"))
        assert gate.arrived.wait(60)
        victim.kill()
        victim.wait()
        gate.open()
        assert query(url, "SELECT pid FROM ingestion_lock") == [(victim.pid,)]
        victim_run = query(url, "SELECT run_id FROM ingestion_runs")[0][0]
        after = cli(*args, "--report", "/dev/null", env=_env(server, url))
        assert after.returncode == 0, after.stderr
    assert query(url, "SELECT COUNT(*) FROM ingestion_lock") == [(0,)]
    rows = query(url, f"SELECT status, abandoned_by, abandoned_at FROM ingestion_runs WHERE run_id = '{victim_run}'")
    taker = query(url, f"SELECT run_id FROM ingestion_runs WHERE run_id <> '{victim_run}'")[0][0]
    assert rows[0][0] == "abandoned" and rows[0][1] == taker and rows[0][2] is not None
    assert "took over the lock 'main'" in after.stderr


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
    assert 1 <= len(unauthorized) <= 4  # the calls in flight, not the remaining 40
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
    assert result["api_calls"] == 10 + 2 + empty  # the days, the ledger's two calls, and a retry per empty day
    assert result["status"] == "success"
    pd.testing.assert_frame_equal(stored(database_url), stored(clean_url))


def test_time_budget_stops_at_a_batch_boundary_and_the_next_run_resumes(tmp_path, market40):
    # The budget is read from the run's monotonic clock, here one that moves only when the test
    # moves it: the run is held inside its second batch, a whole budget passes, then it goes on.
    url = f"sqlite:///{tmp_path / 'run.db'}"
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    elapsed = [0.0]
    clock = Clock(now=lambda: dt.datetime(2024, 3, 16, 12, tzinfo=dt.timezone.utc), monotonic=lambda: elapsed[0])
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        assert cli("--end", END, "--no-progress", env=_env(server, reference)).returncode == 0
        gate = server.hold(after=2, prefix=AGGS)  # the first batch answers; the second waits
        config = make_config(url, server, batch_size=2, parallel_processing=False, max_workers=1,
                             max_processing_time=60)
        ingestion = CompleteDataIngestion(config, clock=clock)
        outcome: dict = {}
        run = threading.Thread(target=lambda: outcome.update(ingestion.run(RunOptions(end=pd.Timestamp(END).date()))))
        run.start()
        assert gate.arrived.wait(60)
        elapsed[0] = 61.0  # past MAX_PROCESSING_TIME while the request is held
        gate.open()
        run.join(120)
        ingestion.warehouse.dispose()
        assert outcome["exit_code"] == 1 and outcome["stopped"] == "max_processing_time"
        assert "stopped early (max_processing_time)" in summary(outcome)
        # The held batch completes and is kept; the budget stops the run before the third.
        assert outcome["status"] == "partial" and outcome["remaining_calls"] == 36
        assert outcome["api_calls_by_endpoint"] == {"range": 4, "splits": 1, "dividends": 1}
        assert _covered(url) == 4
        resumed = cli("--end", END, "--no-progress", env=_env(server, url))
        assert resumed.returncode == 0
    pd.testing.assert_frame_equal(stored(url), stored(reference))


def test_a_memory_budget_below_what_the_process_needs_is_a_usage_error(tmp_path, market40):
    db = tmp_path / "run.db"
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        # Any Python process with pandas is past 90% of 64 MB before it fetches anything.
        done = cli("--end", END, "--no-progress", env=_env(server, f"sqlite:///{db}", MAX_MEMORY_USAGE=64))
        assert data_calls(server) == []
    assert done.returncode == 2
    assert "MAX_MEMORY_USAGE=64 is not allowed: expected more than" in done.stderr
    assert not db.exists()  # checked before the database was touched


def test_memory_budget_stops_cleanly_at_a_batch_boundary(sqlite_url, market40):
    # Read at the start, before the first batch, then after it: the budget is crossed there.
    readings = iter([100.0] * 2 + [2000.0] * 1000)
    budget = MemoryBudget(1024, rss_mb=lambda: next(readings))
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        ingestion = CompleteDataIngestion(make_config(sqlite_url, server, batch_size=5, max_workers=1),
                                          clock=lambda: dt.datetime(2024, 3, 16, 12, tzinfo=dt.timezone.utc),
                                          memory_budget=budget)
        result = ingestion.run(RunOptions(end=dt.date(2024, 3, 15)))
        ingestion.warehouse.dispose()
    assert result["exit_code"] == 1 and result["stopped"] == "max_memory_usage"
    assert result["remaining_calls"] == 35 and _covered(sqlite_url) == 5


def test_a_grouped_day_that_keeps_failing_is_partial_and_fetched_next_run(database_url, tmp_path, market40):
    """Nothing is quarantined for a day that was not answered, and the next run fills it."""
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    with PolygonServer(market40, api_key=API_KEY, today="2024-03-01") as server:
        ingest(reference, server, "2024-03-06", start="2024-02-01")
    with PolygonServer(market40, api_key=API_KEY, today="2024-03-01") as server:
        ingest(database_url, server, "2024-03-01", start="2024-02-01")
        server.fault_rate, server.fault_kinds = 1.0, ("5xx",)
        first = ingest(database_url, server, "2024-03-04", max_retries=1)  # the days fail twice
        assert first["exit_code"] == 1 and first["failed_grouped_days"] == ["2024-03-01", "2024-03-04"]
        server.fault_rate = 0.0
        mark = len(server.requests)
        second = ingest(database_url, server, "2024-03-06")
        assert sorted(c["path"][-10:] for c in data_calls(server, mark)) == ["2024-03-01", "2024-03-04",
                                                                            "2024-03-05", "2024-03-06"]
    assert second["exit_code"] == 0 and second["rows_rejected"] == 0
    pd.testing.assert_frame_equal(stored(database_url), stored(reference))


def test_a_grouped_day_with_far_fewer_tickers_than_usual_is_not_taken(sqlite_url, market40):
    """The vendor answers OK with a handful of tickers: retried, then the run is partial
    and the day stays missing, instead of 35 tickers being recorded as not trading."""
    bars = market40.bars()
    glitch = pd.Timestamp("2024-03-04")
    thin = bars[(bars["trade_date"] != glitch) | bars["ticker"].isin(market40.tickers[:5])]
    thin_market = MarketData(thin, constituents=market40.constituents)
    with PolygonServer(thin_market, api_key=API_KEY, today="2024-03-01") as server:
        ingest(sqlite_url, server, "2024-03-01", start="2024-02-01")  # 21 grouped days of 40 tickers
        result = ingest(sqlite_url, server, "2024-03-04", max_retries=2, settle_sessions=0)
        assert result["failed_grouped_days"] == ["2024-03-04"] and result["exit_code"] == 1
        assert [r["path"][-10:] for r in data_calls(server)].count("2024-03-04") == 3  # 1 + 2 retries
    assert query(sqlite_url, "SELECT COUNT(*) FROM ticker_data_raw WHERE trade_date = '2024-03-04'") == [(0,)]
    assert query(sqlite_url, "SELECT MAX(covered_to) FROM ingestion_coverage") == [("2024-03-01",)]


# ---- tests that fail when the mechanism they are named for is removed ---------------------------

class _FailsOnTheThirdWrite(Warehouse):
    """The bars write of the third batch fails after its coverage rows were written."""

    writes = 0

    def write_bars(self, conn, bars, run_id, ingested_at=None):  # noqa: ANN001
        type(self).writes += 1
        if type(self).writes == 3:
            raise OperationalError("INSERT INTO ticker_data_raw", {}, Exception("disk I/O error"))
        return super().write_bars(conn, bars, run_id, ingested_at)


def test_a_batch_whose_bars_write_fails_leaves_no_coverage_behind(database_url, tmp_path, market40):
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        ingest(reference, server, END)
        _FailsOnTheThirdWrite.writes = 0
        warehouse = _FailsOnTheThirdWrite(create_engine(database_url))
        warehouse.create_schema()
        config = make_config(database_url, server, batch_size=5, max_workers=1)
        now = dt.datetime(2024, 3, 16, 12, tzinfo=dt.timezone.utc)
        broken = CompleteDataIngestion(config, warehouse=warehouse, clock=lambda: now).run(
            RunOptions(end=dt.date(2024, 3, 15)))
        warehouse.dispose()
        assert broken["exit_code"] == 3 and "disk I/O error" in broken["error"]
        assert _covered(database_url) == 10  # the first two batches; the third took its coverage back
        assert ingest(database_url, server, END)["exit_code"] == 0
    pd.testing.assert_frame_equal(stored(database_url), stored(reference))


def test_a_run_whose_lock_is_taken_away_writes_nothing_more_and_exits_4(database_url, market40):
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        gate = server.hold(after=5, prefix=AGGS)
        ingestion = _ingestion(database_url, server, batch_size=5, max_workers=1)
        results = []
        worker = threading.Thread(target=lambda: results.append(ingestion.run(RunOptions(end=dt.date(2024, 3, 15)))))
        worker.start()
        assert gate.arrived.wait(60)
        _until(lambda: _covered(database_url) == 5, "the first batch committed")
        engine = create_engine(database_url)
        with engine.begin() as conn:  # another run takes the lock over
            conn.execute(update(ingestion_lock).values(run_id="another-run"))
        engine.dispose()
        before = stored(database_url)
        gate.open()
        worker.join(120)
        ingestion.warehouse.dispose()
    assert results[0]["exit_code"] == 4 and "was taken over by another run" in results[0]["error"]
    pd.testing.assert_frame_equal(stored(database_url), before)
    assert _covered(database_url) == 5


def test_the_heartbeat_advances_while_a_batch_waits(database_url, market40):
    with PolygonServer(market40, api_key=API_KEY, today=END) as server:
        gate = server.hold(after=0, prefix=AGGS)
        ingestion = CompleteDataIngestion(make_config(database_url, server), heartbeat_seconds=0.2)
        worker = threading.Thread(target=lambda: ingestion.run(RunOptions(end=dt.date(2024, 3, 15))))
        worker.start()
        assert gate.arrived.wait(60)
        started = query(database_url, "SELECT started_at, heartbeat_at FROM ingestion_lock")[0]
        # Nothing is committed while the run waits at the gate: only the heartbeat thread writes.
        _until(lambda: query(database_url, "SELECT heartbeat_at FROM ingestion_lock")[0][0] > started[1],
               "a heartbeat while the batch waits")
        gate.open()
        worker.join(120)
        ingestion.warehouse.dispose()
    assert query(database_url, "SELECT COUNT(*) FROM ingestion_lock") == [(0,)]
