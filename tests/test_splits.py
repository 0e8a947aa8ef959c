"""Split-consistent history: stored bars are split-adjusted, and stay so after a split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from CandleThrob.testing.datagen import generate_market, market_data_from_files
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, api_calls, data_calls, ingest, query, stored

BEFORE, AFTER = "2024-03-15", "2024-03-20"  # the split executes on Monday 2024-03-18


def _adjusted(market, end, start="2023-01-03", tickers=None):
    frame = market.bars(start=start, end=end, adjusted=True, today=end)
    if tickers is not None:
        frame = frame[frame["ticker"].isin(tickers)]
    return frame.sort_values(["ticker", "trade_date"]).reset_index(drop=True)


def test_a_split_restates_the_ticker_with_one_range_call(database_url):
    market = generate_market(10, "2023-01-03", "2024-03-28", seed=13)
    split_ticker = market.constituents[2].symbol
    market.add_split(split_ticker, "2024-03-18", 1, 4)
    with PolygonServer(market, api_key=API_KEY, today=BEFORE) as server:
        ingest(database_url, server, BEFORE, start="2023-01-03")
        before = stored(database_url)
        mark = len(server.requests)
        result = ingest(database_url, server, AFTER)
        calls = [c["path"] for c in api_calls(server, mark)]
    grouped = [f"/v2/aggs/grouped/locale/us/market/stocks/{d}" for d in ("2024-03-18", "2024-03-19", "2024-03-20")]
    assert sorted(calls) == sorted(grouped + ["/v3/reference/splits",
                                              f"/v2/aggs/ticker/{split_ticker}/range/1/day/2023-01-03/2024-03-20"])
    after = stored(database_url)
    # The split ticker's whole history equals the server's adjusted series, exactly.
    pd.testing.assert_frame_equal(after[after["ticker"] == split_ticker].reset_index(drop=True),
                                  _adjusted(market, AFTER, tickers=[split_ticker]), check_exact=True,
                                  check_dtype=False)
    # The others are untouched, plus their three new sessions.
    others = after[(after["ticker"] != split_ticker) & (after["trade_date"] <= BEFORE)].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, before[before["ticker"] != split_ticker].reset_index(drop=True))
    pd.testing.assert_frame_equal(after.reset_index(drop=True), _adjusted(market, AFTER), check_dtype=False)
    assert result["restated"] == {split_ticker: len(_adjusted(market, AFTER, tickers=[split_ticker]))}
    assert query(database_url, "SELECT ticker, split_from, split_to, applied_run_id FROM stock_splits") == [
        (split_ticker, 1.0, 4.0, result["run_id"])]
    flags = json.loads(query(database_url, f"SELECT flags FROM ingestion_audit WHERE run_id = '{result['run_id']}' "
                                           f"AND ticker = '{split_ticker}'")[0][0])
    assert flags["restated"][0]["reason"] == "split on 2024-03-18"


def _scale_history(url: str, ticker: str, factor: float) -> None:
    """Put a ticker's stored history on a stale basis, as if a split had been missed."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE ticker_data SET open_price = open_price * :f, high_price = high_price * :f, "
                          "low_price = low_price * :f, close_price = close_price * :f WHERE ticker = :t"),
                     {"f": factor, "t": ticker})
    engine.dispose()


def test_a_split_like_jump_with_no_split_on_record_is_rechecked_and_restated(database_url):
    market = generate_market(10, "2023-01-03", "2024-03-28", seed=13)
    suspect = market.constituents[4].symbol
    with PolygonServer(market, api_key=API_KEY, today=BEFORE) as server:
        ingest(database_url, server, BEFORE, start="2024-01-02")
        _scale_history(database_url, suspect, 3.0)  # the next close looks like a 3-for-1 split
        mark = len(server.requests)
        result = ingest(database_url, server, "2024-03-18")
        calls = [c["path"] for c in data_calls(server, mark)]
    assert calls == ["/v2/aggs/grouped/locale/us/market/stocks/2024-03-18",
                     f"/v2/aggs/ticker/{suspect}/range/1/day/2024-01-02/2024-03-18"]
    assert result["restated"] == {suspect: len(_adjusted(market, BEFORE, "2024-01-02", [suspect]))}
    pd.testing.assert_frame_equal(stored(database_url), _adjusted(market, "2024-03-18", "2024-01-02"),
                                  check_dtype=False)


def test_verify_adjustments_restates_only_what_differs(database_url):
    market = generate_market(6, "2023-01-03", "2024-03-28", seed=13)
    stale = market.constituents[1].symbol
    with PolygonServer(market, api_key=API_KEY, today=BEFORE) as server:
        ingest(database_url, server, BEFORE, start="2024-02-01")
        _scale_history(database_url, stale, 2.0)
        from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
        from ingest_helpers import make_config
        import datetime as dt
        ingestion = CompleteDataIngestion(make_config(database_url, server),
                                          clock=lambda: dt.datetime(2024, 3, 16, tzinfo=dt.timezone.utc))
        mark = len(server.requests)
        result = ingestion.run(RunOptions(verify_adjustments=True, tickers=[stale, "SPY"]))
        ingestion.warehouse.dispose()
        assert len(data_calls(server, mark)) == 2
    assert result["restated"] == {stale: 31}  # every bar from 2024-02-01 to 03-15
    pd.testing.assert_frame_equal(stored(database_url), _adjusted(market, BEFORE, "2024-02-01"), check_dtype=False)


def test_real_as_traded_data_across_real_splits(shared_data, tmp_path):
    """AAPL 7:1 (2014) and 4:1 (2020), TSLA 5:1 (2020), NFLX 7:1 (2015), as traded,
    with splits from Alpha Vantage's split_coefficient column."""
    folder = shared_data / "alphavantage_daily_adjusted_huynhchau5399"
    market = market_data_from_files([folder / f"daily_adjusted_{t}.csv" for t in ("AAPL", "TSLA", "NFLX", "IBM")])
    assert {(s.ticker, str(s.execution_date), s.split_to) for s in market.splits if s.execution_date.year >= 2014} == {
        ("AAPL", "2014-06-09", 7), ("AAPL", "2020-08-31", 4), ("TSLA", "2020-08-31", 5), ("NFLX", "2015-07-15", 7)}
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    tickers = ["AAPL", "TSLA", "NFLX", "IBM"]
    with PolygonServer(market, api_key=API_KEY, today="2020-08-27") as server:
        first = ingest(url, server, "2020-08-27", tickers=tickers, start="2013-01-02")
        second = ingest(url, server, "2020-09-04", tickers=tickers)
    assert first["exit_code"] == 0 and second["exit_code"] == 0
    assert sorted(second["restated"]) == ["AAPL", "TSLA"]
    got = stored(url)
    raw = market.bars(start="2013-01-02", end="2020-09-04")  # as traded
    factors = np.ones(len(raw))
    for split in market.splits:
        later = (raw["ticker"] == split.ticker) & (raw["trade_date"] < pd.Timestamp(split.execution_date)) \
            & (pd.Timestamp(split.execution_date) <= pd.Timestamp("2020-09-04"))
        factors[later.to_numpy()] *= split.split_to / split.split_from
    want = raw.assign(close=raw["close"] / factors).sort_values(["ticker", "trade_date"]).reset_index(drop=True)
    assert len(got) == len(want)
    assert (got["trade_date"].to_numpy() == want["trade_date"].to_numpy()).all()
    np.testing.assert_allclose(got["close"].to_numpy(), want["close"].to_numpy(), rtol=0, atol=1e-4)
    aapl = got[got["ticker"] == "AAPL"].set_index("trade_date")["close"]
    assert aapl[pd.Timestamp("2014-06-06")] == pytest.approx(645.57 / 28, abs=1e-4)


def test_a_run_for_other_tickers_records_the_split_and_the_next_full_run_applies_it(database_url):
    market = generate_market(10, "2023-01-03", "2024-03-28", seed=13)
    split_ticker, other = market.constituents[2].symbol, market.constituents[3].symbol
    market.add_split(split_ticker, "2024-03-18", 1, 4)
    with PolygonServer(market, api_key=API_KEY, today=BEFORE) as server:
        ingest(database_url, server, BEFORE, start="2024-01-02")
        partial = ingest(database_url, server, AFTER, tickers=[other])
        assert partial["restated"] == {}
        assert query(database_url, "SELECT ticker, applied_run_id FROM stock_splits") == [(split_ticker, None)]
        mark = len(server.requests)
        full = ingest(database_url, server, AFTER)
        assert "/v3/reference/splits" not in [c["path"] for c in api_calls(server, mark)]  # already asked
    assert split_ticker in full["restated"]
    pd.testing.assert_frame_equal(stored(database_url), _adjusted(market, AFTER, "2024-01-02"), check_dtype=False)


def test_a_failed_splits_feed_is_partial_and_the_next_run_catches_up(database_url):
    market = generate_market(10, "2023-01-03", "2024-03-28", seed=13)
    split_ticker = market.constituents[2].symbol
    market.add_split(split_ticker, "2024-03-18", 1, 4)
    with PolygonServer(market, api_key=API_KEY, today=BEFORE) as server:
        ingest(database_url, server, BEFORE, start="2024-01-02")
        server.fault_rate, server.fault_kinds = 1.0, ("5xx",)
        failed = ingest(database_url, server, AFTER, max_retries=1)
        assert failed["exit_code"] == 1 and failed["splits_feed_error"]
        server.fault_rate = 0.0
        caught_up = ingest(database_url, server, AFTER)
    assert caught_up["exit_code"] == 0 and split_ticker in caught_up["restated"]
    pd.testing.assert_frame_equal(stored(database_url), _adjusted(market, AFTER, "2024-01-02"), check_dtype=False)
