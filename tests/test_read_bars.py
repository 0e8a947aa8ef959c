"""read_bars and `candlethrob bars` give exactly what the warehouse's own views hold, across a split
and a dividend, on SQLite and PostgreSQL, reading through the primary key."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text

import CandleThrob
from CandleThrob.read.bars import DTYPES

from ingest_helpers import query
from read_helpers import DIVIDEND, DIVIDEND_DAY, SPLIT_TICKER, build_warehouse, fresh_database, market, run_cli

VIEWS = {"split": "ticker_data", "total": "ticker_data_total", "none": "ticker_data_raw"}
TICKERS = [SPLIT_TICKER, "SPY"]
START, END = "2024-03-01", "2024-03-20"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path_factory):
    url = fresh_database(request, tmp_path_factory)
    build_warehouse(url)
    return url


def _direct_sql(url: str, adjust: str) -> pd.DataFrame:
    """The same rows by hand-written SQL on the view, typed as read_bars types them."""
    rows = query(url, f"SELECT ticker, trade_date, open_price, high_price, low_price, close_price, volume, vwap, "
                      f"num_transactions FROM {VIEWS[adjust]} WHERE ticker IN ('{TICKERS[0]}', '{TICKERS[1]}') "
                      f"AND trade_date >= '{START}' AND trade_date <= '{END}' ORDER BY ticker, trade_date")
    frame = pd.DataFrame(rows, columns=list(DTYPES))
    frame["trade_date"] = pd.to_datetime(frame["trade_date"])
    return frame.astype(DTYPES)


@pytest.mark.parametrize("adjust", ["split", "total", "none"])
def test_read_bars_is_the_views_rows_typed(warehouse_url, adjust):
    got = CandleThrob.read_bars(TICKERS, START, END, adjust=adjust, database_url=warehouse_url)
    pd.testing.assert_frame_equal(got, _direct_sql(warehouse_url, adjust), check_exact=True)
    assert got.dtypes.astype(str).to_dict() == {k: str(pd.Series(dtype=v).dtype) for k, v in DTYPES.items()}
    assert len(got) == 2 * 14 and list(got["ticker"].unique()) == ["AOS", "SPY"]  # 14 sessions, 03-01..03-20


def test_the_three_adjustments_across_the_split_and_the_dividend(warehouse_url):
    """Exact values: before the 4-for-1 split prices are a quarter and volumes four times the traded ones;
    before the ex-date the total return also carries 1 - 0.5 / the close before it."""
    frames = {a: CandleThrob.read_bars(SPLIT_TICKER, START, END, adjust=a, database_url=warehouse_url)
              .set_index("trade_date") for a in ("none", "split", "total")}
    raw = market().bars(SPLIT_TICKER, START, END).set_index("trade_date")
    pd.testing.assert_series_equal(frames["none"]["close"], raw["close"], check_names=False, check_exact=True)
    dividend = 1 - DIVIDEND / raw.loc["2024-03-08", "close"]  # the session before the ex-date
    for day, split, total in (("2024-03-08", 0.25, 0.25 * dividend), (DIVIDEND_DAY, 0.25, 0.25),
                              ("2024-03-15", 0.25, 0.25), ("2024-03-18", 1.0, 1.0)):
        assert frames["split"].loc[day, "close"] == raw.loc[day, "close"] * split
        assert frames["total"].loc[day, "close"] == raw.loc[day, "close"] * total
        assert frames["split"].loc[day, "volume"] == raw.loc[day, "volume"] / split
        assert frames["total"].loc[day, "volume"] == raw.loc[day, "volume"] / split


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_bars_command_writes_exactly_what_read_bars_returns(warehouse_url, tmp_path, fmt):
    want = CandleThrob.read_bars(TICKERS, START, END, adjust="total", database_url=warehouse_url)
    output = tmp_path / f"bars.{fmt}"
    args = ["bars", ",".join(TICKERS), "--start", START, "--end", END, "--adjust", "total", "--format", fmt,
            "--database-url", warehouse_url]
    code, out, err = run_cli(*args, *(["--output", str(output)] if fmt == "parquet" else []))
    assert (code, err) == (0, "")
    if fmt == "parquet":
        got = pd.read_parquet(output)
    elif fmt == "csv":
        got = pd.read_csv(io.StringIO(out), parse_dates=["trade_date"]).astype(DTYPES)
    else:
        got = pd.DataFrame(json.loads(out)).astype({**DTYPES, "trade_date": "datetime64[ns]"})
        assert json.loads(out)[0]["trade_date"] == START
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_bars_to_a_file_and_to_stdout_are_the_same_text(warehouse_url, tmp_path):
    code, out, _ = run_cli("bars", "spy", "--database-url", warehouse_url)
    assert code == 0 and out.splitlines()[0] == "ticker,trade_date,open,high,low,close,volume,vwap,transactions"
    assert run_cli("bars", "SPY", "--output", str(tmp_path / "spy.csv"), "--database-url", warehouse_url)[0] == 0
    assert (tmp_path / "spy.csv").read_text() == out
    assert [p.name for p in tmp_path.iterdir()] == ["spy.csv"]  # no temporary file left behind


def test_a_ticker_with_no_bars_gives_no_rows_and_says_so(warehouse_url):
    got = CandleThrob.read_bars(["SPY", "ZZZZ"], "2024-03-20", "2024-03-20", database_url=warehouse_url)
    assert got["ticker"].tolist() == ["SPY"]
    code, out, err = run_cli("bars", "ZZZZ", "--database-url", warehouse_url, "--format", "json")
    assert (code, out) == (0, "[]\n") and err == "candlethrob bars: no bars stored for ZZZZ in that window\n"
    empty = CandleThrob.read_bars("ZZZZ", database_url=warehouse_url)
    assert empty.empty and empty.dtypes.astype(str).tolist() == ["str", "datetime64[ns]"] + ["float64"] * 6 + ["Int64"]


def test_bounds_are_inclusive_and_optional(warehouse_url):
    everything = CandleThrob.read_bars("SPY", database_url=warehouse_url)
    assert (everything["trade_date"].min(), everything["trade_date"].max()) == (pd.Timestamp("2023-11-01"),
                                                                                pd.Timestamp("2024-03-20"))
    one = CandleThrob.read_bars("SPY", "2024-03-18", "2024-03-18", database_url=warehouse_url)
    assert one["trade_date"].tolist() == [pd.Timestamp("2024-03-18")]
    assert np.isclose(one["close"].iloc[0], everything.set_index("trade_date").loc["2024-03-18", "close"])


def test_the_read_uses_the_primary_key(warehouse_url):
    """A ticker and a date range are an index search on ticker_data_raw's key, not a scan of the table."""
    sql = ("SELECT * FROM ticker_data_total WHERE ticker IN ('AOS', 'SPY') "
           "AND trade_date >= '2024-03-01' AND trade_date <= '2024-03-20'")
    engine = create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                plan = " ".join(str(row[-1]) for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
                assert "SEARCH ticker_data_raw USING INDEX sqlite_autoindex_ticker_data_raw_1 (ticker=? AND " \
                       "trade_date>? AND trade_date<?)" in plan, plan
                assert "SCAN ticker_data_raw" not in plan
            else:  # a tiny table may be cheaper to scan: ask whether the key can serve the read
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(row[0] for row in conn.execute(text("EXPLAIN " + sql)))
                assert "Index Scan using pk_ticker_data_raw on ticker_data_raw" in plan, plan
                assert "Seq Scan on ticker_data_raw" not in plan
    finally:
        engine.dispose()
