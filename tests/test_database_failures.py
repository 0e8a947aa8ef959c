"""A database that fails, mid-run or from the start, ends the run with exit 3 and a message.

Never a traceback (the release of the lock in ``finally`` used to raise one), and nothing is
stored half: a later run against a healthy database completes the work.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ROOT, cli, query
from pg_server import TempPostgres, server_binaries

FIRST, SECOND = "2024-03-14", "2024-03-15"
AGGS = "/v2/aggs/"


@pytest.fixture(scope="module")
def market():
    return generate_market(6, "2024-01-02", "2024-03-28", seed=8)


def _env(server, url: str, **extra) -> dict:
    return {"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": url,
            "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "RETRY_DELAY": "0.01",
            "MIN_SP500_SYMBOLS": "1", "POLYGON_RATE_LIMIT": "0", "HISTORY_START": "2024-03-01", **extra}


def _fails_cleanly(done, *words: str) -> None:
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    for word in words:
        assert word in done.stderr, done.stderr


@pytest.mark.skipif(server_binaries() is None, reason="no PostgreSQL server binaries")
def test_postgresql_stopped_in_the_middle_of_a_run(market):
    pg = TempPostgres().start()
    try:
        url = pg.create_database("stopped")
        with PolygonServer(market, api_key=API_KEY, today=SECOND) as server:
            gate = server.hold(after=3, prefix=AGGS)  # the run has written batches and waits for a call
            proc = subprocess.Popen(
                [sys.executable, "-m", "CandleThrob.ingestion.ingest_data", "--end", SECOND, "--no-progress"],
                env={**{k: v for k, v in os.environ.items() if not k.startswith("POLYGON_")},
                     **_env(server, url, BATCH_SIZE="1", PARALLEL_PROCESSING="false"), "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert gate.arrived.wait(60)
            pg.stop_server()
            gate.open()
            out, err = proc.communicate(timeout=120)
    finally:
        pg.stop()
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    assert "fetch failed: the database failed during the run: connection is bad" in err
    assert "could not release the lock 'main'" in err  # logged, not raised over the real error
    assert "failed (exit 3)" in out


def test_a_read_only_sqlite_file(tmp_path, market):
    path = tmp_path / "wh.db"
    with PolygonServer(market, api_key=API_KEY, today=SECOND) as server:
        first = cli("--end", FIRST, "--no-progress", env=_env(server, f"sqlite:///{path}"))
        assert first.returncode == 0, first.stderr
        before = query(f"sqlite:///{path}", "SELECT COUNT(*) FROM ticker_data_raw")
        read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
        done = cli("--end", SECOND, "--no-progress", env=_env(server, read_only))
    _fails_cleanly(done, "the database failed", "readonly database")
    assert query(f"sqlite:///{path}", "SELECT COUNT(*) FROM ticker_data_raw") == before


def test_an_immutable_sqlite_file(tmp_path, market):
    path = tmp_path / "wh.db"
    with PolygonServer(market, api_key=API_KEY, today=SECOND) as server:
        assert cli("--end", FIRST, "--no-progress", env=_env(server, f"sqlite:///{path}")).returncode == 0
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("this file system cannot make a file immutable (chattr +i)")
        try:
            done = cli("--end", SECOND, "--no-progress", env=_env(server, f"sqlite:///{path}"))
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    _fails_cleanly(done, "the database failed")


def test_a_read_only_postgresql_database(postgres_server, market):
    url = postgres_server.create_database("read_only")
    with PolygonServer(market, api_key=API_KEY, today=SECOND) as server:
        assert cli("--end", FIRST, "--no-progress", env=_env(server, url)).returncode == 0
        before = query(url, "SELECT COUNT(*) FROM ticker_data_raw")
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("ALTER DATABASE read_only SET default_transaction_read_only = on")
        engine.dispose()
        done = cli("--end", SECOND, "--no-progress", env=_env(server, url))
    _fails_cleanly(done, "the database failed", "read-only transaction")
    assert query(url, "SELECT COUNT(*) FROM ticker_data_raw") == before


def test_an_oracle_dsn_that_does_not_resolve(tmp_path):
    # The real python-oracledb driver; only name resolution is replaced, so that no query leaves the
    # machine: a name under .invalid never resolves (RFC 6761), here without asking a DNS server.
    (tmp_path / "sitecustomize.py").write_text(
        "import socket\n"
        "_real = socket.getaddrinfo\n"
        "def _resolve(host, *args, **kwargs):\n"
        "    if str(host).endswith('.invalid'):\n"
        "        raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')\n"
        "    return _real(host, *args, **kwargs)\n"
        "socket.getaddrinfo = _resolve\n")
    done = cli("--tickers", "SPY", "--no-progress", cwd=tmp_path,
               env={"POLYGON_API_KEY": API_KEY, "ORACLE_USER": "candle", "ORACLE_PASSWORD": "pw-7d1e",
                    "ORACLE_DSN": "adb.invalid:1522/candle_high", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    _fails_cleanly(done, "cannot reach the database (oracle+oracledb://candle:***@ with "
                         "ORACLE_DSN=adb.invalid:1522/candle_high): [Errno -2] Name or service not known")
    assert "pw-7d1e" not in done.stderr + done.stdout
