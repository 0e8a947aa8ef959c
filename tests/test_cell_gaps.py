"""A cell that yields no valid bar is asked again with backoff, then recorded as a vendor hole."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from hostile import HostileServer, json_answer, path_of
from ingest_helpers import API_KEY, cli, data_calls, ingest, query

DAY = "2024-03-05"


@pytest.fixture
def market():
    return generate_market(2, "2024-01-02", "2024-04-30", seed=7)


def _break_bar(market, ticker: str, day: str) -> pd.DataFrame:
    """Serve a bar with high below low for ``ticker`` on ``day``; returns the good one."""
    good = market.bars(ticker, day, day)
    market.add_bars(good.assign(high=good["low"] * 0.9))
    return good


def test_a_rejected_bar_is_asked_again_and_stored_once_the_vendor_fixes_it(database_url, market):
    ticker = market.constituents[0].symbol
    good = _break_bar(market, ticker, DAY)
    with PolygonServer(market, api_key=API_KEY, today="2024-03-08") as server:
        first = ingest(database_url, server, "2024-03-08", tickers=[ticker, "SPY"], start="2024-03-01")
        assert first["rows_rejected"] == 1 and first["pending_cells"] == 1 and first["vendor_holes"] == 0
        assert query(database_url, "SELECT ticker, trade_date, kind, tries, status FROM cell_gaps")[0][2:] == (
            "rejected", 0, "pending")
        market.add_bars(good)  # the vendor fixes its bar
        mark = len(server.requests)
        second = ingest(database_url, server, "2024-03-11", tickers=[ticker, "SPY"], settle_sessions=0)
        asked = [c["path"] for c in data_calls(server, mark)]
    # the new session for both tickers, and the retried cell: two calls, one of them asks for the cell
    assert len(asked) == 2 and sum(DAY in path for path in asked) == 1
    assert second["pending_cells"] == 0 and second["rows_rejected"] == 0
    assert query(database_url, "SELECT COUNT(*) FROM cell_gaps") == [(0,)]
    stored_close = query(database_url, f"SELECT close_price FROM ticker_data_raw WHERE ticker = '{ticker}' "
                                       f"AND trade_date = '{DAY}'")
    assert stored_close == [(good["close"].iloc[0],)]


def test_a_cell_that_stays_bad_backs_off_then_becomes_a_vendor_hole(sqlite_url, market):
    ticker = market.constituents[0].symbol
    _break_bar(market, ticker, DAY)
    retried_on = []
    with PolygonServer(market, api_key=API_KEY, today="2024-03-06") as server:
        # One ticker: the bad bar asked again beside one fresh session must not quarantine that session.
        ingest(sqlite_url, server, "2024-03-06", tickers=[ticker], start="2024-02-01", max_cell_retries=2)
        for end in pd.bdate_range("2024-03-07", "2024-03-20"):
            mark = len(server.requests)
            result = ingest(sqlite_url, server, end.date(), tickers=[ticker], max_cell_retries=2, settle_sessions=0)
            if any(DAY in c["path"] or c["path"].endswith(f"/{DAY}/{end.date()}") for c in data_calls(server, mark)):
                retried_on.append(str(end.date()))
    # the next run, then one session later, then three; after the second retry it is a hole, never asked again
    assert retried_on == ["2024-03-07", "2024-03-08", "2024-03-13"]
    assert query(sqlite_url, "SELECT kind, tries, status FROM cell_gaps") == [("rejected", 3, "hole")]
    assert result["vendor_holes"] == 1 and result["pending_cells"] == 0
    audit = [json.loads(f) for (f,) in query(sqlite_url, "SELECT flags FROM ingestion_audit WHERE flags LIKE "
                                                         "'%vendor_holes%'")]
    assert audit[0]["vendor_holes"] == [DAY]


def test_an_empty_range_answer_for_a_ticker_expected_to_trade_is_retried_and_reported(tmp_path, market):
    ticker = market.constituents[1].symbol
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    empty = lambda path, up: json_answer({"ticker": ticker, "status": "OK", "resultsCount": 0,  # noqa: E731
                                          "queryCount": 0}) if path_of(path).startswith(
        f"/v2/aggs/ticker/{ticker}/range/") else None
    with PolygonServer(market, api_key=API_KEY, today="2024-03-08") as server:
        with HostileServer(server.url, empty, API_KEY) as hostile:
            result = ingest(url, server, "2024-03-08", tickers=[ticker, "SPY"], start="2024-01-02",
                            polygon_base_url=hostile.url)
        assert result["exit_code"] == 1 and result["failed_tickers"] == [ticker]
        assert "answered OK but with no bars" in result["outcomes"][ticker]["error"]
        assert result["pending_cells"] == 47  # every session of the span it was asked for
        plan = cli("--plan", "--end", "2024-03-08", "--tickers", f"{ticker},SPY",
                   env={"POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": url,
                        "SETTLE_SESSIONS": "0"})
        # the run that follows asks for those cells again: one range call
        assert plan.stdout.splitlines()[0] == "1 call: 1 for 47 missing cells (0 grouped, 1 range), 0 corporate actions"
        assert "retries: 47 pending cells" in plan.stdout
        fixed = ingest(url, server, "2024-03-08", tickers=[ticker, "SPY"], settle_sessions=0)
    assert fixed["exit_code"] == 0 and fixed["pending_cells"] == 0 and fixed["rows_written"] == 47
