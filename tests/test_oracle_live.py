"""The storage operations against a real Oracle Database (19c, 23ai, Autonomous).

Skipped unless ``ORACLE_TEST_DSN`` is set. Settings:

==============================  ============================================================
ORACLE_TEST_DSN                 TNS alias from the wallet's tnsnames.ora (``mydb_high``) or
                                an Easy Connect string (``host:1521/service``)
ORACLE_TEST_USER                schema to use: it must hold no CandleThrob tables
ORACLE_TEST_PASSWORD            its password
ORACLE_TEST_WALLET              optional: the unzipped wallet folder (becomes TNS_ADMIN)
ORACLE_TEST_WALLET_PASSWORD     optional: the wallet's password (thin mode, ewallet.pem)
ORACLE_TEST_DRIVER_TYPE         optional: ``thin`` (default) or ``thick``
ORACLE_TEST_RESET               optional: ``1`` drops CandleThrob tables left by a crashed run
==============================  ============================================================

The tables are created at the start and dropped at the end; every test starts
from empty tables. Values are compared exactly: NUMBER keeps every digit of a
Python float, DATE comes back as the same day.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from sqlalchemy import delete, inspect, select, text

from CandleThrob.warehouse import bulk
from CandleThrob.config import AdvancedBatchConfig
from CandleThrob.planning.coverage import merge_intervals
from CandleThrob.warehouse.engine import create_db_engine
from CandleThrob.errors import LockHeldError
from CandleThrob.warehouse.lock import LockLostError, RunLock
from CandleThrob.warehouse.ledger import LedgerStore
from CandleThrob.warehouse.schema import (ingestion_state, metadata, rejected_bars, ticker_data_raw,
                                          ticker_universe)
from CandleThrob.warehouse.views import drop_view_statements
from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.warehouse.storage import Warehouse
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

pytestmark = pytest.mark.skipif(
    not os.environ.get("ORACLE_TEST_DSN"),
    reason="set ORACLE_TEST_DSN (+ ORACLE_TEST_USER, ORACLE_TEST_PASSWORD, "
           "optional ORACLE_TEST_WALLET) to run the storage suite on a real Oracle")

BAR_COLUMNS = ["ticker", "trade_date", "open", "high", "low", "close", "volume", "vwap", "transactions"]
SESSIONS = pd.bdate_range("2023-01-01", "2024-12-31")
INGESTED_AT = dt.datetime(2024, 3, 5, 21, 30, 7)
D = dt.date


def merge(intervals):
    return merge_intervals(intervals, SESSIONS)


def oracle_config() -> AdvancedBatchConfig:
    env = os.environ
    missing = [name for name in ("ORACLE_TEST_USER", "ORACLE_TEST_PASSWORD") if not env.get(name)]
    if missing:
        pytest.fail(f"ORACLE_TEST_DSN is set but {', '.join(missing)} is not")
    settings = {"ORACLE_USER": env["ORACLE_TEST_USER"], "ORACLE_PASSWORD": env["ORACLE_TEST_PASSWORD"],
                "ORACLE_DSN": env["ORACLE_TEST_DSN"],
                "ORA_PYTHON_DRIVER_TYPE": env.get("ORACLE_TEST_DRIVER_TYPE", "thin")}
    if env.get("ORACLE_TEST_WALLET"):
        settings["TNS_ADMIN"] = env["ORACLE_TEST_WALLET"]
    if env.get("ORACLE_TEST_WALLET_PASSWORD"):
        settings["ORACLE_WALLET_PASSWORD"] = env["ORACLE_TEST_WALLET_PASSWORD"]
    return AdvancedBatchConfig.from_env(settings)


@pytest.fixture(scope="module")
def engine():
    engine = create_db_engine(oracle_config())
    ours = set(metadata.tables) | {"alembic_version"}
    leftover = sorted(ours & set(inspect(engine).get_table_names()))
    if leftover:
        if os.environ.get("ORACLE_TEST_RESET") != "1":
            engine.dispose()
            pytest.fail(f"schema {engine.url.username} already has CandleThrob tables {leftover}; "
                        "use an empty schema, or set ORACLE_TEST_RESET=1 to drop them")
        drop_everything(engine)
    Warehouse(engine).create_schema()
    try:
        yield engine
    finally:
        drop_everything(engine)
        engine.dispose()


def drop_everything(engine) -> None:
    """Views, tables and the schema version: an empty schema again."""
    with engine.begin() as conn:
        names = set(inspect(conn).get_view_names())
        for statement in drop_view_statements():
            if statement.split()[-1] in names:
                conn.exec_driver_sql(statement)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")


@pytest.fixture
def wh(engine):
    warehouse = Warehouse(engine)
    yield warehouse
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(delete(table))


def bars_frame(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=BAR_COLUMNS + ["source"])
    frame["trade_date"] = pd.to_datetime(frame["trade_date"]).astype("datetime64[ns]")
    for c in BAR_COLUMNS[2:]:
        frame[c] = frame[c].astype("float64")
    return frame


NAN = float("nan")
TRICKY = bars_frame([
    # floats whose shortest repr has 17 digits, tiny and huge magnitudes, fractional volume
    ("AAPL", "2024-03-04", 0.1 + 0.2, 176.5, 1 / 3, 175.10000000000002, 81510100.0, 175.3, 990001, "range"),
    ("AAPL", "2024-03-05", 170.25, 172.0, 169.5, 170.12, 95132400.5, NAN, 2 ** 40, "grouped"),
    ("BRK.A", "2024-03-04", 612241.23, 615000.0, 1e-7, 611000.99, 1234.5678, 613000.5, NAN, "range"),
    ("MSFT", "2024-03-04", 415.5, 417.0, 410.1, 414.92, 1.5e9 + 0.25, NAN, NAN, "range"),
])


def stored_bars(wh, **kwargs) -> pd.DataFrame:
    return wh.bars(**kwargs)[BAR_COLUMNS].reset_index(drop=True)


def expected_bars(frame) -> pd.DataFrame:
    return frame.sort_values(["ticker", "trade_date"])[BAR_COLUMNS].reset_index(drop=True)


# ---- schema ---------------------------------------------------------------------------------

def test_schema_uses_number_date_and_identity(engine, wh):
    wh.create_schema()  # a second time: checkfirst, no error
    with engine.connect() as conn:
        columns = {(t, c): (dtype, precision, scale) for t, c, dtype, precision, scale in conn.execute(text(
            "SELECT table_name, column_name, data_type, data_precision, data_scale "
            "FROM user_tab_columns WHERE table_name IN "
            "('TICKER_DATA', 'TICKER_UNIVERSE', 'INGESTION_RUNS', 'INGESTION_AUDIT', 'REJECTED_BARS')"))}
        identity = conn.execute(text(
            "SELECT table_name, column_name, generation_type FROM user_tab_identity_cols "
            "WHERE table_name = 'REJECTED_BARS'")).all()
        tables = {name for (name,) in conn.execute(text("SELECT table_name FROM user_tables"))}
    assert {t.name.upper() for t in metadata.sorted_tables} <= tables  # unquoted: upper case
    assert columns[("TICKER_DATA", "TRADE_DATE")] == ("DATE", None, None)
    assert columns[("TICKER_DATA", "CLOSE_PRICE")] == ("NUMBER", None, None)
    assert columns[("TICKER_DATA", "VOLUME")] == ("NUMBER", None, None)
    assert columns[("TICKER_DATA", "NUM_TRANSACTIONS")] == ("NUMBER", 19, 0)
    assert columns[("TICKER_DATA", "INGESTED_AT")] == ("DATE", None, None)
    assert columns[("TICKER_UNIVERSE", "ACTIVE")] == ("NUMBER", 1, 0)
    assert columns[("INGESTION_RUNS", "PARAMETERS")] == ("CLOB", None, None)
    assert columns[("INGESTION_AUDIT", "FLAGS")] == ("CLOB", None, None)
    assert identity == [("REJECTED_BARS", "REJECTION_ID", "BY DEFAULT")]


# ---- bars -----------------------------------------------------------------------------------

def test_bars_upsert_is_idempotent_and_exact(engine, wh):
    with wh.transaction() as conn:
        assert wh.write_bars(conn, TRICKY, "run-1", INGESTED_AT) == 4
    with wh.transaction() as conn:
        assert wh.write_bars(conn, TRICKY, "run-2", INGESTED_AT) == 4
    assert wh.count_bars() == 4
    pd.testing.assert_frame_equal(stored_bars(wh), expected_bars(TRICKY), check_exact=True)
    lineage = wh.bars()
    assert lineage["run_id"].tolist() == ["run-2"] * 4
    assert lineage["source"].tolist() == ["range", "grouped", "range", "range"]
    with engine.connect() as conn:
        stamps = conn.execute(select(ticker_data_raw.c.ingested_at).distinct()).scalars().all()
    assert stamps == [INGESTED_AT]


def test_an_upsert_updates_changed_values(wh):
    with wh.transaction() as conn:
        wh.write_bars(conn, TRICKY, "run-1", INGESTED_AT)
    changed = TRICKY.copy()
    changed.loc[1, ["close", "vwap", "transactions"]] = [171.01, 170.77, 5.0]
    changed.loc[0, "vwap"] = NAN  # a value can become NULL again
    with wh.transaction() as conn:
        wh.write_bars(conn, changed.iloc[:2], "run-2", INGESTED_AT)
    pd.testing.assert_frame_equal(stored_bars(wh), expected_bars(changed), check_exact=True)
    assert wh.bars(tickers=["AAPL"])["run_id"].tolist() == ["run-2", "run-2"]
    assert wh.bars(tickers=["MSFT"])["run_id"].tolist() == ["run-1"]


def test_array_chunks_with_only_nulls_before_numbers(wh, monkeypatch):
    # Each chunk is a new cursor, so a chunk whose vwap is all NULL cannot fix the
    # bind type of the next chunk's numbers.
    monkeypatch.setattr(bulk, "ORACLE_ARRAY_ROWS", 100)
    days = SESSIONS[:250]
    frame = bars_frame([("SPY", day, 400 + i / 8, 401 + i / 8, 399 + i / 8, 400.5 + i / 8, 1e6 + i,
                         NAN if i < 100 else 400.25 + i / 8, NAN if i < 100 else 1000 + i, "range")
                        for i, day in enumerate(days)])
    with wh.transaction() as conn:
        assert wh.write_bars(conn, frame, "run-1", INGESTED_AT) == 250
    pd.testing.assert_frame_equal(stored_bars(wh), expected_bars(frame), check_exact=True)


def test_reads(wh):
    with wh.transaction() as conn:
        wh.write_bars(conn, TRICKY, "run-1", INGESTED_AT)
    assert wh.stored_span("AAPL") == (D(2024, 3, 4), D(2024, 3, 5))
    assert wh.stored_span("NOPE") is None
    assert wh.latest_closes() == {"AAPL": (pd.Timestamp("2024-03-05"), 170.12),
                                  "BRK.A": (pd.Timestamp("2024-03-04"), 611000.99),
                                  "MSFT": (pd.Timestamp("2024-03-04"), 414.92)}
    assert wh.latest_closes()["MSFT"] == (pd.Timestamp("2024-03-04"), 414.92)
    window = stored_bars(wh, start=D(2024, 3, 4), end=D(2024, 3, 4))
    assert window["ticker"].tolist() == ["BRK.A", "MSFT"]


def test_rejected_bars_get_identity_keys(engine, wh):
    rejected = pd.DataFrame({
        "ticker": ["AAPL", "MSFT"], "trade_date": pd.to_datetime(["2024-03-04", "2024-03-05"]),
        "open": [175.0, NAN], "high": [174.0, 417.0], "low": [176.0, 410.1], "close": [175.1, 414.92],
        "volume": [-5.0, 17596300.0], "vwap": [NAN, 414.1], "transactions": [NAN, 12.0],
        "reasons": ["high_below_low;negative_volume", "missing_open"],
        "detail": ["high 174.0 < low 176.0", NAN], "source": ["range", "grouped"]})
    with wh.transaction() as conn:
        assert wh.write_rejected(conn, rejected, "run-1") == 2
    with wh.transaction() as conn:  # one row: SQLAlchemy's INSERT ... RETURNING path
        assert wh.write_rejected(conn, rejected.iloc[:1], "run-2") == 1
    r = rejected_bars.c
    with engine.connect() as conn:
        rows = conn.execute(select(r.rejection_id, r.run_id, r.ticker, r.trade_date, r.open_price,
                                   r.vwap, r.num_transactions, r.volume, r.reasons, r.detail, r.source)
                            .order_by(r.rejection_id)).all()
    ids = [row[0] for row in rows]
    assert len(set(ids)) == 3 and ids == sorted(ids)
    assert [tuple(row[1:]) for row in rows] == [
        ("run-1", "AAPL", D(2024, 3, 4), 175.0, None, None, -5.0, "high_below_low;negative_volume",
         "high 174.0 < low 176.0", "range"),
        ("run-1", "MSFT", D(2024, 3, 5), None, 414.1, 12.0, 17596300.0, "missing_open", None, "grouped"),
        ("run-2", "AAPL", D(2024, 3, 4), 175.0, None, None, -5.0, "high_below_low;negative_volume",
         "high 174.0 < low 176.0", "range"),
    ]


# ---- runs, audit, state ---------------------------------------------------------------------

def test_run_rows_with_long_clob_parameters(wh):
    parameters = json.dumps({"tickers": [f"T{i:04d}" for i in range(1500)]})
    assert len(parameters) > 4000  # beyond a VARCHAR2 bind in SQL
    wh.start_run({"run_id": "run-1", "status": "running", "started_at": INGESTED_AT, "host": "h1",
                  "pid": 4242, "shard": "1/4", "end_date": D(2024, 3, 5), "parameters": parameters,
                  "version": "1.0.0"})
    wh.update_run("run-1", {"status": "ok", "finished_at": INGESTED_AT + dt.timedelta(seconds=95),
                            "tickers_ok": 3, "rows_written": 12_345_678_901, "error": None})
    run = wh.run("run-1")
    assert run["parameters"] == parameters
    assert (run["status"], run["shard"], run["pid"], run["rows_written"]) == ("ok", "1/4", 4242, 12_345_678_901)
    assert run["started_at"] == INGESTED_AT
    assert run["finished_at"] == dt.datetime(2024, 3, 5, 21, 31, 42)
    assert run["end_date"] == D(2024, 3, 5)
    assert wh.run("nope") is None


def audit_row(ticker, status, written, flags):
    return {"run_id": "run-1", "ticker": ticker, "status": status, "bars_fetched": 2,
            "bars_written": written, "bars_rejected": 2 - written, "quality_score": 0.875,
            "first_date": D(2024, 3, 4), "last_date": D(2024, 3, 5), "api_calls": 1,
            "duration_s": 0.125, "error": None if status == "ok" else "HTTP 502 from Polygon",
            "flags": flags}


def test_audit_upsert_updates_in_place(wh):
    with wh.transaction() as conn:
        wh.write_audit(conn, [audit_row("AAPL", "failed", 0, {}), audit_row("MSFT", "ok", 2, {"gaps": 1})])
    with wh.transaction() as conn:  # the same run writes AAPL again after a retry
        wh.write_audit(conn, [audit_row("AAPL", "ok", 2, {"retried": True, "note": "x" * 3000})])
    rows = wh.audit("run-1")
    assert [(r["ticker"], r["status"], r["bars_written"], r["error"]) for r in rows] == [
        ("AAPL", "ok", 2, None), ("MSFT", "ok", 2, None)]
    assert json.loads(rows[0]["flags"]) == {"retried": True, "note": "x" * 3000}
    assert json.loads(rows[1]["flags"]) == {"gaps": 1}
    assert (rows[1]["quality_score"], rows[1]["duration_s"]) == (0.875, 0.125)
    assert (rows[1]["first_date"], rows[1]["last_date"]) == (D(2024, 3, 4), D(2024, 3, 5))
    assert isinstance(rows[1]["updated_at"], dt.datetime)


def test_state_upsert(wh):
    assert wh.get_state("last_split_check") is None
    for value in ("2024-03-04", "2024-03-05"):
        with wh.transaction() as conn:
            wh.set_state(conn, "last_split_check", value)
    assert wh.get_state("last_split_check") == "2024-03-05"


# ---- coverage, universe, splits ------------------------------------------------------------

def test_coverage_merges_under_the_table_lock(wh):
    with wh.transaction() as conn:
        wh.add_coverage(conn, {"AAPL": [(D(2024, 1, 2), D(2024, 1, 31))],
                               "MSFT": [(D(2024, 3, 4), D(2024, 3, 4))]}, "run-1", merge)
    with wh.transaction() as conn:
        # Thu 1 Feb touches Wed 31 Jan; Mon 4 Mar follows Fri 1 Mar with no session between
        wh.add_coverage(conn, {"AAPL": [(D(2024, 2, 1), D(2024, 3, 1)), (D(2024, 6, 3), D(2024, 6, 7))],
                               "MSFT": [(D(2024, 3, 1), D(2024, 3, 1))]}, "run-2", merge)
    assert wh.coverage() == {"AAPL": [(D(2024, 1, 2), D(2024, 3, 1)), (D(2024, 6, 3), D(2024, 6, 7))],
                             "MSFT": [(D(2024, 3, 1), D(2024, 3, 4))]}
    assert wh.coverage()["MSFT"] == [(D(2024, 3, 1), D(2024, 3, 4))]


def test_universe_sync_add_remove_rejoin(wh):
    members = pd.DataFrame({"ticker": ["AAPL", "BRK.B", "SPY"], "name": ["Apple Inc.", "Berkshire Hathaway", None],
                            "sector": ["Information Technology", "Financials", "ETF"],
                            "kind": ["sp500", "sp500", "etf"]})
    kinds = ("sp500", "etf")
    assert wh.sync_universe(members, D(2024, 3, 4), kinds) == {
        "added": ["AAPL", "BRK.B", "SPY"], "removed": [], "rejoined": []}
    assert wh.sync_universe(members[members["ticker"] != "BRK.B"], D(2024, 3, 5), kinds) == {
        "added": [], "removed": ["BRK.B"], "rejoined": []}
    assert wh.universe(active_only=True)["ticker"].tolist() == ["AAPL", "SPY"]
    everything = wh.universe(active_only=False).set_index("ticker")
    assert everything["active"].dtype == bool
    assert everything["active"].to_dict() == {"AAPL": True, "BRK.B": False, "SPY": True}
    assert wh.sync_universe(members, D(2024, 3, 6), kinds) == {
        "added": [], "removed": [], "rejoined": ["BRK.B"]}
    row = wh.universe(active_only=True).set_index("ticker").loc["BRK.B"]
    assert (row["first_seen"], row["last_seen"], row["active"]) == (D(2024, 3, 4), D(2024, 3, 6), True)
    assert pd.isna(wh.universe().set_index("ticker").loc["SPY", "name"])  # NaN in, NULL stored


def test_ledger_factors_and_adjusted_views(wh):
    ledger = LedgerStore(wh)
    split = {"event_id": "E1", "ticker": "MSFT", "execution_date": D(2024, 3, 5), "split_from": 1.0,
             "split_to": 2.0, "adjustment_type": "forward_split", "vendor_factor": 0.5}
    with wh.transaction() as conn:
        wh.write_bars(conn, TRICKY, "run-1", INGESTED_AT)
        ledger.record(conn, [split, dict(split)], [], "run-1")
        spans = pd.DataFrame([("MSFT", D(1900, 1, 1), D(2024, 3, 4), 0.5, 0.25)],
                             columns=["ticker", "valid_from", "valid_to", "split_factor", "total_factor"])
        ledger.replace_factors(conn, ["MSFT"], spans, "run-1")
    assert ledger.splits()["event_id"].tolist() == ["E1"]
    msft = TRICKY[TRICKY["ticker"] == "MSFT"].iloc[0]
    split_adjusted = wh.bars(["MSFT"], adjust="split").iloc[0]
    total = wh.bars(["MSFT"], adjust="total").iloc[0]
    assert split_adjusted["close"] == msft["close"] * 0.5 and split_adjusted["volume"] == msft["volume"] / 0.5
    assert total["close"] == msft["close"] * 0.25 and total["volume"] == msft["volume"] / 0.5
    assert wh.bars(["AAPL"], adjust="split")["close"].tolist() == TRICKY[TRICKY["ticker"] == "AAPL"]["close"].tolist()


# ---- the run lock ---------------------------------------------------------------------------

def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_run_lock_acquire_conflict_release(wh):
    first = RunLock(wh, "run-a", host="host-a", pid=101)
    first.acquire()
    with pytest.raises(LockHeldError, match="run run-a on host host-a, pid 101"):
        RunLock(wh, "run-b", host="host-b", pid=202).acquire()
    with wh.transaction() as conn:
        first.assert_held(conn)
    first.release()
    second = RunLock(wh, "run-b", host="host-b", pid=202)
    second.acquire()
    assert second.holder().run_id == "run-b"
    second.release()
    assert second.holder() is None


def test_a_dead_holder_on_this_host_is_taken_over(wh):
    # The takeover compares heartbeat_at read back from a DATE column with the stored value.
    stale = RunLock(wh, "run-dead", pid=dead_pid())
    stale.acquire()
    fresh = RunLock(wh, "run-new")
    fresh.acquire()
    assert fresh.taken_over_from.run_id == "run-dead"
    assert fresh.holder().run_id == "run-new"
    with pytest.raises(LockLostError):
        with wh.transaction() as conn:
            stale.assert_held(conn)
    fresh.release()


# ---- concurrent MERGE of the same new key -----------------------------------------------------

@pytest.mark.parametrize("table,row,key,update_existing,winner", [
    (ingestion_state, {"state_key": "grouped_typical", "state_value": "{}"}, ("state_key",), True, "second"),
    (ticker_universe, {"ticker": "AAPL", "name": "{}", "sector": "IT", "kind": "sp500",
                       "first_seen": D(2024, 3, 5), "last_seen": D(2024, 3, 5), "active": True},
     ("ticker",), False, "first"),
], ids=["update_existing", "insert_only"])
def test_concurrent_merge_of_a_new_key(engine, wh, table, row, key, update_existing, winner):
    """Two sessions MERGE the same new key: the second blocks on the first's insert,
    gets ORA-00001 when it commits, and the upsert runs its MERGE again."""
    value_column = next(c for c in row if c not in key and isinstance(row[c], str))
    first_row = {**row, value_column: "first"}
    second_row = {**row, value_column: "second"}
    errors: list[BaseException] = []

    def second_session():
        try:
            with engine.begin() as conn:
                bulk.upsert_rows(conn, table, [second_row], key=key, update_existing=update_existing)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with engine.connect() as first:
        with first.begin():
            bulk.upsert_rows(first, table, [first_row], key=key, update_existing=update_existing)
            worker = threading.Thread(target=second_session)
            worker.start()
            time.sleep(2.0)
            assert worker.is_alive(), "the second MERGE should wait for the first insert"
    worker.join(60)
    assert not worker.is_alive() and errors == []
    with engine.connect() as conn:
        values = conn.execute(select(table.c[value_column])).scalars().all()
    assert values == [winner]


# ---- the whole pipeline, from the local Polygon-compatible server -----------------------------

API_KEY = "oracle-live-key"
END = dt.date(2024, 3, 15)


def run_pipeline(wh, server, **options) -> dict:
    config = AdvancedBatchConfig.from_env(
        {}, polygon_api_key=API_KEY, polygon_base_url=server.url,
        sp500_url=f"{server.url}/wiki/List_of_S%26P_500_companies", rate_limit_seconds=0,
        retry_delay=0.01, request_timeout=10, max_workers=4, min_sp500_symbols=1)
    now = dt.datetime(2024, 3, 16, 12, tzinfo=dt.timezone.utc)
    return CompleteDataIngestion(config, warehouse=wh, clock=lambda: now).run(RunOptions(end=END, **options))


@pytest.fixture
def market_server():
    market = generate_market(4, "2023-01-03", "2024-03-28", seed=5)
    with PolygonServer(market, api_key=API_KEY, today=END) as server:
        yield market, server


def served(market) -> pd.DataFrame:
    frame = market.bars(start="2022-03-16", end=END, adjusted=True, today=END)
    return frame.sort_values(["ticker", "trade_date"])[BAR_COLUMNS].reset_index(drop=True)


def test_backfill_then_rerun_through_the_pipeline(wh, market_server):
    market, server = market_server
    first = run_pipeline(wh, server)
    assert (first["status"], first["exit_code"]) == ("success", 0)
    want = served(market)
    assert first["rows_written"] == len(want) == wh.count_bars()
    pd.testing.assert_frame_equal(stored_bars(wh), want, check_exact=True, check_dtype=False)
    again = run_pipeline(wh, server)
    assert (again["exit_code"], again["rows_written"]) == (0, 0)
    assert len(wh.audit(first["run_id"])) == len(wh.universe())


def test_two_shards_at_once(wh, market_server):
    # Both shards sync the universe and merge coverage at the same time: the MERGE
    # retry and the coverage table lock are what keep them from failing.
    market, server = market_server
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def shard(k: int) -> None:
        try:
            results[k] = run_pipeline(wh, server, shard=(k, 2))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=shard, args=(k,)) for k in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(600)
    assert errors == []
    assert [results[k]["exit_code"] for k in (1, 2)] == [0, 0]
    pd.testing.assert_frame_equal(stored_bars(wh), served(market), check_exact=True, check_dtype=False)
